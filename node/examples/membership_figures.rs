//! The membership figures of BENCHMARKS.md, on an in-process cluster (TCP + LMDB, tokio, 2
//! worker threads): `cargo run --release -p raftkv-node --example membership_figures`.
//!
//! 1. the time from adding an empty node (`add_node(learner=true)`: member_add, then waiting
//!    until the learner has what the leader had committed) to a caught-up learner, with 100k
//!    keys of 100 bytes in the cluster;
//! 2. write unavailability during a leader transfer, p50 and max over 20 transfers: the longest
//!    gap between two consecutive acknowledged writes of one sequential writer, from the last
//!    write before the transfer to 300 ms after it completed;
//! 3. the same during the removal of the leader (3 times, a node added before each);
//! 4. put throughput of 16 closed-loop clients before, during and after (two 5 s windows) a
//!    rolling replacement of all three nodes (add a new node, remove an old one, three times).
//!
//! `FIGURES_KEYS` changes the key count of (1); `FIGURES_ONLY=1|2|4` runs one part (2 includes
//! 3).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_kv::clerk::{Clerk, ClerkConfig};
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_node::load::{Load, LoadConfig, LoadMode};
use raftkv_node::tcp_client::TcpConnector;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Runtime;

const T: Duration = Duration::from_secs(120);

type Cluster = LocalCluster<TokioRuntime>;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime = TokioRuntime::new(rt.handle().clone());
    let keys: u64 = std::env::var("FIGURES_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(100_000);
    let only = std::env::var("FIGURES_ONLY").unwrap_or_default();
    rt.block_on(async move {
        if only.is_empty() || only == "1" {
            catch_up(&runtime, keys).await;
        }
        if only.is_empty() || only == "2" {
            unavailability(&runtime).await;
        }
        if only.is_empty() || only == "4" {
            rolling_replacement(&runtime).await;
        }
    });
}

async fn start(runtime: &TokioRuntime) -> Cluster {
    let c = LocalCluster::start(runtime.clone(), ClusterConfig::new(3, StorageKind::Lmdb))
        .await
        .expect("cluster");
    c.wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    c
}

async fn catch_up(runtime: &TokioRuntime, keys: u64) {
    let mut c = start(runtime).await;
    let mut config = LoadConfig::new(64, LoadMode::Get);
    config.keyspace = keys;
    let load = Load::start(runtime, c.addrs(), config);
    let filling = Instant::now();
    while !load.ready() {
        runtime.sleep(Duration::from_millis(50)).await;
    }
    load.stop();
    drop(load);
    let leader = c.wait_leader(T).await.unwrap();
    let s = c.status(leader).await.unwrap();
    println!(
        "1. {keys} keys written in {:.1} s (leader: last index {}, snapshot at {})",
        filling.elapsed().as_secs_f64(),
        s.last_index,
        s.snapshot_index
    );
    let t = Instant::now();
    let i = c.add_node(true, T).await.expect("add_node");
    let took = t.elapsed();
    let s = c.status(i).await.unwrap();
    println!(
        "   member_add -> caught-up learner: {:.2} s (the learner installed a snapshot at {}, \
         applied {})",
        took.as_secs_f64(),
        s.snapshot_index,
        s.applied_index
    );
    c.close().await;
}

/// A sequential writer recording when each of its writes was acknowledged.
fn probe(runtime: &TokioRuntime, c: &Cluster) -> (Arc<Mutex<Vec<Instant>>>, Arc<Mutex<bool>>) {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(Mutex::new(false));
    let mut clerk = Clerk::new(
        runtime.clone(),
        TcpConnector::with_runtime(runtime.clone()),
        c.addrs(),
        ClerkConfig {
            timeout: T,
            backoff_max: Duration::from_millis(20),
            ..ClerkConfig::default()
        },
    );
    let (a, s) = (acks.clone(), stop.clone());
    runtime.spawn(async move {
        let mut n = 0u64;
        while !*s.lock().unwrap() {
            n += 1;
            clerk
                .put("probe", n.to_string(), None)
                .await
                .expect("probe put");
            a.lock().unwrap().push(Instant::now());
        }
    });
    (acks, stop)
}

