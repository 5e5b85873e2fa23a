//! Where a KV node keeps its state ([`StateKind`]: `memory` or `lmdb`), and [`KvState`], the
//! KV state machine of either kind, chosen at run time.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use raftkv_kv::durable::DurableKv;
use raftkv_kv::state::{KvStateMachine, Outcome, SessionConfig};
use raftkv_raft::{
    Index, LogId, Membership, Runtime, Snapshot, SnapshotRead, SnapshotSpool, StateMachine,
    StorageError,
};
use raftkv_state_lmdb::{LmdbState, StateOptions};

use crate::error::ClusterError;

/// Where a KV node keeps its state: a heap map (`memory`, the default; rebuilt from the
/// snapshot and the log at each start) or LMDB in the node's data directory (`lmdb`: data
/// larger than memory, a restart resumes from it; see `raftkv_kv::durable`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateKind {
    #[default]
    Memory,
    Lmdb,
}

impl std::str::FromStr for StateKind {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, ClusterError> {
        match s {
            "memory" => Ok(Self::Memory),
            "lmdb" => Ok(Self::Lmdb),
            other => Err(ClusterError::Setting(format!(
                "state must be \"memory\" or \"lmdb\", not {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Lmdb => "lmdb",
        })
    }
}

/// The directory of a node's LMDB state inside its data directory.
pub const STATE_DIR_NAME: &str = "state";

/// The KV state machine, in memory or in LMDB.
pub enum KvState {
    Memory(KvStateMachine),
    /// Boxed: one per node, and the variants differ in size.
    Lmdb(Box<DurableKv<LmdbState>>),
}

impl KvState {
    /// A state of `kind` with the default sessions and `data_bytes_max`; an LMDB one in
    /// `data_dir`'s [`STATE_DIR_NAME`], which needs a data directory. A node that stopped in
    /// this process may still hold the environment a moment: opening is retried for up to
    /// 10 s.
    pub async fn open<R: Runtime>(
        runtime: &R,
        kind: StateKind,
        data_bytes_max: u64,
        data_dir: Option<&Path>,
    ) -> Result<Self, ClusterError> {
        let sessions = SessionConfig::default();
        let dir = match (kind, data_dir) {
            (StateKind::Memory, _) => {
                return Ok(Self::Memory(
                    KvStateMachine::new(sessions).with_data_bytes_max(data_bytes_max),
                ))
            }
            (StateKind::Lmdb, None) => {
                return Err(ClusterError::Setting(
                    "state \"lmdb\" needs LMDB storage (a data directory)".into(),
                ))
            }
            (StateKind::Lmdb, Some(dir)) => dir.join(STATE_DIR_NAME),
        };
        let deadline = runtime.now() + crate::storage::RELEASE_WAIT;
        loop {
            let opened = raftkv_state_lmdb::open_state(
                &dir,
                StateOptions::default(),
                sessions,
                data_bytes_max,
            );
            match opened {
                Ok(sm) => return Ok(Self::Lmdb(Box::new(sm))),
                Err(StorageError::Io { .. }) if runtime.now() < deadline => {
                    runtime.sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(ClusterError::Storage(e)),
            }
        }
    }
}

/// Calls `$f` on the state machine inside, whichever kind it is.
macro_rules! each {
    ($self:expr, $sm:ident => $f:expr) => {
        match $self {
            KvState::Memory($sm) => $f,
            KvState::Lmdb($sm) => $f,
        }
    };
}

impl StateMachine for KvState {
    type Response = Outcome;

    fn apply(&mut self, index: Index, command: &[u8]) -> Outcome {
        each!(self, sm => sm.apply(index, command))
    }

    fn query(&self, query: &[u8]) -> Outcome {
        each!(self, sm => sm.query(query))
    }

    fn snapshot(&self) -> Bytes {
        each!(self, sm => sm.snapshot())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        each!(self, sm => sm.restore(data))
    }

    fn try_snapshot(&self) -> Result<Bytes, StorageError> {
        each!(self, sm => sm.try_snapshot())
    }

    fn snapshot_read(&self, applied: Index) -> Option<SnapshotRead> {
        each!(self, sm => sm.snapshot_read(applied))
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        each!(self, sm => sm.applied())
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        each!(self, sm => sm.applied_to(last, membership))
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        each!(self, sm => sm.restore_snapshot(snapshot))
    }

    /// Issue 20: an LMDB state's is a file in its directory (page cache, not the process's
    /// memory); forgetting this forward would receive a leader's whole snapshot in memory.
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        each!(self, sm => sm.snapshot_spool())
    }

    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        each!(self, sm => sm.make_durable())
    }

    fn start_durable(&mut self, past: Index) -> Result<Option<LogId>, StorageError> {
        each!(self, sm => sm.start_durable(past))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files this process has open whose path starts with `dir`.
    fn open_files_in(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    /// Issue 20: `KvState` forwarded every state machine method but `snapshot_spool`, so a
    /// node with `--state lmdb` spooled a leader's whole snapshot in memory.
    #[test]
    fn an_lmdb_state_spools_a_snapshot_in_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(STATE_DIR_NAME);
        let sm = raftkv_state_lmdb::open_state(
            &dir,
            StateOptions::default(),
            SessionConfig::default(),
            1 << 30,
        )
        .unwrap();
        let state = KvState::Lmdb(Box::new(sm));
        let before = open_files_in(&dir);
        let mut spool = state.snapshot_spool().unwrap();
        spool.append(b"chunk").unwrap();
        assert_eq!(
            open_files_in(&dir),
            before + 1,
            "the spool is a file in {dir:?}"
        );
        assert_eq!(spool.finish().unwrap(), Bytes::from_static(b"chunk"));
    }
}
