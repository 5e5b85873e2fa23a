//! Issue 18: the cluster trace. A `LocalCluster` records every node's driver events (roles,
//! votes, appends, commits, applies, messages sent and received, snapshots) and its own faults
//! (crash, restart, partition, heal) into one trace; leader changes are followed from the
//! events; with `trace_events_max` 0 nothing is recorded.

use std::time::Duration;

use raftkv_kv::clerk::ClerkConfig;
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_node::trace::ClusterTrace;
use raftkv_raft::driver::observer::{EventKind, MsgKind, RoleName, SnapshotHow};
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

fn clerk_config() -> ClerkConfig {
    ClerkConfig {
        timeout: WAIT,
        ..ClerkConfig::default()
    }
}

fn count(t: &ClusterTrace, f: impl Fn(&EventKind) -> bool) -> usize {
    t.events.iter().filter(|e| f(&e.kind)).count()
}

#[test]
fn trace_records_elections_replication_messages_snapshots_and_faults() {
    on_tokio(|rt| async move {
        let mut config = ClusterConfig::new(3, StorageKind::Memory);
        config.snapshot_threshold = Some(20);
        let mut c = LocalCluster::start(rt, config).await.unwrap();
        let leader = c.wait_leader(WAIT).await.unwrap();
        let changes = c.leader_changes().unwrap();
        let mut clerk = c.clerk(clerk_config());
        for i in 0..30 {
            clerk.put(format!("k{i}"), "v", None).await.unwrap();
        }
        let follower = (leader + 1) % 3;
        c.partition(&[vec![leader], vec![follower, (leader + 2) % 3]])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.heal();
        c.crash(leader).await.unwrap();
        clerk.put("after", "crash", None).await.unwrap();
        c.restart(leader).await.unwrap();
        clerk.put("after", "restart", None).await.unwrap();
        // Idle: the leader's heartbeats flow (every 100 ms).
        tokio::time::sleep(Duration::from_millis(350)).await;
        let t = c.trace();
        c.close().await;

        assert_eq!(t.nodes, vec![1, 2, 3]);
        assert_eq!(t.dropped, 0);
        assert!(t.events.windows(2).all(|w| w[0].t_us <= w[1].t_us + 50_000));
        let leader_id = leader as u64 + 1;
        assert!(t.events.iter().any(|e| e.node == leader_id
            && matches!(
                e.kind,
                EventKind::Role {
                    role: RoleName::Leader,
                    ..
                }
            )));
        assert_eq!(count(&t, |k| matches!(k, EventKind::Start { .. })), 4);
        assert!(count(&t, |k| matches!(k, EventKind::Vote { granted: true, .. })) >= 1);
        assert!(count(&t, |k| matches!(k, EventKind::Append { .. })) >= 30);
        assert!(
            count(
                &t,
                |k| matches!(k, EventKind::Commit { index } if *index >= 31)
            ) >= 3
        );
        assert!(count(&t, |k| matches!(k, EventKind::Apply { .. })) >= 3);
        assert!(count(&t, |k| matches!(k, EventKind::Membership { .. })) >= 3);
        assert!(
            count(&t, |k| matches!(
                k,
                EventKind::Snapshot {
                    how: SnapshotHow::Taken,
                    ..
                }
            )) >= 1
        );
        for kind in [MsgKind::Append, MsgKind::AppendResponse, MsgKind::Heartbeat] {
            assert!(
                count(
                    &t,
                    |k| matches!(k, EventKind::Send { msg, .. } if msg.kind == kind)
                ) > 0
            );
            assert!(
                count(
                    &t,
                    |k| matches!(k, EventKind::Recv { msg, .. } if msg.kind == kind)
                ) > 0,
                "{kind:?}"
            );
        }
        assert!(
            count(&t, |k| matches!(k, EventKind::Drop { .. })) > 0,
            "partitioned sends"
        );
        for fault in [EventKind::Crash, EventKind::Restart, EventKind::Heal] {
            assert_eq!(count(&t, |k| *k == fault), 1, "{fault:?}");
        }
        assert_eq!(count(&t, |k| matches!(k, EventKind::Partition { .. })), 1);
        assert!(count(&t, |k| matches!(k, EventKind::Stop { .. })) >= 1);

        // Leader changes: the leader then, and a new one after the crash (in a later term).
        let seen: Vec<_> = changes.try_iter().collect();
        assert_eq!(seen[0].leader, Some(leader_id));
        assert!(
            seen.iter()
                .any(|c| c.leader.is_some() && c.term > seen[0].term),
            "a new leader after the crash: {seen:?}"
        );
        assert_eq!(seen.last().unwrap().leader, None, "closed: nobody leads");
        assert!(changes.recv().is_err(), "closed with the cluster");

        let back = ClusterTrace::from_json(&t.to_json()).unwrap();
        assert_eq!(back.events.len(), t.events.len());
    });
}

