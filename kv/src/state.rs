//! [`KvStateMachine`]: the replicated key/value state — versioned values and exactly-once client
//! sessions — applied from the Raft log.
//!
//! Every key carries a version that grows by one on each successful write (a key's first write
//! gives version 1; a key re-created after a delete starts again at 1). A conditional put follows
//! the 6.5840 rule: key missing and version 0 → created at version 1; key missing and version > 0
//! → `NoKey`; key present and version equal → applied; otherwise `Version`.
//!
//! Exactly-once (thesis §6.3) is the shared [`SessionTable`] (`crate::session`): a client
//! registers a session, numbers its requests, and a retried request is answered from the table
//! and never applied twice; a request of an expired session is never applied, and is answered
//! `SessionExpired` (it was not applied: it may be sent again under a new session) or
//! `Forgotten` (an earlier copy was applied, or the session's record is gone: the outcome is no
//! longer known).

use bytes::Bytes;
use raftkv_raft::{Index, SnapshotRead, StateMachine, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

mod data;
pub use data::{KvData, MemData};

pub use crate::session::SessionCommand;
pub use crate::session::SessionConfig;
use crate::session::{Check, Malformed, SessionTable};

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: Bytes,
    },
    /// Unconditional when `version` is `None`.
    Put {
        key: Bytes,
        value: Bytes,
        version: Option<u64>,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
}

/// What goes into a Raft entry: a session registration or one numbered request (the layout
/// every KV log and snapshot has).
pub type Command = SessionCommand<Op>;

/// Expected failures of an operation (never a broken invariant).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KvError {
    #[error("no such key")]
    NoKey,
    #[error("version mismatch (current version {current})")]
    Version { current: u64 },
    /// The session expired before this request was applied: it was not applied and never
    /// will be (the session cannot come back), so it may be sent again under a new session.
    #[error("the client session expired; the request was not applied")]
    SessionExpired,
    /// A request older than the session's last applied one (a client bug or a very late
    /// duplicate): its outcome is no longer known.
    #[error("stale request: a later request of this session was already applied")]
    Stale,
    #[error("malformed command")]
    Malformed,
    /// The session expired and either this request had been applied before (its outcome is
    /// no longer kept) or the session's record is gone too: it may or may not have been
    /// applied.
    #[error("the client session expired; whether the request was applied is no longer known")]
    Forgotten,
    /// The write would take the store's data past its bound
    /// ([`KvStateMachine::data_bytes_max`]); nothing was written. Deletes, and writes that do
    /// not grow the data, are still applied (issue 21 #8).
    #[error(
        "the store is full: the write would take its data past its bound; nothing was written"
    )]
    StoreFull,
}

impl From<Malformed> for KvError {
    fn from(_: Malformed) -> Self {
        KvError::Malformed
    }
}

/// The result of applying a command or serving a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Registered { session: u64 },
    Value { value: Bytes, version: u64 },
    Written { version: u64 },
    Deleted,
    Err(KvError),
}

/// The outcome a session remembers for its last write: small on purpose (no values), so the
/// table costs O(clients) with a small constant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Cached {
    Written(u64),
    Deleted,
    Err(KvError),
    /// The last request was a read (or there was none yet): it is re-executed on a retry
    /// (reads are idempotent).
    #[default]
    Read,
}

/// Reads a map the way it was written (a snapshot stores it in key order) into a vector, and
/// builds the tree from it in one pass: a restore of 1,000,000 keys takes about half as long
/// as inserting them one by one. The same bytes as serde's map (postcard: a length, then the
/// pairs); a repeated key keeps its last value, as inserting did.
fn bulk_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Pairs<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> serde::de::Visitor<'de> for Pairs<K, V> {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            // The length comes from the input: trust it only up to a bound.
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs.into_iter().collect())
        }
    }
    deserializer.deserialize_map(Pairs(std::marker::PhantomData))
}

/// The default bound on the size of a store's data ([`KvStateMachine::data_bytes_max`]):
/// 512 MiB. With the session table (at most about 100 MB at the default `sessions_max`), a
/// snapshot stays under the 1 GiB a snapshot may have in LMDB storage and under the core's
/// `snapshot_bytes_max`.
pub const DATA_BYTES_MAX_DEFAULT: u64 = 512 << 20;

