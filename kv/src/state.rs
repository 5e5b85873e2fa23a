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
//! session gets `SessionExpired`, never a second apply.

use bytes::Bytes;
use raftkv_raft::{Index, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
pub enum KvError {
    #[error("no such key")]
    NoKey,
    #[error("version mismatch (current version {current})")]
    Version { current: u64 },
    #[error("the client session expired")]
    SessionExpired,
    /// A request older than the session's last applied one (a client bug or a very late
    /// duplicate): its outcome is no longer known.
    #[error("stale request: a later request of this session was already applied")]
    Stale,
    #[error("malformed command")]
    Malformed,
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

/// The KV state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateMachine {
    /// key → (value, version). Invariant: version >= 1.
    data: BTreeMap<Bytes, (Bytes, u64)>,
    sessions: BTreeMap<u64, Session>,
    /// (last_active_ms, session) for every session: expiry order.
    /// Invariant: holds exactly one pair per session, matching it.
    by_activity: BTreeSet<(u64, u64)>,
    /// The log's clock: the largest leader timestamp applied so far (never goes back).
    clock_ms: u64,
    config: SessionConfig,
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
                    return Outcome::Err(KvError::SessionExpired);
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
                let current = self.data.get(&key).map_or(0, |(_, v)| *v);
                match version {
                    Some(v) if current == 0 && v > 0 => return Outcome::Err(KvError::NoKey),
                    Some(v) if v != current => return Outcome::Err(KvError::Version { current }),
                    _ => {}
                }
                let version = current + 1;
                self.data.insert(key, (value, version));
                Outcome::Written { version }
            }
            Op::Append { key, value } => {
                let (new_value, version) = match self.data.get(&key) {
                    Some((old, v)) => {
                        let mut joined = Vec::with_capacity(old.len() + value.len());
                        joined.extend_from_slice(old);
                        joined.extend_from_slice(&value);
                        (Bytes::from(joined), v + 1)
                    }
                    None => (value, 1),
                };
                self.data.insert(key, (new_value, version));
                Outcome::Written { version }
            }
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

    fn expire_oldest(&mut self) {
        if let Some((_, session)) = self.by_activity.pop_first() {
            self.sessions.remove(&session);
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

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        *self = postcard::from_bytes(data).map_err(|e| format!("bad KV snapshot: {e}"))?;
        Ok(())
    }
}
