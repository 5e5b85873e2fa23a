//! Issue 21 #8: a state larger than the storage can snapshot was acknowledged, then every node
//! failed at its next checkpoint and again at every restart. The data is bounded where writes
//! enter (`data_bytes_max`, checked when a write is applied, before it is acknowledged): a
//! write past it is refused with `StoreFull`, and the cluster keeps serving, snapshotting and
//! restarting.

use std::time::Duration;

use raftkv_kv::clerk::{ClerkConfig, ClerkError};
use raftkv_node::cluster::{ClusterConfig, ClusterError, LocalCluster, StorageKind};
use raftkv_node::storage::data_bytes_max_limit;
use raftkv_raft::runtime::tokio::TokioRuntime;

const WAIT: Duration = Duration::from_secs(10);

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

#[test]
fn state_past_data_bytes_max_is_refused_before_it_is_acknowledged_and_nodes_restart() {
    on_tokio(|runtime| async move {
        let mut config = ClusterConfig::new(3, StorageKind::Lmdb);
        config.data_bytes_max = 64 << 10;
        config.snapshot_threshold = Some(10);
        let mut c = LocalCluster::start(runtime, config).await.unwrap();
        c.wait_leader(WAIT).await.unwrap();
        let mut ck = c.clerk(ClerkConfig {
            timeout: WAIT,
            ..ClerkConfig::default()
        });
        let value = vec![b'v'; 1000];
        let mut written = 0;
        let refused = loop {
            match ck
                .put(format!("key{written:03}"), value.clone(), None)
                .await
            {
                Ok(_) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 100, "64 KiB of data accepted 100 KB of values");
        };
        assert_eq!(refused, ClerkError::StoreFull);
        // Each key counts 6 + 1000 + 32 bytes: 63 of them fit in 64 KiB.
        assert_eq!(written, (64 << 10) / (6 + 1000 + 32));
        // Nothing of the refused write is there; the others are.
        let missing = format!("key{written:03}");
        assert_eq!(ck.get(missing).await, Err(ClerkError::NoKey));
        assert_eq!(ck.get("key000").await.unwrap().0.len(), 1000);

        // Every node restarts (each has snapshotted past the refused write).
        for i in 0..3 {
            c.crash(i).await.unwrap();
            c.restart(i).await.unwrap();
        }
        c.wait_leader(WAIT).await.unwrap();
        assert_eq!(ck.get("key010").await.unwrap().0.len(), 1000);
        // Still full (142 bytes left); a delete makes room for one more key.
        assert_eq!(
            ck.append("key001", vec![b'x'; 200]).await,
            Err(ClerkError::StoreFull)
        );
        ck.delete("key001").await.unwrap();
        ck.put("fresh", value.clone(), None).await.unwrap();
        for i in 0..3 {
            let s = c.status(i).await.unwrap();
            assert!(s.snapshot_index > 0, "node {i} never snapshotted: {s:?}");
        }
        c.close().await;
    });
}

#[test]
fn data_bytes_max_past_what_a_snapshot_can_hold_is_refused_at_start() {
    on_tokio(|runtime| async move {
        let mut config = ClusterConfig::new(1, StorageKind::Memory);
        config.data_bytes_max = data_bytes_max_limit() + 1;
        let err = LocalCluster::start(runtime, config)
            .await
            .err()
            .expect("a bound over the limit is refused");
        assert!(
            matches!(&err, ClusterError::Setting(m) if m.contains("data_bytes_max")),
            "{err}"
        );
    });
}
