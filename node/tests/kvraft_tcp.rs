//! The 6.5840 kvraft scenarios over real TCP, on LMDB and on memory, under tokio and smol:
//! concurrent clients with partitions, crashes and an unreliable network; no progress in a
//! minority; snapshots that bound the log and bring a restarted node back; MIT's speed test.
//! Every history is checked linearizable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_checker::{CheckOptions, Verdict};
use raftkv_kv::clerk::{ClerkConfig, ClerkError};
use raftkv_kv::history::History;
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::{NetRuntime, Runtime};

fn on_tokio<F: std::future::Future<Output = ()> + Send + 'static>(
    test: impl FnOnce(TokioRuntime) -> F,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.block_on(async move { test(TokioRuntime::new(handle)).await });
}

fn on_smol<F: std::future::Future<Output = ()> + Send + 'static>(
    test: impl FnOnce(SmolRuntime) -> F,
) {
    smol::block_on(test(SmolRuntime::new()));
}

fn assert_linearizable(history: &History, what: &str) {
    let result = history.check(&CheckOptions {
        timeout: Some(Duration::from_secs(60)),
        ..CheckOptions::default()
    });
    if result.verdict != Verdict::Ok {
        let path = std::env::temp_dir().join(format!("raftkv-{what}.json"));
        std::fs::write(&path, history.to_json()).unwrap();
        panic!(
            "{what}: history is {:?} ({} ops), written to {}",
            result.verdict,
            history.len(),
            path.display()
        );
    }
}

/// `clients` Clerks append `c{i}x{j} ` to their own key and to one shared key, and read back,
/// while `faults` runs; afterwards every client's appends are present exactly once, in order.
async fn workload<R: NetRuntime>(
    cluster: &mut LocalCluster<R>,
    clients: usize,
    duration: Duration,
    mut faults: impl FnMut(&mut LocalCluster<R>, u64) -> Vec<usize>,
    what: &str,
) {
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = futures::channel::mpsc::unbounded();
    for c in 0..clients {
        let mut clerk = cluster
            .clerk(ClerkConfig {
                timeout: Duration::from_secs(20),
                ..ClerkConfig::default()
            })
            .with_history(history.clone());
        let stop = stop.clone();
        let done = done_tx.clone();
        cluster.runtime().spawn(async move {
            let mut acked = Vec::new();
            let mut j = 0;
            while !stop.load(Ordering::SeqCst) {
                let v = format!("c{c}x{j} ");
                match clerk.append(format!("k{c}"), v.clone()).await {
                    Ok(_) => acked.push(v.clone()),
                    Err(e) => panic!("client {c}: append failed: {e}"),
                }
                clerk.append("shared", v).await.unwrap();
                let _ = clerk.get(format!("k{c}")).await.unwrap();
                j += 1;
            }
            let (value, _) = clerk.get(format!("k{c}")).await.unwrap();
            let _ = done.unbounded_send((c, acked, value));
        });
    }
    drop(done_tx);
    let start = cluster.runtime().now();
    let mut step = 0;
    let mut down: Vec<usize> = Vec::new();
    while cluster.runtime().now() - start < duration {
        cluster.runtime().sleep(Duration::from_millis(400)).await;
        for i in down.drain(..) {
            cluster.restart(i).await.unwrap();
        }
        down = faults(cluster, step);
        for &i in &down {
            cluster.crash(i).await.unwrap();
        }
        step += 1;
    }
    for i in down.drain(..) {
        cluster.restart(i).await.unwrap();
    }
    cluster.heal();
    cluster.set_reliable();
    stop.store(true, Ordering::SeqCst);
    use futures::StreamExt;
    let results: Vec<_> = done_rx.collect().await;
    assert_eq!(results.len(), clients, "{what}: every client finished");
    for (c, acked, value) in results {
        // The lab's checkClntAppends: each acknowledged append once, in order.
        let value = String::from_utf8(value.to_vec()).unwrap();
        assert_eq!(value, acked.concat(), "{what}: client {c}'s appends");
    }
    assert_linearizable(&history, what);
}

