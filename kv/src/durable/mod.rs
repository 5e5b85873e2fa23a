//! [`DurableKv`]: the KV state machine over a [`DurableStore`] (LMDB in a node started with
//! `--state lmdb`): its data is not a heap map, restart does not rebuild one, and the state is
//! always a consistent state at a known log entry.
//!
//! The KV rules are [`KvStateMachine`]'s, run over [`Durable`]: the store's committed keys
//! under a small map of changes not committed yet. The changes of many applied batches are
//! committed together, in ONE transaction with the position record — the last entry applied,
//! the configuration at it, the session table and the data's size — once enough entries were
//! applied ([`Durable::with_commit_every`]). The state need not be durable at each entry: the
//! Raft log holds every entry after the committed position, and a restart applies them again
//! ([`raftkv_raft::StateMachine::applied`]). What a crash loses is only what was not committed.
//!
//! A commit runs behind the state machine ([`DurableStore::start_commit`]; LMDB's on a thread
//! of its own), so that the node's event loop never waits for the disk: the batch being
//! committed stays readable, under the changes applied since and above the store, until the
//! store says it is done. At most one batch is in flight; a commit due while one is in flight
//! waits for it, and the changes go on growing, unless they reach [`BACKLOG_FACTOR`] times the
//! commit's bytes bound: then applying waits for the commit in flight (back-pressure, so that
//! the memory they hold stays bounded). A crash loses the changes and the batch in flight,
//! never a part of a batch.
//!
//! A snapshot of it has the bytes of a [`KvStateMachine`]'s, so nodes of either kind restore
//! each other's. It is read only when a follower needs one: the state, durable at its
//! position ([`StateMachine::make_durable`]), is its own snapshot, so the node stores and
//! holds no copy of it (issue 20).

mod layout;
mod read;
mod store;

pub use store::{
    Changes, CommittedRead, CommittedSink, DurableStore, HeapStore, Replacement, Visit,
};

use crate::session::SessionTable;
use crate::state::{entry_bytes, Cached, KvData, KvStateMachine, Outcome, SessionConfig};
use bytes::Bytes;
use layout::{put_entry, SnapshotLayout, SnapshotWriter};
use raftkv_raft::{
    Index, LogId, Membership, Snapshot, SnapshotRead, SnapshotSpool, StateMachine, StorageError,
};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The KV state machine over a durable store.
pub type DurableKv<S> = KvStateMachine<Durable<S>>;

/// By default the changes are committed once this many entries were applied since the last
/// commit (or [`COMMIT_CHANGES_BYTES_DEFAULT`] of changes wait): a restart applies at most
/// about this many entries again.
pub const COMMIT_EVERY_ENTRIES_DEFAULT: u64 = 4096;

/// By default the changes are committed once they hold this many bytes of keys and values.
pub const COMMIT_CHANGES_BYTES_DEFAULT: u64 = 16 << 20;

/// Back-pressure: while a commit is in flight, the changes applied since may grow to this many
/// times the commit's bytes bound ([`Durable::with_commit_every`]; 64 MiB by default); applying
/// the next batch past it waits for the commit in flight, then goes in flight itself. Each of
/// the two layers then holds at most about this times the bound (plus one batch): 128 MiB in
/// all by default.
pub const BACKLOG_FACTOR: u64 = 4;

/// What a change counts for in the changes' bytes besides its key and value: the map's entry
/// and the buffers' headers (so that a bound on bytes bounds many tiny changes too).
pub const CHANGE_OVERHEAD_BYTES: u64 = 64;

/// A [`DurableStore`]'s keys under the batch being committed and the changes applied since:
/// the [`KvData`] of a [`DurableKv`]. A read looks in the changes, then in the batch in
/// flight, then in the store.
pub struct Durable<S> {
    store: S,
    changes: Changes,
    /// Bytes of keys and values in `changes`, and [`CHANGE_OVERHEAD_BYTES`] per change.
    changes_bytes: u64,
    /// The batch the store is committing, if any.
    in_flight: Option<InFlight>,
    /// The last entry applied and the configuration at it (committed or not).
    applied: Option<(LogId, Membership)>,
    /// The last entry whose effects are committed.
    committed: Index,
    /// The last entry whose effects are committed and synced since: durable across a power
    /// cut too (0@0 until the first sync: a store opened may hold an unsynced commit).
    durable: LogId,
    commit_every_entries: u64,
    commit_changes_bytes: u64,
    /// The first error of a read: the batch it happened in is never committed, and the node
    /// stops when the batch ends ([`StateMachine::applied_to`]).
    error: RefCell<Option<StorageError>>,
}

/// A batch of changes the store is committing, with the position it commits them at.
struct InFlight {
    changes: Arc<Changes>,
    at: LogId,
    /// Synced after the commit: durable across a power cut once it completes.
    sync: bool,
}

