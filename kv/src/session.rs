//! [`SessionTable`]: exactly-once client sessions (thesis §6.3), generic over the small outcome
//! `C` a session remembers of its last request. The KV state machine and the shard controller
//! both keep one; the rules live only here.
//!
//! A client registers a session (its id is the index of the registration entry), then numbers
//! its requests 1, 2, 3, ... The table remembers, per session, the last sequence number applied
//! and its outcome, so a retried request is answered from the table and never applied twice.
//! Sessions expire deterministically — the same decision on every replica — from the leader's
//! timestamps carried in the log, and the table is bounded (`sessions_max`, least recently
//! active first).
//!
//! An expired session leaves a small record (its last applied sequence number, in a table as
//! bounded as the sessions') so that a late copy of a request — the network or a resending
//! connector may deliver a request twice — gets an answer that says what happened: a sequence
//! number above the last applied one was not applied and never will be ([`Check::Expired`]);
//! one at or below it was applied and its outcome is forgotten ([`Check::Forgotten`]), as is
//! every request of a session whose record is gone (issue 21 #12).
//!
//! ```
//! use raftkv_kv::session::{Check, SessionTable};
//! use raftkv_kv::state::SessionConfig;
//!
//! let mut table = SessionTable::<u64>::new(SessionConfig { ttl_ms: 100, sessions_max: 10 });
//! let s = table.register(7, 0);
//! assert_eq!(table.check(s, 1, 1), Check::New);
//! table.record(s, 1, 42); // request 1 was applied; its outcome was 42
//! assert_eq!(table.check(s, 1, 2), Check::Retry(42));
//! // Idle past the TTL, the session expires: request 1 was applied, request 2 never will be.
//! assert_eq!(table.check(s, 1, 500), Check::Forgotten);
//! assert_eq!(table.check(s, 2, 500), Check::Expired);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raftkv_raft::Index;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What goes into a Raft entry of a service with exactly-once sessions, whatever its
/// operation `O`: the KV service's (`crate::state::Command`) and the shard controller's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionCommand<O> {
    /// thesis §6.3: open a session; its id is the index of this entry.
    Register { now_ms: u64 },
    /// One request of a session, applied at most once.
    Request {
        session: u64,
        seq: u64,
        now_ms: u64,
        op: O,
    },
}

/// An entry that does not decode as a [`SessionCommand`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("malformed command")]
pub struct Malformed;

impl<O: Serialize + DeserializeOwned> SessionCommand<O> {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("commands always encode"))
    }

    pub fn decode(data: &[u8]) -> Result<Self, Malformed> {
        postcard::from_bytes(data).map_err(|_| Malformed)
    }
}

/// Bounds of the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// A session idle this long (by the log's clock) expires.
    pub ttl_ms: u64,
    /// At most this many sessions; registering beyond it expires the least recently active.
    /// As many expired sessions' records are kept.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session<C> {
    last_seq: u64,
    /// The outcome of request `last_seq` (`C::default()` before the first request).
    last: C,
    last_active_ms: u64,
}

/// What the table says about request `seq` of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check<C> {
    /// Not applied yet: apply it, then [`SessionTable::record`] its outcome.
    New,
    /// thesis §6.3: the session's last request again; this was its outcome (`C::default()`
    /// for a sequence number 0 before any request). Never apply it again.
    Retry(C),
    /// The session expired before this request was applied: it was not applied and never will
    /// be, so it may be sent again under a new session.
    Expired,
    /// The session expired after this request was applied, or its record is gone too (or it
    /// never existed): the request may or may not have been applied.
    Forgotten,
    /// Older than the session's last applied request: its outcome is no longer known.
    Stale,
}

/// The session table. Its settings are the node's, not part of its encoding (issue 21 #9: a
/// restore kept the settings of whoever took the snapshot): after decoding one, give it the
/// node's with [`SessionTable::set_config`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTable<C> {
    sessions: BTreeMap<u64, Session<C>>,
    /// (last_active_ms, session) for every session: expiry order.
    /// Invariant: holds exactly one pair per session, matching it.
    by_activity: BTreeSet<(u64, u64)>,
    /// The log's clock: the largest leader timestamp applied so far (never goes back).
    clock_ms: u64,
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