/// What one key counts for in [`KvStateMachine::data_bytes`] beyond its key's and value's
/// bytes: at least what a snapshot spends on it (two length prefixes and a version, as
/// varints), so that the data's share of a snapshot is never more than the count.
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

/// Issue 20: a heap state is encoded off the event loop ([`StateMachine::snapshot_read`]) when
/// its entries take at least this many bytes on average ([`KvStateMachine::data_bytes`] per
/// key). Copying the map for it costs the loop a fixed time per key (measured for 1M keys of
/// 16-byte values: 80-86 ms, 280 ms the first time, as each key and value built from a `Vec`
/// then moves into a shared buffer — about the 100 ms of encoding them), while the encoding it
/// saves grows with the bytes (30-50 ms for 64 MiB in 64 KiB or 1 MiB values, where the copy
/// takes under 0.1 ms).
pub const OFF_LOOP_ENTRY_BYTES_MIN: u64 = 1024;

/// What the key `key` holding `value` counts for in [`KvStateMachine::data_bytes`].
pub(crate) fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

/// What a snapshot holds of a [`KvStateMachine`]: the data and the sessions.
#[derive(Deserialize)]
pub(crate) struct Stored {
    #[serde(deserialize_with = "bulk_map")]
    data: BTreeMap<Bytes, (Bytes, u64)>,
    sessions: SessionTable<Cached>,
}

impl From<Stored> for KvStateMachine {
    /// The state a snapshot (or a migrated shard) holds, its size counted, with the default
    /// bound.
    fn from(stored: Stored) -> Self {
        let mut sm = Self {
            data: stored.data,
            sessions: stored.sessions,
            data_bytes: 0,
            data_bytes_max: DATA_BYTES_MAX_DEFAULT,
        };
        sm.data_bytes = sm.count_data_bytes();
        sm
    }
}

/// The KV state machine, over the data `D` keeps: a heap map ([`MemData`], the default) or a
/// durable store (`crate::durable`). The KV rules (versions, conditional put, append, delete,
/// the data bound, sessions) are written once, over [`KvData`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine<D = MemData> {
    /// key → (value, version). Invariant: version >= 1.
    pub(crate) data: D,
    /// The sessions; their settings are the node's, not part of a snapshot (issue 21 #9).
    /// Encoded after `data` with the same bytes as the fields it replaced, so the snapshot
    /// layout is unchanged.
    pub(crate) sessions: SessionTable<Cached>,
    /// Invariant: the sum of [`entry_bytes`] over `data`. Not in a snapshot: recounted when
    /// one is read.
    pub(crate) data_bytes: u64,
    /// A write that would take `data_bytes` past this is refused with
    /// [`KvError::StoreFull`]. The node's setting, not part of a snapshot.
    pub(crate) data_bytes_max: u64,
}

/// A snapshot of `data` and `sessions` (postcard: see the `Serialize` impl of
/// [`KvStateMachine`]), into a buffer sized up front from `data_bytes` (the data's count,
/// never less than its share of the snapshot), so that a large state is not copied as the
/// buffer grows.
fn encode(
    data: &MemData,
    sessions: &SessionTable<Cached>,
    data_bytes: u64,
) -> Result<Bytes, postcard::Error> {
    let capacity = usize::try_from(data_bytes).unwrap_or(0).saturating_add(64);
    postcard::to_extend(&(data, sessions), Vec::with_capacity(capacity)).map(Bytes::from)
}

/// A snapshot holds the data, then the sessions (postcard: the bytes of the struct these
/// fields once were, so the layout is unchanged).
impl Serialize for KvStateMachine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.data, &self.sessions).serialize(s)
    }
}

impl<'de> Deserialize<'de> for KvStateMachine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Stored::deserialize(d).map(Self::from)
    }
}

impl Default for KvStateMachine {
    fn default() -> Self {
        Self::new(SessionConfig::default())
    }
}

