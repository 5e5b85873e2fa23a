//! Recording what Clerks do, for the linearizability checker.
//!
//! The recorder itself, [`History`], belongs to the checker ([`raftkv_checker::history`]): it
//! knows nothing of Raft. This module turns the service's [`Op`]s into the checker's
//! [`KvInput`]s. Keys and values are recorded as UTF-8 text (invalid bytes are replaced with
//! U+FFFD, so a history of binary values can be checked only if their lossy text forms are
//! distinct).

pub use raftkv_checker::history::{History, Pending};
use raftkv_checker::models::{KvInput, KvOp};

use crate::state::Op;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The checker's input for `op`.
pub fn input_of(op: &Op) -> KvInput {
    let (op, key, value, version) = match op {
        Op::Get { key } => (KvOp::Get, key, None, None),
        Op::Put {
            key,
            value,
            version,
        } => (KvOp::Put, key, Some(value), *version),
        Op::Append { key, value } => (KvOp::Append, key, Some(value), None),
        Op::Delete { key } => (KvOp::Delete, key, None, None),
    };
    KvInput {
        op,
        key: text(key),
        value: value.map(|v| text(v)),
        version,
    }
}
