//! A replica group's client protocol: what a [`crate::group::ShardClerk`] — and another group's
//! migration driver — sends to a group member, and what it answers. Plain serde types, carried
//! like the KV protocol (`raftkv_kv::protocol`): one postcard frame per message, paired by an
//! id chosen by the client, the answer in kv's generic [`Reply`] frame.

use bytes::Bytes;
use raftkv_kv::protocol::Reply;
use raftkv_kv::state::Op;
use serde::{Deserialize, Serialize};

use crate::config::ShardId;
use crate::group::state::GroupOutcome;

/// A request to a group member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRequest {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub body: GroupRequestBody,
}

/// What a client or another group asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRequestBody {
    /// Request `seq` of session `session` (an id the controller issued); through the log,
    /// applied at most once.
    Write { session: u64, seq: u64, op: Op },
    /// thesis §6.4: a linearizable read through ReadIndex.
    Read { key: Bytes },
    /// 6.5840 lab 5B: the new owner in config `num` pulls these shards (ReadIndex), each from
    /// the key after the one given (the last it has; `None`: from the first), in pieces.
    Pull {
        num: u64,
        shards: Vec<(ShardId, Option<Bytes>)>,
    },
    /// 6.5840 challenge 1: the new owner in config `num` has these shards; delete them
    /// (through the log).
    Delete { num: u64, shards: Vec<ShardId> },
    /// The group's installed config and its shards' statuses (ReadIndex).
    Progress,
    /// The server's view of its Raft group.
    Status,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupResponse {
    pub id: u64,
    pub reply: GroupReply,
}

/// How a request ended at the server: kv's [`Reply`] with the group's [`GroupOutcome`].
pub type GroupReply = Reply<GroupOutcome>;
