//! [`DurableStore`]: what a durable KV state machine needs of the store under it — committed
//! keys, one position record, and atomic commits — so that the KV rules are written once over
//! LMDB (`raftkv-state-lmdb`) and over [`super::HeapStore`] (the simulator's).

use bytes::Bytes;
use raftkv_raft::{SnapshotSpool, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What [`DurableStore::scan`] calls on each key, value and version; an error stops the scan
/// and is its result.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8], u64) -> Result<(), StorageError> + 'a;

/// Key changes not committed yet: key → its new (value, version), or `None` once deleted.
pub type Changes = BTreeMap<Bytes, Option<(Bytes, u64)>>;

/// What a [`CommittedRead`] is given: how many keys it reads, before any, then each of them.
pub trait CommittedSink {
    /// The number of keys the read visits (the store's own count, in the same read).
    fn keys(&mut self, count: u64) -> Result<(), StorageError>;

    /// One key, its value and version.
    fn entry(&mut self, key: &[u8], value: &[u8], version: u64) -> Result<(), StorageError>;
}

/// Issue 20: a read of a store's committed state, owned, to run on any thread: it tells its
/// argument the number of committed keys, then gives it every key, value and version in key
/// order, and returns the position record, all from ONE consistent read
/// ([`DurableStore::committed_read`]). An error of the sink stops it and is its result.
pub type CommittedRead = Box<
    dyn FnOnce(&mut dyn CommittedSink) -> Result<Option<Vec<u8>>, StorageError> + Send + 'static,
>;

/// Issue 20: a replacement of a store's whole state ([`DurableStore::replace`]), written key by
/// key so that it never has to be whole in memory. Nothing of it is the store's state until
/// [`Replacement::finish`]: dropped before (an error, or a crash at any point), the store
/// keeps its old state and position.
pub trait Replacement {
    /// Puts `key` with `value` at `version` in the new state (keys in any order). If this
    /// replacement had put `key` before, the later one wins, and this returns the length of
    /// the value it replaced.
    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: u64,
    ) -> Result<Option<usize>, StorageError>;

    /// Makes the keys put the store's state, with `position`, atomically, before it returns.
    fn finish(self: Box<Self>, position: &[u8]) -> Result<(), StorageError>;
}

/// A store of committed KV state. Every read sees only committed state; a commit and
/// `replace` are atomic (after a crash, all of the transaction or none of it). A commit runs
/// behind the caller ([`DurableStore::start_commit`], on a thread of its own for LMDB), at most
/// one at a time: the caller keeps the batch it is committing readable above the store until
/// the store says it is done.
pub trait DurableStore: Send + 'static {
    /// The committed value and version of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, StorageError>;

    /// The committed position record (`None` in a new store): where the state is, with what
    /// is not per key (sessions, the data's size). Its encoding is the state machine's.
    fn position(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// Starts committing `changes` and the new `position` in one transaction, then, with
    /// `sync`, making every committed transaction durable across a power cut
    /// ([`DurableStore::sync`]). Returns at once. The caller starts one only when none is in
    /// flight ([`DurableStore::commit_done`], [`DurableStore::wait_commit`]); a store given a
    /// second one first waits for the first. A crash before it completes loses the batch,
    /// never a part of it.
    fn start_commit(
        &mut self,
        changes: Arc<Changes>,
        position: Vec<u8>,
        sync: bool,
    ) -> Result<(), StorageError>;

    /// Without blocking: whether the commit started last has completed (`true` when none is in
    /// flight), or its error.
    fn commit_done(&mut self) -> Result<bool, StorageError>;

    /// Waits for the commit started last, if it is still in flight, to complete.
    fn wait_commit(&mut self) -> Result<(), StorageError>;

    /// Issue 20: starts replacing every key and the position ([`Replacement`]): the new state
    /// is written beside the old one, which stays the store's state (after a crash too) until
    /// the replacement is finished. The caller waits for a commit in flight first, and starts
    /// no commit while the replacement lives.
    fn replace(&mut self) -> Result<Box<dyn Replacement + '_>, StorageError>;

    /// Calls `f` on every committed key, value and version, in key order, from one consistent
    /// read.
    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StorageError>;

    /// Makes every committed transaction durable across a power cut too (a store may let one
    /// lose its last commit, as LMDB with `MDB_NOMETASYNC` does): before the Raft log is
    /// compacted up to the state, and after a leader's snapshot is installed, since the log
    /// then no longer holds what the state holds.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Issue 20: the committed state, to read off the event loop ([`CommittedRead`]): as it is
    /// when the read runs (a store whose handles are cheap to share), or as it was when this
    /// was called. Commits made meanwhile never show in part.
    fn committed_read(&self) -> CommittedRead;

    /// Told that a read was answered by the batch in flight (a store's statistics: the
    /// simulator requires that this path is taken). The default ignores it.
    fn read_in_flight(&self) {}

    /// Issue 20: a new, empty spool for a snapshot of this state (a leader's read of it, or a
    /// follower's copy of its leader's): in memory by default; a store larger than memory
    /// offers one on disk.
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::new(Vec::new()))
    }
}

