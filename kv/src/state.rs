//! [`KvStateMachine`]: the replicated key/value state — versioned values and exactly-once client
//! sessions — applied from the Raft log.
//!
//! Every key carries a version that grows by one on each successful write (a key's first write
//! gives version 1; a key re-created after a delete starts again at 1). A conditional put follows
//! the 6.5840 rule: key missing and version 0 → created at version 1; key missing and version > 0
//! → `NoKey`; key present and version equal → applied; otherwise `Version`.
//!
//! Exactly-once (thesis §6.3): a client registers a session (its id is the index of the
//! registration entry), then numbers its requests 1, 2, 3, ... The state machine remembers, per
//! session, the last sequence number applied and the outcome of that write, so a retried request
//! is answered from the table and never applied twice. Sessions expire deterministically — the
//! same decision on every replica — from the leader's timestamps carried in the log, and the
//! table is bounded (`sessions_max`, least recently used first); a request from an expired
//! session is never applied.
//!
//! An expired session leaves a small record (its last applied sequence number, in a table as
//! bounded as the sessions') so that a late copy of a request — the network or a resending
//! connector may deliver a request twice — gets an answer that says what happened: a sequence
//! number above the last applied one was not applied and never will be (`SessionExpired`: the
//! client may send it again under a new session); one at or below it was applied and its
//! outcome is forgotten (`Forgotten`), as is every request of a session whose record is gone.

use bytes::Bytes;
use raftkv_raft::{Index, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::{btree_map, BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

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

/// What goes into a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// thesis §6.3: open a session; its id is the index of this entry.
    Register { now_ms: u64 },
    /// One request of a session, applied at most once.
    Request {
        session: u64,
        seq: u64,
        now_ms: u64,
        op: Op,
    },
}

impl Command {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("commands always encode"))
    }

    pub fn decode(data: &[u8]) -> Result<Self, KvError> {
        postcard::from_bytes(data).map_err(|_| KvError::Malformed)
    }
}

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Cached {
    Written(u64),
    Deleted,
    Err(KvError),
    /// The last request was a read: it is re-executed on a retry (reads are idempotent).
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: u64,
    last: Cached,
    last_active_ms: u64,
}

/// Bounds of the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// A session idle this long (by the log's clock) expires.
    pub ttl_ms: u64,
    /// At most this many sessions; registering beyond it expires the least recently active.
    pub sessions_max: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 10 * 60 * 1000,
            sessions_max: 1_000_000,
        }
    }
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

/// The KV state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateMachine {
    /// key → (value, version). Invariant: version >= 1.
    #[serde(deserialize_with = "bulk_map")]
    data: BTreeMap<Bytes, (Bytes, u64)>,
    sessions: BTreeMap<u64, Session>,
    /// (last_active_ms, session) for every session: expiry order.
    /// Invariant: holds exactly one pair per session, matching it.
    by_activity: BTreeSet<(u64, u64)>,
    /// The log's clock: the largest leader timestamp applied so far (never goes back).
    clock_ms: u64,
    /// The node's session settings: not part of a snapshot (issue 21 #9: a restore kept the
    /// settings of whoever took the snapshot, overriding the node's configuration).
    #[serde(skip)]
    config: SessionConfig,
    /// expired session → the last sequence number it applied: what tells a late copy of a
    /// request "not applied" from "applied, outcome forgotten". At most `sessions_max` of them,
    /// the earliest expired dropped first. Invariant: no key is also in `sessions`.
    expired: BTreeMap<u64, u64>,
    /// The sessions of `expired`, earliest expired first.
    /// Invariant: holds exactly the keys of `expired`, each once.
    expired_order: VecDeque<u64>,
}

impl KvStateMachine {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Reads `key` (for ReadIndex reads, and `Get` through the log).
    pub fn get(&self, key: &[u8]) -> Outcome {
        match self.data.get(key) {
            Some((value, version)) => Outcome::Value {
                value: value.clone(),
                version: *version,
            },
            None => Outcome::Err(KvError::NoKey),
        }
    }

