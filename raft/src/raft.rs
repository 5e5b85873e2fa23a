//! [`Raft`]: one node's protocol state and its public inputs. The role logic lives in
//! `election.rs` (PreVote, votes, roles), `replication.rs` (Append, snapshots, commit, reads),
//! `reconfig.rs` (membership changes), `transfer.rs` (leadership transfer); `inspect.rs` holds
//! the status, descriptions and invariants.

use crate::config::{Config, ConfigError, PersistedError};
use crate::lease::LeaseRounds;
use crate::log::Log;
use crate::membership::Membership;
use crate::message::{Body, Message};
use crate::progress::Progress;
use crate::read::ForwardedReads;
use crate::rng::Rng;
use crate::transfer::Transfer;
use crate::types::{
    Entry, HardState, Index, LogId, NodeId, Payload, Persisted, ReadState, Role, Snapshot, Term,
};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// Why a proposal or read was refused. Expected conditions, never a broken invariant.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Only the leader accepts proposals and reads; `leader_hint` is who this node thinks leads.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal of {size_bytes} bytes exceeds entry_bytes_max {max_bytes}")]
    ProposalTooLarge { size_bytes: usize, max_bytes: usize },
    /// Backpressure: too many uncommitted bytes or pending reads; retry shortly.
    #[error("too busy: {0}")]
    Busy(BusyReason),
    /// `snapshot_taken` at an index the log cannot compact to.
    #[error("cannot snapshot at index {index}: {reason}")]
    SnapshotIndex { index: Index, reason: &'static str },
    /// thesis §3.10: the leader is handing leadership to `target` and takes no proposals
    /// meanwhile; retry shortly (at the new leader).
    #[error("leadership is being transferred to node {target}; retry shortly")]
    TransferInProgress { target: NodeId },
}

/// Which bound a refused proposal or read ran into (backpressure: retry shortly).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusyReason {
    /// The leader's uncommitted entries reached `uncommitted_bytes_max`.
    #[error("uncommitted_bytes_max reached")]
    UncommittedBytes,
    /// The leader's reads waiting for confirmation reached `pending_reads_max`.
    #[error("pending_reads_max reached")]
    PendingReads,
    /// The driver's queue of requests waiting for its event loop is full
    /// (`NodeConfig::request_queue_max`); the core itself never answers this.
    #[error("request queue full")]
    RequestQueueFull,
    /// thesis §3.10: the leader is handing leadership to `target` and takes no proposals
    /// meanwhile (the core answers [`Error::TransferInProgress`]; the driver reports it as busy).
    #[error("leadership is being transferred to node {target}; retry shortly")]
    TransferInProgress { target: NodeId },
}

/// Counters of input the core refused, for tests and operators. In a correct cluster
/// `protocol_violations` stays 0; `ignored_messages` counts ordinary stale or misaddressed input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ignored_messages: u64,
    pub protocol_violations: u64,
}

/// A snapshot being received in chunks (Raft §7).
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    /// Raft §7 (issue 21 #7): the buffer belongs to one transfer, that of `leader` in `term`
    /// of the snapshot `last` (`len` bytes, `crc32c`): chunks of another never splice into it.
    pub leader: NodeId,
    pub term: Term,
    pub last: LogId,
    pub len: u64,
    pub crc32c: u32,
    /// Issue 20: bytes received so far (handed to the driver: the core keeps none) and
    /// their CRC32C.
    pub received: u64,
    pub crc32c_received: u32,
}

/// A ReadIndex request waiting for a quorum of heartbeat acknowledgements (thesis §6.4).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub id: u64,
    pub index: Index,
    pub seq: u64,
    /// The follower that asked for the read index (thesis §6.4), or None for this node's own.
    pub origin: Option<NodeId>,
}