/// The position record: what a store's state is at, and what of it is not per key.
#[derive(Serialize, Deserialize)]
struct Position {
    applied: LogId,
    membership: Membership,
    data_bytes: u64,
    sessions: SessionTable<Cached>,
}

impl<S: DurableStore> KvData for Durable<S> {
    fn read(&self, key: &[u8]) -> Option<(Bytes, u64)> {
        if let Some(change) = self.changes.get(key) {
            return change.clone();
        }
        if let Some(change) = self.in_flight.as_ref().and_then(|f| f.changes.get(key)) {
            self.store.read_in_flight();
            return change.clone();
        }
        match self.store.get(key) {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn write(&mut self, key: Bytes, value: Bytes, version: u64) {
        self.changes_bytes += (key.len() + value.len()) as u64 + CHANGE_OVERHEAD_BYTES;
        self.changes.insert(key, Some((value, version)));
    }

    fn remove(&mut self, key: &[u8]) -> Option<(Bytes, u64)> {
        let old = self.read(key);
        if old.is_some() {
            self.changes_bytes += key.len() as u64 + CHANGE_OVERHEAD_BYTES;
            self.changes.insert(Bytes::copy_from_slice(key), None);
        }
        old
    }
}

impl<S: DurableStore> Durable<S> {
    /// Commits the changes through `applied` at least every `entries` applied entries, and as
    /// soon as they hold `bytes` bytes (at least 1 each).
    pub fn with_commit_every(mut self, entries: u64, bytes: u64) -> Self {
        self.commit_every_entries = entries.max(1);
        self.commit_changes_bytes = bytes.max(1);
        self
    }

    /// The store under the changes.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The last entry whose effects are committed to the store (0: none).
    pub fn committed_index(&self) -> Index {
        self.committed
    }

    /// The entry the batch in flight commits through, if one is.
    pub fn in_flight_index(&self) -> Option<Index> {
        self.in_flight.as_ref().map(|f| f.at.index)
    }

    /// The last entry whose effects are durable across a power cut (committed, then synced).
    pub fn durable_at(&self) -> LogId {
        self.durable
    }

    /// Bytes the changes not in flight hold ([`CHANGE_OVERHEAD_BYTES`] per change included).
    pub fn changes_bytes(&self) -> u64 {
        self.changes_bytes
    }

    /// The batch in flight has been committed: the store holds it now.
    fn in_flight_done(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.committed = f.at.index;
            if f.sync {
                self.durable = f.at;
            }
        }
    }

    /// Drops the batch in flight's layer if the store has committed it, without blocking.
    fn poll_commit(&mut self) -> Result<(), StorageError> {
        if self.in_flight.is_some() && self.store.commit_done()? {
            self.in_flight_done();
        }
        Ok(())
    }

    /// Waits until the batch in flight, if any, is committed.
    fn wait_commit(&mut self) -> Result<(), StorageError> {
        if self.in_flight.is_some() {
            self.store.wait_commit()?;
            self.in_flight_done();
        }
        Ok(())
    }

    fn take_error(&self) -> Result<(), StorageError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn corrupt(detail: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail,
    }
}

/// The position record's bytes ([`Position`]'s encoding).
fn encode_position(
    applied: LogId,
    membership: &Membership,
    data_bytes: u64,
    sessions: &SessionTable<Cached>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct PositionRef<'a> {
        applied: LogId,
        membership: &'a Membership,
        data_bytes: u64,
        sessions: &'a SessionTable<Cached>,
    }
    postcard::to_allocvec(&PositionRef {
        applied,
        membership,
        data_bytes,
        sessions,
    })
    .expect("a position always encodes")
}

impl<S: DurableStore> DurableKv<S> {
    /// The state `store` holds, with the node's session settings and data bound (neither is
    /// stored: they are the node's).
    pub fn open(
        store: S,
        config: SessionConfig,
        data_bytes_max: u64,
    ) -> Result<Self, StorageError> {
        let position = match store.position()? {
            Some(bytes) => Some(
                postcard::from_bytes::<Position>(&bytes)
                    .map_err(|e| corrupt(format!("bad KV state position record: {e}")))?,
            ),
            None => None,
        };
        let mut sessions = SessionTable::new(config);
        let (mut applied, mut data_bytes) = (None, 0);
        if let Some(p) = position {
            sessions = p.sessions;
            sessions.set_config(config);
            data_bytes = p.data_bytes;
            applied = Some((p.applied, p.membership));
        }
        let committed = applied.as_ref().map_or(0, |(at, _)| at.index);
        Ok(Self {
            data: Durable {
                store,
                changes: Changes::new(),
                changes_bytes: 0,
                in_flight: None,
                applied,
                committed,
                durable: LogId::default(),
                commit_every_entries: COMMIT_EVERY_ENTRIES_DEFAULT,
                commit_changes_bytes: COMMIT_CHANGES_BYTES_DEFAULT,
                error: RefCell::new(None),
            },
            sessions,
            data_bytes,
            data_bytes_max,
        })
    }