impl<D: KvData> KvStateMachine<D> {
    /// Bounds the data's size: a write that would take [`Self::data_bytes`] past `bytes_max`
    /// is refused with [`KvError::StoreFull`] when it is applied, before it is acknowledged
    /// (issue 21 #8). Every node of a cluster must have the same bound (as the same session
    /// settings): the check is part of applying a write, so nodes with different bounds
    /// would apply different writes.
    pub fn with_data_bytes_max(mut self, bytes_max: u64) -> Self {
        self.data_bytes_max = bytes_max;
        self
    }

    /// The bound set by [`Self::with_data_bytes_max`] ([`DATA_BYTES_MAX_DEFAULT`] by default).
    pub fn data_bytes_max(&self) -> u64 {
        self.data_bytes_max
    }

    /// The data's size as the bound counts it: every key's and value's bytes plus
    /// [`ENTRY_OVERHEAD_BYTES`] per key.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Whether a write that replaces `old` bytes by `new` bytes may be applied: always if it
    /// does not grow the data (so a full store can still be emptied), else only within the
    /// bound.
    fn fits(&self, old: u64, new: u64) -> bool {
        new <= old || self.data_bytes - old + new <= self.data_bytes_max
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Reads `key` (for ReadIndex reads, and `Get` through the log).
    pub fn get(&self, key: &[u8]) -> Outcome {
        match self.data.read(key) {
            Some((value, version)) => Outcome::Value { value, version },
            None => Outcome::Err(KvError::NoKey),
        }
    }

    /// Applies one command (the log index is the session id of a registration).
    pub fn apply_command(&mut self, index: Index, command: Command) -> Outcome {
        match command {
            Command::Register { now_ms } => Outcome::Registered {
                session: self.sessions.register(index, now_ms),
            },
            Command::Request {
                session,
                seq,
                now_ms,
                op,
            } => {
                let check = self.sessions.check(session, seq, now_ms);
                self.answer(check, session, seq, op)
            }
        }
    }

    /// Applies request `seq` of `session`, opening the session if this state machine has
    /// never seen it (neither live nor expired): for session ids unique without a
    /// registration here — the sharded store's, where a shard's state, sessions included,
    /// moves between groups (`raftkv_shard::group`).
    pub fn apply_open_request(&mut self, session: u64, seq: u64, now_ms: u64, op: Op) -> Outcome {
        let check = self.sessions.check_or_open(session, seq, now_ms);
        self.answer(check, session, seq, op)
    }

    /// The answer to a request the session table checked as `check`.
    fn answer(&mut self, check: Check<Cached>, session: u64, seq: u64, op: Op) -> Outcome {
        match check {
            Check::Expired => Outcome::Err(KvError::SessionExpired),
            Check::Forgotten => Outcome::Err(KvError::Forgotten),
            Check::Stale => Outcome::Err(KvError::Stale),
            // thesis §6.3: a retry is answered from the table, never applied again.
            Check::Retry(cached) => match cached {
                Cached::Written(version) => Outcome::Written { version },
                Cached::Deleted => Outcome::Deleted,
                Cached::Err(e) => Outcome::Err(e),
                Cached::Read => match &op {
                    Op::Get { key } => self.get(key),
                    _ => Outcome::Err(KvError::Stale),
                },
            },
            Check::New => {
                let is_read = matches!(op, Op::Get { .. });
                let outcome = self.execute(op);
                let cached = match &outcome {
                    _ if is_read => Cached::Read,
                    Outcome::Written { version } => Cached::Written(*version),
                    Outcome::Deleted => Cached::Deleted,
                    Outcome::Err(e) => Cached::Err(*e),
                    Outcome::Value { .. } | Outcome::Registered { .. } => Cached::Read,
                };
                self.sessions.record(session, seq, cached);
                outcome
            }
        }
    }

    /// The session settings.
    pub fn session_config(&self) -> SessionConfig {
        self.sessions.config()
    }

    /// Gives the sessions `config` without trimming them (after a restore: trimming there would
    /// expire sessions on this replica and not on the others; they shrink as the log is
    /// applied).
    pub fn set_session_config(&mut self, config: SessionConfig) {
        self.sessions.set_config(config);
    }

    /// Gives the sessions `config` and trims them to its bounds at once: for a state that
    /// arrived from elsewhere through the log (a migrated shard), so that every replica trims
    /// it the same way.
    pub fn adopt_session_config(&mut self, config: SessionConfig) {
        self.sessions.set_config(config);
        self.sessions.enforce_bounds();
    }

    /// Sets the bound of [`Self::with_data_bytes_max`] on a store in place.
    pub fn set_data_bytes_max(&mut self, bytes_max: u64) {
        self.data_bytes_max = bytes_max;
    }

    fn execute(&mut self, op: Op) -> Outcome {
        match op {
            Op::Get { key } => self.get(&key),
            Op::Put {
                key,
                value,
                version,
            } => {
                let new = entry_bytes(&key, &value);
                let (current, old) = match self.data.read(&key) {
                    Some((v, version)) => (version, entry_bytes(&key, &v)),
                    None => (0, 0),
                };
                match version {
                    Some(v) if current == 0 && v > 0 => return Outcome::Err(KvError::NoKey),
                    Some(v) if v != current => return Outcome::Err(KvError::Version { current }),
                    _ => {}
                }
                if !self.fits(old, new) {
                    return Outcome::Err(KvError::StoreFull);
                }
                self.data_bytes = self.data_bytes - old + new;
                let version = current + 1;
                self.data.write(key, value, version);
                Outcome::Written { version }
            }
            Op::Append { key, value } => {
                let (joined, version, grows_by) = match self.data.read(&key) {
                    Some((old, v)) => {
                        let mut joined = Vec::with_capacity(old.len() + value.len());
                        joined.extend_from_slice(&old);
                        joined.extend_from_slice(&value);
                        (Bytes::from(joined), v + 1, value.len() as u64)
                    }
                    None => {
                        let grows_by = entry_bytes(&key, &value);
                        (value, 1, grows_by)
                    }
                };
                if !self.fits(0, grows_by) {
                    return Outcome::Err(KvError::StoreFull);
                }
                self.data_bytes += grows_by;
                self.data.write(key, joined, version);
                Outcome::Written { version }
            }
            Op::Delete { key } => match self.data.remove(&key) {
                Some((value, _)) => {
                    self.data_bytes -= entry_bytes(&key, &value);
                    Outcome::Deleted
                }
                None => Outcome::Err(KvError::NoKey),
            },
        }
    }

    /// Applies a Raft entry's command (the log index is the session id of a registration).
    pub fn apply_entry(&mut self, index: Index, command: &[u8]) -> Outcome {
        match Command::decode(command) {
            Ok(c) => self.apply_command(index, c),
            Err(e) => Outcome::Err(e.into()),
        }
    }

    /// Serves a read (a postcard-encoded `Op::Get`).
    pub fn query_bytes(&self, query: &[u8]) -> Outcome {
        match postcard::from_bytes::<Op>(query) {
            Ok(Op::Get { key }) => self.get(&key),
            _ => Outcome::Err(KvError::Malformed),
        }
    }
}

impl KvStateMachine {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            data: BTreeMap::new(),
            sessions: SessionTable::new(config),
            data_bytes: 0,
            data_bytes_max: DATA_BYTES_MAX_DEFAULT,
        }
    }

    /// The data's size counted again from the data.
    fn count_data_bytes(&self) -> u64 {
        self.data.iter().map(|(k, (v, _))| entry_bytes(k, v)).sum()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.data.keys()
    }

    /// The last key, if any.
    pub fn last_key(&self) -> Option<&Bytes> {
        self.data.keys().next_back()
    }

    /// A piece of this store, to send it in parts (a migrated shard, issue 17): the keys after
    /// `after` (from the first if `None`), in order — at least one, then as many as stay within
    /// `bytes_max` as [`Self::data_bytes`] counts them. It holds the whole session table when
    /// it holds the last key (then `true`), none otherwise. [`Self::absorb`] puts the pieces
    /// together again.
    pub fn piece(&self, after: Option<&[u8]>, bytes_max: u64) -> (KvStateMachine, bool) {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = self
            .data
            .range::<[u8], _>((from, Bound::Unbounded))
            .peekable();
        let (mut data, mut bytes) = (BTreeMap::new(), 0);
        while let Some((key, (value, version))) = keys.peek() {
            let b = entry_bytes(key, value);
            if !data.is_empty() && bytes + b > bytes_max {
                break;
            }
            bytes += b;
            data.insert(Bytes::clone(key), (value.clone(), *version));
            keys.next();
        }
        let last = keys.peek().is_none();
        let sessions = match last {
            true => self.sessions.clone(),
            false => SessionTable::new(self.sessions.config()),
        };
        let piece = Self {
            data,
            sessions,
            data_bytes: bytes,
            data_bytes_max: self.data_bytes_max,
        };
        (piece, last)
    }

    /// Adds the next [`Self::piece`] of a store sent in parts: its keys, which must all come
    /// after this store's last key (else nothing changes), and its session table if it is the
    /// `last` piece. The bound ([`Self::data_bytes_max`]) is the caller's to check.
    pub fn absorb(&mut self, mut piece: KvStateMachine, last: bool) -> Result<(), &'static str> {
        if let (Some(mine), Some(first)) = (self.last_key(), piece.data.keys().next()) {
            if first <= mine {
                return Err("a piece's keys come after the keys already received");
            }
        }
        self.data_bytes += piece.data_bytes;
        self.data.append(&mut piece.data);
        if last {
            self.sessions = piece.sessions;
        }
        Ok(())
    }

    /// Checks the invariants on the fields; the first broken one, named (for state that
    /// arrived from outside: a snapshot, a migrated shard).
    pub fn validate(&self) -> Result<(), &'static str> {
        self.sessions.validate()?;
        if !self.data.values().all(|(_, v)| *v >= 1) {
            return Err("versions start at 1");
        }
        if self.count_data_bytes() != self.data_bytes {
            return Err("data_bytes counts every key's bytes");
        }
        Ok(())
    }

    /// Checks the invariants on the fields; panics naming the broken one.
    pub fn check_invariants(&self) {
        self.sessions.check_invariants();
        assert!(
            self.data.values().all(|(_, v)| *v >= 1),
            "versions start at 1"
        );
        assert_eq!(
            self.count_data_bytes(),
            self.data_bytes,
            "data_bytes counts every key's bytes"
        );
    }
}