    /// Applies one command (the log index is the session id of a registration).
    pub fn apply_command(&mut self, index: Index, command: Command) -> Outcome {
        match command {
            Command::Register { now_ms } => {
                self.advance_clock(now_ms);
                let session = Session {
                    last_seq: 0,
                    last: Cached::Read,
                    last_active_ms: self.clock_ms,
                };
                self.sessions.insert(index, session);
                self.by_activity.insert((self.clock_ms, index));
                while self.sessions.len() > self.config.sessions_max {
                    self.expire_oldest();
                }
                Outcome::Registered { session: index }
            }
            Command::Request {
                session,
                seq,
                now_ms,
                op,
            } => {
                self.advance_clock(now_ms);
                let Some(s) = self.sessions.get(&session).copied() else {
                    // thesis §6.3: never applied under an expired session; the record left by
                    // the session says whether an earlier copy of this request was.
                    return Outcome::Err(match self.expired.get(&session) {
                        Some(&last_seq) if seq > last_seq => KvError::SessionExpired,
                        _ => KvError::Forgotten,
                    });
                };
                if seq < s.last_seq {
                    return Outcome::Err(KvError::Stale);
                }
                self.touch(session, s.last_active_ms);
                if seq == s.last_seq {
                    // thesis §6.3: a retry is answered from the table, never applied again.
                    return match s.last {
                        Cached::Written(version) => Outcome::Written { version },
                        Cached::Deleted => Outcome::Deleted,
                        Cached::Err(e) => Outcome::Err(e),
                        Cached::Read => match &op {
                            Op::Get { key } => self.get(key),
                            _ => Outcome::Err(KvError::Stale),
                        },
                    };
                }
                let is_read = matches!(op, Op::Get { .. });
                let outcome = self.execute(op);
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.last_seq = seq;
                    s.last = match &outcome {
                        _ if is_read => Cached::Read,
                        Outcome::Written { version } => Cached::Written(*version),
                        Outcome::Deleted => Cached::Deleted,
                        Outcome::Err(e) => Cached::Err(*e),
                        Outcome::Value { .. } | Outcome::Registered { .. } => Cached::Read,
                    };
                }
                outcome
            }
        }
    }

    fn execute(&mut self, op: Op) -> Outcome {
        match op {
            Op::Get { key } => self.get(&key),
            Op::Put {
                key,
                value,
                version,
            } => {
                // One search of the tree, not a lookup and then an insert.
                let slot = self.data.entry(key);
                let current = match &slot {
                    btree_map::Entry::Occupied(e) => e.get().1,
                    btree_map::Entry::Vacant(_) => 0,
                };
                match version {
                    Some(v) if current == 0 && v > 0 => return Outcome::Err(KvError::NoKey),
                    Some(v) if v != current => return Outcome::Err(KvError::Version { current }),
                    _ => {}
                }
                let version = current + 1;
                match slot {
                    btree_map::Entry::Occupied(mut e) => {
                        e.insert((value, version));
                    }
                    btree_map::Entry::Vacant(e) => {
                        e.insert((value, version));
                    }
                }
                Outcome::Written { version }
            }
            Op::Append { key, value } => match self.data.entry(key) {
                btree_map::Entry::Occupied(mut e) => {
                    let (old, v) = e.get();
                    let mut joined = Vec::with_capacity(old.len() + value.len());
                    joined.extend_from_slice(old);
                    joined.extend_from_slice(&value);
                    let version = v + 1;
                    e.insert((Bytes::from(joined), version));
                    Outcome::Written { version }
                }
                btree_map::Entry::Vacant(e) => {
                    e.insert((value, 1));
                    Outcome::Written { version: 1 }
                }
            },
            Op::Delete { key } => match self.data.remove(&key) {
                Some(_) => Outcome::Deleted,
                None => Outcome::Err(KvError::NoKey),
            },
        }
    }

    /// thesis §6.3: time in the state machine is the leader's timestamps from the log, made
    /// monotonic; sessions idle longer than the TTL expire, identically on every replica.
    fn advance_clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        while let Some(&(active, session)) = self.by_activity.first() {
            if active.saturating_add(self.config.ttl_ms) >= self.clock_ms {
                break;
            }
            self.by_activity.remove(&(active, session));
            self.forget(session);
        }
    }

    /// Removes `session` from the table, keeping its last sequence number in `expired`.
    fn forget(&mut self, session: u64) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.expired.insert(session, s.last_seq);
        self.expired_order.push_back(session);
        while self.expired_order.len() > self.config.sessions_max {
            if let Some(old) = self.expired_order.pop_front() {
                self.expired.remove(&old);
            }
        }
    }

    fn touch(&mut self, session: u64, was_active_ms: u64) {
        if was_active_ms == self.clock_ms {
            return;
        }
        self.by_activity.remove(&(was_active_ms, session));
        self.by_activity.insert((self.clock_ms, session));
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_active_ms = self.clock_ms;
        }
    }

    fn expire_oldest(&mut self) {
        if let Some((_, session)) = self.by_activity.pop_first() {
            self.forget(session);
        }
    }

    /// Checks the invariants on the fields; panics naming the broken one.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.sessions.len(),
            self.by_activity.len(),
            "one activity entry per session"
        );
        for (id, s) in &self.sessions {
            assert!(
                self.by_activity.contains(&(s.last_active_ms, *id)),
                "activity matches"
            );
            assert!(
                s.last_active_ms <= self.clock_ms,
                "activity is not in the future"
            );
        }
        assert!(
            self.data.values().all(|(_, v)| *v >= 1),
            "versions start at 1"
        );
        assert_eq!(
            self.expired.len(),
            self.expired_order.len(),
            "one order entry per expired session"
        );
        assert!(
            self.expired_order
                .iter()
                .all(|s| self.expired.contains_key(s) && !self.sessions.contains_key(s)),
            "expired sessions are ordered once and no longer live"
        );
    }
}

