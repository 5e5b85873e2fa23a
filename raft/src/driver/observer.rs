//! What a running node tells an observer: a structured event for each thing that happens to it
//! (role and term changes, votes, entries appended / committed / applied, messages sent and
//! received, snapshots, membership changes, start and stop), for traces, replays and tests that
//! wait on events instead of polling.
//!
//! The driver holds an `Option` of an [`ObserverHandle`] (from [`NodeConfig::observer`]); with
//! none, each place that could emit costs one branch and builds nothing. Timestamps come from
//! the [`Runtime`](crate::Runtime)'s clock, read by the driver (the core never reads a clock).
//!
//! The same [`TraceEvent`] type carries the events a cluster harness adds about itself
//! (crashes, partitions, ...), so that one trace holds both; the JSON form (serde, tagged by
//! `type`) is what `raftkv-node`'s cluster trace writes.
//!
//! [`NodeConfig::observer`]: super::NodeConfig::observer

use crate::membership::Membership;
use crate::message::{AppendResult, Body, Message};
use crate::types::{Entry, Index, NodeId, Payload, Role, Term};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Receives a node's events. Called on the node's event loop: it must return quickly and never
/// block on the node (record, count, or hand off to another thread).
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, event: TraceEvent);
}

/// A shared observer, as [`NodeConfig`](super::NodeConfig) holds it.
#[derive(Clone)]
pub struct ObserverHandle(pub Arc<dyn Observer>);

impl ObserverHandle {
    pub fn new(observer: impl Observer) -> Self {
        Self(Arc::new(observer))
    }
}

impl fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObserverHandle(..)")
    }
}

/// Several observers: each gets every event (a clone for all but the last).
#[derive(Clone, Debug, Default)]
pub struct Observers(pub Vec<ObserverHandle>);

impl Observer for Observers {
    fn observe(&self, event: TraceEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for o in rest {
                o.0.observe(event.clone());
            }
            last.0.observe(event);
        }
    }
}

/// One event of one node (or of the cluster harness, about a node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Microseconds on the runtime's monotonic clock (a cluster trace makes it relative to
    /// the cluster's start).
    pub t_us: u64,
    /// The Raft id of the node the event is about (0 for cluster-wide events: `heal`, ...).
    pub node: NodeId,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialized with a `type` tag in snake case (`{"type": "role", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The node's event loop started, from what its storage held.
    Start {
        term: Term,
        commit: Index,
        last_index: Index,
        last_term: Term,
        snapshot_index: Index,
        /// The election timeout's range and the heartbeat interval, in milliseconds.
        election_timeout_ms_min: u64,
        election_timeout_ms_max: u64,
        heartbeat_ms: u64,
    },
    /// The node's event loop ended (`reason`: why).
    Stop {
        reason: String,
    },
    /// Role, term or known leader changed. `election_timeout_ms`: this round's randomized
    /// election timeout (Raft §5.2).
    Role {
        role: RoleName,
        term: Term,
        leader: Option<NodeId>,
        election_timeout_ms: u64,
    },
    /// The node answered a (pre-)vote request of `candidate` for `term`.
    Vote {
        candidate: NodeId,
        term: Term,
        granted: bool,
        pre: bool,
    },
    /// Entries `first..first + terms.len()` handed to storage (replacing any stored entries
    /// from `first` on). `terms[i]` is the term of entry `first + i`, `kinds` has one letter
    /// per entry: `c` command, `n` no-op, `m` membership.
    Append {
        first: Index,
        terms: Vec<Term>,
        kinds: String,
    },
    /// The commit index moved to `index`.
    Commit {
        index: Index,
    },
    /// Entries `first..=last` were applied to the state machine.
    Apply {
        first: Index,
        last: Index,
    },
    /// A snapshot covering the log up to `index` (of term `term`): `taken` by this node of
    /// its own state machine (the log compacted), `installed` from the leader, or read
    /// `on_demand` for a follower.
    Snapshot {
        index: Index,
        term: Term,
        how: SnapshotHow,
    },
    /// Issue 20, the trailing log: a compaction kept the log from `first` on for followers
    /// that may be a little behind, where without it the log would have been compacted
    /// through `past` (a state kept durably: the compaction stopped short of it; an
    /// in-memory one: the compaction waits for a follower).
    Trailing {
        first: Index,
        past: Index,
    },
    /// The configuration in effect changed (thesis §4.1: on append, or by truncation).
    Membership {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        joint: bool,
    },
    /// A message left the node for `to`.
    Send {
        to: NodeId,
        msg: MsgInfo,
    },
    /// A message from `from` reached the node.
    Recv {
        from: NodeId,
        msg: MsgInfo,
    },
    /// A message to `to` was dropped by the network (`reason`: "partition", ...).
    Drop {
        to: NodeId,
        msg: MsgInfo,
        reason: String,
    },
    // ---- what a cluster harness records about its nodes and its network ----
    /// The node was stopped abruptly (what was not durable is lost).
    Crash,
    /// The node was started again from its durable state.
    Restart,
    /// The node's process was paused / resumed.
    Pause,
    Resume,
    /// Peer traffic flows only within each group (Raft ids).
    Partition {
        groups: Vec<Vec<NodeId>>,
    },
    /// Peer traffic from `node` to `to` is dropped (one way) / flows again.
    Block {
        to: NodeId,
    },
    Unblock {
        to: NodeId,
    },
    /// Full connectivity again.
    Heal,
    /// Peer messages are dropped with probability `drop` and delayed within the range.
    Unreliable {
        drop: f64,
        delay_ms_min: u64,
        delay_ms_max: u64,
    },
    Reliable,
    /// The node was started and joins the cluster / was taken out of it.
    NodeAdded,
    NodeRemoved,
}

/// A role's name in a trace (the core's [`Role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Follower => RoleName::Follower,
            Role::PreCandidate => RoleName::PreCandidate,
            Role::Candidate => RoleName::Candidate,
            Role::Leader => RoleName::Leader,
        }
    }
}