/// Random partitions (4A ManyPartitionsManyClients) and crashes (4A PersistPartition).
fn chaos(seed: u64) -> impl FnMut(&mut LocalCluster<TokioRuntime>, u64) -> Vec<usize> {
    let mut rng = raftkv_raft::Rng::new(seed);
    move |cluster, _step| {
        let n = cluster.len();
        match rng.range(0, 4) {
            0 => {
                cluster.heal();
                vec![]
            }
            1 => {
                let cut = rng.range(1, n as u64) as usize;
                let a: Vec<usize> = (0..cut).collect();
                let b: Vec<usize> = (cut..n).collect();
                cluster.partition(&[a, b]).unwrap();
                vec![]
            }
            _ => {
                cluster.heal();
                vec![rng.range(0, n as u64) as usize]
            }
        }
    }
}

#[test]
fn many_clients_partitions_and_crashes_on_lmdb_tokio() {
    on_tokio(|rt| async move {
        let mut config = ClusterConfig::new(5, StorageKind::Lmdb);
        config.snapshot_threshold = Some(200);
        let mut cluster = LocalCluster::start(rt, config).await.unwrap();
        let mut faults = chaos(7);
        workload(
            &mut cluster,
            5,
            Duration::from_secs(6),
            |c, s| faults(c, s),
            "partitions_crashes_lmdb_tokio",
        )
        .await;
        cluster.close().await;
    });
}

#[test]
fn many_clients_unreliable_with_crashes_on_memory_smol() {
    on_smol(|rt| async move {
        let config = ClusterConfig::new(3, StorageKind::Memory);
        let mut cluster = LocalCluster::start(rt, config).await.unwrap();
        cluster.set_unreliable(0.1, (0, 27), true);
        workload(
            &mut cluster,
            4,
            Duration::from_secs(5),
            |_, step| {
                if step % 3 == 2 {
                    vec![(step as usize / 3) % 3]
                } else {
                    vec![]
                }
            },
            "unreliable_crashes_memory_smol",
        )
        .await;
        cluster.close().await;
    });
}

#[test]
fn no_progress_in_a_minority_then_completion_after_heal() {
    on_tokio(|rt| async move {
        let mut cluster = LocalCluster::start(rt.clone(), ClusterConfig::new(5, StorageKind::Lmdb))
            .await
            .unwrap();
        let history = History::new();
        let mut clerk = cluster
            .clerk(ClerkConfig::default())
            .with_history(history.clone());
        clerk.put("k", "1", None).await.unwrap();
        let leader = cluster.wait_leader(Duration::from_secs(5)).await.unwrap();
        let minority = vec![leader, (leader + 1) % 5];
        let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
        cluster
            .partition(&[minority.clone(), majority.clone()])
            .unwrap();
        // A client that reaches only the minority (4A OnePartition).
        let addrs = cluster.addrs();
        let connector = raftkv_node::tcp_client::TcpConnector::with_runtime(rt.clone());
        connector.set_reachable(Some(minority.iter().map(|&i| addrs[i].clone()).collect()));
        let mut stuck = raftkv_kv::clerk::Clerk::new(
            rt.clone(),
            connector.clone(),
            addrs.clone(),
            ClerkConfig {
                timeout: Duration::from_secs(30),
                ..ClerkConfig::default()
            },
        )
        .with_history(history.clone());
        let finished = Arc::new(AtomicBool::new(false));
        let (tx, rx) = futures::channel::oneshot::channel();
        {
            let finished = finished.clone();
            rt.spawn(async move {
                let r = stuck.put("k", "minority", None).await;
                finished.store(true, Ordering::SeqCst);
                let _ = tx.send(r);
            });
        }
        // The majority makes progress meanwhile.
        let mut majority_clerk = raftkv_kv::clerk::Clerk::new(
            rt.clone(),
            raftkv_node::tcp_client::TcpConnector::with_runtime(rt.clone()),
            majority.iter().map(|&i| addrs[i].clone()).collect(),
            ClerkConfig::default(),
        )
        .with_history(history.clone());
        for j in 0..10 {
            majority_clerk.append("m", format!("{j}")).await.unwrap();
        }
        rt.sleep(Duration::from_secs(2)).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "a put completed in a minority"
        );
        // 4A "completion after heal": the network heals and the client reaches everyone.
        cluster.heal();
        connector.set_reachable(None);
        let version = rx.await.unwrap().unwrap();
        assert!(version >= 2);
        assert_linearizable(&history, "minority");
        cluster.close().await;
    });
}

