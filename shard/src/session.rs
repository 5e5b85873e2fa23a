//! Exactly-once client sessions (thesis §6.3) for the controller: the same rules as the KV
//! state machine's table (`raftkv_kv::state`), which keeps its own privately.
//!
//! A client registers (its session id is the index of the registration entry) and numbers its
//! requests 1, 2, 3, ...; the table remembers, per session, the last sequence number applied and
//! its (small) outcome, so a retry is answered from the table and never applied twice. Time is
//! the leader's timestamps carried in the log, made monotonic, so sessions expire identically
//! on every replica; the table is bounded (`sessions_max`, least recently active first).
//!
//! Unification note: this is the KV table made generic over the cached outcome `C`. It should
//! become one implementation in `raftkv-kv` (`pub struct SessionTable<C>`) used by both.

use std::collections::{BTreeMap, BTreeSet};

use raftkv_kv::state::SessionConfig;
use raftkv_raft::Index;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session<C> {
    last_seq: u64,
    /// The outcome of request `last_seq` (`None` before the first request).
    last: Option<C>,
    last_active_ms: u64,
}

/// What the table says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check<C> {
    /// Not applied yet: apply it, then [`Sessions::record`] its outcome.
    New,
    /// Already applied: this was its outcome.
    Retry(C),
    /// The session expired (or never existed): the request must not be applied.
    Expired,
    /// Older than the session's last applied request: its outcome is no longer known.
    Stale,
}

/// The session table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions<C> {
    sessions: BTreeMap<u64, Session<C>>,
    /// (last_active_ms, session) for every session: expiry order.
    /// Invariant: holds exactly one pair per session, matching it.
    by_activity: BTreeSet<(u64, u64)>,
    /// The log's clock: the largest leader timestamp applied so far (never goes back).
    clock_ms: u64,
    config: SessionConfig,
}

impl<C: Copy> Sessions<C> {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            clock_ms: 0,
            config,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// thesis §6.3: opens session `index` (the registration entry's index) at `now_ms`.
    pub fn register(&mut self, index: Index, now_ms: u64) -> u64 {
        self.advance_clock(now_ms);
        let session = Session {
            last_seq: 0,
            last: None,
            last_active_ms: self.clock_ms,
        };
        if let Some(old) = self.sessions.insert(index, session) {
            self.by_activity.remove(&(old.last_active_ms, index));
        }
        self.by_activity.insert((self.clock_ms, index));
        while self.sessions.len() > self.config.sessions_max.max(1) {
            if let Some((_, oldest)) = self.by_activity.pop_first() {
                self.sessions.remove(&oldest);
            }
        }
        index
    }

    /// Checks request `seq` of `session` at `now_ms` (and marks the session active).
    pub fn check(&mut self, session: u64, seq: u64, now_ms: u64) -> Check<C> {
        self.advance_clock(now_ms);
        let Some(s) = self.sessions.get(&session).copied() else {
            return Check::Expired;
        };
        if seq < s.last_seq {
            return Check::Stale;
        }
        self.touch(session, s.last_active_ms);
        match (seq == s.last_seq, s.last) {
            // thesis §6.3: a retry is answered from the table, never applied again.
            (true, Some(outcome)) => Check::Retry(outcome),
            // Sequence numbers start at 1: a request numbered 0 is never new.
            (true, None) => Check::Stale,
            (false, _) => Check::New,
        }
    }

    /// Records `outcome` as the result of request `seq` of `session` (after `check` said `New`).
    pub fn record(&mut self, session: u64, seq: u64, outcome: C) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seq = seq;
            s.last = Some(outcome);
        }
    }

    /// thesis §6.3: sessions idle longer than the TTL (by the log's clock) expire.
    fn advance_clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        while let Some(&(active, session)) = self.by_activity.first() {
            if active.saturating_add(self.config.ttl_ms) >= self.clock_ms {
                break;
            }
            self.by_activity.remove(&(active, session));
            self.sessions.remove(&session);
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
            self.sessions.len() <= self.config.sessions_max.max(1),
            "the table is bounded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ttl_ms: u64, sessions_max: usize) -> Sessions<u64> {
        Sessions::new(SessionConfig {
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
}
