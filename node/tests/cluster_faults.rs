//! Issue 21: the in-process cluster's process pause (`LocalCluster::pause`/`resume`, like
//! SIGSTOP/SIGCONT) and one-way partitions (`block`/`unblock`), under tokio and smol.

use std::time::{Duration, Instant};

use raftkv_kv::clerk::ClerkConfig;
use raftkv_node::cluster::{ClusterConfig, ClusterError, LocalCluster, StorageKind};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::{NetRuntime, Role};

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

fn on_smol<F: std::future::Future<Output = ()> + Send + 'static>(
    test: impl FnOnce(SmolRuntime) -> F,
) {
    smol::block_on(test(SmolRuntime::new()));
}

fn clerk_config() -> ClerkConfig {
    ClerkConfig {
        timeout: WAIT,
        ..ClerkConfig::default()
    }
}

/// Waits until node `i` follows in a term above `term`.
async fn wait_follower_above<R: NetRuntime>(c: &LocalCluster<R>, i: usize, term: u64) {
    let started = Instant::now();
    loop {
        if let Ok(s) = c.status(i).await {
            if s.role != Role::Leader && s.term > term {
                return;
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "node {i} did not step down after the fault"
        );
        c.runtime().sleep(Duration::from_millis(20)).await;
    }
}

async fn a_paused_leader_is_replaced_and_steps_down_when_resumed<R: NetRuntime>(runtime: R) {
    let mut c = LocalCluster::start(runtime, ClusterConfig::new(3, StorageKind::Memory))
        .await
        .unwrap();
    let old = c.wait_leader(WAIT).await.unwrap();
    let mut ck = c.clerk(clerk_config());
    ck.put("k", "before", None).await.unwrap();
    let term = c.status(old).await.unwrap().term;

    c.pause(old).unwrap();
    assert!(c.is_paused(old));
    let err = c.status(old).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Paused { index } if index == old),
        "{err}"
    );
    // The others elect a leader and serve, while the paused one still believes it leads.
    let new = c.wait_leader(WAIT).await.unwrap();
    assert_ne!(new, old);
    ck.put("k", "during", None).await.unwrap();

    c.resume(old).unwrap();
    assert!(!c.is_paused(old));
    // Resumed, it hears of the new term and steps down; nothing it held is served stale.
    wait_follower_above(&c, old, term).await;
    assert_eq!(&ck.get("k").await.unwrap().0[..], b"during");
    c.close().await;
}

async fn a_leader_blocked_one_way_is_replaced<R: NetRuntime>(runtime: R) {
    let mut c = LocalCluster::start(runtime, ClusterConfig::new(3, StorageKind::Memory))
        .await
        .unwrap();
    let old = c.wait_leader(WAIT).await.unwrap();
    let mut ck = c.clerk(clerk_config());
    ck.put("k", "before", None).await.unwrap();
    let term = c.status(old).await.unwrap().term;
    // The leader's messages are lost; the followers' still reach it.
    for other in (0..3).filter(|&j| j != old) {
        c.block(old, other).unwrap();
    }
    wait_follower_above(&c, old, term).await;
    ck.put("k", "during", None).await.unwrap();
    for other in (0..3).filter(|&j| j != old) {
        c.unblock(old, other).unwrap();
    }
    assert_eq!(&ck.get("k").await.unwrap().0[..], b"during");
    assert!(matches!(
        c.block(0, 7),
        Err(ClusterError::NoSuchNode { index: 7, .. })
    ));
    c.close().await;
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_resumed_tokio() {
    on_tokio(a_paused_leader_is_replaced_and_steps_down_when_resumed);
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_resumed_smol() {
    on_smol(a_paused_leader_is_replaced_and_steps_down_when_resumed);
}

#[test]
fn a_leader_blocked_one_way_is_replaced_tokio() {
    on_tokio(a_leader_blocked_one_way_is_replaced);
}

#[test]
fn a_leader_blocked_one_way_is_replaced_smol() {
    on_smol(a_leader_blocked_one_way_is_replaced);
}

/// Crashing a paused node stops it and releases its storage (it is resumed to see the
/// shutdown); it restarts unpaused.
#[test]
fn a_paused_node_can_be_crashed_and_restarted() {
    on_tokio(|runtime| async move {
        let mut c = LocalCluster::start(runtime, ClusterConfig::new(3, StorageKind::Lmdb))
            .await
            .unwrap();
        c.wait_leader(WAIT).await.unwrap();
        c.pause(1).unwrap();
        c.crash(1).await.unwrap();
        assert!(!c.is_paused(1));
        c.restart(1).await.unwrap();
        assert!(!c.is_paused(1));
        c.status(1).await.unwrap();
        c.close().await;
    });
}
