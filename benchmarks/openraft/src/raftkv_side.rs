//! raftkv's side: three `raftkv_raft::Node`s on one tokio runtime, through the public API and
//! the library's own in-process pieces: `MemStorage`, a `MemNetwork` transport per node and
//! `NoopStateMachine` (openraft's benchmark applies to a state machine that keeps nothing too).

use crate::Workload;
use bytes::Bytes;
use raftkv_raft::mem::{MemNetwork, NoopStateMachine};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Config, Node, NodeConfig, NodeId};
use std::time::Duration;

pub type BenchNode = Node<TokioRuntime, NoopStateMachine>;

pub struct Cluster {
    pub nodes: Vec<BenchNode>,
    pub leader: BenchNode,
}

pub async fn start() -> Cluster {
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let network = MemNetwork::new();
    let mut nodes = Vec::new();
    for &id in &ids {
        let config = NodeConfig::new(Config::new(id, ids.clone()));
        let node = Node::start(
            TokioRuntime::current(),
            config,
            MemStorage::new(),
            network.transport(id),
            NoopStateMachine,
        )
        .await
        .expect("raftkv node starts");
        nodes.push(node);
    }
    // The election takes 300–600 ms of ticks (defaults).
    let leader = nodes[0]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("raftkv elects a leader");
    let leader = nodes[leader as usize - 1].clone();
    Cluster { nodes, leader }
}

impl Cluster {
    pub async fn shutdown(self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}

impl Workload for BenchNode {
    async fn write(&self, payload: Bytes) -> Result<(), String> {
        self.propose(payload).await.map_err(|e| e.to_string())
    }
}
