//! The paper's vocabulary: node ids, terms, indexes, log ids, entries and the hard state.

use crate::membership::Membership;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A node's id in the cluster. Ids are chosen by the operator; 0 is never a valid id.
pub type NodeId = u64;
/// A leadership term (Raft §5.1): increases monotonically, at most one leader per term.
pub type Term = u64;
/// A log position. The first entry has index 1; index 0 is "before the log".
pub type Index = u64;

/// The identity of a log entry: its term and index. Displays as `index@term`.
///
/// The derived order compares `term` first, then `index`: exactly Raft §5.4.1's "more
/// up-to-date" comparison of the last entries of two logs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    pub term: Term,
    pub index: Index,
}

impl LogId {
    pub const fn new(index: Index, term: Term) -> Self {
        Self { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// The blank entry a new leader appends at the start of its term (Raft §8, thesis §6.4).
    Noop,
    /// An application command, opaque to Raft.
    Command(Bytes),
    /// thesis §4.1: a cluster configuration. It takes effect on a node as soon as the node
    /// appends it, committed or not. (Variants are only ever added at the end: the stored
    /// encoding numbers them.) Boxed: held inline, a configuration made every `Entry` 144
    /// bytes, and the log copies entries (to storage, to each follower, to apply) far more
    /// often than it holds a configuration; the encoding is the same.
    Membership(Box<Membership>),
}

impl Payload {
    /// Bytes of data carried, for byte bounds (0 for a no-op).
    pub fn len_bytes(&self) -> usize {
        match self {
            Payload::Noop => 0,
            Payload::Command(data) => data.len(),
            Payload::Membership(m) => m.size_bytes(),
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

impl Entry {
    pub fn id(&self) -> LogId {
        LogId::new(self.index, self.term)
    }

    /// An estimate of the entry's encoded size, used for batch bounds.
    pub fn size_bytes(&self) -> usize {
        self.payload.len_bytes() + ENTRY_OVERHEAD_BYTES
    }
}

/// The fixed per-entry cost counted against byte bounds (term, index, tag).
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

/// The state that must be durable before the node answers anyone (Raft Figure 2,
/// "persistent state on all servers"), plus the commit index, which may be persisted lazily.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// Raft Figure 2: latest term this server has seen.
    pub term: Term,
    /// Raft Figure 2: candidate that received this server's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation (fewer re-applies).
    pub commit: Index,
}

/// A snapshot of the application's state machine covering the log up to `last`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last entry the snapshot covers (Raft §7: "last included index and term").
    pub last: LogId,
    /// The application's encoding of its state. Shared, never copied by the core.
    pub data: Bytes,
    /// The configuration in effect at `last` (thesis §4.1: the latest one in the log it
    /// covers). Empty in a snapshot stored before membership was recorded: the node then
    /// falls back to [`crate::Config::voters`].
    pub membership: Membership,
}

/// Everything a node persisted, handed back to [`crate::Raft::restore`] on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot (entries at or before it are ignored), in index order.
    pub entries: Vec<Entry>,
}

/// A node's role (Raft §5.1, plus thesis §9.6's pre-candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// thesis §9.6: probing whether an election could be won, without bumping the term.
    PreCandidate,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// A read that the leader has confirmed (thesis §6.4): it may be served once the state machine
/// has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The caller's id for this read, as passed to [`crate::Raft::read_index`].
    pub id: u64,
    /// The commit index at the time of the request: the read must see at least this much.
    pub index: Index,
}

/// A point-in-time view of a node, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub snapshot_index: Index,
    pub persisted_index: Index,
    /// The configuration in effect here: the latest one in this node's log (thesis §4.1).
    pub membership: Membership,
    /// This node learned from its log that it is no longer a member: it does not campaign.
    pub removed: bool,
    /// A leader's view of every other member's log (empty on other nodes): what the layer
    /// above needs to decide when a learner has caught up.
    pub followers: BTreeMap<NodeId, FollowerStatus>,
    /// A leader handing leadership over (thesis §3.10) names the target here.
    pub transferring_to: Option<NodeId>,
}

/// What a leader knows of one follower's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The highest index known to be durable on the follower.
    pub match_index: Index,
    /// The next index the leader will send it.
    pub next_index: Index,
    /// True if the follower is receiving a snapshot.
    pub snapshotting: bool,
    /// True if the leader heard from it within the last election timeout.
    pub active: bool,
}
