//! Request timeouts without a timer per request (issue 20): a request carries its deadline and
//! the event loop fails it at its first tick past it, with the same error as before
//! (`Timeout`, or `Node(Timeout)` for a membership change), never earlier than the timeout and
//! at most about a tick later.

mod common;

use bytes::Bytes;
use common::Cluster;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::{MemberAddrs, MemberChange, NodeError, NodeId, ReconfigError, Runtime};
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
