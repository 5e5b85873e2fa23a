//! The simulator's trace: a ring of the latest events in the one trace notation, and a running
//! hash of every event (the same seed must give the same hash).

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

/// FxHash (rustc's hasher): fast and deterministic across runs, unlike `RandomState`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Hashes any value with [`FxHasher`].
pub fn fx_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = FxHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// A bounded ring of formatted trace lines plus a hash of all events. Lines are formatted only
/// when `lines_max > 0`; the hash covers every event either way.
#[derive(Clone, Debug)]
pub struct Trace {
    lines: VecDeque<String>,
    lines_max: usize,
    hash: FxHasher,
    pub events: u64,
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
