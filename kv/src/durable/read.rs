//! Issue 20: a [`DurableKv`](super::DurableKv)'s snapshot read off the event loop, from its
//! store's committed state ([`DurableStore::committed_read`]): one consistent read of the
//! position record and every key, so the snapshot is at the committed position (never before
//! the log's compaction point: the log is compacted only up to a durable position), not at
//! the applied entry. The changes not committed yet stay on the loop, untouched. The snapshot
//! is written into the store's spool ([`DurableStore::snapshot_spool`]; a file for LMDB's), so
//! it is never whole in the process's own memory.

use super::store::{CommittedRead, DurableStore};
use super::{corrupt, Position, SnapshotWriter};
use crate::session::SessionTable;
use crate::state::Cached;
use bytes::Bytes;
use raftkv_raft::{Index, SnapshotRead, SnapshotSpool, StorageError};

/// A read of `store`'s committed state as a snapshot, to run anywhere. The spool is made here
/// (for LMDB's: a file made and unlinked, a few system calls), written where the read runs;
/// an error making it is the read's.
pub(super) fn committed_snapshot<S: DurableStore>(store: &S) -> SnapshotRead {
    let read = store.committed_read();
    let spool = store.snapshot_spool();
    Box::new(move || encode_committed(read, spool?))
}

/// The committed state `read` reads, as the entry it is at and a snapshot in a
/// [`KvStateMachine`](crate::state::KvStateMachine)'s layout: the number of keys, each key,
/// value and version (in the store's order), then the sessions of the position record, written
/// into `spool` as they are read. A store that never committed is the empty state at 0 (which
/// the core refuses for a transfer: it never needs one before anything was compacted).
fn encode_committed(
    read: CommittedRead,
    spool: Box<dyn SnapshotSpool>,
) -> Result<(Index, Bytes), StorageError> {
    let mut w = SnapshotWriter::new(spool);
    let position = read(&mut w)?;
    let (index, sessions) = match position {
        Some(bytes) => {
            let p = postcard::from_bytes::<Position>(&bytes)
                .map_err(|e| corrupt(format!("bad KV state position record: {e}")))?;
            (p.applied.index, p.sessions)
        }
        None => (0, SessionTable::<Cached>::default()),
    };
    Ok((index, w.finish(&sessions)?))
}