/// State only a leader has.
#[derive(Clone, Debug)]
pub(crate) struct Leader {
    /// The progress of every other member of the configuration in effect and of the one at
    /// the commit index (so that a removed member still learns the configuration without it).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Ticks since the node became leader (the clock of `Progress::heard_tick`).
    pub ticks: u64,
    /// thesis §3.10: a leadership transfer in progress.
    pub transfer: Option<Transfer>,
    /// The leader's term and vote are known durable (Raft Figure 2: "updated on stable
    /// storage before responding to RPCs"). True once a peer answered a vote request (sent
    /// only after the write), or once this term's first entry is durable (written after it).
    /// Until then its messages wait for the write: a leader that won alone (a single voter,
    /// with learners) must not send entries of a term it could forget in a crash, then win
    /// again and write others at the same index and term (chaos seed 19866).
    pub term_durable: bool,
    pub heartbeat_elapsed: u64,
    pub check_quorum_elapsed: u64,
    /// The index of this term's no-op entry: a commit at or past it commits this term.
    pub term_start: Index,
    /// Bytes of proposals appended in this term and not yet committed.
    pub uncommitted_bytes: usize,
    /// thesis §6.4: sequence number of the latest heartbeat round that confirms reads.
    pub read_seq: u64,
    /// A heartbeat round for `read_seq` must go out with the next `Ready`.
    pub read_round_pending: bool,
    /// Reads received before this term committed anything: their index is not known yet.
    pub reads_before_commit: Vec<(u64, Option<NodeId>)>,
    /// thesis §6.4.1: the rounds a lease can rest on.
    pub lease: LeaseRounds,
    /// Reads waiting for a quorum at `seq`. Invariant: seq is non-decreasing.
    pub reads: VecDeque<PendingRead>,
    /// New entries were appended: replicate them with the next `Ready`.
    pub replicate_pending: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum RoleState {
    Follower,
    PreCandidate {
        granted: BTreeSet<NodeId>,
        rejected: BTreeSet<NodeId>,
    },
    Candidate {
        granted: BTreeSet<NodeId>,
        rejected: BTreeSet<NodeId>,
        /// thesis §3.10: the election a leader asked for (TimeoutNow).
        transfer: bool,
    },
    Leader(Box<Leader>),
}

/// Outputs accumulated between two `Ready`s.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbox {
    pub send_now: Vec<Message>,
    pub send_after_persist: Vec<Message>,
    pub snapshot: Option<Snapshot>,
    pub compact_to: Option<LogId>,
    /// A follower needs a snapshot whose data this node does not hold ([`Ready::snapshot_request`]).
    pub snapshot_request: bool,
    /// Issue 20: chunks of a snapshot being received, for the driver to spool.
    pub snapshot_chunks: Vec<crate::ready::ReceivedChunk>,
    pub aborted_reads: Vec<u64>,
}

/// One Raft node as a deterministic state machine. See the crate documentation for the
/// protocol and [`crate::Ready`] for the driver contract.
#[derive(Clone, Debug)]
pub struct Raft {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    /// Raft Figure 2: latest term seen. Invariant: never decreases.
    pub(crate) term: Term,
    /// Raft Figure 2: vote cast in `term`. Invariant: a leader voted for itself.
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: Log,
    /// Raft Figure 2: highest index known committed.
    /// Invariant: `log.snapshot().index <= applied <= commit <= log.last_index()`.
    pub(crate) commit: Index,
    /// Highest index handed to the application to apply (or covered by a restored snapshot).
    pub(crate) applied: Index,
    /// Who this node believes leads `term`.
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: RoleState,
    /// Ticks since the last election-timer reset (heard from the leader, granted a vote, campaigned).
    pub(crate) election_elapsed: u64,
    /// Raft §5.2: this round's randomized election timeout, in ticks.
    pub(crate) election_timeout_ticks: u64,
    /// The latest snapshot. Invariant: `Some` with `last == log.snapshot()` once the log has one.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// The CRC32C of `snapshot` (by its last id and length), computed once for all chunks.
    pub(crate) snapshot_crc32c: Option<(LogId, u64, u32)>,
    /// Issue 20: the state machine keeps its own state durably, so `snapshot` holds only the
    /// metadata (empty data) and a follower's snapshot is read from the state machine on
    /// demand ([`Raft::snapshots_on_demand`]).
    pub(crate) snapshot_on_demand: bool,
    /// The snapshot read on demand for followers being sent one; dropped once none is.
    pub(crate) transfer: Option<Snapshot>,
    /// Reads confirmed by a quorum, waiting until `applied >= index`.
    pub(crate) confirmed_reads: VecDeque<ReadState>,
    /// thesis §6.4: reads this follower asked the leader a read index for.
    pub(crate) forwarded: ForwardedReads,
    /// thesis §6.4.1: ticks left of the voters' promise a restarted node keeps (leases on).
    pub(crate) boot_promise_ticks: u64,
    pub(crate) out: Outbox,
    /// The hard state as last handed out in a `Ready`.
    pub(crate) hard_state_out: HardState,
    pub(crate) stats: Stats,
}

