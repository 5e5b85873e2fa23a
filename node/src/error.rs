//! [`ClusterError`]: why assembling, starting or operating a node or a cluster failed.

use std::time::Duration;

use raftkv_raft::{MembershipError, NodeError, NodeId, ReconfigError, StorageError};
use raftkv_transport_tcp::TransportError;
use thiserror::Error;

/// Why a node or cluster operation failed. Nodes of a [`crate::cluster::LocalCluster`] are
/// named by index (0..n); those of a [`crate::standalone::StandaloneNode`] by Raft id.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A local cluster has 1 to 7 nodes.
    #[error("a cluster needs 1 to 7 nodes, not {nodes}")]
    Size { nodes: usize },
    /// There is no node of this index.
    #[error("no node {index} (the cluster has {nodes}: indexes 0..{nodes})")]
    NoSuchNode { index: usize, nodes: usize },
    /// The node is crashed or stopped.
    #[error("node {index} is not running (crashed or stopped): restart it first")]
    NotRunning { index: usize },
    /// The node is already running.
    #[error("node {index} is already running: crash it before restarting it")]
    Running { index: usize },
    /// The node is paused ([`crate::cluster::LocalCluster::pause`]).
    #[error("node {index} is paused: resume it first")]
    Paused { index: usize },
    /// The runtime or configuration cannot do this.
    #[error("not supported: {what}")]
    Unsupported { what: &'static str },
    /// No node led (with an entry of its term committed) within `waited`.
    #[error("no leader within {waited:?}")]
    NoLeader { waited: Duration },
    /// A standalone node's id is not a key of its peers.
    #[error("node {id} is not among the peers")]
    NotAPeer { id: NodeId },
    /// A standalone node has no client address.
    #[error("node {id} has no client address")]
    NoClientAddr { id: NodeId },
    /// A local cluster starts at most this many nodes over its life (indexes are never
    /// reused).
    #[error("a local cluster starts at most {max} nodes over its life")]
    TooManyNodes { max: usize },
    /// The node was removed from the configuration: it is stopped for good.
    #[error("node {index} was removed from the cluster")]
    Removed { index: usize },
    /// The leader refused a membership change or a leadership transfer; the error says why
    /// and what to do.
    #[error("membership: {0}")]
    Membership(#[from] MembershipError),
    /// A membership change or a leadership transfer did not complete in time.
    #[error("{what} did not complete within the timeout")]
    MembershipTimeout { what: String },
    /// A node could not join a running cluster.
    #[error("cannot join the cluster: {reason}")]
    Join { reason: String },
    /// A membership change or leader transfer failed in a way not listed above.
    #[error("membership change: {0}")]
    Reconfig(ReconfigError),
    /// TLS certificates or keys could not be loaded.
    #[error("{0}")]
    Tls(#[from] raftkv_transport_tcp::TlsError),
    /// A setting out of its range; the message names it and says what it may be.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// A simulated cluster (`sim::SimCluster`, feature `sim`) stopped: every task
    /// waits and no timer is left (a bug), or it was closed.
    #[error("the simulation cannot go on: it was closed, or every task waits with no timer left")]
    Deadlock,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
}

impl From<ReconfigError> for ClusterError {
    fn from(e: ReconfigError) -> Self {
        match e {
            ReconfigError::Refused(e) => ClusterError::Membership(e),
            ReconfigError::Node(e) => ClusterError::Node(e),
            // `ReconfigError` is non-exhaustive: a kind this crate does not know yet is kept whole.
            other => ClusterError::Reconfig(other),
        }
    }
}
