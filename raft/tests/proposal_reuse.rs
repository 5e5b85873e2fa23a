//! Issue 20: a proposal whose log index is reused fails with `NotLeader`, neither `Shutdown`
//! nor a hang. A leader cut off from the others accepts proposals it cannot commit; a new
//! leader overwrites their indexes; the old leader, back as a follower, then leads again and
//! proposes at one of those indexes. The driver once kept its waiting proposals in a map by
//! index and replaced the old one there: its reply was dropped, and its caller saw `Shutdown`
//! from a node that was running (and the others waited for their index to be applied). Now
//! every proposal whose entry leaves the log fails with `NotLeader` at once.

use bytes::Bytes;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{
    Config, Index, Node, NodeConfig, NodeError, NodeId, Role, Runtime, StateMachine, Status,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers every command with its index.
struct Indexes;

impl StateMachine for Indexes {
    type Response = Index;

    fn apply(&mut self, index: Index, _command: &[u8]) -> Index {
        index
    }

    fn query(&self, _query: &[u8]) -> Index {
        0
    }

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

type TestNode = Node<SimRuntime, Indexes>;

/// The answers to proposals made in background tasks, `None` while one waits.
type Answers = Arc<Mutex<Vec<Option<Result<Index, NodeError>>>>>;

async fn status(node: &TestNode) -> Status {
    node.status().await.expect("the node runs")
}

/// Waits (virtual time, at most 10 s) until `done` holds for `node`'s status.
async fn wait_until(
    rt: &SimRuntime,
    node: &TestNode,
    what: &str,
    done: impl Fn(&Status) -> bool,
) -> Status {
    let deadline = rt.now() + Duration::from_secs(10);
    loop {
        let s = status(node).await;
        if done(&s) {
            return s;
        }
        assert!(rt.now() < deadline, "n{}: {what} within 10 s: {s:?}", s.id);
        rt.sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn proposal_whose_index_is_reused_fails_not_leader_not_shutdown() {
    let rt = SimRuntime::new(20);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let net = SimNet::new(&rt);
        let mut nodes: Vec<TestNode> = Vec::new();
        for id in 1..=3u64 {
            let mut raft = Config::new(id, [1, 2, 3]);
            raft.seed = id;
            let mut config = NodeConfig::new(raft);
            // Long enough that nothing here times out: every answer below is the driver's.
            config.request_timeout = Duration::from_secs(600);
            let storage = SimStorage::new(&rt, (0, 1));
            let node = Node::start(
                rt.with_group(id),
                config,
                storage,
                net.endpoint(id),
                Indexes,
            )
            .await
            .expect("starts");
            nodes.push(node);
        }
        let node = |id: NodeId| nodes[id as usize - 1].clone();
        let a = loop {
            rt.sleep(Duration::from_millis(20)).await;
            if let Some(s) = status(&node(1)).await.leader {
                if status(&node(s)).await.role == Role::Leader {
                    break s;
                }
            }
        };
        let first = node(a).propose(Bytes::from_static(b"committed")).await;
        let committed = first.expect("a leader with a quorum commits");

        // Cut the leader off; it accepts three proposals it cannot commit, at k, k+1, k+2.
        let others: Vec<NodeId> = (1..=3).filter(|id| *id != a).collect();
        net.partition(&[vec![a], others.clone()]);
        let results: Answers = Arc::new(Mutex::new(vec![None, None, None]));
        for i in 0..3 {
            let (n, results) = (node(a), results.clone());
            rt.spawn(async move {
                let r = n.propose(Bytes::from(format!("lost{i}"))).await;
                results.lock().unwrap()[i] = Some(r);
            });
        }
        let k = committed + 1;
        wait_until(&rt, &node(a), "the cut-off leader holds k..=k+2", |s| {
            s.last_index == k + 2
        })
        .await;

        // The others elect a leader, whose no-op takes index k.
        let b = loop {
            rt.sleep(Duration::from_millis(20)).await;
            let s = status(&node(others[0])).await;
            if let Some(l) = s.leader.filter(|l| *l != a) {
                break l;
            }
        };
        wait_until(
            &rt,
            &node(b),
            "the new leader commits its no-op at k",
            |s| s.role == Role::Leader && s.commit_index >= k,
        )
        .await;

        // Heal: the old leader follows, and its entries at k..=k+2 are gone.
        net.heal();
        wait_until(&rt, &node(a), "the old leader applies the new k", |s| {
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
        node(b).transfer_leader(a).await.expect("transfer");
        wait_until(&rt, &node(a), "the old leader leads again", |s| {
            s.role == Role::Leader
        })
        .await;
        let reused = node(a).propose(Bytes::from_static(b"new")).await;
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
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .expect("no deadlock");
}
