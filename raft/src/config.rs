//! Node configuration: every bound the core enforces, with units last in each name.

use crate::types::{LogId, NodeId};
use thiserror::Error;

/// How one node behaves. Time is in ticks: the driver calls [`crate::Raft::tick`] at a fixed
/// interval of its choosing (the simulator and the drivers use 10 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The voters a fresh log starts with, this node included (thesis §4: the initial
    /// configuration). Only a node with neither a snapshot nor a configuration entry uses it:
    /// after that the log decides. Empty for a node that joins a running cluster: it waits,
    /// never campaigning, until a leader sends it the log and with it the configuration.
    pub voters: Vec<NodeId>,
    /// Raft §5.2: election timeouts are drawn from `min..max` ticks at random.
    pub election_timeout_ticks_min: u64,
    pub election_timeout_ticks_max: u64,
    /// A leader sends heartbeats this often. Must be well under the minimum election timeout.
    pub heartbeat_interval_ticks: u64,
    /// thesis §9.6: campaign only after a pre-vote round shows the election can be won.
    pub pre_vote: bool,
    /// thesis §6.2: a leader steps down when a quorum has not answered within an election timeout;
    /// followers then also refuse votes while they hear from a leader.
    pub check_quorum: bool,
    /// At most this many entries in one Append.
    pub append_entries_max: usize,
    /// At most this many payload bytes in one Append (one entry is always sent, if it fits
    /// `entry_bytes_max`).
    pub append_bytes_max: usize,
    /// Pipelining: at most this many unacknowledged Appends per follower. Only full Appends
    /// (`append_entries_max` entries or `append_bytes_max` bytes) are sent while
    /// `partial_appends_inflight_max` are unacknowledged; a partial one waits for an answer,
    /// and takes what arrived meanwhile.
    pub inflight_appends_max: usize,
    /// thesis §10.2.2: a partial Append (fewer entries than `append_entries_max`) goes while
    /// fewer than this many Appends to its follower are unacknowledged. 1: strict stop-and-wait
    /// for partial batches (the largest batches); 2 (the default): the leader sends a batch
    /// while the one before is in flight, so that leader and followers work at the same time
    /// instead of in turn.
    pub partial_appends_inflight_max: usize,
    /// A single proposal may carry at most this many bytes.
    pub entry_bytes_max: usize,
    /// A leader refuses proposals while this many bytes are appended but not committed.
    pub uncommitted_bytes_max: usize,
    /// InstallSnapshot chunk size.
    pub snapshot_chunk_bytes_max: usize,
    /// A follower refuses a snapshot larger than this (guards memory against a bad leader).
    pub snapshot_bytes_max: u64,
    /// At most this many ReadIndex requests wait for confirmation at once.
    pub pending_reads_max: usize,
    /// thesis §4.2.1: a learner added with `auto_promote` is promoted by the leader once its
    /// log is within this many entries of the leader's (and it answered recently).
    pub promote_lag_entries_max: u64,
    /// thesis §6.4.1: a leader serves reads under a lease (no heartbeat round) while a quorum
    /// acknowledged a round it started less than [`Config::lease_ticks`] ago. Off by default:
    /// it is safe only if clocks keep to `lease_clock_drift_percent` (see there). Needs
    /// `check_quorum` (followers then refuse votes while they hear from a leader).
    pub lease_reads: bool,
    /// thesis §6.4.1: the stated clock-drift bound of leases, in percent: while one node counts
    /// `n` ticks, no other counts more than `n × (100 + lease_clock_drift_percent) / 100`
    /// (rates, scheduling stalls included: the driver catches up on ticks it missed before it
    /// handles any input). The lease is shortened accordingly ([`Config::lease_ticks`]).
    pub lease_clock_drift_percent: u64,
    /// thesis §6.4: a follower (or learner) asked for a linearizable read gets a read index from
    /// the leader and serves the read itself once it has applied that index, instead of
    /// refusing with `NotLeader`. Off by default.
    pub follower_reads: bool,
    /// Seed of the node's random number generator (election timeouts).
    pub seed: u64,
}

