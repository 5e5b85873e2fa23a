//! End to end: three real Raft nodes (the async driver on smol, memory storage) over
//! `TcpTransport` on 127.0.0.1 elect a leader, replicate commands, fail over when the fault
//! filter isolates the leader, and catch up after healing.

mod common;

use bytes::Bytes;
use common::*;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Config, Node, NodeConfig, NodeError, NodeId, Role, StateMachine};
use raftkv_transport_tcp::FaultFilter;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Counts the commands it applied; answers with the count.
#[derive(Default)]
struct Counter {
    applied: u64,
}

impl StateMachine for Counter {
    type Response = u64;

    fn apply(&mut self, _index: u64, _command: &[u8]) -> u64 {
        self.applied += 1;
        self.applied
    }

    fn query(&self, _query: &[u8]) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.applied.to_le_bytes())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| "bad snapshot".to_string())?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}

type TcpNode = Node<SmolRuntime, Counter>;

const IDS: [NodeId; 3] = [1, 2, 3];

fn start(filter: &FaultFilter) -> BTreeMap<NodeId, TcpNode> {
    let runtime = SmolRuntime::new();
    cluster(&IDS, Some(filter.clone()))
        .into_iter()
        .map(|(id, transport)| {
            let node_config = NodeConfig::new(Config::new(id, IDS));
            let node = smol::block_on(Node::start(
                runtime.clone(),
                node_config,
                MemStorage::new(),
                transport,
                Counter::default(),
            ))
            .unwrap();
            (id, node)
        })
        .collect()
}

/// The leader that a majority of `among` agrees on, within `timeout`.
fn wait_for_leader(
    nodes: &BTreeMap<NodeId, TcpNode>,
    among: &[NodeId],
    timeout: Duration,
) -> NodeId {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for &id in among {
            let status = smol::block_on(nodes[&id].status()).unwrap();
            if status.role == Role::Leader {
                return id;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no leader among {among:?} within {timeout:?}");
}

/// Proposes on whichever of `among` leads, retrying through elections.
fn propose(nodes: &BTreeMap<NodeId, TcpNode>, among: &[NodeId]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let leader = wait_for_leader(nodes, among, Duration::from_secs(5));
        match smol::block_on(nodes[&leader].propose(Bytes::from_static(b"+1"))) {
            Ok(count) => return count,
            Err(NodeError::NotLeader { .. } | NodeError::Timeout | NodeError::Busy(_)) => {}
            Err(e) => panic!("propose failed: {e}"),
        }
    }
    panic!("no proposal committed among {among:?}");
}

/// Waits until `id` has applied everything up to `index` (commands and leaders' no-ops).
fn wait_applied(nodes: &BTreeMap<NodeId, TcpNode>, id: NodeId, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = smol::block_on(nodes[&id].status()).unwrap();
        if status.applied_index >= index {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "n{id} did not apply up to {index}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_raft_nodes_elect_replicate_and_fail_over_over_tcp() {
    let filter = FaultFilter::new(11);
    let nodes = start(&filter);
    let mut count = 0;
    for _ in 0..10 {
        count = propose(&nodes, &IDS);
    }
    assert_eq!(count, 10);

    // Isolate the leader: the other two elect a new one and keep committing.
    let old = wait_for_leader(&nodes, &IDS, Duration::from_secs(5));
    filter.isolate(old);
    let rest: Vec<NodeId> = IDS.iter().copied().filter(|&id| id != old).collect();
    for _ in 0..5 {
        count = propose(&nodes, &rest);
    }
    assert_eq!(count, 15);
    let new = wait_for_leader(&nodes, &rest, Duration::from_secs(5));
    assert_ne!(new, old);

    // Heal: the old leader learns the new term and catches up.
    filter.heal();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = smol::block_on(nodes[&old].status()).unwrap();
        if status.role == Role::Follower && status.leader == Some(new) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n{old} did not rejoin: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    count = propose(&nodes, &IDS);
    assert_eq!(count, 16);
    let leader = wait_for_leader(&nodes, &IDS, Duration::from_secs(5));
    let commit = smol::block_on(nodes[&leader].status())
        .unwrap()
        .commit_index;
    for id in IDS {
        wait_applied(&nodes, id, commit);
    }
    for node in nodes.values() {
        smol::block_on(node.shutdown());
    }
}
