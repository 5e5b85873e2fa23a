//! The three small traits the async driver is generic over — [`Runtime`], [`Storage`],
//! [`Transport`] — and the application's [`StateMachine`]. Each method states its concurrency
//! contract. Implementations: tokio and smol runtimes (features `tokio`, `smol`) and the
//! deterministic simulation runtime; memory storage here and LMDB in `raftkv-storage-lmdb`; a
//! simulated network here and TCP in `raftkv-transport-tcp`.

use crate::message::Message;
use crate::types::{Entry, HardState, Index, LogId, NodeId, Persisted, Snapshot};
use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// An async runtime: spawn, sleep, and a monotonic clock. Cheap to clone.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs `future` to completion in the background. It must not be dropped before it
    /// finishes unless the runtime shuts down.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes after `duration` (virtual time under simulation). The future owns what it
    /// needs: it may outlive `self`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// Monotonic time since an arbitrary origin fixed for this runtime.
    fn now(&self) -> Duration;

    /// Completes at the task's next turn, after the runtime has run the other tasks that are
    /// ready now. The default wakes the task at once and returns `Pending` once; a runtime
    /// whose scheduler would run such a task again straight away overrides it.
    fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut yielded = false;
        std::future::poll_fn(move |cx| {
            if yielded {
                return std::task::Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
    }
}

/// A runtime with a reactor for TCP (tokio, smol; not the simulator): the client server and
/// connector do their socket I/O as tasks on it instead of on threads of their own.
pub trait NetRuntime: Runtime {
    /// A connected socket registered with the runtime's reactor.
    type TcpStream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Hands a connected `std` socket to the reactor (it is made non-blocking). Callable from
    /// any thread, inside or outside the runtime.
    fn register(&self, stream: std::net::TcpStream) -> std::io::Result<Self::TcpStream>;
}

/// One operation of a durable write, applied in order within a [`Storage::write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Replace the stored term, vote and commit index.
    HardState(HardState),
    /// Append entries; stored entries at or after the first one's index are deleted first.
    Append(Vec<Entry>),
    /// A snapshot received from the leader: store it; drop stored entries up to `last`; if the
    /// stored entry at `last.index` has another term (or is missing), drop every stored entry.
    InstallSnapshot(Snapshot),
    /// A snapshot the application took of its own state: store it (entries stay).
    SaveSnapshot(Snapshot),
    /// Stored entries up to and including this one may be deleted.
    CompactTo(LogId),
}

/// An I/O error in storage. The node that sees one stops (fail-stop): an fsync that failed
/// cannot be retried safely.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored data failed verification; `index` is the entry it hit, if one.
    /// Issue 21 #6: the index is named only when there is one (never "at index None").
    #[error("storage corruption{}: {detail}", at_index(.index))]
    Corrupt {
        index: Option<Index>,
        detail: String,
    },
    #[error("storage is closed")]
    Closed,
}

/// " at index N" for a known index, nothing otherwise.
fn at_index(index: &Option<Index>) -> String {
    index.map(|i| format!(" at index {i}")).unwrap_or_default()
}

/// Durable Raft state: hard state, log entries, the latest snapshot (hashicorp's `LogStore` and
/// `StableStore` in one, at the size the core needs: it keeps the log since the last snapshot in
/// memory, so storage is read only at start-up).
///
/// Contract: writes are applied in the order `write` is called; a write that returned `Ok` is
/// durable (fsynced) and atomic — after a crash either all of its ops are visible or none. The
/// driver issues one `write` at a time per node and merges queued work into it (group commit).
///
/// One relaxation: a storage may make `SaveSnapshot` and `CompactTo` durable later than the
/// write that carried them (still in write order, a compaction never before the snapshot that
/// covers it). Losing them in a crash loses nothing: the log they would have replaced is still
/// there, and the node restarts from the older snapshot and that log.
pub trait Storage: Send + Sync + 'static {
    /// Everything durable, for a restart. Fails with `Corrupt` rather than returning a log with
    /// a silently dropped entry.
    fn load(&self) -> impl Future<Output = Result<Persisted, StorageError>> + Send;

    /// Applies `ops` in order, atomically and durably; completes once durable.
    fn write(&self, ops: Vec<WriteOp>) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// The network between nodes.
///
/// Contract: `send` never blocks and never fails loudly: a message that cannot be delivered
/// (peer down, queue full) is dropped, and Raft retransmits. `recv` yields inbound messages
/// addressed to this node, and `None` once the transport is closed; dropping its future must
/// not lose a message (cancel safety).
pub trait Transport: Send + 'static {
    fn send(&mut self, msg: Message);
    fn recv(&mut self) -> impl Future<Output = Option<Message>> + Send;

    /// The nodes this one may exchange messages with, by the configuration in effect (thesis
    /// §4: members of the latest configuration and of the one before it), each with the peer
    /// address the configuration records for it, or `""` if it records none (keep the address
    /// the transport was configured with). The driver calls it when the node starts and
    /// whenever that set changes, so that a transport can reach members added since it
    /// started and let go of removed ones. The default ignores it (a static transport).
    fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        let _ = peers;
    }
}

/// The application's deterministic state machine, replicated by Raft.
///
/// Contract: `apply` is called once per committed command, in log order, on every node;
/// applying the same commands from the same state must give the same state and responses.
/// `query` reads without changing state (served for linearizable reads once the node has
/// applied everything committed before the read). `snapshot` and `restore` round-trip.
pub trait StateMachine: Send + 'static {
    type Response: Send + 'static;

    fn apply(&mut self, index: Index, command: &[u8]) -> Self::Response;

    fn query(&self, query: &[u8]) -> Self::Response;

    fn snapshot(&self) -> Bytes;

    fn restore(&mut self, data: &[u8]) -> Result<(), String>;
}
