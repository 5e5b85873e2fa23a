//! The client protocol: what a Clerk sends to a KV server and what it answers.
//!
//! The messages are plain serde types; how they travel is the carrier's business. Over TCP
//! (`raftkv-node`'s server and connector) each message is one frame of the peer transport's
//! framing (a `u32` big-endian length and a postcard body) on the server's own client port.
//! Requests carry an id chosen by the client; responses carry it back and may come out of
//! order (a connection has several requests in flight).

use serde::{Deserialize, Serialize};

use crate::state::{Op, Outcome};

/// At most this many bytes in one client frame (request or response), by default.
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 << 20;

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub body: RequestBody,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// thesis §6.3: open an exactly-once session; answered with `Outcome::Registered`.
    Register,
    /// A write (or a get through the log) of a session; applied at most once.
    Write { session: u64, seq: u64, op: Op },
    /// thesis §6.4: a linearizable read through ReadIndex; no log entry is written.
    Read { key: bytes::Bytes },
    /// The server's view of the cluster (role, term, leader...).
    Status,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub id: u64,
    pub reply: Reply,
}

/// How a request ended at the server. Generic over the state machine's answer `O`: the KV
/// service's [`Outcome`] by default; the shard controller answers its own in the same frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<O = Outcome> {
    /// The state machine's answer (for a write: it was applied, or answered from the session
    /// table).
    Done(O),
    /// This server does not lead; `leader_hint` is the client address of the node it believes
    /// does, if it knows one.
    NotLeader { leader_hint: Option<String> },
    /// The server could not learn the outcome in time (it may still be applied later).
    Timeout,
    /// Leadership changed after the write was proposed; it may or may not be applied.
    OutcomeUnknown,
    /// Backpressure (a full queue, too many requests in flight): retry shortly.
    Busy,
    /// The request is larger than the server accepts; retrying will not help.
    TooLarge,
    /// The node is stopped (shut down or failed); try another server.
    Unavailable(String),
    /// The server's status.
    Status(ServerStatus),
}

/// A server's status, as `Reply::Status` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
}
