//! [`ClusterError`]: why assembling, starting or operating a node or a cluster failed.

use std::time::Duration;

use raftkv_raft::{NodeError, NodeId, StorageError};
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
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
}
