//! The peer protocol: what travels in the [`Codec`](crate::Codec)'s frames between nodes.
//!
//! A connection is one-way. The connecting node sends [`Frame::Hello`] first, then only
//! [`Frame::Raft`]; the accepting node never writes. The acceptor checks the hello (magic,
//! protocol version, cluster id, a known peer id) and closes the connection on any mismatch.

use raftkv_raft::{Message, NodeId};
use serde::{Deserialize, Serialize};

/// The four bytes that open every peer connection's first frame: "raftkv peer".
pub const MAGIC: [u8; 4] = *b"RKVP";

/// The peer protocol version; a node refuses a hello with another one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The handshake a connecting node sends before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`]: tells a raftkv peer from a stray client.
    pub magic: [u8; 4],
    /// Always [`PROTOCOL_VERSION`] for this build.
    pub protocol_version: u16,
    /// The cluster the sender belongs to: two clusters on one network never mix.
    pub cluster_id: u64,
    /// The sender's node id; every message on this connection must be `from` it.
    pub node_id: NodeId,
}

impl Hello {
    /// This build's hello for `node_id` in `cluster_id`.
    pub fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Self {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            node_id,
        }
    }
}

/// One frame on a peer connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The handshake: the first frame, and only the first.
    Hello(Hello),
    /// A Raft message from the handshake's node.
    Raft(Message),
}