/// The longest gap between consecutive acknowledgements from the last one before `from` to
/// `to`.
fn gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let first = acks.iter().rposition(|&t| t <= from).unwrap_or(0);
    acks[first..]
        .windows(2)
        .take_while(|w| w[0] <= to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn unavailability(runtime: &TokioRuntime) {
    let mut c = start(runtime).await;
    let (acks, stop) = probe(runtime, &c);
    runtime.sleep(Duration::from_millis(500)).await;
    let mut events = Vec::new();
    for n in 0..20 {
        let leader = c.wait_leader(T).await.unwrap();
        let target = (leader + 1 + n % 2) % 3;
        let t = Instant::now();
        c.transfer_leader(target, T).await.expect("transfer");
        let done = Instant::now();
        runtime.sleep(Duration::from_millis(300)).await;
        events.push((t, done + Duration::from_millis(300), done - t));
    }
    let snapshot = acks.lock().unwrap().clone();
    let mut gaps: Vec<Duration> = events
        .iter()
        .map(|&(a, b, _)| gap(&snapshot, a, b))
        .collect();
    gaps.sort();
    let mut calls: Vec<Duration> = events.iter().map(|e| e.2).collect();
    calls.sort();
    println!(
        "2. leader transfer x20: write unavailability p50 {}, max {} (transfer_leader call: \
         p50 {}, max {})",
        ms(gaps[gaps.len() / 2]),
        ms(gaps[gaps.len() - 1]),
        ms(calls[calls.len() / 2]),
        ms(calls[calls.len() - 1])
    );
    let mut removals = Vec::new();
    for _ in 0..3 {
        c.add_node(false, T).await.expect("add_node");
        runtime.sleep(Duration::from_millis(300)).await;
        let leader = c.wait_leader(T).await.unwrap();
        let t = Instant::now();
        c.remove_node(leader, T).await.expect("remove the leader");
        let done = Instant::now();
        runtime.sleep(Duration::from_millis(300)).await;
        let snapshot = acks.lock().unwrap().clone();
        removals.push((
            gap(&snapshot, t, done + Duration::from_millis(300)),
            done - t,
        ));
    }
    println!(
        "3. removing the leader x3: write unavailability {} (remove_node call: {})",
        removals
            .iter()
            .map(|r| ms(r.0))
            .collect::<Vec<_>>()
            .join(", "),
        removals
            .iter()
            .map(|r| ms(r.1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    *stop.lock().unwrap() = true;
    c.close().await;
}

async fn rolling_replacement(runtime: &TokioRuntime) {
    let mut c = start(runtime).await;
    let mut config = LoadConfig::new(16, LoadMode::Put);
    config.clerk.timeout = T;
    let load = Load::start(runtime, c.addrs(), config);
    runtime.sleep(Duration::from_secs(1)).await;
    load.measure();
    let window = Duration::from_secs(5);
    let rate = |ops: u64, d: Duration| ops as f64 / d.as_secs_f64();
    let (o0, t0) = (load.ops(), Instant::now());
    runtime.sleep(window).await;
    let (o1, t1) = (load.ops(), Instant::now());
    for old in 0..3 {
        c.add_node(false, T).await.expect("add_node");
        c.remove_node(old, T).await.expect("remove_node");
    }
    let (o2, t2) = (load.ops(), Instant::now());
    runtime.sleep(window).await;
    let (o3, t3) = (load.ops(), Instant::now());
    runtime.sleep(window).await;
    let (o4, t4) = (load.ops(), Instant::now());
    let next = rate(o4 - o3, t4 - t3);
    load.stop();
    let errors = load.errors();
    drop(load);
    println!(
        "4. rolling replacement (16 put clients): before {:.0} ops/s, during {:.0} ops/s \
         ({:.1} s), after {:.0} ops/s then {next:.0} ops/s; {errors} errors; voters now {:?}",
        rate(o1 - o0, t1 - t0),
        rate(o2 - o1, t2 - t1),
        (t2 - t1).as_secs_f64(),
        rate(o3 - o2, t3 - t2),
        c.members().await.unwrap().voters
    );
    c.close().await;
}
