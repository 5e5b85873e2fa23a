//! [`Node`]: a handle to a running Raft node, and its event loop.

use crate::config::{Config, ConfigError};
use crate::io::{Runtime, StateMachine, Storage, StorageError, Transport, WriteOp};
use crate::membership::{MemberChange, Membership, MembershipError};
use crate::message::Message;
use crate::raft::{BusyReason, Error as RaftError};
use crate::types::{Index, LogId, NodeId, Payload, Role, Snapshot, Status, Term};
use crate::Raft;
use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{pin_mut, select_biased, FutureExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use thiserror::Error;

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
    /// Proposals and reads waiting to enter the event loop (beyond it: `Busy`).
    pub request_queue_max: usize,
    /// How long `propose` and `read` wait for an answer before `Timeout`.
    pub request_timeout: Duration,
}

impl NodeConfig {
    pub fn new(raft: Config) -> Self {
        Self {
            raft,
            tick: Duration::from_millis(10),
            snapshot_threshold_entries: 10_000,
            snapshot_threshold_bytes: 64 << 20,
            request_queue_max: 65_536,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a request to a node failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// This node does not lead; `leader_hint` is who it believes does.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// No answer within the request timeout: the command may or may not be applied.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// Leadership changed after the command was proposed, and this node cannot tell whether
    /// it was committed (it learned the log from a snapshot).
    #[error("leadership changed; the outcome is unknown")]
    OutcomeUnknown,
    /// Backpressure: too many requests or uncommitted bytes; retry shortly.
    #[error("busy: {0}")]
    Busy(BusyReason),
    #[error("proposal of {0} bytes is too large")]
    TooLarge(usize),
    /// The node has stopped (shut down, or stopped itself after a storage error).
    #[error("node is shut down")]
    Shutdown,
    /// Storage failed; the node stopped (fail-stop).
    #[error("storage failed, node stopped: {0}")]
    Storage(StorageError),
    #[error("invalid configuration or persisted state: {0}")]
    Config(#[source] ConfigError),
}

/// Why a membership change or a leadership transfer failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconfigError {
    /// The leader refused it; the error says why and what to do.
    #[error(transparent)]
    Refused(#[from] MembershipError),
    /// The node could not carry it out: not the leader, no answer in time (the transfer was
    /// abandoned, or the change's outcome is unknown), shut down.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// What `status()` reports.
pub type NodeStatus = Status;

type Reply<R> = oneshot::Sender<Result<R, NodeError>>;
type ReconfigReply<R> = oneshot::Sender<Result<R, ReconfigError>>;

enum Request<R> {
    Propose(Bytes, Reply<R>),
    Read(Bytes, Reply<R>),
    Status(oneshot::Sender<Status>),
    Change(Vec<MemberChange>, ReconfigReply<Membership>),
    Transfer(NodeId, ReconfigReply<()>),
    Shutdown,
}

/// A membership change waiting to complete: its entry, and whether that entry (a joint
/// configuration) was applied and the change now waits for C_new.
struct PendingChange {
    index: Index,
    term: Term,
    joint_applied: bool,
    reply: ReconfigReply<Membership>,
}

/// A handle to a running node. Cheap to clone; every clone talks to the same node.
pub struct Node<R: Runtime, M: StateMachine> {
    runtime: R,
    requests: mpsc::Sender<Request<M::Response>>,
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
    /// Starts a node: loads what `storage` holds, restores `state_machine` from its snapshot,
    /// and spawns the node's tasks on `runtime`.
    pub async fn start<S: Storage, T: Transport>(
        runtime: R,
        config: NodeConfig,
        storage: S,
        transport: T,
        mut state_machine: M,
    ) -> Result<Self, NodeError> {
        let persisted = storage.load().await.map_err(NodeError::Storage)?;
        if let Some(s) = &persisted.snapshot {
            state_machine.restore(&s.data).map_err(|reason| {
                NodeError::Config(ConfigError::Snapshot {
                    last: s.last,
                    reason,
                })
            })?;
        }
        let raft = Raft::restore(config.raft.clone(), persisted).map_err(NodeError::Config)?;
        let (req_tx, req_rx) = mpsc::channel(config.request_queue_max);
        let (job_tx, job_rx) = mpsc::unbounded();
        let (done_tx, done_rx) = mpsc::unbounded();
        runtime.spawn(storage_task(storage, job_rx, done_tx));
        let event_loop = EventLoop {
            runtime: runtime.clone(),
            tick: config.tick,
            snapshot_threshold: config.snapshot_threshold_entries.max(1),
            snapshot_threshold_bytes: config.snapshot_threshold_bytes.max(1),
            bytes_since_snapshot: 0,
            raft,
            sm: state_machine,
            transport,
            requests: req_rx,
            jobs: job_tx,
            done: done_rx,
            writes_in_flight: 0,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            next_read_id: 1,
            changes: Vec::new(),
            transfers: Vec::new(),
            peers_key: None,
            stopped: None,
        };
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
    /// by itself). A refusal says why ([`MembershipError`]); `Node(Timeout)` leaves the
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

    /// The node's current status.
    pub async fn status(&self) -> Result<Status, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .clone()
            .try_send(Request::Status(tx))
            .map_err(|_| NodeError::Shutdown)?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// Stops the node: its tasks end, pending requests fail with `Shutdown`.
    pub async fn shutdown(&self) {
        let _ = self.requests.clone().try_send(Request::Shutdown);
    }

    async fn request(
        &self,
        make: impl FnOnce(Reply<M::Response>) -> Request<M::Response>,
    ) -> Result<M::Response, NodeError> {
        self.call(make).await?
    }

    /// Sends a request to the event loop and waits for its answer, at most the request
    /// timeout.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request<M::Response>,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        match self.requests.clone().try_send(make(tx)) {
            Ok(()) => {}
            Err(e) if e.is_full() => return Err(NodeError::Busy(BusyReason::RequestQueueFull)),
            Err(_) => return Err(NodeError::Shutdown),
        }
        let answer = rx.fuse();
        let deadline = self.runtime.sleep(self.timeout).fuse();
        pin_mut!(answer, deadline);
        select_biased! {
            r = answer => r.map_err(|_| NodeError::Shutdown),
            _ = deadline => Err(NodeError::Timeout),
        }
    }
}

/// A write for the storage task, and what to do once it is durable.
struct Job {
    ops: Vec<WriteOp>,
    token: Option<LogId>,
    after: Vec<Message>,
}

/// What a finished write releases.
struct Done {
    tokens: Vec<LogId>,
    after: Vec<Message>,
    jobs: usize,
}

/// Performs writes one at a time; everything queued while one is in flight becomes the next
/// write (group commit). Stops at the first error (fail-stop).
async fn storage_task<S: Storage>(
    storage: S,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Result<Done, StorageError>>,
) {
    while let Some(first) = jobs.next().await {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let count = batch.len();
        let mut ops = Vec::new();
        let mut finished = Done {
            tokens: Vec::new(),
            after: Vec::new(),
            jobs: count,
        };
        for job in batch {
            ops.extend(job.ops);
            finished.tokens.extend(job.token);
            finished.after.extend(job.after);
        }
        if !ops.is_empty() {
            if let Err(e) = storage.write(ops).await {
                let _ = done.unbounded_send(Err(e));
                return;
            }
        }
        if done.unbounded_send(Ok(finished)).is_err() {
            return;
        }
    }
}

enum Event<R> {
    Message(Message),
    Request(Request<R>),
    Tick,
    Durable(Result<Done, StorageError>),
    TransportClosed,
    RequestsClosed,
}

struct EventLoop<R: Runtime, M: StateMachine, T: Transport> {
    runtime: R,
    tick: Duration,
    snapshot_threshold: u64,
    snapshot_threshold_bytes: u64,
    /// Command bytes applied since the last snapshot.
    bytes_since_snapshot: u64,
    raft: Raft,
    sm: M,
    transport: T,
    requests: mpsc::Receiver<Request<M::Response>>,
    jobs: mpsc::UnboundedSender<Job>,
    done: mpsc::UnboundedReceiver<Result<Done, StorageError>>,
    writes_in_flight: usize,
    /// Proposals waiting to be applied: index → (term, reply).
    proposals: BTreeMap<Index, (Term, Reply<M::Response>)>,
    /// Reads waiting for confirmation: read id → (query, reply).
    reads: HashMap<u64, (Bytes, Reply<M::Response>)>,
    next_read_id: u64,
    /// Membership changes waiting to complete.
    changes: Vec<PendingChange>,
    /// Leadership transfers waiting for their target to lead.
    transfers: Vec<(NodeId, ReconfigReply<()>)>,
    /// What the transport was last told of the peers: (configuration entry, its term,
    /// snapshot point); `None` before the first call.
    peers_key: Option<(Index, Option<Term>, Index)>,
    /// Why the node stopped, once it has.
    stopped: Option<NodeError>,
}

/// At most this many already-queued events are taken before the next `Ready`, so that one
/// `Ready` (one write, one Append per follower) covers many of them.
const EVENTS_PER_READY_MAX: usize = 256;

impl<R: Runtime, M: StateMachine, T: Transport> EventLoop<R, M, T> {
    async fn run(mut self) {
        self.update_peers();
        let mut next_tick = self.runtime.now() + self.tick;
        while self.stopped.is_none() {
            let event = self.next_event(next_tick).await;
            // Let the tasks that are ready now (connections with requests, say) run first:
            // what they send joins this turn's `Ready`, instead of each waking the loop for
            // a `Ready` of its own.
            self.runtime.yield_now().await;
            let mut handled = 0;
            let mut event = Some(event);
            while let Some(e) = event.take() {
                if let Event::Tick = e {
                    next_tick += self.tick;
                    // After a stall, do not replay missed ticks in a burst.
                    next_tick = next_tick.max(self.runtime.now());
                }
                self.handle(e);
                handled += 1;
                if handled < EVENTS_PER_READY_MAX && self.stopped.is_none() {
                    event = self.poll_event_now();
                }
            }
            self.process_ready();
        }
        self.fail_all();
    }

    /// Waits for the next event.
    async fn next_event(&mut self, next_tick: Duration) -> Event<M::Response> {
        let wait = next_tick.saturating_sub(self.runtime.now());
        let done = self.done.next().fuse();
        let req = self.requests.next().fuse();
        let msg = self.transport.recv().fuse();
        let tick = self.runtime.sleep(wait).fuse();
        pin_mut!(done, req, msg, tick);
        select_biased! {
            d = done => d.map_or(Event::Durable(Err(StorageError::Closed)), Event::Durable),
            m = msg => m.map_or(Event::TransportClosed, Event::Message),
            r = req => r.map_or(Event::RequestsClosed, Event::Request),
            _ = tick => Event::Tick,
        }
    }

    /// An event that is already waiting, if any (never a tick).
    fn poll_event_now(&mut self) -> Option<Event<M::Response>> {
        if let Ok(d) = self.done.try_recv() {
            return Some(Event::Durable(d));
        }
        if let Some(m) = self.transport.recv().now_or_never() {
            return Some(m.map_or(Event::TransportClosed, Event::Message));
        }
        self.requests.try_recv().ok().map(Event::Request)
    }

    fn handle(&mut self, event: Event<M::Response>) {
        match event {
            Event::Message(m) => self.raft.step(m),
            Event::Tick => self.raft.tick(),
            Event::Request(r) => self.handle_request(r),
            Event::Durable(Ok(done)) => {
                self.writes_in_flight -= done.jobs;
                for m in done.after {
                    self.transport.send(m);
                }
                for t in done.tokens {
                    self.raft.persisted(t);
                }
            }
            Event::Durable(Err(e)) => {
                tracing::error!(node = self.raft.id(), error = %e, "storage failed: stopping the node");
                self.stopped = Some(NodeError::Storage(e));
            }
            Event::TransportClosed | Event::RequestsClosed => {
                self.stopped = Some(NodeError::Shutdown);
            }
        }
    }

    fn handle_request(&mut self, request: Request<M::Response>) {
        match request {
            Request::Propose(cmd, reply) => match self.raft.propose(cmd) {
                Ok(index) => {
                    let term = self.raft.term();
                    self.proposals.insert(index, (term, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(from_raft(e)));
                }
            },
            Request::Read(query, reply) => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.raft.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, (query, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(from_raft(e)));
                    }
                }
            }
            Request::Status(reply) => {
                let _ = reply.send(self.raft.status());
            }
            Request::Change(changes, reply) => match self.raft.propose_change(&changes) {
                Ok(index) => self.changes.push(PendingChange {
                    index,
                    term: self.raft.term(),
                    joint_applied: false,
                    reply,
                }),
                Err(MembershipError::NotLeader { leader_hint }) => {
                    let _ = reply.send(Err(NodeError::NotLeader { leader_hint }.into()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Request::Transfer(target, reply) => match self.raft.transfer_leader(target) {
                Ok(()) => self.transfers.push((target, reply)),
                Err(MembershipError::NotLeader { leader_hint }) => {
                    let _ = reply.send(Err(NodeError::NotLeader { leader_hint }.into()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Request::Shutdown => self.stopped = Some(NodeError::Shutdown),
        }
    }

    /// Tells the transport the peers of the configuration in effect, when they changed.
    fn update_peers(&mut self) {
        let index = self.raft.membership_index();
        let key = (index, self.raft.term_at(index), self.raft.snapshot_index());
        if self.peers_key != Some(key) {
            self.peers_key = Some(key);
            self.transport.set_peers(&self.raft.peer_addrs());
        }
    }

    /// A configuration entry was applied: changes waiting for it (or, after their joint
    /// configuration, for C_new) complete. An entry of another term at a change's index means
    /// the change was lost with a leadership change.
    fn applied_entry(&mut self, e: &crate::types::Entry) {
        if self.changes.is_empty() {
            return;
        }
        let leader_hint = self.raft.leader();
        let membership = match &e.payload {
            Payload::Membership(m) => Some(m),
            _ => None,
        };
        let mut i = 0;
        while i < self.changes.len() {
            let c = &mut self.changes[i];
            let done = if c.joint_applied {
                membership.filter(|m| !m.is_joint()).map(|m| Ok(m.clone()))
            } else if c.index == e.index {
                match membership {
                    Some(m) if e.term == c.term && m.is_joint() => {
                        c.joint_applied = true;
                        None
                    }
                    Some(m) if e.term == c.term => Some(Ok(m.clone())),
                    _ => Some(Err(NodeError::NotLeader { leader_hint }.into())),
                }
            } else {
                None
            };
            match done {
                Some(result) => {
                    let c = self.changes.swap_remove(i);
                    let _ = c.reply.send(result);
                }
                None => i += 1,
            }
        }
    }

    /// Transfers complete once their target leads; they fail once abandoned (this node leads
    /// and no longer transfers) or once another node leads.
    fn check_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let (me, leader) = (self.raft.id(), self.raft.leader());
        let abandoned = self.raft.role() == Role::Leader;
        let transferring = self.raft.transferring_to();
        let mut i = 0;
        while i < self.transfers.len() {
            let target = self.transfers[i].0;
            let result = if leader == Some(target) {
                Some(Ok(()))
            } else if abandoned && transferring != Some(target) {
                Some(Err(NodeError::Timeout.into()))
            } else if leader.is_some_and(|l| l != me) {
                Some(Err(NodeError::NotLeader {
                    leader_hint: leader,
                }
                .into()))
            } else {
                None
            };
            match result {
                Some(r) => {
                    let (_, reply) = self.transfers.swap_remove(i);
                    let _ = reply.send(r);
                }
                None => i += 1,
            }
        }
    }

    /// Follows the `Ready` contract for everything the core has to do.
    fn process_ready(&mut self) {
        while self.raft.has_ready() && self.stopped.is_none() {
            let mut ready = self.raft.take_ready();
            for m in std::mem::take(&mut ready.send_now) {
                self.transport.send(m);
            }
            let ops = ready.take_write_ops();
            let after = std::mem::take(&mut ready.send_after_persist);
            let token = ready.persist_token;
            if ops.is_empty() && token.is_none() && self.writes_in_flight == 0 {
                for m in after {
                    self.transport.send(m);
                }
            } else {
                self.queue_write(Job { ops, token, after });
            }
            if let Some(s) = ready.snapshot.take() {
                self.restore(&s);
            }
            for e in ready.committed_entries {
                self.applied_entry(&e);
                let response = match &e.payload {
                    Payload::Command(data) => {
                        self.bytes_since_snapshot += data.len() as u64;
                        Some(self.sm.apply(e.index, data))
                    }
                    Payload::Noop | Payload::Membership(_) => None,
                };
                if let Some((term, reply)) = self.proposals.remove(&e.index) {
                    let result = match response {
                        Some(r) if term == e.term => Ok(r),
                        _ => Err(NodeError::NotLeader {
                            leader_hint: self.raft.leader(),
                        }),
                    };
                    let _ = reply.send(result);
                }
            }
            for r in ready.read_states {
                if let Some((query, reply)) = self.reads.remove(&r.id) {
                    let _ = reply.send(Ok(self.sm.query(&query)));
                }
            }
            for id in ready.aborted_reads {
                if let Some((_, reply)) = self.reads.remove(&id) {
                    let leader_hint = self.raft.leader();
                    let _ = reply.send(Err(NodeError::NotLeader { leader_hint }));
                }
            }
            self.maybe_snapshot();
        }
        self.update_peers();
        self.check_transfers();
    }

    fn queue_write(&mut self, job: Job) {
        self.writes_in_flight += 1;
        if self.jobs.unbounded_send(job).is_err() {
            self.stopped = Some(NodeError::Storage(StorageError::Closed));
        }
    }

    /// A snapshot from the leader replaces the state machine. Proposals it covers have an
    /// unknown outcome.
    fn restore(&mut self, s: &Snapshot) {
        if let Err(reason) = self.sm.restore(&s.data) {
            tracing::error!(node = self.raft.id(), snapshot = %s.last, error = %reason, "cannot restore snapshot: stopping");
            self.stopped = Some(NodeError::Config(ConfigError::Snapshot {
                last: s.last,
                reason,
            }));
            return;
        }
        let covered: Vec<Index> = self
            .proposals
            .range(..=s.last.index)
            .map(|(i, _)| *i)
            .collect();
        for i in covered {
            if let Some((_, reply)) = self.proposals.remove(&i) {
                let _ = reply.send(Err(NodeError::OutcomeUnknown));
            }
        }
        // Changes the snapshot covers: done if it holds C_new after their joint configuration,
        // unknown if it covers their entry unseen.
        let mut i = 0;
        while i < self.changes.len() {
            let c = &self.changes[i];
            let result = if c.joint_applied && !s.membership.is_joint() {
                Some(Ok(s.membership.clone()))
            } else if !c.joint_applied && c.index <= s.last.index {
                Some(Err(NodeError::OutcomeUnknown.into()))
            } else {
                None
            };
            match result {
                Some(r) => {
                    let _ = self.changes.swap_remove(i).reply.send(r);
                }
                None => i += 1,
            }
        }
    }

    /// Snapshots the state machine once enough entries were applied since the last snapshot.
    fn maybe_snapshot(&mut self) {
        let (applied, snapshot_index) = (self.raft.applied_index(), self.raft.snapshot_index());
        if applied <= snapshot_index
            || (applied < snapshot_index + self.snapshot_threshold
                && self.bytes_since_snapshot < self.snapshot_threshold_bytes)
        {
            return;
        }
        let index = applied;
        let data = self.sm.snapshot();
        match self.raft.snapshot_taken(index, data) {
            Ok(snapshot) => {
                // The snapshot write is queued before the compaction the next `Ready` asks for.
                self.queue_write(Job {
                    ops: vec![WriteOp::SaveSnapshot(snapshot)],
                    token: None,
                    after: Vec::new(),
                });
                self.bytes_since_snapshot = 0;
            }
            Err(e) => tracing::warn!(node = self.raft.id(), error = %e, "snapshot not taken"),
        }
    }

    fn fail_all(&mut self) {
        let err = self.stopped.clone().unwrap_or(NodeError::Shutdown);
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, (_, reply)) in self.reads.drain() {
            let _ = reply.send(Err(err.clone()));
        }
        for c in self.changes.drain(..) {
            let _ = c.reply.send(Err(err.clone().into()));
        }
        for (_, reply) in self.transfers.drain(..) {
            let _ = reply.send(Err(err.clone().into()));
        }
        self.requests.close();
        while let Ok(r) = self.requests.try_recv() {
            match r {
                Request::Propose(_, reply) | Request::Read(_, reply) => {
                    let _ = reply.send(Err(err.clone()));
                }
                Request::Status(reply) => {
                    let _ = reply.send(self.raft.status());
                }
                Request::Change(_, reply) => {
                    let _ = reply.send(Err(err.clone().into()));
                }
                Request::Transfer(_, reply) => {
                    let _ = reply.send(Err(err.clone().into()));
                }
                Request::Shutdown => {}
            }
        }
    }
}

fn from_raft(e: RaftError) -> NodeError {
    match e {
        RaftError::NotLeader { leader_hint } => NodeError::NotLeader { leader_hint },
        RaftError::ProposalTooLarge { size_bytes, .. } => NodeError::TooLarge(size_bytes),
        RaftError::Busy(why) => NodeError::Busy(why),
        // A leadership transfer in progress: the same node answers again once it is over.
        RaftError::TransferInProgress { target } => {
            NodeError::Busy(BusyReason::TransferInProgress { target })
        }
        // Only `snapshot_taken` refuses so, never `propose` or `read_index` (the only callers).
        RaftError::SnapshotIndex { .. } => unreachable!("propose and read_index refused: {e}"),
    }
}
