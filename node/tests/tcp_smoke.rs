//! The KV service over real TCP: a 3-node LocalCluster, a Clerk, crash and restart.

use std::time::Duration;

use raftkv_checker::{CheckOptions, Verdict};
use raftkv_kv::clerk::{ClerkConfig, ClerkError};
use raftkv_kv::history::History;
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_raft::runtime::tokio::TokioRuntime;

#[test]
fn put_get_append_delete_over_tcp_with_a_leader_crash() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = TokioRuntime::current();
        let mut cluster = LocalCluster::start(runtime, ClusterConfig::new(3, StorageKind::Lmdb))
            .await
            .unwrap();
        let leader = cluster.wait_leader(Duration::from_secs(5)).await.unwrap();
        let history = History::new();
        let mut clerk = cluster
            .clerk(ClerkConfig::default())
            .with_history(history.clone());
        assert_eq!(clerk.put("k", "v", None).await, Ok(1));
        assert_eq!(clerk.get("k").await.unwrap(), (bytes::Bytes::from("v"), 1));
        assert_eq!(clerk.append("k", "w").await, Ok(2));
        assert_eq!(
            clerk.put("k", "x", Some(1)).await,
            Err(ClerkError::Version { current: 2 })
        );
        assert_eq!(clerk.put("k2", "x", Some(3)).await, Err(ClerkError::NoKey));
        cluster.crash(leader).await.unwrap();
        assert_eq!(clerk.get("k").await.unwrap(), (bytes::Bytes::from("vw"), 2));
        assert_eq!(clerk.delete("k").await, Ok(()));
        assert_eq!(clerk.delete("k").await, Err(ClerkError::NoKey));
        cluster.restart(leader).await.unwrap();
        assert_eq!(clerk.put("k", "again", None).await, Ok(1));
        let result = history.check(&CheckOptions::default());
        assert_eq!(result.verdict, Verdict::Ok);
        cluster.close().await;
    });
}

#[test]
fn regression_a_put_over_the_frame_bound_is_too_large_at_once_not_a_timeout() {
    smol::block_on(async {
        let mut cluster = LocalCluster::start(
            raftkv_raft::runtime::smol::SmolRuntime::new(),
            ClusterConfig::new(3, StorageKind::Memory),
        )
        .await
        .unwrap();
        let mut clerk = cluster.clerk(ClerkConfig {
            timeout: Duration::from_secs(6),
            ..ClerkConfig::default()
        });
        let start = std::time::Instant::now();
        let big = vec![b'x'; 5 << 20];
        assert_eq!(clerk.put("big", big, None).await, Err(ClerkError::TooLarge));
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(clerk.put("big", vec![b'x'; 3 << 20], None).await, Ok(1));
        cluster.close().await;
    });
}