    /// Sets [`Durable::with_commit_every`].
    pub fn with_commit_every(mut self, entries: u64, bytes: u64) -> Self {
        self.data = self.data.with_commit_every(entries, bytes);
        self
    }

    /// The data and what is not per key.
    pub fn durable(&self) -> &Durable<S> {
        &self.data
    }

    fn position(&self, applied: LogId, membership: &Membership) -> Vec<u8> {
        encode_position(applied, membership, self.data_bytes, &self.sessions)
    }

    /// Commits the changes with the position they are at, in one transaction, and waits for
    /// it (and for the batch in flight before it).
    pub fn commit(&mut self) -> Result<(), StorageError> {
        self.data.take_error()?;
        self.data.wait_commit()?;
        self.start_commit(false)?;
        self.data.wait_commit()
    }

    /// Starts committing the changes with the position they are at, when none is in flight;
    /// `sync`: made durable across a power cut too. Nothing to do: nothing is started.
    fn start_commit(&mut self, sync: bool) -> Result<(), StorageError> {
        let d = &self.data;
        let Some((at, membership)) = &d.applied else {
            return Ok(());
        };
        let done = match sync {
            true => *at == d.durable,
            false => at.index == d.committed,
        };
        if d.in_flight.is_some() || (done && d.changes.is_empty()) {
            return Ok(());
        }
        let (at, position) = (*at, self.position(*at, membership));
        let changes = Arc::new(std::mem::take(&mut self.data.changes));
        self.data.changes_bytes = 0;
        // Readable before the store has it, so that an error leaves no key unreadable.
        self.data.in_flight = Some(InFlight {
            changes: changes.clone(),
            at,
            sync,
        });
        self.data.store.start_commit(changes, position, sync)
    }

    /// The keys, committed and not, with their values and versions: what a snapshot holds.
    /// Calls `f` on each. The committed keys come in the store's order, then the keys only the
    /// changes or the batch in flight hold (a snapshot's keys need not be in order: a restore
    /// sorts them). The batch in flight may
    /// land in the store during the read: which keys are new is decided by the store's one
    /// consistent read ([`DurableStore::scan`]), never by a second one.
    fn each_key(&self, f: &mut Visit<'_>) -> Result<(), StorageError> {
        let d = &self.data;
        let in_flight = d.in_flight.as_ref().map(|i| &*i.changes);
        let above = |k: &[u8]| {
            d.changes
                .get(k)
                .or_else(|| in_flight.and_then(|c| c.get(k)))
        };
        // The keys above the store that its read has not met (yet).
        let mut unmet: BTreeSet<&[u8]> = d.changes.keys().map(|k| &k[..]).collect();
        unmet.extend(in_flight.into_iter().flat_map(|c| c.keys().map(|k| &k[..])));
        d.store.scan(&mut |k, v, version| {
            let change = above(k);
            if change.is_some() {
                unmet.remove(k);
            }
            match change {
                Some(Some((cv, cversion))) => f(k, cv, *cversion),
                // Deleted since it was committed.
                Some(None) => Ok(()),
                None => f(k, v, version),
            }
        })?;
        for k in unmet {
            if let Some(Some((v, version))) = above(k) {
                f(k, v, *version)?;
            }
        }
        Ok(())
    }

    /// The state as a snapshot, in a [`KvStateMachine`]'s layout (postcard: the number of keys,
    /// each key, value and version, then the sessions): the same bytes as a heap state's when
    /// every change is committed and the store keeps its keys in order. One read of the store;
    /// in memory (the keys are counted as they are read, then put behind their count): the
    /// read for a follower is [`StateMachine::snapshot_read`]'s, into the store's spool.
    fn encode(&self) -> Result<Bytes, StorageError> {
        let (mut entries, mut count) = (Vec::new(), 0u64);
        self.each_key(&mut |k, v, version| {
            put_entry(&mut entries, k, v, version);
            count += 1;
            Ok(())
        })?;
        let mut w = SnapshotWriter::new(Box::new(Vec::with_capacity(entries.len() + 64)));
        w.encoded(count, &entries)?;
        drop(entries);
        w.finish(&self.sessions)
    }

