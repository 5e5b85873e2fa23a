//! [`Node`]: a handle to a running Raft node.

use super::error::{NodeError, ReconfigError};
use super::event_loop::EventLoop;
use super::observer::ObserverHandle;
use super::queue::{queue, QueueError, QueueTx};
use super::resume::resume;
use super::storage_task::{Closing, Writer};
use crate::config::{Config, ConfigError, InvalidConfig};
use crate::io::{Runtime, StateMachine, Storage, Transport};
use crate::membership::{MemberChange, Membership};
use crate::raft::BusyReason;
use crate::types::{Index, NodeId, Status, Term};
use crate::Raft;
use bytes::Bytes;
use futures::channel::oneshot;
use std::time::Duration;

/// How a node runs, beyond the core's [`Config`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: Config,
    /// Wall (or virtual) time per core tick.
    pub tick: Duration,
    /// Take a snapshot once this many entries were applied since the last one...
    pub snapshot_threshold_entries: u64,
    /// ...or once this many command bytes were applied since the last one.
    pub snapshot_threshold_bytes: u64,
    /// Issue 20, the trailing log: at most this many entries are kept before the point a
    /// compaction would otherwise reach, so that a follower that is only a little behind
    /// catches up from the log instead of a whole-state snapshot (etcd keeps 5,000 behind its
    /// snapshots). 0: none kept. See the driver's `event_loop::snapshot` module for how each
    /// kind of state machine keeps them. At most [`TRAILING_LOG_ENTRIES_MAX`].
    pub trailing_log_entries: u64,
    /// ...and at most this many bytes of them (entries may be up to `entry_bytes_max` each;
    /// the kept entries are held in memory and in storage), and never more than
    /// `snapshot_threshold_bytes`. At most [`TRAILING_LOG_BYTES_MAX`].
    pub trailing_log_bytes: u64,
    /// Proposals and reads waiting to enter the event loop (beyond it: `Busy`).
    pub request_queue_max: usize,
    /// How long `propose`, `linearizable_read`, `change_membership` and `transfer_leader`
    /// wait for an answer before `Timeout`. The event loop checks deadlines at each tick, so a
    /// request fails at most about one tick later than this.
    pub request_timeout: Duration,
    /// Receives the node's events ([`super::observer`]); `None` (the default): no events, at
    /// the cost of one branch where each would be emitted.
    pub observer: Option<ObserverHandle>,
}

impl NodeConfig {
    pub fn new(raft: Config) -> Self {
        Self {
            raft,
            tick: Duration::from_millis(10),
            snapshot_threshold_entries: 10_000,
            snapshot_threshold_bytes: 64 << 20,
            trailing_log_entries: 5_000,
            trailing_log_bytes: 16 << 20,
            request_queue_max: 65_536,
            request_timeout: Duration::from_secs(5),
            observer: None,
        }
    }

    /// Checks what the core's [`Config::validate`] does not: the trailing log's bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value, max) in [
            (
                "trailing_log_entries",
                self.trailing_log_entries,
                TRAILING_LOG_ENTRIES_MAX,
            ),
            (
                "trailing_log_bytes",
                self.trailing_log_bytes,
                TRAILING_LOG_BYTES_MAX,
            ),
        ] {
            if value > max {
                return Err(ConfigError::Invalid(InvalidConfig::TooLarge {
                    field,
                    value,
                    max,
                }));
            }
        }
        self.raft.validate()
    }
}

/// The most entries [`NodeConfig::trailing_log_entries`] may keep.
pub const TRAILING_LOG_ENTRIES_MAX: u64 = 10_000_000;
/// The most bytes [`NodeConfig::trailing_log_bytes`] may keep: the tail is held in memory.
pub const TRAILING_LOG_BYTES_MAX: u64 = 1 << 30;

/// What `status()` reports.
pub type NodeStatus = Status;

/// Where a request's answer goes, and when the request times out: `deadline` is on the node's
/// runtime clock ([`Runtime::now`]). The event loop fails it with `Timeout` at its first tick
/// at or past the deadline; no timer is armed per request.
pub(super) struct Call<T> {
    reply: oneshot::Sender<T>,
    pub(super) deadline: Duration,
}

impl<T> Call<T> {
    /// Answers the caller (who may have stopped waiting: then nothing happens).
    pub(super) fn send(self, answer: T) {
        let _ = self.reply.send(answer);
    }
}

impl<T, E: From<NodeError>> Call<Result<T, E>> {
    pub(super) fn fail(self, e: NodeError) {
        self.send(Err(e.into()))
    }
}

pub(super) type Reply<R> = Call<Result<R, NodeError>>;
pub(super) type ReconfigReply<R> = Call<Result<R, ReconfigError>>;

pub(super) enum Request<R> {
    Propose(Bytes, Reply<R>),
    Read(Bytes, Reply<R>),
    Status(oneshot::Sender<Status>),
    Change(Vec<MemberChange>, ReconfigReply<Membership>),
    Transfer(NodeId, ReconfigReply<()>),
    WaitLeader(Call<Result<NodeId, NodeError>>),
    Shutdown,
}

/// A membership change waiting to complete: its entry, and whether that entry (a joint
/// configuration) was applied and the change now waits for C_new.
pub(super) struct PendingChange {
    pub(super) index: Index,
    pub(super) term: Term,
    pub(super) joint_applied: bool,
    pub(super) reply: ReconfigReply<Membership>,
}