impl Raft {
    /// A new node with an empty log (first boot).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::restore(config, Persisted::default())
    }

    /// A node restarted from what it had persisted. The driver restores its state machine from
    /// `persisted.snapshot` itself; committed entries after it come out in the first `Ready`s.
    pub fn restore(config: Config, persisted: Persisted) -> Result<Self, ConfigError> {
        config.validate()?;
        let Persisted {
            hard_state,
            snapshot,
            entries,
        } = persisted;
        let snap_id = snapshot.as_ref().map_or(LogId::default(), |s| s.last);
        let bad = |what: PersistedError| Err(ConfigError::Persisted(what));
        /// thesis §4: `Config::voters` is only the initial configuration: a snapshot's (or
        /// the log's) configuration wins. A snapshot stored before configurations were
        /// recorded carries none.
        let mut snapshot = snapshot;
        let base_membership = match &mut snapshot {
            Some(s) if !s.membership.voters().is_empty() => s.membership.clone(),
            Some(s) => {
                s.membership = Membership::from_voters(config.voters.iter().copied());
                s.membership.clone()
            }
            None => Membership::from_voters(config.voters.iter().copied()),
        };
        if let Err(e) = base_membership.validate() {
            return bad(PersistedError::Membership {
                at: None,
                reason: e,
            });
        }
        for e in &entries {
            if let Payload::Membership(m) = &e.payload {
                if let Err(why) = m.validate() {
                    return bad(PersistedError::Membership {
                        at: Some(e.id()),
                        reason: why,
                    });
                }
            }
        }
        if snap_id.term > hard_state.term {
            return bad(PersistedError::SnapshotPastTerm {
                snapshot: snap_id,
                term: hard_state.term,
            });
        }
        let mut prev = snap_id;
        for e in entries.iter().filter(|e| e.index > snap_id.index) {
            if e.index != prev.index + 1 {
                return bad(PersistedError::Gap {
                    entry: e.id(),
                    after: prev,
                });
            }
            if e.term < prev.term {
                return bad(PersistedError::TermGoesBack {
                    entry: e.id(),
                    after: prev,
                });
            }
            if e.term > hard_state.term {
                return bad(PersistedError::EntryPastTerm {
                    entry: e.id(),
                    term: hard_state.term,
                });
            }
            prev = e.id();
        }
        let log = Log::restore(snap_id, base_membership, entries);
        let commit = hard_state.commit.clamp(snap_id.index, log.last_index());
        let rng = Rng::new(config.seed ^ config.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let boot_promise_ticks = Self::boot_promise_ticks(&config);
        let mut raft = Self {
            config,
            rng,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            log,
            commit,
            applied: snap_id.index,
            leader: None,
            role: RoleState::Follower,
            election_elapsed: 0,
            election_timeout_ticks: 0,
            snapshot,
            incoming_snapshot: None,
            snapshot_crc32c: None,
            snapshot_on_demand: false,
            transfer: None,
            confirmed_reads: VecDeque::new(),
            forwarded: ForwardedReads::default(),
            boot_promise_ticks,
            out: Outbox::default(),
            hard_state_out: HardState {
                term: hard_state.term,
                voted_for: hard_state.voted_for,
                commit,
            },
            stats: Stats::default(),
        };
        raft.reset_election_timer();
        raft.check_invariants();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn commit_index(&self) -> Index {
        self.commit
    }

    /// The highest index handed to the application to apply (or covered by its snapshot).
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The last index the latest snapshot covers (0 with none).
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot().index
    }

    /// The node's configuration. (Its `voters` are only the initial ones: the membership in
    /// effect is [`Raft::membership`].)
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The durable-state view, as the next `Ready` would persist it.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            commit: self.commit,
        }
    }

    /// The latest snapshot this node holds.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The entry at `index`, if the log still holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The last entry's id.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_id()
    }

    /// The term of the entry at `index`, if known (compacted entries are not).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Time passes by one tick.
    pub fn tick(&mut self) {
        self.boot_promise_ticks = self.boot_promise_ticks.saturating_sub(1);
        self.tick_forwarded_reads();
        if let RoleState::Leader(_) = self.role {
            self.tick_leader();
            self.tick_lease();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            self.resend_transfer_votes();
            /// Raft §5.2: a follower that hears from no leader within its election timeout
            /// starts an election (thesis §9.6: by a pre-vote, if enabled). thesis §4.2.1: a
            /// learner (or a removed or joining node) never does.
            if self.election_elapsed >= self.election_timeout_ticks && self.promotable() {
                self.campaign();
            }
        }
        self.debug_check();
    }

    /// Starts an election now, as if the election timeout had fired (thesis §9.6: through a
    /// pre-vote round when `pre_vote` is on). A leader, a learner and a node that is not a
    /// voter ignore it, and so does, with `lease_reads` on, a voter that hears its leader
    /// (use a leadership transfer, which ends the lease, to move leadership at once).
    pub fn campaign(&mut self) {
        if matches!(self.role, RoleState::Leader(_)) || !self.promotable() {
            return;
        }
        /// thesis §6.4.1: a voter that hears its leader promised not to vote while the lease
        /// it acknowledged runs, and that includes a vote for itself: a forced election waits.
        if self.config.lease_reads && self.in_lease() {
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
        self.debug_check();
    }

    /// Raft §8: a client command. Only the leader accepts it; the returned index is where it
    /// will commit, if it commits in this term (the driver learns so when an entry with this
    /// index and this term is applied).
    pub fn propose(&mut self, data: Bytes) -> Result<Index, Error> {
        let size_bytes = data.len();
        let leader_hint = self.leader;
        let max_bytes = self.config.entry_bytes_max;
        let uncommitted_max = self.config.uncommitted_bytes_max;
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(Error::NotLeader { leader_hint });
        };
        /// thesis §3.10: no proposals while leadership is handed over.
        if let Some(t) = &leader.transfer {
            return Err(Error::TransferInProgress { target: t.target });
        }
        if size_bytes > max_bytes {
            return Err(Error::ProposalTooLarge {
                size_bytes,
                max_bytes,
            });
        }
        if leader.uncommitted_bytes + size_bytes > uncommitted_max {
            return Err(Error::Busy(BusyReason::UncommittedBytes));
        }
        leader.uncommitted_bytes += size_bytes;
        leader.replicate_pending = true;
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            payload: Payload::Command(data),
        });
        self.debug_check();
        Ok(index)
    }

    /// The driver made the write of a `Ready` durable; `token` is its `persist_token`.
    pub fn persisted(&mut self, token: LogId) {
        self.log.mark_persisted(token);
        if let RoleState::Leader(l) = &mut self.role {
            l.term_durable |= self.log.persisted() >= l.term_start;
            /// thesis §10.2.1: the leader counts itself toward a majority only once its own
            /// write is durable.
            self.maybe_commit();
        }
        self.debug_check();
    }

    /// Queues a message. Replication traffic from a leader may leave before the write
    /// (thesis §10.2.1); everything else waits for it.
    pub(crate) fn send(&mut self, to: NodeId, body: Body) {
        let msg = Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        };
        self.send_msg(msg);
    }

    pub(crate) fn send_msg(&mut self, msg: Message) {
        let from_leader = matches!(&self.role, RoleState::Leader(l) if l.term_durable)
            && msg.body.is_from_leader();
        /// thesis §6.4: a heartbeat acknowledgement promises nothing durable (only that this
        /// node has seen no later term), so it need not wait for a write in flight: a
        /// ReadIndex round then costs a round trip, not a follower's fsync.
        /// thesis §6.4: nor does a read index request or answer.
        let ack_only = matches!(
            msg.body,
            Body::HeartbeatResponse { .. }
                | Body::ReadIndex { .. }
                | Body::ReadIndexResponse { .. }
        );
        if matches!(msg.body, Body::TimeoutNow) {
            self.forfeit_lease();
        }
        if from_leader || ack_only {
            self.out.send_now.push(msg);
        } else {
            self.out.send_after_persist.push(msg);
        }
    }

    /// The voters (of either half of the configuration) other than this node: whom a
    /// candidate asks for votes.
    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        let id = self.config.id;
        let mut voters = self.log.membership().all_voters();
        voters.remove(&id);
        voters.into_iter().collect()
    }

    pub(crate) fn ignore(&mut self) {
        self.stats.ignored_messages += 1;
    }

    pub(crate) fn violation(&mut self) {
        self.stats.protocol_violations += 1;
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout_ticks = self.rng.range(
            self.config.election_timeout_ticks_min,
            self.config.election_timeout_ticks_max,
        );
    }
}