impl StateMachine for KvStateMachine {
    type Response = Outcome;

    fn apply(&mut self, index: Index, command: &[u8]) -> Outcome {
        self.apply_entry(index, command)
    }

    fn query(&self, query: &[u8]) -> Outcome {
        self.query_bytes(query)
    }

    fn snapshot(&self) -> Bytes {
        encode(&self.data, &self.sessions, self.data_bytes).expect("state always encodes")
    }

    /// Issue 20: a copy of the map (the keys and values shared, not copied: a `Bytes` clone
    /// is a reference count) and of the sessions, encoded off the loop into the bytes
    /// [`StateMachine::snapshot`] gives, at `applied`. `None` for a map of small entries (on
    /// average under [`OFF_LOOP_ENTRY_BYTES_MIN`]): copying it costs the loop as much as
    /// encoding it.
    fn snapshot_read(&self, applied: Index) -> Option<SnapshotRead> {
        let keys = self.data.len() as u64;
        if keys > 0 && self.data_bytes / keys < OFF_LOOP_ENTRY_BYTES_MIN {
            return None;
        }
        let (data, sessions, data_bytes) =
            (self.data.clone(), self.sessions.clone(), self.data_bytes);
        Some(Box::new(move || {
            let bytes =
                encode(&data, &sessions, data_bytes).map_err(|e| StorageError::Corrupt {
                    index: None,
                    detail: format!("cannot encode the KV state: {e}"),
                })?;
            Ok((applied, bytes))
        }))
    }

