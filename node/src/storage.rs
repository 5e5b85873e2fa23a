//! A node's storage chosen at run time ([`AnyStorage`]: memory or LMDB), and waiting for a
//! stopped node's LMDB environment to be released.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Persisted, Runtime, Storage, StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};

use crate::error::ClusterError;

/// How long a restart waits for a crashed node's port and storage lock to be released.
pub(crate) const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A node's storage, memory or LMDB.
pub enum AnyStorage {
    Memory(MemStorage),
    Lmdb(LmdbStorage),
}

impl Storage for AnyStorage {
    async fn load(&self) -> Result<Persisted, StorageError> {
        match self {
            AnyStorage::Memory(s) => s.load().await,
            AnyStorage::Lmdb(s) => s.load().await,
        }
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        match self {
            AnyStorage::Memory(s) => s.write(ops).await,
            AnyStorage::Lmdb(s) => s.write(ops).await,
        }
    }
}

/// Opens the LMDB storage in `dir`, waiting while a stopped node still holds its lock (its
/// storage closes once its tasks have ended).
pub(crate) async fn open_lmdb<R: Runtime>(
    runtime: &R,
    dir: &Path,
) -> Result<LmdbStorage, ClusterError> {
    let deadline = runtime.now() + RELEASE_WAIT;
    loop {
        // Opening reads and fsyncs (WAL recovery): not on an executor thread (issue 21 #14).
        let (tx, rx) = futures::channel::oneshot::channel();
        let target = dir.to_path_buf();
        runtime.spawn_blocking(move || {
            let _ = tx.send(LmdbStorage::open(&target, LmdbOptions::default()));
        });
        let opened = rx.await.unwrap_or(Err(StorageError::Closed));
        match opened {
            Ok(s) => return Ok(s),
            Err(e) if runtime.now() >= deadline => return Err(e.into()),
            Err(StorageError::Io { .. }) => runtime.sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether some process (or this one) still holds the storage lock in `dir`.
pub(crate) fn lmdb_locked(dir: &Path) -> bool {
    dir.exists() && LmdbStorage::open(dir, LmdbOptions::default()).is_err()
}

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
