//! The transport's configuration, with a bound on everything that could grow.

use crate::codec::{FRAME_BYTES_MAX_DEFAULT, FRAME_ITEMS_MAX_DEFAULT};
use crate::filter::FaultFilter;
use crate::tls::PeerTls;
use raftkv_raft::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Configuration of one node's [`TcpTransport`](crate::TcpTransport).
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id (never 0).
    pub node_id: NodeId,
    /// The cluster's id, checked in every handshake.
    pub cluster_id: u64,
    /// Where to listen for peers. Port 0 picks a free port: see `TcpTransport::local_addr`.
    pub listen_addr: SocketAddr,
    /// Every other node's id and address (never this node's own id).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Messages queued per peer; when full, further messages to that peer are dropped.
    pub outbound_queue_len_max: usize,
    /// Received messages waiting for `recv`; when full, further ones are dropped.
    pub inbound_queue_len_max: usize,
    /// Messages held back by filter delays, over all peers; when full, further ones are dropped.
    pub delayed_len_max: usize,
    /// The bound on a frame body, both ways.
    pub frame_bytes_max: usize,
    /// The bound on the collection elements (entries, ...) one received frame decodes to: a
    /// frame over it closes the connection before it is decoded further. At least the Raft
    /// configuration's `append_entries_max`.
    pub frame_items_max: usize,
    /// A writer stops draining its queue into one batch once the batch reaches this size.
    pub batch_bytes_max: usize,
    /// Inbound connections open at once (handshaking or established); more are refused.
    pub inbound_connections_max: usize,
    /// The first wait after a failed connection; doubled (with jitter) up to the maximum.
    pub reconnect_backoff_min: Duration,
    /// The longest wait between connection attempts.
    pub reconnect_backoff_max: Duration,
    /// How long an inbound connection may take to deliver its hello.
    pub handshake_timeout: Duration,
    /// How long one outbound connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one batch write may block before the connection is dropped.
    pub write_timeout: Duration,
    /// The fault filter applied to outgoing messages; `None` makes a private one (no faults,
    /// seeded with the node id), reachable through `TcpTransport::fault_filter`.
    pub fault_filter: Option<FaultFilter>,
    /// Mutual TLS with every peer (`None`: plain TCP). Inbound connections must complete a
    /// TLS handshake, with a certificate the CA signed, within `handshake_timeout`; outbound
    /// ones within `connect_timeout`.
    pub tls: Option<PeerTls>,
}

impl TcpConfig {
    /// A configuration with default bounds and timeouts.
    pub fn new(
        node_id: NodeId,
        cluster_id: u64,
        listen_addr: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        Self {
            node_id,
            cluster_id,
            listen_addr,
            peers,
            outbound_queue_len_max: 1024,
            inbound_queue_len_max: 4096,
            delayed_len_max: 16 * 1024,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            frame_items_max: FRAME_ITEMS_MAX_DEFAULT,
            batch_bytes_max: 1 << 20,
            inbound_connections_max: 64,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            fault_filter: None,
            tls: None,
        }
    }

    /// Checks that ids and bounds make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.peers.contains_key(&0) {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.peers.contains_key(&self.node_id) {
            return Err(ConfigError::SelfInPeers(self.node_id));
        }
        let positive = [
            ("outbound_queue_len_max", self.outbound_queue_len_max),
            ("inbound_queue_len_max", self.inbound_queue_len_max),
            ("delayed_len_max", self.delayed_len_max),
            ("frame_bytes_max", self.frame_bytes_max),
            ("frame_items_max", self.frame_items_max),
            ("batch_bytes_max", self.batch_bytes_max),
            ("inbound_connections_max", self.inbound_connections_max),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        let durations = [
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("handshake_timeout", self.handshake_timeout),
            ("connect_timeout", self.connect_timeout),
            ("write_timeout", self.write_timeout),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(ConfigError::BackoffRange);
        }
        Ok(())
    }
}

/// A configuration that [`TcpConfig::validate`] refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// This node's or a peer's id is 0.
    #[error("node id 0 is not a valid id")]
    ZeroNodeId,
    /// `peers` lists this node itself.
    #[error("peers must not include this node (n{0})")]
    SelfInPeers(NodeId),
    /// The named bound or timeout is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `reconnect_backoff_max < reconnect_backoff_min`.
    #[error("reconnect_backoff_max must be at least reconnect_backoff_min")]
    BackoffRange,
}
