//! The three small traits the async driver is generic over — [`Runtime`], [`Storage`],
//! [`Transport`] — and the application's [`StateMachine`]. Each method states its concurrency
//! contract. Implementations: tokio and smol runtimes (features `tokio`, `smol`) and the
//! deterministic simulation runtime; memory storage here and LMDB in `raftkv-storage-lmdb`; a
//! simulated network here and TCP in `raftkv-transport-tcp`.

use crate::membership::Membership;
use crate::message::Message;
pub use crate::spool::SnapshotSpool;
use crate::types::{Entry, HardState, Index, LogId, NodeId, Persisted, Snapshot};
use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

    /// Runs `f`, which may block (join a thread, fsync, close files), where it cannot stall
    /// this runtime's tasks: their timers (a Clerk's deadline among them) keep firing. The
    /// default runs it on a new thread (on the calling thread only if none can be started); a
    /// runtime with a pool for blocking work overrides it, the simulator runs it inline.
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
        let theirs = slot.clone();
        let started = std::thread::Builder::new()
            .name("raftkv-blocking".into())
            .spawn(move || {
                let f = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(f) = f {
                    f();
                }
            });
        if started.is_err() {
            let f = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(f) = f {
                f();
            }
        }
    }

    /// A handle on the same runtime whose tasks (those spawned through it or its clones) are
    /// polled only while `gate` is open: pausing the gate stops them as SIGSTOP stops a
    /// process (a fault for in-process cluster tests). `None` if this runtime cannot (the
    /// default; the simulator pauses task groups instead).
    fn with_pause_gate(&self, gate: crate::runtime::pause::PauseGate) -> Option<Self> {
        let _ = gate;
        None
    }

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

/// An error in storage. The node that sees one stops (fail-stop): an fsync that failed
/// cannot be retried safely. Every variant says what failed and where.
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system call failed: `op` on `path` (empty when the storage has no path,
    /// e.g. before it knows its directory).
    #[error("storage I/O error: {op}{}: {source}", on_path(.path))]
    Io {
        /// What was being done ("fsync", "open lock file", "LMDB write", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error, with its kind. Shared so that the error stays `Clone`.
        source: Arc<std::io::Error>,
    },
    /// The store's memory map is full and may not grow further.
    #[error(
        "storage full: the LMDB map{} holds {map_bytes} bytes, its bound \
         (map_size_bytes_max) is {map_bytes_max}; raise the bound or take a snapshot sooner",
        on_path(.path)
    )]
    MapFull {
        /// The store's directory.
        path: PathBuf,
        /// The map's size when it filled.
        map_bytes: usize,
        /// The configured bound it may not grow past.
        map_bytes_max: usize,
    },
    /// No space is left on the device for the write-ahead log's next segment.
    #[error(
        "no space left on the device for the WAL in {}: its next segment needs at least \
         {need_bytes} bytes free ({segment_bytes} normally); free some space, then restart the \
         node",
        .dir.display()
    )]
    NoSpace {
        /// The WAL's directory.
        dir: PathBuf,
        /// The least free space the next segment needs.
        need_bytes: u64,
        /// A segment's normal size.
        segment_bytes: u64,
    },
    /// The write itself is invalid: storing it would leave a log that cannot be loaded (a gap,
    /// a term going back) or a record over a bound. A bug in the caller, refused before
    /// anything is written.
    #[error("storage write rejected{}: {reason}", on_path(.path))]
    Rejected {
        /// The store's directory.
        path: PathBuf,
        /// What is wrong with the write.
        reason: String,
    },
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

impl StorageError {
    /// An [`StorageError::Io`] error: `op` on `path` failed with `source`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// The same error, located in `dir` if it names no path yet.
    pub fn in_dir(self, dir: &Path) -> Self {
        let fill = |path: PathBuf| {
            if path.as_os_str().is_empty() {
                dir.to_path_buf()
            } else {
                path
            }
        };
        match self {
            Self::Io { op, path, source } => Self::Io {
                op,
                path: fill(path),
                source,
            },
            Self::MapFull {
                path,
                map_bytes,
                map_bytes_max,
            } => Self::MapFull {
                path: fill(path),
                map_bytes,
                map_bytes_max,
            },
            Self::Rejected { path, reason } => Self::Rejected {
                path: fill(path),
                reason,
            },
            other => other,
        }
    }
}

/// I/O errors compare by kind and message (`std::io::Error` is not `PartialEq`).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Io {
                    op: a_op,
                    path: a_path,
                    source: a,
                },
                Self::Io {
                    op: b_op,
                    path: b_path,
                    source: b,
                },
            ) => {
                a_op == b_op
                    && a_path == b_path
                    && a.kind() == b.kind()
                    && a.to_string() == b.to_string()
            }
            (
                Self::MapFull {
                    path: a,
                    map_bytes: a_bytes,
                    map_bytes_max: a_max,
                },
                Self::MapFull {
                    path: b,
                    map_bytes: b_bytes,
                    map_bytes_max: b_max,
                },
            ) => a == b && a_bytes == b_bytes && a_max == b_max,
            (
                Self::NoSpace {
                    dir: a,
                    need_bytes: a_need,
                    segment_bytes: a_seg,
                },
                Self::NoSpace {
                    dir: b,
                    need_bytes: b_need,
                    segment_bytes: b_seg,
                },
            ) => a == b && a_need == b_need && a_seg == b_seg,
            (
                Self::Rejected {
                    path: a,
                    reason: a_why,
                },
                Self::Rejected {
                    path: b,
                    reason: b_why,
                },
            ) => a == b && a_why == b_why,
            (
                Self::Corrupt {
                    index: a,
                    detail: a_detail,
                },
                Self::Corrupt {
                    index: b,
                    detail: b_detail,
                },
            ) => a == b && a_detail == b_detail,
            (Self::Closed, Self::Closed) => true,
            _ => false,
        }
    }
}