#[test]
fn cluster_metrics_follow_each_node_across_a_restart() {
    on_tokio(|rt| async move {
        let mut c = LocalCluster::start(rt, ClusterConfig::new(3, StorageKind::Memory))
            .await
            .unwrap();
        let leader = c.wait_leader(WAIT).await.unwrap();
        let mut clerk = c.clerk(clerk_config());
        for i in 0..10 {
            clerk.put(format!("k{i}"), "v", None).await.unwrap();
        }
        let text = c.metrics(leader).unwrap();
        let value = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert_eq!(value(&text, "raftkv_role"), 3);
        assert_eq!(value(&text, "raftkv_leader_id"), leader as u64 + 1);
        assert!(value(&text, "raftkv_commit_index") >= 11);
        assert!(value(&text, "raftkv_entries_applied_total") >= 11);
        assert!(text.contains("raftkv_messages_sent_total{kind=\"append\"}"));
        let follower = (leader + 1) % 3;
        c.crash(follower).await.unwrap();
        c.restart(follower).await.unwrap();
        c.wait_leader(WAIT).await.unwrap();
        clerk.put("k", "after", None).await.unwrap();
        let text = c.metrics(follower).unwrap();
        assert_eq!(value(&text, "raftkv_restarts_total"), 1);
        assert!(c.metrics(7).is_err(), "no node 7");
        c.close().await;
    });
}

#[test]
fn an_untraced_cluster_records_nothing() {
    on_tokio(|rt| async move {
        let mut config = ClusterConfig::new(1, StorageKind::Memory);
        config.trace_events_max = 0;
        let mut c = LocalCluster::start(rt, config).await.unwrap();
        c.wait_leader(WAIT).await.unwrap();
        c.clerk(clerk_config()).put("k", "v", None).await.unwrap();
        assert!(c.trace().events.is_empty());
        assert!(c.leader_changes().is_none());
        c.close().await;
    });
}

/// Messages the unreliable network loses at random are in the trace as dropped ("random"),
/// each after its send, apart from those a partition drops ("partition").
#[test]
fn messages_lost_at_random_are_recorded_as_dropped() {
    on_tokio(|rt| async move {
        let config = ClusterConfig::new(3, StorageKind::Memory);
        let mut c = LocalCluster::start(rt, config).await.unwrap();
        c.wait_leader(WAIT).await.unwrap();
        c.set_unreliable(0.3, (0, 0), false);
        let mut clerk = c.clerk(clerk_config());
        for i in 0..10 {
            clerk.put(format!("k{i}"), "v", None).await.unwrap();
        }
        c.set_reliable();
        let t = c.trace();
        c.close().await;
        let random: Vec<_> = t
            .events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Drop { reason, .. } if reason == "random"))
            .collect();
        assert!(!random.is_empty(), "30% of the messages were lost");
        for d in &random {
            let EventKind::Drop { to, msg, .. } = &d.kind else {
                unreachable!()
            };
            assert!(
                t.events.iter().any(|e| e.node == d.node
                    && e.t_us <= d.t_us
                    && matches!(&e.kind, EventKind::Send { to: t2, msg: m2 } if t2 == to && m2.kind == msg.kind)),
                "a dropped message was sent first: {d:?}"
            );
        }
    });
}
