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
//! A snapshot of it has the bytes of a [`KvStateMachine`]'s, so nodes of either kind restore
//! each other's. It is read only when a follower needs one: the state, durable at its
//! position ([`StateMachine::make_durable`]), is its own snapshot, so the node stores and
//! holds no copy of it (issue 20).

mod read;
mod store;

pub use store::{Changes, CommittedRead, DurableStore, HeapStore, Visit};

use crate::session::SessionTable;
use crate::state::{Cached, KvData, KvStateMachine, Outcome, SessionConfig, Stored};
use bytes::Bytes;
use raftkv_raft::{Index, LogId, Membership, Snapshot, SnapshotRead, StateMachine, StorageError};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// The KV state machine over a durable store.
pub type DurableKv<S> = KvStateMachine<Durable<S>>;

/// By default the changes are committed once this many entries were applied since the last
/// commit (or [`COMMIT_CHANGES_BYTES_DEFAULT`] of changes wait): a restart applies at most
/// about this many entries again.
pub const COMMIT_EVERY_ENTRIES_DEFAULT: u64 = 4096;

/// By default the changes are committed once they hold this many bytes of keys and values.
pub const COMMIT_CHANGES_BYTES_DEFAULT: u64 = 16 << 20;

/// A [`DurableStore`]'s keys under the changes not committed yet: the [`KvData`] of a
/// [`DurableKv`].
pub struct Durable<S> {
    store: S,
    changes: Changes,
    /// Bytes of keys and values in `changes`.
    changes_bytes: u64,
    /// The last entry applied and the configuration at it (committed or not).
    applied: Option<(LogId, Membership)>,
    /// The last entry whose effects are committed.
    committed: Index,
    commit_every_entries: u64,
    commit_changes_bytes: u64,
    /// The first error of a read: the batch it happened in is never committed, and the node
    /// stops when the batch ends ([`StateMachine::applied_to`]).
    error: RefCell<Option<StorageError>>,
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
        match self.store.get(key) {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn write(&mut self, key: Bytes, value: Bytes, version: u64) {
        self.changes_bytes += (key.len() + value.len()) as u64;
        self.changes.insert(key, Some((value, version)));
    }

    fn remove(&mut self, key: &[u8]) -> Option<(Bytes, u64)> {
        let old = self.read(key);
        if old.is_some() {
            self.changes_bytes += key.len() as u64;
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
                applied,
                committed,
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
            data_bytes: self.data_bytes,
            sessions: &self.sessions,
        })
        .expect("a position always encodes")
    }

    /// Commits the changes with the position they are at, in one transaction.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        self.data.take_error()?;
        let Some((at, membership)) = &self.data.applied else {
            return Ok(());
        };
        if at.index == self.data.committed && self.data.changes.is_empty() {
            return Ok(());
        }
        let position = self.position(*at, membership);
        let at = *at;
        self.data.store.commit(&self.data.changes, &position)?;
        self.data.changes.clear();
        self.data.changes_bytes = 0;
        self.data.committed = at.index;
        Ok(())
    }

    /// The keys, committed and not, with their values and versions: what a snapshot holds.
    /// Calls `f` on each and returns how many there are. The committed keys come in the
    /// store's order, then the keys only the changes hold (a snapshot's keys need not be in
    /// order: a restore sorts them).
    fn each_key(&self, f: &mut Visit<'_>) -> Result<u64, StorageError> {
        let mut n = 0u64;
        self.data.store.scan(&mut |k, v, version| {
            match self.data.changes.get(k) {
                Some(Some((cv, cversion))) => f(k, cv, *cversion),
                Some(None) => return,
                None => f(k, v, version),
            }
            n += 1;
        })?;
        for (k, change) in &self.data.changes {
            if let Some((v, version)) = change {
                if self.data.store.get(k)?.is_none() {
                    f(k, v, *version);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The state as a snapshot, in a [`KvStateMachine`]'s layout (postcard: the number of keys,
    /// each key, value and version, then the sessions): the same bytes as a heap state's when
    /// every change is committed and the store keeps its keys in order.
    fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let count = self.each_key(&mut |_, _, _| {})?;
        let mut out = Vec::new();
        put_varint(&mut out, count);
        self.each_key(&mut |k, v, version| {
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(v);
            put_varint(&mut out, version);
        })?;
        postcard::to_extend(&self.sessions, out).map_err(|e| corrupt(format!("{e}")))
    }

    /// Replaces the state by `state`'s, at `applied` (`None`: at an unknown entry, so that a
    /// restart restores the stored snapshot instead of resuming from it).
    fn replace(
        &mut self,
        state: KvStateMachine,
        applied: Option<(LogId, Membership)>,
    ) -> Result<(), StorageError> {
        let config = self.sessions.config();
        self.sessions = state.sessions;
        self.sessions.set_config(config);
        self.data_bytes = state.data_bytes;
        let (at, membership) = applied.clone().unwrap_or_default();
        let position = self.position(at, &membership);
        let mut pairs = state
            .data
            .into_iter()
            .map(|(k, (v, version))| (k, v, version));
        self.data.store.replace(&mut pairs, &position)?;
        self.data.changes.clear();
        self.data.changes_bytes = 0;
        *self.data.error.borrow_mut() = None;
        self.data.committed = at.index;
        self.data.applied = applied;
        Ok(())
    }

    fn restore_at(
        &mut self,
        data: &[u8],
        applied: Option<(LogId, Membership)>,
    ) -> Result<(), String> {
        let state: KvStateMachine = postcard::from_bytes::<Stored>(data)
            .map(KvStateMachine::from)
            .map_err(|e| format!("bad KV snapshot: {e}"))?;
        self.replace(state, applied)
            .map_err(|e| format!("cannot store the KV snapshot: {e}"))
    }
}

/// A postcard varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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
        self.encode().map(Bytes::from)
    }

    /// Issue 20: the store's committed state, read off the loop (see `read.rs`).
    fn snapshot_read(&self, applied: Index) -> Option<SnapshotRead> {
        let _ = applied;
        Some(read::committed_snapshot(&self.data.store))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        self.restore_at(data, None)
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
            .map_err(|e| format!("cannot make the KV snapshot durable: {e}"))
    }

    /// Issue 20: the state is its own snapshot: everything applied is committed, with its
    /// position, and made durable across a power cut; the log up to it may then be dropped.
    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        self.commit()?;
        self.data.store.sync()?;
        Ok(Some(
            self.data
                .applied
                .as_ref()
                .map_or(LogId::default(), |(at, _)| *at),
        ))
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self.data.applied.clone())
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.data.take_error()?;
        self.data.applied = Some((last, membership.clone()));
        if last.index >= self.data.committed + self.data.commit_every_entries
            || self.data.changes_bytes >= self.data.commit_changes_bytes
        {
            self.commit()?;
        }
        Ok(())
    }
}
