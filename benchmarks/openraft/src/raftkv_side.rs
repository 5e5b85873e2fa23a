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
use raftkv_raft::{
    Config, Entry, HardState, Index, Message, Node, NodeConfig, NodeId, Persisted, Role, Snapshot,
    StateMachine, Storage, StorageError, Transport, WriteOp,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
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

/// A leaner in-memory `Storage` than the library's `MemStorage`, for comparison (`--systems
/// raftkv-vecstore`): entries in a `VecDeque` (appends are at the tail, compaction at the head),
/// where `MemStorage` keeps a `BTreeMap` and calls `split_off` on every append. Same contract:
/// nothing is fsynced, a write is "durable" when it returns.
#[derive(Default)]
pub struct VecStorage {
    inner: Mutex<VecState>,
}

#[derive(Default)]
struct VecState {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: VecDeque<Entry>,
}

impl VecState {
    /// Drops stored entries at or after `index`.
    fn truncate_from(&mut self, index: Index) {
        if let Some(first) = self.entries.front().map(|e| e.index) {
            let keep = index.saturating_sub(first) as usize;
            self.entries.truncate(keep);
        }
    }

    /// Drops stored entries up to and including `index`.
    fn compact_to(&mut self, index: Index) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.entries.pop_front();
        }
    }
}

impl Storage for VecStorage {
    async fn load(&self) -> Result<Persisted, StorageError> {
        let st = self.inner.lock().map_err(|_| StorageError::Closed)?;
        Ok(Persisted {
            hard_state: st.hard_state,
            snapshot: st.snapshot.clone(),
            entries: st.entries.iter().cloned().collect(),
        })
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut st = self.inner.lock().map_err(|_| StorageError::Closed)?;
        for op in ops {
            match op {
                WriteOp::HardState(hs) => st.hard_state = hs,
                WriteOp::Append(entries) => {
                    if let Some(first) = entries.first() {
                        if st.entries.back().is_some_and(|l| l.index >= first.index) {
                            st.truncate_from(first.index);
                        }
                        st.entries.extend(entries);
                    }
                }
                WriteOp::InstallSnapshot(s) => {
                    let keep = st
                        .entries
                        .iter()
                        .find(|e| e.index == s.last.index)
                        .is_some_and(|e| e.term == s.last.term);
                    if keep {
                        st.compact_to(s.last.index);
                    } else {
                        st.entries.clear();
                    }
                    st.snapshot = Some(s);
                }
                WriteOp::SaveSnapshot(s) => st.snapshot = Some(s),
                WriteOp::CompactTo(c) => st.compact_to(c.index),
            }
        }
        Ok(())
    }
}

pub type BenchNode = Node<TokioRuntime, NoopSm>;

pub struct Cluster {
    pub nodes: Vec<BenchNode>,
    pub leader: BenchNode,
}

/// `vec_storage`: the bench's [`VecStorage`] instead of the library's `MemStorage`.
pub async fn start(vec_storage: bool) -> Cluster {
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
        let node = if vec_storage {
            Node::start(
                TokioRuntime::current(),
                config,
                VecStorage::default(),
                transport,
                NoopSm,
            )
            .await
        } else {
            Node::start(
                TokioRuntime::current(),
                config,
                MemStorage::new(),
                transport,
                NoopSm,
            )
            .await
        }
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
    async fn write(&self, payload: Bytes) -> Result<(), String> {
        self.propose(payload).await.map_err(|e| e.to_string())
    }
}
