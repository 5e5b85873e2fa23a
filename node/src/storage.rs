//! A node's storage chosen at run time ([`AnyStorage`]: memory or LMDB), and waiting for a
//! stopped node's LMDB environment to be released.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Persisted, Runtime, Storage, StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};

use crate::error::ClusterError;
use crate::kv_state::StateKind;

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

/// The most a node's data may be bounded to ([`raftkv_kv::state::KvStateMachine::data_bytes_max`])
/// with its KV state in memory: half of what one snapshot may hold in LMDB storage, the other
/// half left for the session table and encoding (issue 21 #8).
pub fn data_bytes_max_limit() -> u64 {
    LmdbOptions::default().snapshot_bytes_max as u64 / 2
}

/// Issue 20: the most, and the default, a node's data is bounded to with its KV state in
/// LMDB (`--state lmdb`): no stored snapshot bounds it (storage records only a snapshot's
/// metadata), but a snapshot sent to a lagging follower is still read and received whole in
/// memory: half of the 16 GiB a transfer may carry ([`raftkv_raft::Config::snapshot_bytes_max`]),
/// the other half left for the session table and encoding.
pub const LMDB_STATE_DATA_BYTES_MAX: u64 = 8 << 30;

/// The most a node with its KV state in `state` may bound its data to.
pub fn data_bytes_max_limit_for(state: StateKind) -> u64 {
    match state {
        StateKind::Memory => data_bytes_max_limit(),
        StateKind::Lmdb => LMDB_STATE_DATA_BYTES_MAX,
    }
}

/// The bound on a node's data when none is given: 512 MiB in memory
/// ([`raftkv_kv::state::DATA_BYTES_MAX_DEFAULT`]), [`LMDB_STATE_DATA_BYTES_MAX`] in LMDB.
pub fn data_bytes_max_default_for(state: StateKind) -> u64 {
    match state {
        StateKind::Memory => raftkv_kv::state::DATA_BYTES_MAX_DEFAULT,
        StateKind::Lmdb => LMDB_STATE_DATA_BYTES_MAX,
    }
}

/// Checks a node's `data_bytes_max` for its kind of state. With the state in memory, gives its
/// core the storage's snapshot bound, so that a follower refuses a snapshot its storage could
/// not hold before it receives it whole; in LMDB, storage holds a snapshot's metadata only.
pub(crate) fn apply_data_bounds(
    data_bytes_max: u64,
    state: StateKind,
    raft: &mut raftkv_raft::Config,
) -> Result<(), ClusterError> {
    let limit = data_bytes_max_limit_for(state);
    if data_bytes_max == 0 || data_bytes_max > limit {
        let why = match state {
            StateKind::Memory => format!(
                "half of the {} bytes a snapshot may hold in storage",
                LmdbOptions::default().snapshot_bytes_max
            ),
            StateKind::Lmdb => "with --state lmdb: half of what a snapshot transfer may \
                                carry, as it is still sent whole"
                .to_string(),
        };
        return Err(ClusterError::Setting(format!(
            "data_bytes_max is {data_bytes_max}: it must be 1 to {limit} bytes ({why})"
        )));
    }
    if state == StateKind::Lmdb {
        return Ok(());
    }
    raft.snapshot_bytes_max = raft
        .snapshot_bytes_max
        .min(LmdbOptions::default().snapshot_bytes_max as u64);
    Ok(())
}
