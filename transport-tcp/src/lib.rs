//! # raftkv-transport-tcp: Raft messages over TCP
//!
//! [`TcpTransport`] implements the `raftkv_raft::Transport` trait between the nodes of one
//! cluster. It is runtime-agnostic: its connections are tasks on the node's runtime, reached
//! through the `raftkv_raft::NetRuntime` trait (a reactor that takes `std` sockets), so the
//! same transport serves the tokio, smol and any other driver whose runtime implements it.
//! Only accepting stays on a thread of its own, and each connection attempt runs on a
//! short-lived thread (`std` has no non-blocking connect).
//!
//! ## How it works
//! Each node listens on one address and keeps one outbound connection to each peer; a
//! connection carries messages one way only. The connecting node first sends a
//! [`Hello`] (magic, protocol version, cluster id, node id); the acceptor checks it and closes
//! the connection on any mismatch. Then every frame is a [`Frame::Raft`] message.
//!
//! Frames are a `u32` big-endian length and a postcard body ([`Codec`], pure and generic over
//! the payload type, reused by the KV client protocol). A length above `frame_bytes_max` is
//! refused before anything is buffered for it.
//!
//! [`Transport::send`](raftkv_raft::Transport::send) never blocks: it applies the
//! [`FaultFilter`] and pushes to the peer's bounded queue, dropping (and counting) when full,
//! so a slow or dead peer never holds up the others. Each peer's writer task drains its
//! queue in batches (one `write_all` per batch, within `write_timeout`), connects and
//! reconnects with exponential backoff and jitter (also as soon as the peer closes the
//! connection: the writer watches for that while idle), and drops what was queued while its
//! peer is unreachable: Raft retransmits. Each inbound connection's reader task reads frames with a
//! cancel-safe [`FrameReader`] and hands them to `recv` through a bounded channel.
//!
//! The set of peers follows the cluster's configuration: the driver calls
//! [`Transport::set_peers`](raftkv_raft::Transport::set_peers) whenever it changes, and the
//! transport starts a writer for each new peer, restarts the writer of a peer whose address
//! changed, and for a removed peer stops its writer, closes its connections both ways and
//! refuses its new ones (bounded: [`PEERS_MAX`] peers, [`PEER_ADDR_BYTES_MAX`]-byte addresses,
//! resolved on the connect thread).
//!
//! Bad input (garbage, an oversized length, a truncated frame, a failed or missing handshake)
//! closes that one connection with one `tracing::warn!` line; inbound messages not `from` the
//! handshake's node, not `to` this node, or not well-formed are dropped and counted.
//!
//! ## Modules
//! `codec` (length-prefixed postcard frames) · `frame_reader` (frames from an async socket,
//! cancel-safe) · `frame` (the peer protocol) · `config` · `filter` (fault injection) ·
//! `stats` (counters) · `queue` (the bounded queues, with their tasks' wakeups) · `shared`
//! (the socket registry used by shutdown) · [`tls`] (rustls over any socket: mutual TLS for
//! peers, server and client sides for the KV port) · `inbound` (the accept thread and reader
//! tasks) ·
//! `outbound` (writer tasks) · `transport` ([`TcpTransport`]).
//!
//! ## Not done
//! - Without [`TcpConfig::tls`], no encryption and no authentication beyond the cluster id:
//!   run it on a trusted network. With it, peers use mutual TLS ([`tls`]).
//! - Connections are one-way (each node dials every peer), so a pair of nodes uses two.
//! - Filter delays are applied on the sender, before the queue; a delayed message may overtake
//!   or be overtaken by others on the same link.
//! - A writer watches its socket while idle, so a connection the peer closed (it restarted, or
//!   refused our hello because it does not know us yet) is redialled at once. A batch written
//!   in the instant before such a close is still lost (Raft retransmits). There are no
//!   keepalives: a peer that vanishes without closing (a host that loses power) is noticed when
//!   a write fails, and a half-open inbound connection lingers until the peer reconnects (the
//!   new connection from the same node replaces it) or the transport shuts down.
//! - An authenticated peer can make a reader hold at most about `frame_bytes_max` plus
//!   `frame_items_max` decoded elements per connection (a frame decoding to more is refused
//!   at the first element over: see `codec`; before that bound, a 16 MiB frame of empty
//!   entries decoded to about 450 MB); before its hello, a connection can make it
//!   hold only its 64 KiB read buffer (a hello frame is at most 64 bytes).

#![warn(missing_docs)]

mod budget;
mod codec;
mod config;
mod filter;
mod frame;
mod frame_reader;
mod inbound;
mod outbound;
mod queue;
mod shared;
mod stats;
pub mod tls;
mod transport;

pub use codec::{
    Codec, CodecError, FRAME_BYTES_MAX_DEFAULT, FRAME_ITEMS_MAX_DEFAULT, PREFIX_BYTES,
};
pub use config::{ConfigError, TcpConfig};
pub use filter::{DropHook, FaultFilter, LinkRule, Verdict};
pub use frame::{Frame, Hello, MAGIC, PROTOCOL_VERSION};
pub use frame_reader::FrameReader;
pub use stats::TransportStats;
pub use tls::{ClientTls, MaybeTls, PeerTls, ServerTls, TlsError, TlsFiles};
pub use transport::{TcpTransport, TransportError, PEERS_MAX, PEER_ADDR_BYTES_MAX};
