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
    /// (`append_entries_max` entries or `append_bytes_max` bytes) are sent while one is
    /// unacknowledged; a partial one waits for the answer, and takes what arrived meanwhile.
    pub inflight_appends_max: usize,
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
            entry_bytes_max: 8 << 20,
            uncommitted_bytes_max: 64 << 20,
            snapshot_chunk_bytes_max: 1 << 20,
            snapshot_bytes_max: 16 << 30,
            pending_reads_max: 65_536,
            promote_lag_entries_max: 1_000,
            seed: id,
        }
    }

    /// A node that joins a running cluster: no initial voters (see [`Config::voters`]).
    pub fn joining(id: NodeId) -> Self {
        Self::new(id, [])
    }

    /// Checks the configuration, so that the core can rely on it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::Invalid("id must not be 0".into()));
        }
        let mut voters = self.voters.clone();
        voters.sort_unstable();
        voters.dedup();
        if voters.len() != self.voters.len() {
            return Err(ConfigError::Invalid("voters must be distinct".into()));
        }
        if voters.contains(&0) {
            return Err(ConfigError::Invalid("voter id 0 is not allowed".into()));
        }
        if !voters.is_empty() && !voters.contains(&self.id) {
            return Err(ConfigError::Invalid(format!(
                "id {} is not among the voters (leave them empty to join a running cluster)",
                self.id
            )));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_interval_ticks must be > 0".into(),
            ));
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return Err(ConfigError::Invalid(
                "election_timeout_ticks_min must exceed heartbeat_interval_ticks".into(),
            ));
        }
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return Err(ConfigError::Invalid(
                "election_timeout_ticks_max must exceed election_timeout_ticks_min".into(),
            ));
        }
        for (name, v) in [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_max", self.append_bytes_max),
            ("inflight_appends_max", self.inflight_appends_max),
            ("entry_bytes_max", self.entry_bytes_max),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
            ("pending_reads_max", self.pending_reads_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be > 0")));
            }
        }
        if self.uncommitted_bytes_max < self.entry_bytes_max {
            return Err(ConfigError::Invalid(
                "uncommitted_bytes_max must be >= entry_bytes_max".into(),
            ));
        }
        Ok(())
    }
}

/// A configuration or restore error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("invalid persisted state: {0}")]
    Persisted(String),
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
