//! The event loop: owns the core, the state machine and the transport, and follows the
//! [`Ready`](crate::Ready) contract.

use super::error::{from_raft, NodeError};
use super::node::{Call, NodeConfig, PendingChange, ReconfigReply, Request};
use super::observer::{
    append_event, membership_event, vote_answer, EventKind, MsgInfo, ObserverHandle, SnapshotHow,
    TraceEvent,
};
use super::pending::{Proposals, Reads};
use super::queue::QueueRx;
use super::storage_task::{Done, Job, Writer};
use crate::config::ConfigError;
use crate::io::{Runtime, StateMachine, StorageError, Transport};
use crate::membership::MembershipError;
use crate::message::Message;
use crate::types::{Index, NodeId, Payload, Role, Snapshot, Term};
use crate::{Raft, SnapshotReceiver};
use futures::{pin_mut, select_biased, FutureExt};
use std::time::Duration;

mod snapshot;
mod waiting;

enum Event<R> {
    Message(Message),
    Request(Request<R>),
    Tick,
    Durable(Result<Done, StorageError>),
    /// Issue 20: the snapshot read off the loop finished.
    SnapshotRead(snapshot::ReadDone),
    TransportClosed,
    RequestsClosed,
}

pub(super) struct EventLoop<R: Runtime, M: StateMachine, T: Transport> {
    runtime: R,
    tick: Duration,
    snapshot_threshold: u64,
    snapshot_threshold_bytes: u64,
    /// Command bytes applied since the last snapshot.
    bytes_since_snapshot: u64,
    /// Issue 20, the trailing log ([`NodeConfig::trailing_log_entries`], `_bytes`); its bytes
    /// never more than the snapshot's byte threshold (a log bounded to a few times that, as
    /// 6.5840's `maxraftstate` asks, stays so).
    trailing_entries: u64,
    trailing_bytes: u64,
    /// Where the last compaction would have gone without the trailing log (a state kept
    /// durably): the next one's entry threshold counts from here.
    compacted_past: Index,
    /// The snapshot index at which a compaction last waited for a lagging follower (an
    /// in-memory state), to tell the observer once per wait.
    trail_held: Option<Index>,
    raft: Raft,
    sm: M,
    transport: T,
    requests: QueueRx<Request<M::Response>>,
    /// The node's storage writes, polled by this loop.
    writer: Writer,
    /// Issue 20: the snapshot being read off the loop, if one is (at most one at a time).
    reading: Option<snapshot::Reading>,
    /// Issue 20: the snapshot being received from the leader, spooled chunk by chunk.
    receiving: SnapshotReceiver,
    /// Proposals waiting to be applied.
    proposals: Proposals<M::Response>,
    /// Reads waiting for confirmation.
    reads: Reads<M::Response>,
    /// Membership changes waiting to complete.
    changes: Vec<PendingChange>,
    /// Leadership transfers waiting for their target to lead.
    transfers: Vec<(NodeId, ReconfigReply<()>)>,
    /// Callers waiting until this node knows a leader.
    leader_waiters: Vec<Call<Result<NodeId, NodeError>>>,
    /// What the transport was last told of the peers: (configuration entry, its term,
    /// snapshot point); `None` before the first call.
    peers_key: Option<(Index, Option<Term>, Index)>,
    /// Why the node stopped, once it has.
    stopped: Option<NodeError>,
    /// Where events go; `None`: nowhere, and nothing is built for them.
    observer: Option<ObserverHandle>,
    /// What was last reported to the observer (only kept while there is one).
    seen: Seen,
}

/// The node's state as last reported to the observer, to report only changes.
#[derive(Default)]
struct Seen {
    role: Option<(Role, Term, Option<NodeId>)>,
    commit: Index,
    membership: Option<(Index, Option<Term>)>,
}

/// At most this many already-queued events are taken before the next `Ready`, so that one
/// `Ready` (one write, one Append per follower) covers many of them.
const EVENTS_PER_READY_MAX: usize = 256;

