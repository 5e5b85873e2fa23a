//! The shared load generator (`raftkv_node::load`) against a real in-process cluster: it
//! preloads the keyspace for reads, counts only what it measured, and reports latencies.

use std::time::{Duration, Instant};

use raftkv_kv::clerk::ClerkConfig;
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_node::load::{Load, LoadConfig, LoadMode};
use raftkv_raft::runtime::tokio::TokioRuntime;

fn run(mode: LoadMode) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    let mut cluster = rt.block_on(async {
        let c = LocalCluster::start(runtime.clone(), ClusterConfig::new(3, StorageKind::Memory))
            .await
            .unwrap();
        c.wait_leader(Duration::from_secs(5)).await.unwrap();
        c
    });
    let _guard = rt.enter();
    let mut config = LoadConfig::new(4, mode);
    config.keyspace = 50;
    config.value_size = 10;
    config.clerk = ClerkConfig {
        timeout: Duration::from_secs(5),
        ..ClerkConfig::default()
    };
    let load = Load::start(&runtime, cluster.addrs(), config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !load.ready() {
        assert!(Instant::now() < deadline, "the preload did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nothing is counted before measuring starts.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(load.ops(), 0);
    load.measure();
    std::thread::sleep(Duration::from_millis(500));
    let report = load.collect(Duration::from_secs(10));
    assert!(report.ops > 0, "{mode}: no operation answered");
    assert_eq!(report.errors, 0, "{mode}: {:?}", report.failures);
    assert_eq!(
        report.latency_us.len(),
        report.ops,
        "one latency per counted op"
    );
    let (p50, p99) = (report.latency_us_at(0.5), report.latency_us_at(0.99));
    assert!(p50 > 0 && p50 <= p99, "{mode}: p50 {p50} p99 {p99}");
    rt.block_on(cluster.close());
}

#[test]
fn put_load_counts_only_measured_ops() {
    run(LoadMode::Put);
}

#[test]
fn get_load_preloads_the_keyspace_and_finds_every_key() {
    run(LoadMode::Get);
}