#[test]
fn snapshots_bound_the_log_and_bring_a_restarted_node_back() {
    on_tokio(|rt| async move {
        let threshold = 40;
        let mut config = ClusterConfig::new(3, StorageKind::Lmdb);
        config.snapshot_threshold = Some(threshold);
        // The lab's bound on the log while a node is down, and a catch-up by snapshot: no
        // trailing log (issue 20) for the node a few hundred entries behind.
        config.trailing_log = Some(0);
        let mut cluster = LocalCluster::start(rt.clone(), config).await.unwrap();
        let history = History::new();
        let mut clerk = cluster
            .clerk(ClerkConfig::default())
            .with_history(history.clone());
        let leader = cluster.wait_leader(Duration::from_secs(5)).await.unwrap();
        let away = (leader + 1) % 3;
        cluster.crash(away).await.unwrap();
        for j in 0..400 {
            clerk
                .put(format!("k{}", j % 17), format!("v{j}"), None)
                .await
                .unwrap();
            if j % 50 == 0 {
                for i in (0..3).filter(|&i| i != away) {
                    let s = cluster.status(i).await.unwrap();
                    // The lab's 8 x maxraftstate: the log past the snapshot stays small.
                    assert!(
                        s.last_index - s.snapshot_index <= 8 * threshold,
                        "node {i}: {} entries past the snapshot",
                        s.last_index - s.snapshot_index
                    );
                }
            }
        }
        let s = cluster.status(leader).await.unwrap();
        assert!(
            s.first_index > 1 && s.snapshot_index > 0,
            "the log was compacted: {s:?}"
        );
        cluster.restart(away).await.unwrap();
        let target = cluster.status(leader).await.unwrap().commit_index;
        let start = Instant::now();
        loop {
            let s = cluster.status(away).await.unwrap();
            if s.applied_index >= target {
                assert!(s.snapshot_index > 0, "caught up by snapshot: {s:?}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {away} did not catch up: {s:?}"
            );
            rt.sleep(Duration::from_millis(20)).await;
        }
        // Restart everything: every acknowledged write survives (4B SnapshotRecover).
        for i in 0..3 {
            cluster.crash(i).await.unwrap();
        }
        for i in 0..3 {
            cluster.restart(i).await.unwrap();
        }
        for k in 0..17 {
            let (v, _) = clerk.get(format!("k{k}")).await.unwrap();
            let last = (0..400).filter(|j| j % 17 == k).max().unwrap();
            assert_eq!(v, format!("v{last}"));
        }
        assert_linearizable(&history, "snapshots");
        cluster.close().await;
    });
}

/// MIT's TestSpeed4A: 1,000 sequential puts by one client. Prints ms per op.
#[test]
fn speed_1000_sequential_puts() {
    on_tokio(|rt| async move {
        let mut cluster = LocalCluster::start(rt, ClusterConfig::new(3, StorageKind::Lmdb))
            .await
            .unwrap();
        let mut clerk = cluster.clerk(ClerkConfig::default());
        clerk.put("warm", "up", None).await.unwrap();
        let start = Instant::now();
        for j in 0..1000u64 {
            assert_eq!(clerk.put("k", format!("{j}"), None).await, Ok(j + 1));
        }
        let per_op = start.elapsed().as_secs_f64() * 1000.0 / 1000.0;
        println!("speed: 1000 sequential puts over TCP + LMDB, 3 nodes: {per_op:.3} ms/op");
        // The lab: faster than a third of a 100 ms heartbeat interval per op.
        assert!(per_op < 33.0, "{per_op} ms/op");
        cluster.close().await;
    });
}

#[test]
fn a_deleted_key_and_conditional_puts_over_tcp_follow_the_versions() {
    on_smol(|rt| async move {
        let mut cluster = LocalCluster::start(rt, ClusterConfig::new(3, StorageKind::Memory))
            .await
            .unwrap();
        let mut clerk = cluster.clerk(ClerkConfig::default());
        assert_eq!(clerk.put("k", "a", Some(0)).await, Ok(1));
        assert_eq!(
            clerk.put("k", "b", Some(0)).await,
            Err(ClerkError::Version { current: 1 })
        );
        assert_eq!(clerk.put("k", "b", Some(1)).await, Ok(2));
        clerk.delete("k").await.unwrap();
        assert_eq!(clerk.get("k").await, Err(ClerkError::NoKey));
        assert_eq!(clerk.put("k", "c", Some(2)).await, Err(ClerkError::NoKey));
        assert_eq!(clerk.put("k", "c", None).await, Ok(1));
        cluster.close().await;
    });
}