    /// Replaces the state with the snapshot's; the session settings stay the node's. (The
    /// tables are not trimmed to smaller bounds here: that would expire sessions on this
    /// replica and not on the others; they shrink as the log is applied.)
    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let restored: Self =
            postcard::from_bytes(data).map_err(|e| format!("bad KV snapshot: {e}"))?;
        let (config, data_bytes_max) = (self.sessions.config(), self.data_bytes_max);
        *self = restored;
        self.sessions.set_config(config);
        // A snapshot over this node's bound (a bound lowered since, or another node's) is
        // still restored: refusing it would leave this node unable to catch up. Writes that
        // grow the data are refused until it is under the bound again.
        self.data_bytes_max = data_bytes_max;
        Ok(())
    }
}

#[cfg(test)]
mod bulk_map_tests {
    use super::*;

    /// The snapshot layout with the key map as a plain list of pairs (postcard writes a map and
    /// a list of pairs as the same bytes), to feed the restore pairs out of order.
    #[derive(Serialize)]
    struct AsPairs {
        data: Vec<(Bytes, (Bytes, u64))>,
        sessions: SessionTable<Cached>,
    }

    fn pair(k: &str, v: &str, version: u64) -> (Bytes, (Bytes, u64)) {
        (
            Bytes::from(k.to_owned()),
            (Bytes::from(v.to_owned()), version),
        )
    }

