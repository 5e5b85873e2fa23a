//! [`DurableStore`]: what a durable KV state machine needs of the store under it — committed
//! keys, one position record, and atomic commits — so that the KV rules are written once over
//! LMDB (`raftkv-state-lmdb`) and over [`super::HeapStore`] (the simulator's).

use bytes::Bytes;
use raftkv_raft::StorageError;
use std::collections::BTreeMap;

/// What [`DurableStore::scan`] calls on each key, value and version.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8], u64) + 'a;

/// Key changes not committed yet: key → its new (value, version), or `None` once deleted.
pub type Changes = BTreeMap<Bytes, Option<(Bytes, u64)>>;

/// Issue 20: a read of a store's committed state, owned, to run on any thread: it calls its
/// argument on every committed key, value and version in key order and returns the position
/// record, all from ONE consistent read ([`DurableStore::committed_read`]).
pub type CommittedRead =
    Box<dyn FnOnce(&mut Visit<'_>) -> Result<Option<Vec<u8>>, StorageError> + Send + 'static>;

/// A store of committed KV state. Every method sees only committed state; `commit` and
/// `replace` are atomic (after a crash, all of the transaction or none of it) and durable once
/// they return.
pub trait DurableStore: Send + 'static {
    /// The committed value and version of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, StorageError>;

    /// The committed position record (`None` in a new store): where the state is, with what
    /// is not per key (sessions, the data's size). Its encoding is the state machine's.
    fn position(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// Commits `changes` and the new `position` in one transaction.
    fn commit(&mut self, changes: &Changes, position: &[u8]) -> Result<(), StorageError>;

    /// Replaces every key by `pairs` (key, value, version; keys in any order) and the position
    /// by `position`, in one transaction.
    fn replace(
        &mut self,
        pairs: &mut dyn Iterator<Item = (Bytes, Bytes, u64)>,
        position: &[u8],
    ) -> Result<(), StorageError>;

    /// Calls `f` on every committed key, value and version, in key order, from one consistent
    /// read.
    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StorageError>;

    /// Makes every committed transaction durable across a power cut too (a store may let one
    /// lose its last commit, as LMDB with `MDB_NOMETASYNC` does): called before the Raft log
    /// is compacted up to the state, and after a leader's snapshot is installed, since the
    /// log then no longer holds what the state holds.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Issue 20: the committed state, to read off the event loop ([`CommittedRead`]): as it is
    /// when the read runs (a store whose handles are cheap to share), or as it was when this
    /// was called. Commits made meanwhile never show in part.
    fn committed_read(&self) -> CommittedRead;
}

/// A [`DurableStore`] in memory whose committed state outlives the state machine using it
/// (its clones share it): a node's state across crashes in the simulator and in tests. A crash
/// loses exactly what was not committed, as with LMDB.
#[derive(Clone, Debug, Default)]
pub struct HeapStore {
    committed: std::sync::Arc<std::sync::Mutex<Committed>>,
}

#[derive(Debug, Default)]
struct Committed {
    data: BTreeMap<Bytes, (Bytes, u64)>,
    position: Option<Vec<u8>>,
    commits: u64,
}

impl HeapStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many transactions were committed (for tests).
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

impl DurableStore for HeapStore {
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, StorageError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn position(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().position.clone())
    }

    fn commit(&mut self, changes: &Changes, position: &[u8]) -> Result<(), StorageError> {
        let mut c = self.lock();
        for (key, change) in changes {
            match change {
                Some(v) => c.data.insert(key.clone(), v.clone()),
                None => c.data.remove(key),
            };
        }
        c.position = Some(position.to_vec());
        c.commits += 1;
        Ok(())
    }

    fn replace(
        &mut self,
        pairs: &mut dyn Iterator<Item = (Bytes, Bytes, u64)>,
        position: &[u8],
    ) -> Result<(), StorageError> {
        let data = pairs.map(|(k, v, version)| (k, (v, version))).collect();
        let mut c = self.lock();
        c.data = data;
        c.position = Some(position.to_vec());
        c.commits += 1;
        Ok(())
    }

    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StorageError> {
        for (k, (v, version)) in &self.lock().data {
            f(k, v, *version);
        }
        Ok(())
    }

    /// A commit is as durable as it gets already: it outlives every simulated crash.
    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// The committed state as it is now (a copy of the map: its keys and values shared), so
    /// that what a simulation reads does not depend on when the read runs.
    fn committed_read(&self) -> CommittedRead {
        let (data, position) = {
            let c = self.lock();
            (c.data.clone(), c.position.clone())
        };
        Box::new(move |f| {
            for (k, (v, version)) in &data {
                f(k, v, *version);
            }
            Ok(position)
        })
    }
}
