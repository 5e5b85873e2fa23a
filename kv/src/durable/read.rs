//! Issue 20: a [`DurableKv`](super::DurableKv)'s snapshot read off the event loop, from its
//! store's committed state ([`DurableStore::committed_read`]): one consistent read of the
//! position record and every key, so the snapshot is at the committed position (never before
//! the log's compaction point: the log is compacted only up to a durable position), not at
//! the applied entry. The changes not committed yet stay on the loop, untouched.

use super::store::{CommittedRead, DurableStore};
use super::{corrupt, put_varint, Position};
use crate::session::SessionTable;
use crate::state::Cached;
use bytes::Bytes;
use raftkv_raft::{Index, SnapshotRead, StorageError};

/// The most bytes a `u64` takes as a varint: the room kept ahead of the keys for their count.
const COUNT_BYTES_MAX: usize = 10;

/// A read of `store`'s committed state as a snapshot, to run anywhere.
pub(super) fn committed_snapshot<S: DurableStore>(store: &S) -> SnapshotRead {
    let read = store.committed_read();
    Box::new(move || encode_committed(read))
}

/// The committed state `read` reads, as the entry it is at and a snapshot in a
/// [`KvStateMachine`](crate::state::KvStateMachine)'s layout: the number of keys, each key,
/// value and version (in the store's order), then the sessions of the position record. A
/// store that never committed is the empty state at 0 (which the core refuses for a transfer:
/// it never needs one before anything was compacted).
fn encode_committed(read: CommittedRead) -> Result<(Index, Bytes), StorageError> {
    let mut out = vec![0u8; COUNT_BYTES_MAX];
    let mut count = 0u64;
    let position = read(&mut |k, v, version| {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        put_varint(&mut out, v.len() as u64);
        out.extend_from_slice(v);
        put_varint(&mut out, version);
        count += 1;
    })?;
    let (index, sessions) = match position {
        Some(bytes) => {
            let p = postcard::from_bytes::<Position>(&bytes)
                .map_err(|e| corrupt(format!("bad KV state position record: {e}")))?;
            (p.applied.index, p.sessions)
        }
        None => (0, SessionTable::<Cached>::default()),
    };
    let out = postcard::to_extend(&sessions, out).map_err(|e| corrupt(format!("{e}")))?;
    // The count goes right before the keys, in the room kept for it.
    let mut prefix = Vec::with_capacity(COUNT_BYTES_MAX);
    put_varint(&mut prefix, count);
    let start = COUNT_BYTES_MAX - prefix.len();
    let mut out = out;
    out[start..COUNT_BYTES_MAX].copy_from_slice(&prefix);
    Ok((index, Bytes::from(out).slice(start..)))
}
