//! A three-node cluster of real [`Node`]s on the deterministic simulation runtime, for the
//! driver's request tests (`proposal_reuse`, `request_timeout`).

#![allow(dead_code)]

use bytes::Bytes;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Index, Node, NodeConfig, NodeId, Role, Runtime, StateMachine, Status};
use std::time::Duration;

/// Answers every command with its index.
pub struct Indexes;

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

pub type TestNode = Node<SimRuntime, Indexes>;

pub struct Cluster {
    pub rt: SimRuntime,
    pub net: SimNet,
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// Nodes 1, 2 and 3, all voters, with `request_timeout`.
    pub async fn start(rt: &SimRuntime, request_timeout: Duration) -> Self {
        Self::start_with(rt, |c| c.request_timeout = request_timeout).await
    }

    /// Nodes 1, 2 and 3, all voters, each configured by `configure`.
    pub async fn start_with(rt: &SimRuntime, configure: impl Fn(&mut NodeConfig)) -> Self {
        let net = SimNet::new(rt);
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let mut raft = Config::new(id, [1, 2, 3]);
            raft.seed = id;
            let mut config = NodeConfig::new(raft);
            configure(&mut config);
            let storage = SimStorage::new(rt, (0, 1));
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
        Self {
            rt: rt.clone(),
            net,
            nodes,
        }
    }

    pub fn node(&self, id: NodeId) -> TestNode {
        self.nodes[id as usize - 1].clone()
    }

    pub async fn status(&self, id: NodeId) -> Status {
        self.node(id).status().await.expect("the node runs")
    }

    /// Waits (virtual time, at most 10 s) until `done` holds for node `id`'s status.
    pub async fn wait_until(&self, id: NodeId, what: &str, done: impl Fn(&Status) -> bool) {
        let deadline = self.rt.now() + Duration::from_secs(10);
        loop {
            let s = self.status(id).await;
            if done(&s) {
                return;
            }
            assert!(self.rt.now() < deadline, "n{id}: {what} within 10 s: {s:?}");
            self.rt.sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first leader, once it leads.
    pub async fn leader(&self) -> NodeId {
        loop {
            self.rt.sleep(Duration::from_millis(20)).await;
            if let Some(l) = self.status(1).await.leader {
                if self.status(l).await.role == Role::Leader {
                    return l;
                }
            }
        }
    }

    pub async fn shutdown(&self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}
