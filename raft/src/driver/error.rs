//! Why a request to a node, a membership change or a leadership transfer failed.

use crate::config::ConfigError;
use crate::io::StorageError;
use crate::membership::MembershipError;
use crate::raft::{BusyReason, Error as RaftError};
use crate::types::NodeId;
use thiserror::Error;

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

pub(super) fn from_raft(e: RaftError) -> NodeError {
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