    #[test]
    fn restore_builds_the_same_map_as_inserting_one_by_one_even_unsorted_or_repeated() {
        let pairs = vec![
            pair("b", "2", 1),
            pair("a", "1", 3),
            pair("c", "x", 1),
            pair("b", "last", 2),
        ];
        let bytes = postcard::to_allocvec(&AsPairs {
            data: pairs.clone(),
            sessions: {
                let mut t = SessionTable::default();
                t.register(1, 7);
                t
            },
        })
        .unwrap();
        let mut restored = KvStateMachine::default();
        restored.restore(&bytes).unwrap();
        let mut expected = BTreeMap::new();
        for (k, v) in pairs {
            expected.insert(k, v);
        }
        assert_eq!(restored.data, expected);
        assert_eq!(restored.sessions.clock_ms(), 7);
        // And what a snapshot writes reads back unchanged.
        let mut again = KvStateMachine::default();
        again.restore(&restored.snapshot()).unwrap();
        assert_eq!(again, restored);
    }

    #[test]
    fn a_snapshot_announcing_more_pairs_than_it_holds_is_refused_without_reserving_them() {
        // A length prefix of u32::MAX pairs, then nothing: an error, not a 4-billion-slot
        // allocation.
        let mut bytes = Vec::new();
        let mut n = u32::MAX as u64;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        assert!(KvStateMachine::default().restore(&bytes).is_err());
    }
}

#[cfg(test)]
mod expired_session_tests {
    use super::*;

    fn register(sm: &mut KvStateMachine, index: Index, now_ms: u64) -> u64 {
        match sm.apply_command(index, Command::Register { now_ms }) {
            Outcome::Registered { session } => session,
            other => panic!("registration answered {other:?}"),
        }
    }

