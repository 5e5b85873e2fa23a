//! A closed-loop load generator against an in-process 3-node cluster (TCP + LMDB, tokio), for
//! profiling the hot path: `cargo run --release -p raftkv-node --example kvbench -- [clients]
//! [seconds] [put|get|mixed]`. Prints ops/s and latency percentiles. `raftkv bench` (the Python
//! CLI) is the benchmark of record: it runs each node in its own process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_kv::clerk::ClerkConfig;
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Runtime;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).map_or(64, |a| a.parse().expect("clients"));
    let seconds: f64 = args.get(2).map_or(5.0, |a| a.parse().expect("seconds"));
    let mode = args.get(3).cloned().unwrap_or_else(|| "put".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let runtime = TokioRuntime::new(handle);
        let storage = if std::env::var("KVBENCH_MEMORY").is_ok() {
            StorageKind::Memory
        } else {
            StorageKind::Lmdb
        };
        let mut cluster = LocalCluster::start(runtime.clone(), ClusterConfig::new(3, storage))
            .await
            .unwrap();
        cluster.wait_leader(Duration::from_secs(5)).await.unwrap();
        let value = "x".repeat(100);
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<(Vec<u32>, u64)>();
        for c in 0..clients {
            let mut clerk = cluster.clerk(ClerkConfig::default());
            let (stop, measuring, tx, value, mode) = (stop.clone(), measuring.clone(), tx.clone(), value.clone(), mode.clone());
            runtime.spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut j = c as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    j = j.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("k{:06}", (j >> 33) % 10_000);
                    let t = Instant::now();
                    let put = match mode.as_str() {
                        "get" => false,
                        "mixed" => (j >> 20) & 1 == 0,
                        _ => true,
                    };
                    let ok = if put {
                        clerk.put(key, value.clone(), None).await.is_ok()
                    } else {
                        match clerk.get(key).await {
                            Ok(_) | Err(raftkv_kv::clerk::ClerkError::NoKey) => true,
                            Err(_) => false,
                        }
                    };
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            lat.push(t.elapsed().as_micros() as u32);
                        } else {
                            errors += 1;
                        }
                    }
                }
                let _ = tx.unbounded_send((lat, errors));
            });
        }
        drop(tx);
        runtime.sleep(Duration::from_secs(1)).await;
        measuring.store(true, Ordering::Relaxed);
        let start = Instant::now();
        runtime.sleep(Duration::from_secs_f64(seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        use futures::StreamExt;
        let mut all = Vec::new();
        let mut errors = 0;
        while let Some((lat, e)) = rx.next().await {
            all.extend(lat);
            errors += e;
        }
        all.sort_unstable();
        let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
        println!(
            "{{\"clients\": {clients}, \"mode\": \"{mode}\", \"ops_per_s\": {:.0}, \"lat_us\": {{\"p50\": {}, \"p99\": {}, \"p999\": {}}}, \"errors\": {errors}}}",
            all.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99),
            pct(0.999)
        );
        cluster.close().await;
    });
}