impl Config {
    /// A configuration with the defaults used by the drivers: 10 ms ticks, 100 ms heartbeats,
    /// 300–600 ms election timeouts, PreVote and CheckQuorum on.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            id,
            voters: voters.into_iter().collect(),
            election_timeout_ticks_min: 30,
            election_timeout_ticks_max: 60,
            heartbeat_interval_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            append_entries_max: 512,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 64,
            partial_appends_inflight_max: 2,
            entry_bytes_max: 8 << 20,
            uncommitted_bytes_max: 64 << 20,
            snapshot_chunk_bytes_max: 1 << 20,
            snapshot_bytes_max: 16 << 30,
            pending_reads_max: 65_536,
            promote_lag_entries_max: 1_000,
            lease_reads: false,
            lease_clock_drift_percent: 10,
            follower_reads: false,
            seed: id,
        }
    }

    /// A node that joins a running cluster: no initial voters (see [`Config::voters`]).
    pub fn joining(id: NodeId) -> Self {
        Self::new(id, [])
    }

    /// Checks the configuration, so that the core can rely on it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |e: InvalidConfig| Err(ConfigError::Invalid(e));
        if self.id == 0 {
            return invalid(InvalidConfig::ZeroId);
        }
        let mut seen = std::collections::BTreeSet::new();
        for &v in &self.voters {
            if v == 0 {
                return invalid(InvalidConfig::ZeroVoter {
                    voters: self.voters.clone(),
                });
            }
            if !seen.insert(v) {
                return invalid(InvalidConfig::DuplicateVoter {
                    id: v,
                    voters: self.voters.clone(),
                });
            }
        }
        if !self.voters.is_empty() && !seen.contains(&self.id) {
            return invalid(InvalidConfig::NotAVoter {
                id: self.id,
                voters: self.voters.clone(),
            });
        }
        if self.heartbeat_interval_ticks == 0 {
            return invalid(InvalidConfig::Zero {
                field: "heartbeat_interval_ticks",
            });
        }
        // Raft §5.2: followers must hear heartbeats well within their election timeout.
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return invalid(InvalidConfig::TooSmall {
                field: "election_timeout_ticks_min",
                value: self.election_timeout_ticks_min,
                bound_field: "heartbeat_interval_ticks",
                bound: self.heartbeat_interval_ticks,
                equal_allowed: false,
            });
        }
        // Raft §5.2: timeouts are drawn from a non-empty range.
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return invalid(InvalidConfig::TooSmall {
                field: "election_timeout_ticks_max",
                value: self.election_timeout_ticks_max,
                bound_field: "election_timeout_ticks_min",
                bound: self.election_timeout_ticks_min,
                equal_allowed: false,
            });
        }
        for (field, v) in [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_max", self.append_bytes_max),
            ("inflight_appends_max", self.inflight_appends_max),
            (
                "partial_appends_inflight_max",
                self.partial_appends_inflight_max,
            ),
            ("entry_bytes_max", self.entry_bytes_max),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
            ("pending_reads_max", self.pending_reads_max),
        ] {
            if v == 0 {
                return invalid(InvalidConfig::Zero { field });
            }
        }
        if self.lease_reads {
            self.validate_lease()?;
        }
        if self.uncommitted_bytes_max < self.entry_bytes_max {
            return invalid(InvalidConfig::TooSmall {
                field: "uncommitted_bytes_max",
                value: self.uncommitted_bytes_max as u64,
                bound_field: "entry_bytes_max",
                bound: self.entry_bytes_max as u64,
                equal_allowed: true,
            });
        }
        Ok(())
    }
}