    fn append(session: u64, seq: u64, now_ms: u64) -> Command {
        Command::Request {
            session,
            seq,
            now_ms,
            op: Op::Append {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"x;"),
            },
        }
    }

    fn small_table() -> KvStateMachine {
        KvStateMachine::new(SessionConfig {
            ttl_ms: 1_000,
            sessions_max: 1,
        })
    }

    /// Issue 21 #12: a request delivered twice — one copy applied while its session lived,
    /// the other after the session expired — was answered `SessionExpired`, which the Clerk
    /// took for "not applied" and sent again: a second apply.
    #[test]
    fn duplicate_applied_before_session_expiry_is_not_answered_session_expired() {
        let mut sm = small_table();
        let s = register(&mut sm, 1, 0);
        assert_eq!(
            sm.apply_command(2, append(s, 1, 10)),
            Outcome::Written { version: 1 }
        );
        register(&mut sm, 3, 20); // evicts session s (a table of one)
        assert_eq!(
            sm.apply_command(4, append(s, 1, 30)),
            Outcome::Err(KvError::Forgotten),
            "the late copy was applied before: its outcome is unknown, not 'not applied'"
        );
        sm.check_invariants();
    }

    #[test]
    fn a_request_never_applied_before_its_session_expired_is_answered_session_expired() {
        let mut sm = small_table();
        let s = register(&mut sm, 1, 0);
        sm.apply_command(2, append(s, 1, 10));
        sm.apply_command(3, append(s, 2, 5_000)); // expired by idleness (TTL 1 s)
        assert_eq!(
            sm.apply_command(4, append(s, 2, 5_001)),
            Outcome::Err(KvError::SessionExpired)
        );
        assert_eq!(
            sm.get(b"k"),
            Outcome::Value {
                value: Bytes::from_static(b"x;"),
                version: 1
            }
        );
        sm.check_invariants();
    }

    #[test]
    fn the_expired_table_is_bounded_and_a_forgotten_session_is_answered_forgotten() {
        let mut sm = small_table();
        let first = register(&mut sm, 1, 0);
        for i in 2..10 {
            register(&mut sm, i, i);
        }
        assert_eq!(sm.sessions.expired_len(), 1, "at most sessions_max records");
        assert_eq!(
            sm.apply_command(10, append(first, 1, 10)),
            Outcome::Err(KvError::Forgotten)
        );
        sm.check_invariants();
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    /// Issue 21 #9: session settings stored in a snapshot overrode the node's configuration
    /// on restore.
    #[test]
    fn snapshot_restore_keeps_the_nodes_session_settings() {
        let theirs = SessionConfig {
            ttl_ms: 1,
            sessions_max: 1,
        };
        let ours = SessionConfig {
            ttl_ms: 60_000,
            sessions_max: 100,
        };
        let mut leader = KvStateMachine::new(theirs);
        leader.apply_command(1, Command::Register { now_ms: 0 });
        let snapshot = leader.snapshot();

        let mut node = KvStateMachine::new(ours);
        node.restore(&snapshot).unwrap();
        assert_eq!(node.sessions.config(), ours);
        assert_eq!(node.sessions(), 1);
        // And the node's settings decide: a second session does not evict the first (a table
        // of one would), and 10 s of idleness does not expire it (1 ms would).
        node.apply_command(2, Command::Register { now_ms: 10_000 });
        assert_eq!(node.sessions(), 2);
        node.check_invariants();
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// A state with live sessions (a write, a read, a fresh one), an expired session's record,
    /// and keys.
    fn sample() -> KvStateMachine {
        let mut sm = KvStateMachine::new(SessionConfig {
            ttl_ms: 1_000,
            sessions_max: 3,
        });
        let put = |session, seq, now_ms, k: &'static str| Command::Request {
            session,
            seq,
            now_ms,
            op: Op::Put {
                key: Bytes::from_static(k.as_bytes()),
                value: Bytes::from_static(b"v"),
                version: None,
            },
        };
        sm.apply_command(1, Command::Register { now_ms: 5 });
        sm.apply_command(2, put(1, 1, 6, "a"));
        sm.apply_command(3, Command::Register { now_ms: 7 });
        sm.apply_command(
            4,
            Command::Request {
                session: 3,
                seq: 1,
                now_ms: 8,
                op: Op::Get {
                    key: Bytes::from_static(b"a"),
                },
            },
        );
        sm.apply_command(5, Command::Register { now_ms: 2_000 }); // expires 1 and 3
        sm.apply_command(6, put(5, 1, 2_001, "b"));
        sm.apply_command(7, Command::Register { now_ms: 2_002 });
        sm
    }

    /// The bytes the state machine wrote before its sessions moved into the shared
    /// `SessionTable`: a snapshot taken by an older node still restores, and a newer node's
    /// restores on an older one.
    const SAMPLE_SNAPSHOT_HEX: &str =
        "02016101760101620176010205010001d10f070003d20f02d10f05d20f07d20f0201010301020103";

    #[test]
    fn snapshot_layout_is_unchanged_by_the_shared_session_table() {
        let sm = sample();
        let hex: String = sm.snapshot().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, SAMPLE_SNAPSHOT_HEX);
        let mut restored = KvStateMachine::new(sm.sessions.config());
        restored.restore(&sm.snapshot()).unwrap();
        assert_eq!(restored, sm);
        restored.check_invariants();
    }
}

#[cfg(test)]
mod data_bound_tests {
    use super::*;

    fn put(sm: &mut KvStateMachine, seq: u64, key: &str, value: usize) -> Outcome {
        sm.apply_command(
            seq + 1,
            Command::Request {
                session: 1,
                seq,
                now_ms: 0,
                op: Op::Put {
                    key: Bytes::from(key.to_owned()),
                    value: Bytes::from(vec![b'v'; value]),
                    version: None,
                },
            },
        )
    }