/// How a node came by a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotHow {
    Taken,
    Installed,
    /// Issue 20: read from a state machine that keeps its own state, for a follower that
    /// needs a snapshot, and dropped once sent.
    OnDemand,
}

/// A message kind, as a trace names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgKind {
    PreVote,
    PreVoteResponse,
    Vote,
    VoteResponse,
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
    ReadIndex,
    ReadIndexResponse,
}

/// A message's kind and the numbers worth showing (never its payload). The same message gives
/// the same `MsgInfo` at its sender and at its receiver, which is how a replay pairs them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsgInfo {
    pub kind: MsgKind,
    pub term: Term,
    /// Append: its base (prevLogIndex); vote requests: the candidate's last index; responses
    /// to an Append: the base they answer; snapshot messages: the snapshot's last index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Index>,
    /// Append: the base's term; vote requests: the candidate's last term; snapshot messages:
    /// the term of the snapshot's last entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_term: Option<Term>,
    /// Append: how many entries it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Append, Heartbeat: the leader's commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Index>,
    /// Vote responses: granted; AppendResponse: accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// AppendResponse accepted: the follower's match index; rejected: its last index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<Index>,
    /// InstallSnapshot: the chunk's offset; SnapshotResponse: the next offset expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// InstallSnapshot: the chunk's length in bytes; Append: the entries' payload bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl MsgInfo {
    /// What a trace shows of `m`.
    pub fn of(m: &Message) -> Self {
        let mut info = MsgInfo {
            kind: MsgKind::TimeoutNow,
            term: m.term,
            index: None,
            log_term: None,
            entries: None,
            commit: None,
            ok: None,
            match_index: None,
            offset: None,
            bytes: None,
        };
        match &m.body {
            Body::PreVote { last_log } | Body::Vote { last_log, .. } => {
                info.kind = match m.body {
                    Body::PreVote { .. } => MsgKind::PreVote,
                    _ => MsgKind::Vote,
                };
                info.index = Some(last_log.index);
                info.log_term = Some(last_log.term);
            }
            Body::PreVoteResponse { granted } => {
                info.kind = MsgKind::PreVoteResponse;
                info.ok = Some(*granted);
            }
            Body::VoteResponse { granted } => {
                info.kind = MsgKind::VoteResponse;
                info.ok = Some(*granted);
            }
            Body::Append {
                base,
                entries,
                commit,
            } => {
                info.kind = MsgKind::Append;
                info.index = Some(base.index);
                info.log_term = Some(base.term);
                info.entries = Some(entries.len() as u64);
                info.commit = Some(*commit);
                info.bytes = Some(entries.iter().map(|e| e.payload.len_bytes() as u64).sum());
            }
            Body::AppendResponse { base_index, result } => {
                info.kind = MsgKind::AppendResponse;
                info.index = Some(*base_index);
                match result {
                    AppendResult::Accepted { match_index } => {
                        info.ok = Some(true);
                        info.match_index = Some(*match_index);
                    }
                    AppendResult::Rejected { hint } => {
                        info.ok = Some(false);
                        info.match_index = Some(hint.last_index);
                    }
                }
            }
            Body::Heartbeat { commit, .. } => {
                info.kind = MsgKind::Heartbeat;
                info.commit = Some(*commit);
            }
            Body::HeartbeatResponse { .. } => info.kind = MsgKind::HeartbeatResponse,
            Body::InstallSnapshot {
                last, offset, data, ..
            } => {
                info.kind = MsgKind::InstallSnapshot;
                info.index = Some(last.index);
                info.log_term = Some(last.term);
                info.offset = Some(*offset);
                info.bytes = Some(data.len() as u64);
            }
            Body::SnapshotResponse { last, next_offset } => {
                info.kind = MsgKind::SnapshotResponse;
                info.index = Some(last.index);
                info.log_term = Some(last.term);
                info.offset = Some(*next_offset);
            }
            Body::TimeoutNow => {}
            Body::ReadIndex { .. } => info.kind = MsgKind::ReadIndex,
            Body::ReadIndexResponse { index, .. } => {
                info.kind = MsgKind::ReadIndexResponse;
                info.ok = Some(index.is_some());
                info.commit = *index;
            }
        }
        info
    }
}

/// The event for entries handed to storage (`entries` non-empty, consecutive).
pub(crate) fn append_event(entries: &[Entry]) -> EventKind {
    EventKind::Append {
        first: entries.first().map_or(0, |e| e.index),
        terms: entries.iter().map(|e| e.term).collect(),
        kinds: entries
            .iter()
            .map(|e| match e.payload {
                Payload::Command(_) => 'c',
                Payload::Noop => 'n',
                Payload::Membership(_) => 'm',
            })
            .collect(),
    }
}

/// The event for a configuration now in effect.
pub(crate) fn membership_event(m: &Membership) -> EventKind {
    EventKind::Membership {
        voters: m.all_voters().into_iter().collect(),
        learners: m.learners().iter().copied().collect(),
        joint: m.is_joint(),
    }
}

/// The vote a message answers, if it is a (pre-)vote response: (granted, pre).
pub(crate) fn vote_answer(m: &Message) -> Option<(bool, bool)> {
    match m.body {
        Body::PreVoteResponse { granted } => Some((granted, true)),
        Body::VoteResponse { granted } => Some((granted, false)),
        _ => None,
    }
}