/// A handle to a running node. Cheap to clone; every clone talks to the same node.
pub struct Node<R: Runtime, M: StateMachine> {
    runtime: R,
    requests: QueueTx<Request<M::Response>>,
    timeout: Duration,
}

impl<R: Runtime, M: StateMachine> Clone for Node<R, M> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            requests: self.requests.clone(),
            timeout: self.timeout,
        }
    }
}

impl<R: Runtime, M: StateMachine> Node<R, M> {
    /// Starts a node: loads what `storage` holds, restores `state_machine` from its snapshot
    /// (or resumes from the state a durable `state_machine` kept: [`StateMachine::applied`]),
    /// and spawns the node's tasks on `runtime`.
    pub async fn start<S: Storage, T: Transport>(
        runtime: R,
        config: NodeConfig,
        storage: S,
        transport: T,
        mut state_machine: M,
    ) -> Result<Self, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let storage = Closing::new(runtime.clone(), storage);
        let persisted = storage.load().await.map_err(NodeError::Storage)?;
        let (persisted, held) = resume(&mut state_machine, &*storage, persisted).await?;
        let mut raft = Raft::restore(config.raft.clone(), persisted).map_err(NodeError::Config)?;
        // Issue 20: a state machine that keeps its own state is its own snapshot.
        if state_machine
            .make_durable()
            .map_err(NodeError::Storage)?
            .is_some()
        {
            raft.snapshots_on_demand();
        }
        if let Some(index) = held {
            raft.resume_applied(index).map_err(|e| {
                NodeError::Config(ConfigError::Snapshot {
                    last: crate::types::LogId::new(index, raft.term_at(index).unwrap_or(0)),
                    reason: e.to_string(),
                })
            })?;
        }
        let (req_tx, req_rx) = queue(config.request_queue_max);
        let event_loop = EventLoop::new(
            runtime.clone(),
            &config,
            raft,
            state_machine,
            transport,
            req_rx,
            Writer::new(storage),
        );
        runtime.spawn(event_loop.run());
        Ok(Self {
            runtime,
            requests: req_tx,
            timeout: config.request_timeout,
        })
    }

    /// Proposes `command`; resolves with the state machine's response once it is applied here.
    pub async fn propose(&self, command: Bytes) -> Result<M::Response, NodeError> {
        self.request(|tx| Request::Propose(command, tx)).await
    }

    /// A linearizable read (thesis §6.4, ReadIndex): `query` runs against the state machine once
    /// it has applied everything committed before this call.
    pub async fn linearizable_read(&self, query: Bytes) -> Result<M::Response, NodeError> {
        self.request(|tx| Request::Read(query, tx)).await
    }

    /// Changes the cluster's membership (several changes at once are fine; thesis §4.3, joint
    /// consensus). This node must lead. Resolves with the new configuration once it is
    /// committed and applied here (after C_old,new, the configuration C_new the leader appends
    /// by itself). A refusal says why ([`MembershipError`](crate::MembershipError)); `Node(Timeout)` leaves the
    /// outcome unknown (look at [`Node::status`]).
    pub async fn change_membership(
        &self,
        changes: Vec<MemberChange>,
    ) -> Result<Membership, ReconfigError> {
        self.call(|tx| Request::Change(changes, tx)).await?
    }

    /// Hands leadership to voter `target` (thesis §3.10). This node must lead; it takes no
    /// proposals meanwhile. Resolves once this node sees `target` lead; fails with
    /// `Node(Timeout)` if the transfer was abandoned (after an election timeout) or the
    /// request timed out, `Node(NotLeader)` if another node took over.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ReconfigError> {
        self.call(|tx| Request::Transfer(target, tx)).await?
    }

    /// The leader this node knows of (itself if it leads), as soon as it knows one: at once
    /// if it does. Fails with `Timeout` if it learns of none within `timeout`, `Shutdown` if
    /// the node stops. For a caller that needs the leader (after start, after a failure)
    /// without polling [`Node::status`]; the answer may be stale by the time it arrives, as
    /// any leader hint may (a proposal then fails with `NotLeader` and its hint).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        self.call_within(timeout, Request::WaitLeader).await?
    }

    /// The node's current status.
    pub async fn status(&self) -> Result<Status, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Status(tx))?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// Stops the node: its tasks end, pending requests fail with `Shutdown`.
    pub async fn shutdown(&self) {
        let _ = self.requests.send_always(Request::Shutdown);
    }

    async fn request(
        &self,
        make: impl FnOnce(Reply<M::Response>) -> Request<M::Response>,
    ) -> Result<M::Response, NodeError> {
        self.call(make).await?
    }

    /// Sends a request to the event loop and waits for its answer. The event loop answers
    /// `Timeout` once the request timeout has passed ([`Call`]), `Shutdown` if it stops.
    async fn call<T>(
        &self,
        make: impl FnOnce(Call<T>) -> Request<M::Response>,
    ) -> Result<T, NodeError> {
        self.call_within(self.timeout, make).await
    }

    /// [`Self::call`] with a timeout of its own.
    async fn call_within<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(Call<T>) -> Request<M::Response>,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let deadline = self.runtime.now().saturating_add(timeout);
        let call = Call {
            reply: tx,
            deadline,
        };
        self.send(make(call))?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// Queues `request` for the event loop: `Busy` if `request_queue_max` requests wait there.
    fn send(&self, request: Request<M::Response>) -> Result<(), NodeError> {
        self.requests.try_send(request).map_err(|e| match e {
            QueueError::Full => NodeError::Busy(BusyReason::RequestQueueFull),
            QueueError::Closed => NodeError::Shutdown,
        })
    }
}