    fn op(sm: &mut KvStateMachine, seq: u64, op: Op) -> Outcome {
        sm.apply_command(
            seq + 1,
            Command::Request {
                session: 1,
                seq,
                now_ms: 0,
                op,
            },
        )
    }

    fn bounded(bytes_max: u64) -> KvStateMachine {
        let mut sm = KvStateMachine::default().with_data_bytes_max(bytes_max);
        assert_eq!(
            sm.apply_command(1, Command::Register { now_ms: 0 }),
            Outcome::Registered { session: 1 }
        );
        sm
    }

    /// Issue 21 #8: the size was checked only when a snapshot was taken, after the write was
    /// acknowledged, so every node crash-looped on a state its storage could not hold. A write
    /// past the bound is now refused when it is applied, and nothing of it is kept.
    #[test]
    fn state_larger_than_the_bound_is_refused_when_written_not_at_snapshot() {
        let mut sm = bounded(1_000);
        // 2 keys of 1 + 400 + 32 bytes fit; a third does not.
        assert_eq!(put(&mut sm, 1, "a", 400), Outcome::Written { version: 1 });
        assert_eq!(put(&mut sm, 2, "b", 400), Outcome::Written { version: 1 });
        assert_eq!(sm.data_bytes(), 2 * 433);
        let before = sm.snapshot();
        assert_eq!(put(&mut sm, 3, "c", 400), Outcome::Err(KvError::StoreFull));
        assert_eq!(sm.get(b"c"), Outcome::Err(KvError::NoKey));
        assert_eq!(sm.data_bytes(), 2 * 433);
        // A retry is answered from the session table, not applied.
        assert_eq!(put(&mut sm, 3, "c", 400), Outcome::Err(KvError::StoreFull));
        // Growing a key past the bound is refused too, by put and by append.
        assert_eq!(put(&mut sm, 4, "a", 600), Outcome::Err(KvError::StoreFull));
        let append = Op::Append {
            key: Bytes::from_static(b"a"),
            value: Bytes::from(vec![b'x'; 200]),
        };
        assert_eq!(op(&mut sm, 5, append), Outcome::Err(KvError::StoreFull));
        // Only the session's record changed.
        let mut restored = KvStateMachine::default();
        restored.restore(&before).unwrap();
        assert_eq!(restored.data, sm.data);
        sm.check_invariants();
        // Shrinking and deleting still work on a full store, and free room.
        assert_eq!(put(&mut sm, 6, "a", 10), Outcome::Written { version: 2 });
        let delete = Op::Delete {
            key: Bytes::from_static(b"b"),
        };
        assert_eq!(op(&mut sm, 7, delete), Outcome::Deleted);
        assert_eq!(put(&mut sm, 8, "c", 400), Outcome::Written { version: 1 });
        assert_eq!(sm.data_bytes(), (1 + 10 + 32) + (1 + 400 + 32));
        sm.check_invariants();
    }

    #[test]
    fn the_count_bounds_what_the_data_takes_in_a_snapshot_and_is_recounted_on_restore() {
        let mut sm = bounded(u64::MAX);
        for i in 0..300u64 {
            let key = format!("key{i}");
            assert!(matches!(
                put(&mut sm, i + 1, &key, (i * 37 % 5000) as usize),
                Outcome::Written { .. }
            ));
        }
        let snapshot = sm.snapshot();
        let sessions = {
            let mut only_sessions = sm.clone();
            only_sessions.data.clear();
            only_sessions.snapshot().len() as u64
        };
        // The snapshot is the data's bytes then the sessions' (`sessions` counts an empty map's
        // length prefix too).
        assert!(snapshot.len() as u64 <= sm.data_bytes() + sessions);
        let mut restored = KvStateMachine::default().with_data_bytes_max(7);
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored.data_bytes(), sm.data_bytes());
        // The node's bound stays (a snapshot carries none).
        assert_eq!(restored.data_bytes_max(), 7);
        restored.validate().unwrap();
        // A migrated shard decodes with its size counted too.
        let decoded: KvStateMachine = postcard::from_bytes(&snapshot).unwrap();
        assert_eq!(decoded.data_bytes(), sm.data_bytes());
    }
}