/// What is wrong with a [`Config`]: the field, its value and the bound it breaks.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// Node ids start at 1.
    #[error("id is 0; node ids start at 1")]
    ZeroId,
    /// A voter id is 0.
    #[error("voters {voters:?} contain 0; node ids start at 1")]
    ZeroVoter {
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// A voter is listed twice.
    #[error("voter {id} is listed twice in voters {voters:?}")]
    DuplicateVoter {
        /// The repeated id.
        id: NodeId,
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// The node is not one of the initial voters it was given.
    #[error(
        "id {id} is not among the voters {voters:?} (leave them empty to join a running cluster)"
    )]
    NotAVoter {
        /// The node's id.
        id: NodeId,
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// A count or size that must be positive is 0.
    #[error("{field} is 0; it must be > 0")]
    Zero {
        /// The field's name in [`Config`].
        field: &'static str,
    },
    /// thesis §6.4.1: leases need followers that refuse votes while they hear from a leader.
    #[error("lease_reads needs check_quorum (followers' promise not to vote within a lease)")]
    LeaseWithoutCheckQuorum,
    /// thesis §6.4.1: with this drift bound the lease would not outlast one heartbeat interval.
    #[error(
        "lease_clock_drift_percent {drift_percent} leaves a lease of {lease_ticks} ticks, not \
         more than heartbeat_interval_ticks {heartbeat_ticks}"
    )]
    LeaseTooShort {
        /// The configured drift bound.
        drift_percent: u64,
        /// The lease it leaves ([`Config::lease_ticks`]).
        lease_ticks: u64,
        /// The heartbeat interval the lease must exceed.
        heartbeat_ticks: u64,
    },
    /// A field is below another field it must exceed (or reach, if `equal_allowed`).
    #[error(
        "{field} is {value}; it must be {} {bound_field} ({bound})",
        if *.equal_allowed { ">=" } else { ">" }
    )]
    TooSmall {
        /// The field's name in [`Config`].
        field: &'static str,
        /// Its value.
        value: u64,
        /// The field that bounds it.
        bound_field: &'static str,
        /// That field's value.
        bound: u64,
        /// Whether `value == bound` is allowed.
        equal_allowed: bool,
    },
    /// A field is above its maximum.
    #[error("{field} is {value}; it must be <= {max}")]
    TooLarge {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The most it may be.
        max: u64,
    },
}

/// What is wrong with the state a node restarts from ([`crate::Raft::restore`]): what was
/// persisted, against what it must satisfy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistedError {
    /// A persisted configuration (the snapshot's, or a configuration entry's) is invalid.
    #[error("the persisted configuration {} is invalid: {reason}", at_entry(.at))]
    Membership {
        /// The configuration entry; `None` for the snapshot's (or the configured voters').
        at: Option<LogId>,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot's last term is past the persisted current term.
    #[error("the persisted snapshot ends at {snapshot}, past the persisted current term {term}")]
    SnapshotPastTerm {
        /// The snapshot's last entry.
        snapshot: LogId,
        /// The persisted current term.
        term: u64,
    },
    /// Raft §5.3: the log is contiguous; an entry does not follow the one before it.
    #[error("the persisted entry {entry} does not follow {after} (a gap in the log)")]
    Gap {
        /// The entry.
        entry: LogId,
        /// The entry (or snapshot end) before it.
        after: LogId,
    },
    /// Raft §5.3: terms never decrease along the log.
    #[error("the persisted entry {entry} has a term below that of {after} before it")]
    TermGoesBack {
        /// The entry.
        entry: LogId,
        /// The entry (or snapshot end) before it.
        after: LogId,
    },
    /// Raft §5.1: no entry is from a term later than the node's current term.
    #[error("the persisted entry {entry} is past the persisted current term {term}")]
    EntryPastTerm {
        /// The entry.
        entry: LogId,
        /// The persisted current term.
        term: u64,
    },
}

/// "at <entry>" or "of the snapshot".
fn at_entry(at: &Option<LogId>) -> String {
    at.map_or_else(|| "of the snapshot".to_string(), |id| format!("at {id}"))
}

/// A configuration or restore error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration breaks a bound.
    #[error("invalid config: {0}")]
    Invalid(InvalidConfig),
    /// The persisted state is inconsistent.
    #[error("invalid persisted state: {0}")]
    Persisted(PersistedError),
    /// The state machine refused a snapshot (`StateMachine::restore`): the persisted one at
    /// start, or one the leader sent.
    #[error("cannot restore snapshot {last}: {reason}")]
    Snapshot {
        /// The last entry the snapshot covers.
        last: LogId,
        /// The state machine's message.
        reason: String,
    },
}
