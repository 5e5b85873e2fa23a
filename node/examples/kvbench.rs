//! A closed-loop load generator against an in-process 3-node cluster (TCP + LMDB, tokio), for
//! profiling the hot path: `cargo run --release -p raftkv-node --example kvbench -- [clients]
//! [seconds] [put|get|mixed]`. Prints ops/s and latency percentiles as one JSON line.
//! `KVBENCH_MEMORY=1` keeps the logs in memory. `raftkv bench` (the Python CLI) is the
//! benchmark of record: it runs the same load generator ([`raftkv_node::load`]) against nodes
//! that each have a process of their own.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_node::load::{Load, LoadConfig, LoadMode};
use raftkv_raft::runtime::tokio::TokioRuntime;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| -> Result<(usize, f64, LoadMode), String> {
        let clients = args
            .get(1)
            .map_or(Ok(64), |a| a.parse().map_err(|e| format!("clients: {e}")))?;
        let seconds = args
            .get(2)
            .map_or(Ok(5.0), |a| a.parse().map_err(|e| format!("seconds: {e}")))?;
        let mode = args
            .get(3)
            .map_or(Ok(LoadMode::Put), |a| a.parse().map_err(|e| format!("{e}")))?;
        if clients == 0 || !(seconds > 0.0 && seconds < 86_400.0) {
            return Err("clients must be positive and seconds in (0, 86400)".into());
        }
        Ok((clients, seconds, mode))
    })();
    let (clients, seconds, mode) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kvbench: {e}\nusage: kvbench [clients] [seconds] [put|get|mixed]");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let runtime = TokioRuntime::new(rt.handle().clone());
    let storage = if std::env::var_os("KVBENCH_MEMORY").is_some() {
        StorageKind::Memory
    } else {
        StorageKind::Lmdb
    };
    let started = rt.block_on(async {
        let cluster = LocalCluster::start(runtime.clone(), ClusterConfig::new(3, storage)).await?;
        cluster.wait_leader(Duration::from_secs(5)).await?;
        Ok::<_, raftkv_node::cluster::ClusterError>(cluster)
    });
    let mut cluster = match started {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _guard = rt.enter();
    let mut config = LoadConfig::new(clients, mode);
    // As before: gets of keys never written are answers too; no preload.
    config.preload = false;
    let load = Load::start(&runtime, cluster.addrs(), config);
    std::thread::sleep(Duration::from_secs(1)); // warm-up
    load.measure();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    load.stop();
    let elapsed = start.elapsed().as_secs_f64();
    let report = load.collect(Duration::from_secs(12));
    println!(
        "{{\"clients\": {clients}, \"mode\": \"{mode}\", \"ops_per_s\": {:.0}, \"lat_us\": {{\"p50\": {}, \"p99\": {}, \"p999\": {}}}, \"errors\": {}}}",
        report.ops as f64 / elapsed,
        report.latency_us_at(0.5),
        report.latency_us_at(0.99),
        report.latency_us_at(0.999),
        report.errors,
    );
    rt.block_on(cluster.close());
    ExitCode::SUCCESS
}
