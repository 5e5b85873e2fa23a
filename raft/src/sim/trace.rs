//! The simulator's trace: a ring of the latest events in the one trace notation, and a running
//! hash of every event (the same seed must give the same hash).

use rustc_hash::FxHasher;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Hashes any value with rustc's FxHash: fast and deterministic across runs, unlike
/// `RandomState`.
pub fn fx_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = FxHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// A bounded ring of formatted trace lines plus a hash of all events. Lines are formatted only
/// when `lines_max > 0`; the hash covers every event either way.
#[derive(Clone)]
pub struct Trace {
    lines: VecDeque<String>,
    lines_max: usize,
    hash: FxHasher,
    pub events: u64,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("events", &self.events)
            .field("hash", &self.hash())
            .field("lines", &self.lines)
            .finish()
    }
}

impl Trace {
    pub fn new(lines_max: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            lines_max,
            hash: FxHasher::default(),
            events: 0,
        }
    }

    /// Records one event: `key` feeds the hash, `line` (formatted lazily) the ring.
    pub fn record(&mut self, now_ms: u64, key: impl Hash, line: impl FnOnce() -> String) {
        self.events += 1;
        now_ms.hash(&mut self.hash);
        key.hash(&mut self.hash);
        if self.lines_max > 0 {
            if self.lines.len() == self.lines_max {
                self.lines.pop_front();
            }
            self.lines.push_back(format!("{:>7}ms {}", now_ms, line()));
        }
    }

    /// Records an event in the hash only (ticks: too many to be worth a line).
    pub fn hash_only(&mut self, now_ms: u64, key: impl Hash) {
        self.events += 1;
        now_ms.hash(&mut self.hash);
        key.hash(&mut self.hash);
    }

    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn tail(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }
}

/// A simulation that broke a safety or liveness property, or panicked the core.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub message: String,
    pub trace_tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "RAFTKV_SEED={}", self.seed)?;
        writeln!(f, "{}", self.message)?;
        writeln!(f, "trace tail ({} lines):", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
