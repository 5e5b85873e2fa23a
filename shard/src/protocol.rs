//! The controller's client protocol: what a [`crate::clerk::ControllerClerk`] sends to a
//! controller and what it answers. Plain serde types, carried like the KV protocol
//! (`raftkv_kv::protocol`): one postcard frame per message, requests and responses paired by
//! an id chosen by the client.

use raftkv_kv::protocol::Reply;
use serde::{Deserialize, Serialize};

use crate::state::{CtrlOp, Outcome};

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtrlRequest {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub body: CtrlRequestBody,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtrlRequestBody {
    /// thesis §6.3: open an exactly-once session; answered with `Outcome::Registered`.
    Register,
    /// A Join, Leave or Move of a session; applied at most once.
    Change { session: u64, seq: u64, op: CtrlOp },
    /// thesis §6.4: config `num` (`None`: the latest) through ReadIndex; no log entry.
    Query { num: Option<u64> },
    /// The server's view of its Raft group.
    Status,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtrlResponse {
    pub id: u64,
    pub reply: CtrlReply,
}

/// How a request ended at the server: kv's [`Reply`] with the controller's [`Outcome`] in
/// `Done` (the same variants, so the same frames).
pub type CtrlReply = Reply<Outcome>;
