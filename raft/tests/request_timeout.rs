//! The requests from a node's handles to its event loop (issue 20). Timeouts without a timer
//! per request: a request carries its deadline and the event loop fails it at its first tick
//! past it, with the same error as before (`Timeout`, or `Node(Timeout)` for a membership
//! change), never earlier than the timeout and at most about a tick later. The request queue
//! without a `Sender` clone per request keeps its bound.

mod common;

use bytes::Bytes;
use common::Cluster;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::{
    BusyReason, MemberAddrs, MemberChange, NodeError, NodeId, ReconfigError, Runtime,
};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(150);
/// One tick (10 ms) of lateness, and the runtime's scheduling.
const LATE_MAX: Duration = Duration::from_millis(25);

#[test]
fn requests_to_a_cut_off_leader_time_out_after_the_request_timeout() {
    let rt = SimRuntime::new(21);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        // Shorter than the election timeout (300–600 ms): the cut-off leader still leads when
        // its requests time out, so nothing else answers them.
        let c = Cluster::start(&rt, TIMEOUT).await;
        let a = c.leader().await;
        let leader = c.node(a);
        assert!(leader.propose(Bytes::from_static(b"x")).await.is_ok());
        assert!(leader.linearizable_read(Bytes::new()).await.is_ok());

        let others: Vec<NodeId> = (1..=3).filter(|id| *id != a).collect();
        c.net.partition(&[vec![a], others]);
        let elapsed_within = |t0: Duration| {
            let took = rt.now() - t0;
            assert!(
                took >= TIMEOUT && took <= TIMEOUT + LATE_MAX,
                "timed out after {took:?}, not {TIMEOUT:?} (+ a tick)"
            );
        };
        let t0 = rt.now();
        assert_eq!(
            leader.propose(Bytes::from_static(b"y")).await,
            Err(NodeError::Timeout)
        );
        elapsed_within(t0);
        let t0 = rt.now();
        assert_eq!(
            leader.linearizable_read(Bytes::new()).await,
            Err(NodeError::Timeout)
        );
        elapsed_within(t0);
        let t0 = rt.now();
        let change = MemberChange::AddLearner {
            id: 4,
            addrs: MemberAddrs::new("p4", "c4"),
            auto_promote: false,
        };
        assert_eq!(
            leader.change_membership(vec![change]).await,
            Err(ReconfigError::Node(NodeError::Timeout))
        );
        elapsed_within(t0);
        // Many at once, all on time.
        let t0 = rt.now();
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let n = leader.clone();
                async move { n.propose(Bytes::from(format!("z{i}"))).await }
            })
            .collect();
        for r in futures::future::join_all(calls).await {
            assert_eq!(r, Err(NodeError::Timeout));
        }
        elapsed_within(t0);

        // Healed, the same handle works again: an answer in time is not a timeout.
        c.net.heal();
        c.wait_until(a, "the cluster has a leader again", |s| s.leader.is_some())
            .await;
        let l = c.leader().await;
        assert!(c
            .node(l)
            .propose(Bytes::from_static(b"after"))
            .await
            .is_ok());
        c.shutdown().await;
    })
    .expect("no deadlock");
}

#[test]
fn the_request_queue_holds_at_most_request_queue_max() {
    let rt = SimRuntime::new(22);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let c = Cluster::start_with(&rt, |config| config.request_queue_max = 4).await;
        let leader = c.node(c.leader().await);
        // One task queues ten proposals before the event loop runs again (one thread): four
        // find a place, six are refused at once.
        let calls: Vec<_> = (0..10)
            .map(|i| leader.propose(Bytes::from(format!("p{i}"))))
            .collect();
        let results = futures::future::join_all(calls).await;
        let full = Err(NodeError::Busy(BusyReason::RequestQueueFull));
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            4,
            "{results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| **r == full).count(),
            6,
            "{results:?}"
        );
        // The loop took them: there is room again, from any handle.
        let other = leader.clone();
        assert!(other.propose(Bytes::from_static(b"again")).await.is_ok());
        assert!(leader.status().await.is_ok());
        c.shutdown().await;
        // A shutdown is never refused, and a stopped node says so.
        rt.sleep(Duration::from_millis(10)).await;
        assert_eq!(leader.propose(Bytes::new()).await, Err(NodeError::Shutdown));
    })
    .expect("no deadlock");
}

#[test]
fn wait_for_leader_answers_once_a_leader_is_known_and_times_out_without_one() {
    let rt = SimRuntime::new(23);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let c = Cluster::start(&rt, TIMEOUT).await;
        // No node can reach another: none learns of a leader.
        c.net.partition(&[vec![1], vec![2], vec![3]]);
        let t0 = rt.now();
        let wait = Duration::from_millis(700);
        assert_eq!(
            c.node(1).wait_for_leader(wait).await,
            Err(NodeError::Timeout)
        );
        let took = rt.now() - t0;
        assert!(took >= wait && took <= wait + LATE_MAX, "{took:?}");
        // Healed: every node answers with the same leader, which leads.
        c.net.heal();
        let mut leaders = Vec::new();
        for id in 1..=3 {
            let l = c.node(id).wait_for_leader(Duration::from_secs(10)).await;
            leaders.push(l.expect("a leader within 10 s"));
        }
        assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
        let l = leaders[0];
        assert_eq!(c.node(l).wait_for_leader(Duration::ZERO).await, Ok(l));
        assert!(c.node(l).propose(Bytes::from_static(b"x")).await.is_ok());
        c.shutdown().await;
    })
    .expect("no deadlock");
}
