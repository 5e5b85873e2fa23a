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
    /// The cluster's members, as the leader's configuration has them; answered with
    /// `Reply::Members` (by the leader only: others answer `NotLeader`).
    MemberList,
    /// A membership change (thesis §4), carried out by the leader; answered with
    /// `Reply::Members` (the configuration once the change is committed) or
    /// `Reply::MembershipRefused`.
    Member(MemberOp),
    /// thesis §3.10: the leader hands leadership to voter `id`; answered with
    /// `Reply::Members` once `id` leads (as the old leader sees it).
    MoveLeader { id: u64 },
    /// The shared client token of a server started with one: the first request of every
    /// connection to it. Not answered when it matches; answered `Reply::Unauthorized` (and
    /// the connection closed) when it does not. At most [`CLIENT_TOKEN_BYTES_MAX`] bytes.
    Auth { token: String },
}

/// At most this many bytes in a client token.
pub const CLIENT_TOKEN_BYTES_MAX: usize = 1024;

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// thesis §4.2.1: `id` joins as a learner; unless `learner`, the leader promotes it to
    /// voter by itself once it has caught up. Repeating it with the same addresses while `id`
    /// is a member is answered as done (a retried request).
    Add {
        id: u64,
        peer_addr: String,
        client_addr: String,
        learner: bool,
    },
    /// A learner becomes a voter. Done already if `id` is a voter.
    Promote { id: u64 },
    /// `id` leaves the configuration (the leader too: it steps down once it is committed).
    Remove { id: u64 },
}

/// At most this many bytes in an address of a [`MemberOp::Add`]; a longer one is refused.
pub const MEMBER_ADDR_BYTES_MAX: usize = 255;

/// One member of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    /// Where the other nodes reach it (empty if the configuration records none and the
    /// answering server was not started knowing it).
    pub peer_addr: String,
    /// Where clients reach it (same caveat).
    pub client_addr: String,
    /// A learner: receives the log, does not vote.
    pub learner: bool,
}

/// The members of a configuration, voters first, each by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The leader's id, if the answering server knows it.
    pub leader: Option<u64>,
    pub members: Vec<MemberInfo>,
}

/// What kind of refusal a `Reply::MembershipRefused` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// thesis §4.1: another membership change (or a leadership transfer) is in progress;
    /// retry once it has completed.
    InProgress,
    /// A condition that passes by itself shortly (a new leader has not yet committed an entry
    /// of its term): the Clerk retries until its deadline.
    Retry,
    /// The request cannot succeed as it is (not a member, already a member, would leave no
    /// quorum...): the message says what to do.
    Invalid,
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
    /// The cluster's members (the answer to `MemberList`, `Member` and `MoveLeader`).
    Members(MemberList),
    /// The leader refused a membership change or a leadership transfer; `message` says why
    /// and what to do.
    MembershipRefused { kind: RefusalKind, message: String },
    /// The server wants a client token, and the connection's first request was not an `Auth`
    /// with the right one; the connection is closed.
    Unauthorized,
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
    /// The node learned that it is no longer a member (issue 16): it stops campaigning and
    /// only waits to be stopped.
    pub removed: bool,
}