/// A [`DurableStore`] in memory whose committed state outlives the state machine using it
/// (its clones share it): a node's state across crashes in the simulator and in tests. A crash
/// loses exactly what was not committed, as with LMDB.
///
/// A commit started completes at the next [`DurableStore::commit_done`] (or
/// [`DurableStore::wait_commit`]), never at once: the state machine reads through the batch in
/// flight until then, and a crash (the store dropped) before it loses the batch, as a crash
/// during an LMDB commit does. Both are counted ([`HeapStore::in_flight_reads`],
/// [`HeapStore::in_flight_lost`]), deterministically.
#[derive(Debug, Default)]
pub struct HeapStore {
    committed: Arc<Mutex<Committed>>,
    /// The commit in flight: its changes and position.
    pending: Option<(Arc<Changes>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Committed {
    data: BTreeMap<Bytes, (Bytes, u64)>,
    position: Option<Vec<u8>>,
    commits: u64,
    in_flight_reads: u64,
    in_flight_lost: u64,
}

/// A clone shares the committed state, not the commit in flight.
impl Clone for HeapStore {
    fn clone(&self) -> Self {
        Self {
            committed: self.committed.clone(),
            pending: None,
        }
    }
}

/// A crash (or a stop) before the commit in flight completed: it is lost.
impl Drop for HeapStore {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.lock().in_flight_lost += 1;
        }
    }
}

impl HeapStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many transactions were committed (for tests).
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// How many reads the batch in flight answered (for tests).
    pub fn in_flight_reads(&self) -> u64 {
        self.lock().in_flight_reads
    }

    /// How many commits in flight were lost, the store dropped before they completed.
    pub fn in_flight_lost(&self) -> u64 {
        self.lock().in_flight_lost
    }

    /// Completes the commit in flight, if any.
    fn complete(&mut self) {
        let Some((changes, position)) = self.pending.take() else {
            return;
        };
        let mut c = self.lock();
        for (key, change) in changes.iter() {
            match change {
                Some(v) => c.data.insert(key.clone(), v.clone()),
                None => c.data.remove(key),
            };
        }
        c.position = Some(position);
        c.commits += 1;
    }
}

impl DurableStore for HeapStore {
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, StorageError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn position(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().position.clone())
    }

    fn start_commit(
        &mut self,
        changes: Arc<Changes>,
        position: Vec<u8>,
        _sync: bool,
    ) -> Result<(), StorageError> {
        self.complete();
        self.pending = Some((changes, position));
        Ok(())
    }

    fn commit_done(&mut self) -> Result<bool, StorageError> {
        self.complete();
        Ok(true)
    }

    fn wait_commit(&mut self) -> Result<(), StorageError> {
        self.complete();
        Ok(())
    }

    /// The new state is built beside the committed one and swapped in at the end: a crash
    /// (the replacement dropped) before that leaves the committed state as it was.
    fn replace(&mut self) -> Result<Box<dyn Replacement + '_>, StorageError> {
        self.complete();
        Ok(Box::new(HeapReplacement {
            store: self,
            data: BTreeMap::new(),
        }))
    }

    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StorageError> {
        for (k, (v, version)) in &self.lock().data {
            f(k, v, *version)?;
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
        Box::new(move |sink| {
            sink.keys(data.len() as u64)?;
            for (k, (v, version)) in &data {
                sink.entry(k, v, *version)?;
            }
            Ok(position)
        })
    }

    fn read_in_flight(&self) {
        self.lock().in_flight_reads += 1;
    }
}

/// A [`HeapStore`]'s state being replaced: the new keys, apart until finished.
struct HeapReplacement<'a> {
    store: &'a mut HeapStore,
    data: BTreeMap<Bytes, (Bytes, u64)>,
}

impl Replacement for HeapReplacement<'_> {
    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: u64,
    ) -> Result<Option<usize>, StorageError> {
        let old = self.data.insert(
            Bytes::copy_from_slice(key),
            (Bytes::copy_from_slice(value), version),
        );
        Ok(old.map(|(v, _)| v.len()))
    }

    fn finish(self: Box<Self>, position: &[u8]) -> Result<(), StorageError> {
        let HeapReplacement { store, data } = *self;
        let mut c = store.lock();
        c.data = data;
        c.position = Some(position.to_vec());
        c.commits += 1;
        Ok(())
    }
}