impl<C: Copy + Default> SessionTable<C> {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            clock_ms: 0,
            config,
            expired: BTreeMap::new(),
            expired_order: VecDeque::new(),
        }
    }

    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// Replaces the settings (after a restore). The tables are not trimmed to smaller bounds
    /// here: that would expire sessions on this replica and not on the others; they shrink as
    /// the log is applied.
    pub fn set_config(&mut self, config: SessionConfig) {
        self.config = config;
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Expired sessions whose record is kept.
    pub fn expired_len(&self) -> usize {
        self.expired.len()
    }

    /// The log's clock: the largest timestamp seen.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// thesis §6.3: opens session `index` (the registration entry's index) at `now_ms`, and
    /// returns its id (`index`).
    pub fn register(&mut self, index: Index, now_ms: u64) -> u64 {
        self.advance_clock(now_ms);
        let session = Session {
            last_seq: 0,
            last: C::default(),
            last_active_ms: self.clock_ms,
        };
        // Log indexes are unique, so this is new; should it not be, keep the invariant.
        if let Some(old) = self.sessions.insert(index, session) {
            self.by_activity.remove(&(old.last_active_ms, index));
        }
        self.by_activity.insert((self.clock_ms, index));
        while self.sessions.len() > self.config.sessions_max {
            self.expire_oldest();
        }
        index
    }

    /// Checks request `seq` of `session` at `now_ms`; a request of a live session marks it
    /// active.
    pub fn check(&mut self, session: u64, seq: u64, now_ms: u64) -> Check<C> {
        self.advance_clock(now_ms);
        let Some(s) = self.sessions.get(&session).copied() else {
            // thesis §6.3: never applied under an expired session; the record left by the
            // session says whether an earlier copy of this request was.
            return match self.expired.get(&session) {
                Some(&last_seq) if seq > last_seq => Check::Expired,
                _ => Check::Forgotten,
            };
        };
        if seq < s.last_seq {
            return Check::Stale;
        }
        self.touch(session, s.last_active_ms);
        if seq == s.last_seq {
            // thesis §6.3: a retry is answered from the table, never applied again.
            return Check::Retry(s.last);
        }
        Check::New
    }

    /// [`SessionTable::check`] for a table where a session opens on its first request: a
    /// session neither live nor expired here is opened at `now_ms` first. For session ids that
    /// are unique across tables without a registration in this one (the sharded store's: a
    /// shard's table moves between groups, and the id is a controller log index). A session
    /// whose expired record is kept stays expired (thesis §6.3).
    pub fn check_or_open(&mut self, session: u64, seq: u64, now_ms: u64) -> Check<C> {
        if !self.sessions.contains_key(&session) && !self.expired.contains_key(&session) {
            self.register(session, now_ms);
        }
        self.check(session, seq, now_ms)
    }

    /// Applies the bounds now (a table that arrived from elsewhere, applied from the log so
    /// every replica trims it the same way): least recently active sessions expire first.
    pub fn enforce_bounds(&mut self) {
        while self.sessions.len() > self.config.sessions_max {
            self.expire_oldest();
        }
        while self.expired_order.len() > self.config.sessions_max {
            if let Some(old) = self.expired_order.pop_front() {
                self.expired.remove(&old);
            }
        }
    }

    /// Records `outcome` as the result of request `seq` of `session` (after `check` said
    /// `New` and the request was applied).
    pub fn record(&mut self, session: u64, seq: u64, outcome: C) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seq = seq;
            s.last = outcome;
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

    /// Checks the invariants on the fields; the first broken one, named.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.sessions.len() != self.by_activity.len() {
            return Err("one activity entry per session");
        }
        for (id, s) in &self.sessions {
            if !self.by_activity.contains(&(s.last_active_ms, *id)) {
                return Err("activity matches");
            }
            if s.last_active_ms > self.clock_ms {
                return Err("activity is not in the future");
            }
        }
        if self.expired.len() != self.expired_order.len() {
            return Err("one order entry per expired session");
        }
        if !self
            .expired_order
            .iter()
            .all(|s| self.expired.contains_key(s) && !self.sessions.contains_key(s))
        {
            return Err("expired sessions are ordered once and no longer live");
        }
        Ok(())
    }

    /// Panics naming a broken invariant.
    pub fn check_invariants(&self) {
        if let Err(rule) = self.validate() {
            panic!("session table invariant broken: {rule}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ttl_ms: u64, sessions_max: usize) -> SessionTable<u64> {
        SessionTable::new(SessionConfig {
            ttl_ms,
            sessions_max,
        })
    }

    #[test]
    fn retry_is_answered_from_the_table() {
        let mut t = table(1000, 10);
        let s = t.register(5, 0);
        assert_eq!(t.check(s, 1, 1), Check::New);
        t.record(s, 1, 42);
        assert_eq!(t.check(s, 1, 2), Check::Retry(42));
        assert_eq!(t.check(s, 0, 2), Check::Stale);
        assert_eq!(t.check(s, 2, 2), Check::New);
        t.check_invariants();
    }

    #[test]
    fn idle_session_expires_by_the_log_clock() {
        let mut t = table(100, 10);
        let s = t.register(1, 0);
        assert_eq!(t.check(s, 1, 101), Check::Expired);
        assert!(t.is_empty());
        assert_eq!(t.expired_len(), 1);
        t.check_invariants();
    }

    #[test]
    fn table_is_bounded_least_recently_active_first() {
        let mut t = table(1000, 2);
        t.register(1, 0);
        t.register(2, 1);
        assert_eq!(t.check(1, 1, 2), Check::New);
        t.register(3, 3);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(2, 1, 3),
            Check::Expired,
            "session 2 was least recently active"
        );
        assert_eq!(t.check(1, 2, 3), Check::New);
        t.check_invariants();
    }

    #[test]
    fn session_commands_keep_the_layout_of_the_per_service_enums_they_replaced() {
        // Register is variant 0, Request variant 1, fields in order: the bytes in every log
        // written before the KV and controller commands were one type.
        assert_eq!(
            &SessionCommand::<u8>::Register { now_ms: 5 }.encode()[..],
            [0, 5]
        );
        let request = SessionCommand::Request {
            session: 1,
            seq: 2,
            now_ms: 3,
            op: 4u8,
        };
        assert_eq!(&request.encode()[..], [1, 1, 2, 3, 4]);
        assert_eq!(SessionCommand::decode(&request.encode()), Ok(request));
        assert_eq!(SessionCommand::<u8>::decode(&[7]), Err(Malformed));
    }

    #[test]
    fn check_or_open_opens_unknown_sessions_but_not_expired_ones() {
        let mut t = table(100, 10);
        assert_eq!(t.check_or_open(77, 5, 0), Check::New);
        t.record(77, 5, 1);
        assert_eq!(t.check_or_open(77, 5, 1), Check::Retry(1));
        assert_eq!(t.check_or_open(77, 4, 1), Check::Stale);
        // Idle past the TTL: expired, and not opened again.
        assert_eq!(t.check_or_open(77, 6, 500), Check::Expired);
        assert_eq!(t.check_or_open(77, 6, 501), Check::Expired);
        t.check_invariants();
    }

    #[test]
    fn enforce_bounds_trims_a_table_to_smaller_settings() {
        let mut t = table(1000, 10);
        for i in 1..=5 {
            t.register(i, i);
        }
        t.set_config(SessionConfig {
            ttl_ms: 1000,
            sessions_max: 2,
        });
        t.enforce_bounds();
        assert_eq!(t.len(), 2);
        assert_eq!(t.expired_len(), 2);
        assert_eq!(t.check(5, 1, 6), Check::New, "the most recent stays");
        t.check_invariants();
    }

    #[test]
    fn expired_records_are_bounded_and_a_session_without_one_is_forgotten() {
        let mut t = table(1000, 1);
        let first = t.register(1, 0);
        for i in 2..10 {
            t.register(i, i);
        }
        assert_eq!(t.expired_len(), 1, "at most sessions_max records");
        assert_eq!(t.check(first, 1, 10), Check::Forgotten);
        assert_eq!(t.check(99, 1, 10), Check::Forgotten, "never registered");
        t.check_invariants();
    }
}