impl StateMachine for KvStateMachine {
    type Response = Outcome;

    fn apply(&mut self, index: Index, command: &[u8]) -> Outcome {
        match Command::decode(command) {
            Ok(c) => self.apply_command(index, c),
            Err(e) => Outcome::Err(e),
        }
    }

    fn query(&self, query: &[u8]) -> Outcome {
        match postcard::from_bytes::<Op>(query) {
            Ok(Op::Get { key }) => self.get(&key),
            _ => Outcome::Err(KvError::Malformed),
        }
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("state always encodes"))
    }

    /// Replaces the state with the snapshot's; the session settings stay the node's. (The
    /// tables are not trimmed to smaller bounds here: that would expire sessions on this
    /// replica and not on the others; they shrink as the log is applied.)
    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let restored: Self =
            postcard::from_bytes(data).map_err(|e| format!("bad KV snapshot: {e}"))?;
        *self = Self {
            config: self.config,
            ..restored
        };
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
        sessions: BTreeMap<u64, Session>,
        by_activity: BTreeSet<(u64, u64)>,
        clock_ms: u64,
        expired: BTreeMap<u64, u64>,
        expired_order: VecDeque<u64>,
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
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            clock_ms: 7,
            expired: BTreeMap::new(),
            expired_order: VecDeque::new(),
        })
        .unwrap();
        let mut restored = KvStateMachine::default();
        restored.restore(&bytes).unwrap();
        let mut expected = BTreeMap::new();
        for (k, v) in pairs {
            expected.insert(k, v);
        }
        assert_eq!(restored.data, expected);
        assert_eq!(restored.clock_ms, 7);
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
        assert_eq!(sm.expired.len(), 1, "at most sessions_max records");
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
        assert_eq!(node.config, ours);
        assert_eq!(node.sessions(), 1);
        // And the node's settings decide: a second session does not evict the first (a table
        // of one would), and 10 s of idleness does not expire it (1 ms would).
        node.apply_command(2, Command::Register { now_ms: 10_000 });
        assert_eq!(node.sessions(), 2);
        node.check_invariants();
    }
}
