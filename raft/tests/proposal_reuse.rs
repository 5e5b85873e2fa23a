//! Issue 20: a proposal whose log index is reused fails with `NotLeader`, neither `Shutdown`
//! nor a hang. A leader cut off from the others accepts proposals it cannot commit; a new
//! leader overwrites their indexes; the old leader, back as a follower, then leads again and
//! proposes at one of those indexes. The driver once kept its waiting proposals in a map by
//! index and replaced the old one there: its reply was dropped, and its caller saw `Shutdown`
//! from a node that was running (and the others waited for their index to be applied). Now
//! every proposal whose entry leaves the log fails with `NotLeader` at once.

mod common;

use bytes::Bytes;
use common::Cluster;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::{Index, NodeError, NodeId, Role, Runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The answers to proposals made in background tasks, `None` while one waits.
type Answers = Arc<Mutex<Vec<Option<Result<Index, NodeError>>>>>;

#[test]
fn proposal_whose_index_is_reused_fails_not_leader_not_shutdown() {
    let rt = SimRuntime::new(20);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        // Long enough that nothing here times out: every answer below is the driver's.
        let c = Cluster::start(&rt, Duration::from_secs(600)).await;
        let a = c.leader().await;
        let first = c.node(a).propose(Bytes::from_static(b"committed")).await;
        let committed = first.expect("a leader with a quorum commits");

        // Cut the leader off; it accepts three proposals it cannot commit, at k, k+1, k+2.
        let others: Vec<NodeId> = (1..=3).filter(|id| *id != a).collect();
        c.net.partition(&[vec![a], others.clone()]);
        let results: Answers = Arc::new(Mutex::new(vec![None, None, None]));
        for i in 0..3 {
            let (n, results) = (c.node(a), results.clone());
            rt.spawn(async move {
                let r = n.propose(Bytes::from(format!("lost{i}"))).await;
                results.lock().unwrap()[i] = Some(r);
            });
        }
        let k = committed + 1;
        c.wait_until(a, "the cut-off leader holds k..=k+2", |s| {
            s.last_index == k + 2
        })
        .await;

        // The others elect a leader, whose no-op takes index k.
        let b = loop {
            rt.sleep(Duration::from_millis(20)).await;
            let s = c.status(others[0]).await;
            if let Some(l) = s.leader.filter(|l| *l != a) {
                break l;
            }
        };
        c.wait_until(b, "the new leader commits its no-op at k", |s| {
            s.role == Role::Leader && s.commit_index >= k
        })
        .await;

        // Heal: the old leader follows, and its entries at k..=k+2 are gone.
        c.net.heal();
        c.wait_until(a, "the old leader applies the new k", |s| {
            s.leader == Some(b) && s.applied_index >= k
        })
        .await;
        rt.sleep(Duration::from_millis(50)).await;
        let answered_on_heal: Vec<bool> = results
            .lock()
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect();

        // The old leader leads again: its no-op takes k+1, its next proposal k+2.
        c.node(b).transfer_leader(a).await.expect("transfer");
        c.wait_until(a, "the old leader leads again", |s| s.role == Role::Leader)
            .await;
        let reused = c.node(a).propose(Bytes::from_static(b"new")).await;
        assert_eq!(reused, Ok(k + 2), "the new proposal takes index k+2");

        // Every lost proposal has failed, each with NotLeader.
        rt.sleep(Duration::from_millis(100)).await;
        let results = results.lock().unwrap().clone();
        for (i, r) in results.into_iter().enumerate() {
            let index = k + i as Index;
            match r {
                Some(Err(NodeError::NotLeader { .. })) => {}
                Some(other) => panic!("the lost proposal at {index}: {other:?}, not NotLeader"),
                None => panic!("the lost proposal at {index} has no answer (a hang)"),
            }
        }
        // ...and each as soon as its entry left the log, not when its index was reused.
        assert_eq!(
            answered_on_heal,
            vec![true; 3],
            "the lost proposals fail once the new leader's entries replace them"
        );
        c.shutdown().await;
    })
    .expect("no deadlock");
}