    /// Issue 20: replaces the state by the snapshot `data`'s, at `applied` (`None`: at an
    /// unknown entry, so that a restart restores the stored snapshot instead of resuming from
    /// it), one key at a time: the snapshot is checked whole first (its keys skipped, its
    /// sessions read), then its keys are put into the store's [`Replacement`], never into a
    /// map. A malformed snapshot, or an error of the store, leaves the state as it was.
    fn restore_at(
        &mut self,
        data: &[u8],
        applied: Option<(LogId, Membership)>,
    ) -> Result<(), String> {
        let layout = SnapshotLayout::parse(data).map_err(|e| format!("bad KV snapshot: {e}"))?;
        let stored = |e: StorageError| format!("cannot store the KV snapshot: {e}");
        // A commit in flight would land after the replacement (or fail, and the replacement
        // is not done either).
        self.data.wait_commit().map_err(stored)?;
        let (at, membership) = applied.clone().unwrap_or_default();
        let mut replacement = self.data.store.replace().map_err(stored)?;
        let mut data_bytes = 0u64;
        for (key, value, version) in layout.entries() {
            if let Some(old) = replacement.put(key, value, version).map_err(stored)? {
                // A repeated key: the later one wins, as in a heap state's restore.
                data_bytes -= entry_bytes(key, b"") + old as u64;
            }
            data_bytes += entry_bytes(key, value);
        }
        let mut sessions = layout.sessions;
        let position = encode_position(at, &membership, data_bytes, &sessions);
        replacement.finish(&position).map_err(stored)?;
        sessions.set_config(self.sessions.config());
        self.sessions = sessions;
        self.data_bytes = data_bytes;
        self.data.changes.clear();
        self.data.changes_bytes = 0;
        *self.data.error.borrow_mut() = None;
        self.data.committed = at.index;
        self.data.durable = LogId::default();
        self.data.applied = applied;
        Ok(())
    }
}

impl<S: DurableStore> StateMachine for DurableKv<S> {
    type Response = Outcome;

    fn apply(&mut self, index: Index, command: &[u8]) -> Outcome {
        self.apply_entry(index, command)
    }

    fn query(&self, query: &[u8]) -> Outcome {
        self.query_bytes(query)
    }

    /// The snapshot, or an empty one (which every restore refuses) if the store cannot be
    /// read: the driver takes [`StateMachine::try_snapshot`], which says so.
    fn snapshot(&self) -> Bytes {
        self.try_snapshot().unwrap_or_default()
    }

    fn try_snapshot(&self) -> Result<Bytes, StorageError> {
        self.encode()
    }

    /// Issue 20: the store's committed state, read off the loop (see `read.rs`).
    fn snapshot_read(&self, applied: Index) -> Option<SnapshotRead> {
        let _ = applied;
        Some(read::committed_snapshot(&self.data.store))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        self.restore_at(data, None)
    }

    /// Issue 20: the store's spool (a file for LMDB's): a snapshot received from the leader
    /// is never whole in the process's own memory.
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        self.data.store.snapshot_spool()
    }

    /// Issue 20: made durable across a power cut before it returns: the node then stores
    /// only the snapshot's metadata, and drops the log it covers.
    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.restore_at(
            &snapshot.data,
            Some((snapshot.last, snapshot.membership.clone())),
        )?;
        self.data
            .store
            .sync()
            .map_err(|e| format!("cannot make the KV snapshot durable: {e}"))?;
        self.data.durable = snapshot.last;
        Ok(())
    }

    /// Issue 20: the state is its own snapshot: everything applied is committed, with its
    /// position, and made durable across a power cut, before it returns (the batch in flight
    /// first); the log up to it may then be dropped.
    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        self.data.take_error()?;
        self.data.wait_commit()?;
        self.start_commit(true)?;
        self.data.wait_commit()?;
        Ok(Some(self.data.durable))
    }

    /// Issue 20: [`StateMachine::make_durable`] without waiting: the entry the state is
    /// durable at now and, if that is not past `past`, a commit and sync of the rest started
    /// (once no commit is in flight).
    fn start_durable(&mut self, past: Index) -> Result<Option<LogId>, StorageError> {
        self.data.take_error()?;
        self.data.poll_commit()?;
        if self.data.durable.index <= past {
            self.start_commit(true)?;
        }
        Ok(Some(self.data.durable))
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self.data.applied.clone())
    }

    /// Commits every [`Durable::with_commit_every`] entries or bytes, behind the state
    /// machine: a commit due while one is in flight waits for it, unless the changes hold
    /// [`BACKLOG_FACTOR`] times the bytes bound (then this waits for the one in flight).
    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.data.take_error()?;
        self.data.applied = Some((last, membership.clone()));
        self.data.poll_commit()?;
        let d = &self.data;
        let since = d.in_flight_index().unwrap_or(d.committed);
        let due = last.index >= since + d.commit_every_entries
            || d.changes_bytes >= d.commit_changes_bytes;
        if !due {
            return Ok(());
        }
        if d.in_flight.is_some() {
            if d.changes_bytes < d.commit_changes_bytes.saturating_mul(BACKLOG_FACTOR) {
                return Ok(());
            }
            self.data.wait_commit()?;
        }
        self.start_commit(false)
    }
}
