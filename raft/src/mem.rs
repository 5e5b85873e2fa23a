//! Nodes in one process without the simulator: an in-memory network ([`MemNetwork`], whose
//! [`MemTransport`]s are the nodes' [`Transport`]s) and a state machine that keeps nothing
//! ([`NoopStateMachine`]). With [`MemStorage`](crate::storage::MemStorage) and a runtime
//! adapter they run a cluster inside one process: for tests, benchmarks of the library itself
//! and applications that replicate between threads.
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use raftkv_raft::mem::{MemNetwork, NoopStateMachine};
//! use raftkv_raft::runtime::tokio::TokioRuntime;
//! use raftkv_raft::storage::MemStorage;
//! use raftkv_raft::{Config, Node, NodeConfig};
//! use std::time::Duration;
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let network = MemNetwork::new();
//! let mut nodes = Vec::new();
//! for id in [1, 2, 3] {
//!     let config = NodeConfig::new(Config::new(id, [1, 2, 3]));
//!     let transport = network.transport(id);
//!     let sm = NoopStateMachine;
//!     let node = Node::start(TokioRuntime::current(), config, MemStorage::new(), transport, sm);
//!     nodes.push(node.await.unwrap());
//! }
//! let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await.unwrap();
//! let leader = &nodes[leader as usize - 1];
//! leader.propose("hello".into()).await.unwrap();
//! # for n in &nodes { n.shutdown().await; }
//! # });
//! # }
//! ```

use crate::driver::queue::{queue, QueueRx, QueueTx};
use crate::io::{StateMachine, Transport};
use crate::message::Message;
use crate::types::{Index, NodeId};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Messages waiting for one node by default; beyond them, messages to it are dropped (the
/// [`Transport`] contract: Raft retransmits).
pub const INBOX_MESSAGES_MAX: usize = 65_536;

/// An in-memory network: every node's inbox, by id. Cheap to clone; clones are the same
/// network.
#[derive(Clone)]
pub struct MemNetwork {
    inner: Arc<NetInner>,
}

struct NetInner {
    inboxes: RwLock<HashMap<NodeId, QueueTx<Message>>>,
    /// Bumped whenever `inboxes` changes, so that transports refresh their copy of it.
    version: AtomicU64,
    inbox_max: usize,
}

impl Default for MemNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemNetwork {
    /// A network whose inboxes hold at most [`INBOX_MESSAGES_MAX`] messages each.
    pub fn new() -> Self {
        Self::with_inbox_max(INBOX_MESSAGES_MAX)
    }

    /// A network whose inboxes hold at most `messages` messages each (at least one).
    pub fn with_inbox_max(messages: usize) -> Self {
        Self {
            inner: Arc::new(NetInner {
                inboxes: RwLock::new(HashMap::new()),
                version: AtomicU64::new(0),
                inbox_max: messages,
            }),
        }
    }

    /// The transport of node `id`. It replaces an earlier one of the same id (a node restarted
    /// in the same process): messages for `id` go to the new one from now on.
    pub fn transport(&self, id: NodeId) -> MemTransport {
        let (tx, rx) = queue(self.inner.inbox_max);
        let tx_own = tx.clone();
        self.inner
            .inboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.inner.version.fetch_add(1, Ordering::Release);
        MemTransport {
            net: self.inner.clone(),
            seen: u64::MAX,
            peers: HashMap::new(),
            _own: tx_own,
            inbox: rx,
        }
    }
}

/// One node's end of a [`MemNetwork`]: `send` puts a message in the addressee's inbox (or
/// drops it: unknown addressee, full inbox, stopped node); `recv` takes from this node's.
/// Dropping it (the node stopped) drops the messages sent to it from then on.
pub struct MemTransport {
    net: Arc<NetInner>,
    /// The network's version `peers` was copied at.
    seen: u64,
    /// A copy of the network's inboxes: sending reads no lock while the network is unchanged.
    peers: HashMap<NodeId, QueueTx<Message>>,
    /// Keeps the inbox open while this transport lives (`recv` never ends on its own).
    _own: QueueTx<Message>,
    inbox: QueueRx<Message>,
}

impl Transport for MemTransport {
    fn send(&mut self, msg: Message) {
        let version = self.net.version.load(Ordering::Acquire);
        if version != self.seen {
            let inboxes = self.net.inboxes.read().unwrap_or_else(|e| e.into_inner());
            self.peers = inboxes.clone();
            self.seen = version;
        }
        if let Some(inbox) = self.peers.get(&msg.to) {
            let _ = inbox.try_send(msg);
        }
    }

    /// Cancel safe: dropping the future loses no message.
    async fn recv(&mut self) -> Option<Message> {
        self.inbox.next().await
    }
}

/// A state machine that keeps nothing: every command and query answers `()`, and its snapshot
/// is empty. What a benchmark of the replication itself needs (openraft's benchmark applies to
/// the same), or an application that only needs the log's order.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopStateMachine;

impl StateMachine for NoopStateMachine {
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