impl Eq for StorageError {}

/// " at index N" for a known index, nothing otherwise.
fn at_index(index: &Option<Index>) -> String {
    index.map(|i| format!(" at index {i}")).unwrap_or_default()
}

/// " <path>" for a known path, nothing for an empty one.
fn on_path(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" {}", path.display())
    }
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

    /// Applies `ops` in order, atomically and durably; completes once durable. The node's
    /// event loop polls this future among its other events: it must not block the thread
    /// (blocking work goes to a thread of its own, as `LmdbStorage`'s fsyncs do).
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

/// Issue 20: a snapshot read that runs off the event loop (on [`Runtime::spawn_blocking`]):
/// built on the loop, cheaply, from a consistent view of the state
/// ([`StateMachine::snapshot_read`]); it returns the index of the last entry the state it read
/// covers, and the state's bytes ([`StateMachine::snapshot`]'s layout). An error stops the node.
pub type SnapshotRead = Box<dyn FnOnce() -> Result<(Index, Bytes), StorageError> + Send + 'static>;

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

    /// [`StateMachine::snapshot`] for a state machine whose state is read from a store that
    /// may fail: the driver takes snapshots with it, and stops the node on an error instead of
    /// storing a wrong snapshot. The default cannot fail.
    fn try_snapshot(&self) -> Result<Bytes, StorageError> {
        Ok(self.snapshot())
    }

    /// Issue 20: a snapshot read to run off the event loop, so that a large state's encoding
    /// (or a durable state's full scan) never stalls the node's heartbeats. Built on the loop
    /// from a consistent view of the state (a cheap copy of an in-memory map, a durable
    /// store's committed state), it may run on another thread while the state machine keeps
    /// applying. `applied` is the last entry applied to the state machine now; the read says
    /// which entry the state it read is at: `applied`, or for a durable state an earlier one
    /// it has committed, never one before the log's compaction point (the log is compacted
    /// only up to a durable position). The driver uses it both to compact the log and to
    /// answer a follower's need of a snapshot, at most one at a time.
    ///
    /// `None` (the default): the driver reads [`StateMachine::try_snapshot`] on the loop.
    fn snapshot_read(&self, applied: Index) -> Option<SnapshotRead> {
        let _ = applied;
        None
    }

    /// Issue 20: a new, empty spool for a snapshot of this state machine: the one a follower
    /// receives from its leader is written to it chunk by chunk, then restored from it
    /// ([`StateMachine::restore_snapshot`]). The default keeps it in memory; a state machine
    /// whose state is larger than memory puts it in a file.
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::new(Vec::new()))
    }

    /// A state machine that keeps its state across a restart (a durable one) says here which
    /// entry its state is at — the last one applied to it, with the configuration in effect at
    /// it — so that the driver resumes from there instead of restoring the stored snapshot
    /// and applying the log again. `None` (the default): the state is empty at start (an
    /// in-memory state machine).
    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(None)
    }

    /// The entries through `last` were applied (`membership`: the configuration in effect at
    /// `last`): called after each batch of committed entries. A durable state machine records
    /// `last` with the batch's changes, in one transaction. An error stops the node.
    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        let _ = (last, membership);
        Ok(())
    }

    /// [`StateMachine::restore`] from a snapshot the node received or stored: a durable state
    /// machine records `snapshot.last` and its configuration with the data, in one transaction,
    /// made durable before it returns (even across a power cut: with
    /// [`StateMachine::make_durable`] the node then stores only the snapshot's metadata).
    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.restore(&snapshot.data)
    }

    /// Issue 20: a state machine that keeps its own state durably commits what it applied
    /// and makes it durable — so that it survives a crash and a power cut — and returns the
    /// entry its state is now at (0@0 if none yet). Its state is then its own snapshot: the
    /// driver compacts the log up to that entry and stores only the snapshot's metadata, and
    /// reads the state ([`StateMachine::try_snapshot`]) only when a follower needs it. The
    /// driver calls it at start and whenever the log is to be compacted.
    ///
    /// `None` (the default): the state machine keeps nothing across a restart (an in-memory
    /// one), and the driver compacts by storing a copy of its state
    /// ([`StateMachine::try_snapshot`]). A state machine that says where it is
    /// ([`StateMachine::applied`]) must answer `Some`.
    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(None)
    }

    /// Issue 20: [`StateMachine::make_durable`] without blocking, for the event loop: returns
    /// the entry the state is durable at already (across a crash and a power cut: at or behind
    /// the last one applied) and, if that is not past `past` (the stored snapshot's entry),
    /// starts making what was applied durable, in the background, unless that is under way.
    /// The driver compacts the log up to the entry returned once it is past the stored
    /// snapshot, and asks again after later batches until it is. The default blocks
    /// ([`StateMachine::make_durable`]).
    fn start_durable(&mut self, past: Index) -> Result<Option<LogId>, StorageError> {
        let _ = past;
        self.make_durable()
    }
}
