//! Shards migrate in pieces (issue 17: a shard of any size moves, each piece within
//! [`GroupConfig::shard_bytes_max`]): the old owner's side ([`GroupStateMachine::pull`]) and
//! the new owner's ([`GroupStateMachine::insert`], which also holds the group to its
//! `data_bytes_max`).

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_kv::state::KvStateMachine;
use serde::{Deserialize, Serialize};

use super::{GroupConfig, GroupError, GroupOutcome, GroupStateMachine, ShardStatus};
use crate::config::ShardId;
use crate::hash::key_to_shard;

/// One piece of a migrating shard (issue 17: a shard of any size moves, in pieces bounded by
/// [`GroupConfig::shard_bytes_max`]): its keys after `after`, in order
/// ([`KvStateMachine::piece`]), the shard's session table with the `last` one. The new
/// owner adds a piece only if it continues exactly where the shard stands there
/// (`after` is its last key), so a repeated or late piece changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub after: Option<Bytes>,
    pub last: bool,
    pub kv: KvStateMachine,
}

impl GroupConfig {
    /// The bytes of keys in one piece of a migrating shard (beyond its first key).
    pub(super) fn piece_bytes(&self) -> u64 {
        (self.shard_bytes_max / 4) as u64
    }
}

impl GroupStateMachine {
    /// The group's data: every shard it holds, as [`KvStateMachine::data_bytes`] counts.
    pub fn data_bytes(&self) -> u64 {
        self.state.shards.values().map(|s| s.kv.data_bytes()).sum()
    }

    /// Adds pulled pieces of shards (for the installed config). A piece is added only to a
    /// `Pulling` shard whose last key is the piece's `after` (so a late or repeated copy is
    /// ignored); the last piece makes the shard `GcPending` (served). Every piece is checked
    /// before any is added: a bad one, or one past the group's `data_bytes_max`, refuses the
    /// whole command.
    pub(super) fn insert(&mut self, num: u64, pieces: Vec<(ShardId, Bytes)>) -> GroupOutcome {
        if num != self.state.config.num {
            return GroupOutcome::Done;
        }
        // Where each shard stands once the pieces before are added: (last key, done).
        let mut at: BTreeMap<ShardId, (Option<Bytes>, bool)> = BTreeMap::new();
        let mut decoded = Vec::with_capacity(pieces.len());
        let mut data_bytes = self.data_bytes();
        for (shard, bytes) in pieces {
            let Some(s) = self.state.shards.get(&shard) else {
                continue;
            };
            if s.status != ShardStatus::Pulling {
                continue;
            }
            let (last_key, done) = at
                .entry(shard)
                .or_insert_with(|| (s.kv.last_key().cloned(), false));
            let piece = match decode_piece(shard, &bytes, &self.settings) {
                Ok(p) => p,
                Err(e) => return GroupOutcome::Err(e),
            };
            if *done || piece.after != *last_key {
                continue;
            }
            let piece_bytes = piece.kv.data_bytes();
            if data_bytes + piece_bytes > self.settings.data_bytes_max {
                return GroupOutcome::Err(GroupError::Full {
                    shard,
                    piece_bytes,
                    data_bytes,
                    data_bytes_max: self.settings.data_bytes_max,
                });
            }
            data_bytes += piece_bytes;
            if let Some(k) = piece.kv.last_key() {
                *last_key = Some(k.clone());
            }
            *done = piece.last;
            decoded.push((shard, piece));
        }
        for (shard, piece) in decoded {
            let s = self
                .state
                .shards
                .get_mut(&shard)
                .expect("checked above: a Pulling shard");
            s.kv.absorb(piece.kv, piece.last)
                .expect("checked above: each piece continues the shard");
            if piece.last {
                s.kv.adopt_session_config(self.settings.sessions);
                s.status = ShardStatus::GcPending;
            }
        }
        GroupOutcome::Done
    }

    /// Pieces of the shards of `shards` that this group handed off in config `num` (the new
    /// owner's pull), each shard from the key after the one given, encoded ([`Piece`]);
    /// `NotReady` if this group has not installed config `num` yet. Consecutive pieces of a
    /// shard, then of the next, while the answer stays within `shard_bytes_max` bytes (its
    /// first piece always goes), so that an answer fits a client frame and the `Insert` it
    /// becomes fits a Raft entry; the new owner pulls the rest in its next rounds.
    pub fn pull(&self, num: u64, shards: &[(ShardId, Option<Bytes>)]) -> GroupOutcome {
        let installed = self.state.config.num;
        if installed < num {
            return GroupOutcome::NotReady { installed };
        }
        let mut out: Vec<(ShardId, Bytes)> = Vec::new();
        let mut bytes_total = 0usize;
        if installed == num {
            'shards: for (shard, after) in shards {
                let Some(s) = self.state.shards.get(shard) else {
                    continue;
                };
                if s.status != ShardStatus::BePulled || out.iter().any(|(id, _)| id == shard) {
                    continue;
                }
                let mut after = after.clone();
                loop {
                    let (kv, last) = s.kv.piece(after.as_deref(), self.settings.piece_bytes());
                    let next = kv.last_key().cloned();
                    let piece = Piece { after, last, kv };
                    let bytes =
                        Bytes::from(postcard::to_allocvec(&piece).expect("state always encodes"));
                    if !out.is_empty() && bytes_total + bytes.len() > self.settings.shard_bytes_max
                    {
                        break 'shards;
                    }
                    bytes_total += bytes.len();
                    out.push((*shard, bytes));
                    if last {
                        break;
                    }
                    after = next;
                }
            }
        }
        GroupOutcome::Shards { num, shards: out }
    }
}

/// A piece of a migrating shard, checked where it enters: size, decoding, invariants.
fn decode_piece(shard: ShardId, bytes: &[u8], settings: &GroupConfig) -> Result<Piece, GroupError> {
    let bad = |reason: String| GroupError::BadShard { shard, reason };
    if shard >= settings.shards {
        return Err(GroupError::ShardOutOfRange { shard });
    }
    if bytes.len() > settings.shard_bytes_max {
        return Err(bad(format!(
            "{} bytes, more than {}",
            bytes.len(),
            settings.shard_bytes_max
        )));
    }
    let piece: Piece =
        postcard::from_bytes(bytes).map_err(|e| bad(format!("does not decode: {e}")))?;
    piece.kv.validate().map_err(|rule| bad(rule.to_string()))?;
    if let Some(key) = piece
        .kv
        .keys()
        .find(|k| key_to_shard(k, settings.shards) != Ok(shard))
    {
        return Err(bad(format!("key {key:?} is not of this shard")));
    }
    if let (Some(after), Some(first)) = (&piece.after, piece.kv.keys().next()) {
        if first <= after {
            return Err(bad("a piece's keys come after its `after`".into()));
        }
    }
    Ok(piece)
}