impl<R: Runtime, M: StateMachine, T: Transport> EventLoop<R, M, T> {
    /// The loop of a node whose core, state machine and transport are ready; `requests` come
    /// from its handles, and `writer` makes its writes durable.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        runtime: R,
        config: &NodeConfig,
        raft: Raft,
        state_machine: M,
        transport: T,
        req_rx: QueueRx<Request<M::Response>>,
        writer: Writer,
    ) -> Self {
        Self {
            runtime,
            tick: config.tick,
            snapshot_threshold: config.snapshot_threshold_entries.max(1),
            snapshot_threshold_bytes: config.snapshot_threshold_bytes.max(1),
            bytes_since_snapshot: 0,
            trailing_entries: config.trailing_log_entries,
            trailing_bytes: config
                .trailing_log_bytes
                .min(config.snapshot_threshold_bytes.max(1)),
            compacted_past: 0,
            trail_held: None,
            raft,
            sm: state_machine,
            transport,
            requests: req_rx,
            writer,
            reading: None,
            receiving: SnapshotReceiver::default(),
            proposals: Proposals::new(),
            reads: Reads::new(),
            changes: Vec::new(),
            transfers: Vec::new(),
            leader_waiters: Vec::new(),
            peers_key: None,
            stopped: None,
            observer: config.observer.clone(),
            seen: Seen::default(),
        }
    }

    /// Hands the event `make` builds to the observer, if there is one (else builds nothing).
    #[inline]
    fn emit(&self, make: impl FnOnce() -> EventKind) {
        if let Some(o) = &self.observer {
            o.0.observe(TraceEvent {
                t_us: self.runtime.now().as_micros() as u64,
                node: self.raft.id(),
                kind: make(),
            });
        }
    }

    /// Milliseconds of `ticks` core ticks.
    fn ticks_ms(&self, ticks: u64) -> u64 {
        (self.tick.as_micros() as u64).saturating_mul(ticks) / 1000
    }

    /// Sends `m` through the transport, telling the observer.
    fn send(&mut self, m: Message) {
        if self.observer.is_some() {
            if let Some((granted, pre)) = vote_answer(&m) {
                self.emit(|| EventKind::Vote {
                    candidate: m.to,
                    term: m.term,
                    granted,
                    pre,
                });
            }
            self.emit(|| EventKind::Send {
                to: m.to,
                msg: MsgInfo::of(&m),
            });
        }
        self.transport.send(m);
    }

    /// Reports role, term, leader, commit index and configuration when they changed.
    fn observe_state(&mut self) {
        if self.observer.is_none() {
            return;
        }
        let role = (self.raft.role(), self.raft.term(), self.raft.leader());
        if self.seen.role != Some(role) {
            self.seen.role = Some(role);
            let timeout = self.ticks_ms(self.raft.election_timeout_ticks);
            self.emit(|| EventKind::Role {
                role: role.0.into(),
                term: role.1,
                leader: role.2,
                election_timeout_ms: timeout,
            });
        }
        let commit = self.raft.commit_index();
        if commit != self.seen.commit {
            self.seen.commit = commit;
            self.emit(|| EventKind::Commit { index: commit });
        }
        let index = self.raft.membership_index();
        let key = (index, self.raft.term_at(index));
        if self.seen.membership != Some(key) {
            self.seen.membership = Some(key);
            let event = membership_event(self.raft.membership());
            self.emit(|| event);
        }
    }

    pub(super) async fn run(mut self) {
        if self.observer.is_some() {
            let config = self.raft.config();
            let (min, max, hb) = (
                config.election_timeout_ticks_min,
                config.election_timeout_ticks_max,
                config.heartbeat_interval_ticks,
            );
            let last = self.raft.last_log_id();
            let event = EventKind::Start {
                term: self.raft.term(),
                commit: self.raft.commit_index(),
                last_index: last.index,
                last_term: last.term,
                snapshot_index: self.raft.snapshot_index(),
                election_timeout_ms_min: self.ticks_ms(min),
                election_timeout_ms_max: self.ticks_ms(max),
                heartbeat_ms: self.ticks_ms(hb),
            };
            self.emit(|| event);
            self.seen.commit = self.raft.commit_index();
            self.observe_state();
        }
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
                let lease_reads = self.raft.config().lease_reads;
                if lease_reads {
                    self.catch_up_ticks(&mut next_tick);
                }
                match e {
                    // Counted by the catch-up.
                    Event::Tick if lease_reads => {}
                    Event::Tick => {
                        next_tick += self.tick;
                        // After a stall, do not replay missed ticks in a burst.
                        next_tick = next_tick.max(self.runtime.now());
                        self.handle(e);
                    }
                    e => self.handle(e),
                }
                handled += 1;
                if handled < EVENTS_PER_READY_MAX && self.stopped.is_none() {
                    event = self.poll_event_now();
                }
            }
            self.process_ready();
        }
        if self.observer.is_some() {
            let reason = self
                .stopped
                .as_ref()
                .map_or_else(|| "shutdown".to_string(), |e| e.to_string());
            self.emit(|| EventKind::Stop { reason });
        }
        self.fail_all();
        // What was queued before a stop for another reason still becomes durable, in the
        // background, as a write in flight at a crash may; the storage closes after it.
        if self.writer.busy() && !matches!(self.stopped, Some(NodeError::Storage(_))) {
            let Self {
                runtime, writer, ..
            } = self;
            runtime.spawn(writer.finish());
        }
    }

    /// thesis §6.4.1: with lease reads the core's tick count must keep up with the clock (the
    /// drift bound is stated for it): every tick due, missed ones in a stall included, is
    /// counted before the next input is handled.
    fn catch_up_ticks(&mut self, next_tick: &mut Duration) {
        let now = self.runtime.now();
        if now < *next_tick {
            return;
        }
        while now >= *next_tick {
            self.raft.tick();
            *next_tick += self.tick;
        }
        self.expire(now);
    }

    /// Waits for the next event.
    async fn next_event(&mut self, next_tick: Duration) -> Event<M::Response> {
        // A tick that is due comes first: under a steady load some other event is always
        // ready, and ticks (elections, heartbeats, request deadlines) must not starve.
        let now = self.runtime.now();
        if now >= next_tick {
            return Event::Tick;
        }
        let wait = next_tick - now;
        let writer = &mut self.writer;
        let done = std::future::poll_fn(|cx| writer.poll_done(cx)).fuse();
        let reading = &mut self.reading;
        let read = std::future::poll_fn(|cx| snapshot::poll_reading(reading, cx)).fuse();
        let req = self.requests.next().fuse();
        let msg = self.transport.recv().fuse();
        let tick = self.runtime.sleep(wait).fuse();
        pin_mut!(done, read, req, msg, tick);
        select_biased! {
            d = done => Event::Durable(d),
            r = read => Event::SnapshotRead(r),
            m = msg => m.map_or(Event::TransportClosed, Event::Message),
            r = req => r.map_or(Event::RequestsClosed, Event::Request),
            _ = tick => Event::Tick,
        }
    }

    /// An event that is already waiting, if any (never a tick).
    fn poll_event_now(&mut self) -> Option<Event<M::Response>> {
        if let Some(d) = self.writer.done_now() {
            return Some(Event::Durable(d));
        }
        if let Some(r) = snapshot::reading_now(&mut self.reading) {
            return Some(Event::SnapshotRead(r));
        }
        if let Some(m) = self.transport.recv().now_or_never() {
            return Some(m.map_or(Event::TransportClosed, Event::Message));
        }
        self.requests.try_next().map(Event::Request)
    }

    fn handle(&mut self, event: Event<M::Response>) {
        match event {
            Event::Message(m) => {
                self.emit(|| EventKind::Recv {
                    from: m.from,
                    msg: MsgInfo::of(&m),
                });
                self.raft.step(m)
            }
            Event::Tick => {
                self.raft.tick();
                self.expire(self.runtime.now());
            }
            Event::Request(r) => self.handle_request(r),
            Event::Durable(Ok(done)) => {
                for m in done.after {
                    self.send(m);
                }
                for t in done.tokens {
                    self.raft.persisted(t);
                }
            }
            Event::SnapshotRead(r) => self.snapshot_read_done(r),
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
                    // A proposal of an earlier term may wait at this very index (its entry was
                    // overwritten while this node followed): it fails before this one takes
                    // its place.
                    self.proposals.fail_lost(&self.raft);
                    self.proposals.push(index, self.raft.term(), reply);
                }
                Err(e) => reply.fail(from_raft(e)),
            },
            Request::Read(query, reply) => {
                let id = self.reads.next_id();
                match self.raft.read_index(id) {
                    Ok(()) => self.reads.insert(id, query, reply),
                    Err(e) => reply.fail(from_raft(e)),
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
                    reply.fail(NodeError::NotLeader { leader_hint })
                }
                Err(e) => reply.send(Err(e.into())),
            },
            Request::Transfer(target, reply) => match self.raft.transfer_leader(target) {
                Ok(()) => self.transfers.push((target, reply)),
                Err(MembershipError::NotLeader { leader_hint }) => {
                    reply.fail(NodeError::NotLeader { leader_hint })
                }
                Err(e) => reply.send(Err(e.into())),
            },
            Request::WaitLeader(reply) => match self.raft.leader() {
                Some(leader) => reply.send(Ok(leader)),
                None => self.leader_waiters.push(reply),
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

    /// Follows the `Ready` contract for everything the core has to do.
    fn process_ready(&mut self) {
        self.proposals.fail_lost(&self.raft);
        while self.raft.has_ready() && self.stopped.is_none() {
            self.observe_state();
            let mut ready = self.raft.take_ready();
            // Issue 20: the chunks of a snapshot from the leader go to the state machine's
            // spool before anything of this `Ready` is sent (the answer to a chunk says it
            // was received); one that cannot be written stops the node.
            let sm = &self.sm;
            if let Err(e) = self
                .receiving
                .receive(&mut self.raft, &mut ready, || sm.snapshot_spool())
            {
                tracing::error!(node = self.raft.id(), error = %e, "cannot spool the snapshot being received: stopping the node");
                self.stopped = Some(NodeError::Storage(e));
                break;
            }
            // Raft §7 (issue 21 #7): a snapshot from the leader is restored before it is
            // persisted. One the state machine cannot read stops the node with nothing of
            // this `Ready` written or sent: the stored state stays what it was, so the node
            // restarts from it instead of failing on the same snapshot at every start.
            if let Some(s) = ready.snapshot.clone() {
                if !self.restore(&s) {
                    break;
                }
                self.strip_installed(&mut ready);
                self.emit(|| EventKind::Snapshot {
                    index: s.last.index,
                    term: s.last.term,
                    how: SnapshotHow::Installed,
                });
            }
            for m in std::mem::take(&mut ready.send_now) {
                self.send(m);
            }
            if self.observer.is_some() && !ready.entries.is_empty() {
                self.emit(|| append_event(&ready.entries));
            }
            let ops = ready.take_write_ops();
            let after = std::mem::take(&mut ready.send_after_persist);
            let token = ready.persist_token;
            if ops.is_empty() && token.is_none() && !self.writer.busy() {
                for m in after {
                    self.send(m);
                }
            } else {
                self.queue_write(Job { ops, token, after });
                // A storage that is durable at once (in memory): acknowledge in this turn.
                if let Some(d) = self.writer.done_now() {
                    self.handle(Event::Durable(d));
                }
            }
            if self.observer.is_some() {
                if let (Some(first), Some(last)) = (
                    ready.committed_entries.first(),
                    ready.committed_entries.last(),
                ) {
                    let (first, last) = (first.index, last.index);
                    self.emit(|| EventKind::Apply { first, last });
                }
            }
            let last_applied = ready.committed_entries.last().map(|e| e.id());
            for e in ready.committed_entries {
                self.applied_entry(&e);
                let response = match &e.payload {
                    Payload::Command(data) => {
                        self.bytes_since_snapshot += data.len() as u64;
                        Some(self.sm.apply(e.index, data))
                    }
                    Payload::Noop | Payload::Membership(_) => None,
                };
                if let Some((term, reply)) = self.proposals.take(e.index, self.raft.leader()) {
                    match response {
                        Some(r) if term == e.term => reply.send(Ok(r)),
                        _ => reply.fail(NodeError::NotLeader {
                            leader_hint: self.raft.leader(),
                        }),
                    }
                }
            }
            if let Some(last) = last_applied {
                // An applied entry is at or after the snapshot and within the log.
                let membership = self.raft.membership_at(last.index);
                let membership = membership.unwrap_or_else(|| self.raft.membership());
                if let Err(e) = self.sm.applied_to(last, membership) {
                    tracing::error!(node = self.raft.id(), error = %e, "the state machine failed to record what it applied: stopping the node");
                    self.stopped = Some(NodeError::Storage(e));
                    break;
                }
            }
            for r in ready.read_states {
                if let Some((query, reply)) = self.reads.take(r.id) {
                    reply.send(Ok(self.sm.query(&query)));
                }
            }
            for id in ready.aborted_reads {
                if let Some((_, reply)) = self.reads.take(id) {
                    let leader_hint = self.raft.leader();
                    reply.fail(NodeError::NotLeader { leader_hint });
                }
            }
            if ready.snapshot_request {
                self.snapshot_for_transfer();
            }
            self.maybe_snapshot();
        }
        self.observe_state();
        self.update_peers();
        self.check_transfers();
        if !self.leader_waiters.is_empty() {
            self.answer_leader_waiters();
        }
    }

    fn queue_write(&mut self, job: Job) {
        self.writer.push(job);
    }

    /// A snapshot from the leader replaces the state machine. Proposals it covers have an
    /// unknown outcome. `false`: the state machine refused it, and the node stops.
    fn restore(&mut self, s: &Snapshot) -> bool {
        if let Err(reason) = self.sm.restore_snapshot(s) {
            tracing::error!(node = self.raft.id(), snapshot = %s.last, error = %reason, "cannot restore the snapshot received from the leader: stopping without storing it");
            self.stopped = Some(NodeError::Config(ConfigError::Snapshot {
                last: s.last,
                reason,
            }));
            return false;
        }
        self.proposals.covered(s.last.index);
        self.changes_restored(s);
        true
    }
}
