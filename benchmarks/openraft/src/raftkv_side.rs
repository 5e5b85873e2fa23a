//! raftkv's side: three `raftkv_raft::Node`s on one tokio runtime, `MemStorage`, an in-process
//! channel transport and a state machine that does nothing, all through the public API.
//!
//! raftkv ships no in-memory transport outside its simulator, so [`ChanTransport`] is the
//! smallest one over the public `Transport` trait: one unbounded channel per node.

use crate::Workload;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Config, Index, Message, Node, NodeConfig, NodeId, Role, StateMachine, Transport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// An in-process network: `send` pushes onto the addressee's unbounded channel; `recv` pops
/// this node's (cancel safe: dropping `next()` loses nothing).
pub struct ChanTransport {
    peers: Arc<HashMap<NodeId, mpsc::UnboundedSender<Message>>>,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Transport for ChanTransport {
    fn send(&mut self, msg: Message) {
        if let Some(tx) = self.peers.get(&msg.to) {
            let _ = tx.unbounded_send(msg);
        }
    }

    async fn recv(&mut self) -> Option<Message> {
        self.rx.next().await
    }
}

/// The state machine of openraft's benchmark, in raftkv's terms: it keeps nothing.
pub struct NoopSm;

impl StateMachine for NoopSm {
    type Response = ();
    fn apply(&mut self, _index: Index, _command: &[u8]) {}
    fn query(&self, _query: &[u8]) {}
    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }
    fn restore(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

pub type BenchNode = Node<TokioRuntime, NoopSm>;

pub struct Cluster {
    pub nodes: Vec<BenchNode>,
    pub leader: BenchNode,
}

pub async fn start() -> Cluster {
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let mut txs = HashMap::new();
    let mut rxs = HashMap::new();
    for &id in &ids {
        let (tx, rx) = mpsc::unbounded();
        txs.insert(id, tx);
        rxs.insert(id, rx);
    }
    let peers = Arc::new(txs);
    let mut nodes = Vec::new();
    for &id in &ids {
        let config = NodeConfig::new(Config::new(id, ids.clone()));
        let transport = ChanTransport {
            peers: peers.clone(),
            rx: rxs.remove(&id).unwrap(),
        };
        let node = Node::start(
            TokioRuntime::current(),
            config,
            MemStorage::new(),
            transport,
            NoopSm,
        )
        .await
        .expect("raftkv node starts");
        nodes.push(node);
    }
    // The election takes 300–600 ms of ticks (defaults).
    let leader = loop {
        let mut found = None;
        for n in &nodes {
            if let Ok(s) = n.status().await {
                if s.role == Role::Leader {
                    found = Some(n.clone());
                }
            }
        }
        if let Some(l) = found {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
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
    async fn write(&self, payload: &Bytes) -> Result<(), String> {
        self.propose(payload.clone()).await.map_err(|e| e.to_string())
    }
}
