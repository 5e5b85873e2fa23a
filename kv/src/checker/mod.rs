//! A linearizability checker in the manner of Porcupine.
//!
//! # The algorithm in prose
//!
//! A history is a set of [`Operation`]s, each with a call time, a return time, an input and an
//! output. It is *linearizable* under a sequential [`Model`] if every operation can be given a
//! point in time between its call and its return such that applying the operations to the model
//! in the order of those points produces exactly the recorded outputs.
//!
//! - **Wing & Gong's search.** The calls and returns are sorted by time into one list (at equal
//!   times calls come first: intervals are closed, so operations that touch are concurrent). The
//!   search walks the list from its head: a call may be linearized next if the model accepts its
//!   input and output from the current state; it is then *lifted* out of the list (its call and
//!   its return) and the walk restarts from the head. Meeting a return means the operation it
//!   ends had to be linearized by now and was not: the search backtracks, restoring the last
//!   lifted operation and trying the call after it. The history is linearizable when the list
//!   is empty, and is not when a return is met with nothing left to undo.
//! - **Lowe's memoization.** Two search nodes with the same set of linearized operations and the
//!   same model state have the same future, so each (set, state) pair is explored once. The set
//!   is a bitset with an incrementally maintained Zobrist hash; states are interned to `u32` ids
//!   ([`Model::State`] may be large: it is hashed and compared once per new state), so the
//!   visited set stores only words.
//! - **P-compositionality.** When the model is a product of independent objects (a key/value
//!   store is one register per key), [`Model::partition`] splits the history and each part is
//!   checked on its own, in parallel on up to `available_parallelism` threads.
//!
//! An operation whose outcome is unknown (no response: [`Operation::ret`] is `None`, or a
//! response that says "maybe", see [`Model::outcome_unknown`]) may take effect at any time after
//! its call, or never. As in Porcupine, its return is placed at +infinity and its model step must
//! accept any output: linearizing it last is the same as never linearizing it.
//!
//! For an illegal history the result carries, per partition, the longest linearizable prefix the
//! search found and the operations none of which could be placed after it; the
//! [`visualize`](visualize::visualize) module draws them.
//!
//! # Memory
//!
//! Memory is dominated by the visited set: per entry `8 × (2 + ⌈n / 64⌉)` bytes plus about 8
//! bytes of table, where `n` is the number of operations in the partition (about 80 bytes per
//! entry for 400 operations), plus one copy of each distinct model state. Bound it with
//! [`CheckOptions::cache_entries_max`] (the verdict is then [`Verdict::Unknown`] when exceeded);
//! bound time with [`CheckOptions::timeout`].
//!
//! # Differences from Porcupine
//!
//! - One longest linearizable prefix per partition is reported, not one per operation.
//! - When one partition is found illegal, the others are stopped and reported `Unknown`.
//! - A return time earlier than its call is treated as equal to the call (readers reject it).

mod cache;
pub mod formats;
pub mod models;
mod search;
pub mod visualize;

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use formats::{AnyHistory, Format, ReadError};
pub use visualize::visualize;

/// One operation of a history: a call by a client and, if it came, the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued the operation (one lane in the visualization).
    pub client: u64,
    /// Call time, on one clock shared by every operation of the history (any unit).
    pub call: u64,
    /// Return time; `None` when no response came, so the outcome is unknown.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered (for an unknown outcome, whatever the reader put there; the model
    /// must accept any output for it).
    pub output: O,
}

/// A sequential specification of an object, the thing a history is checked against.
///
/// Steps must be pure: the same state, input and output always give the same answer.
pub trait Model: Sync {
    /// The model's state. The checker interns states (one copy of each distinct state, ids in
    /// the search), so equal states must compare equal and hash alike.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Input: Sync;
    /// An operation's output.
    type Output: Sync;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after applying `input` to `state`, if that produces `output`; `None` if the
    /// model could not have answered `output` from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// True when the response itself says the outcome is unknown (a "maybe" or a timeout that
    /// still returned): the checker then treats the operation as if it had no response.
    fn outcome_unknown(&self, _input: &Self::Input, _output: &Self::Output) -> bool {
        false
    }

    /// Splits a history into independent parts (P-compositionality): the history is
    /// linearizable if and only if every part is. Each part lists indices into `ops`. The
    /// default keeps the history whole.
    fn partition(&self, ops: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }

    /// A short human description of an operation, e.g. `get("x") → "y"`.
    fn describe_operation(&self, input: &Self::Input, output: &Self::Output) -> String;

    /// A short human description of a state, e.g. `{"x": "y"}`.
    fn describe_state(&self, state: &Self::State) -> String;

    /// A label for a partition, given the input of one of its operations (e.g. the key); used
    /// by the visualization when the history was partitioned.
    fn describe_partition(&self, _input: &Self::Input) -> Option<String> {
        None
    }
}

/// The verdict of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Linearizable.
    Ok,
    /// Not linearizable.
    Illegal,
    /// Not decided: timed out, over the cache bound, or stopped because another partition was
    /// found illegal.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "Ok",
            Verdict::Illegal => "Illegal",
            Verdict::Unknown => "Unknown",
        })
    }
}

/// How to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Split the history with [`Model::partition`] (default `true`); `false` checks it as one
    /// part, like Porcupine's `NoPartition` tests.
    pub partition: bool,
    /// Give up after this long, with verdict [`Verdict::Unknown`] (default: no limit).
    pub timeout: Option<Duration>,
    /// Threads to use (default: `available_parallelism`); never more than the partitions.
    pub threads: Option<usize>,
    /// Give up, with verdict [`Verdict::Unknown`], when one partition's visited set would hold
    /// more entries than this (default: no limit). See the module doc for bytes per entry.
    pub cache_entries_max: Option<usize>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { partition: true, timeout: None, threads: None, cache_entries_max: None }
    }
}

/// Counters of one partition's search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Entries in the visited set when the search ended.
    pub cache_entries: usize,
    /// Distinct model states met.
    pub states: usize,
    /// Calls of [`Model::step`] (transitions already memoized are not counted).
    pub model_steps: u64,
}

/// The outcome of checking one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    /// The partition's operations, as indices into the history.
    pub ops: Vec<usize>,
    /// This partition's verdict.
    pub verdict: Verdict,
    /// History indices in linearization order: for `Ok` a full linearization; otherwise the
    /// longest linearizable prefix found.
    pub linearization: Vec<usize>,
    /// For `Illegal`: the operations that could be linearized next after `linearization` (their
    /// calls come before the first pending return) and none of which the model accepted.
    pub unplaceable: Vec<usize>,
    /// Search counters.
    pub stats: SearchStats,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// `Illegal` if any partition is; else `Unknown` if any is; else `Ok`.
    pub verdict: Verdict,
    /// Whether the history was split with [`Model::partition`].
    pub partitioned: bool,
    /// One result per non-empty partition, in the order the model gave them.
    pub partitions: Vec<PartitionResult>,
}

/// Shared stop signals of one check.
pub(crate) struct Control {
    pub(crate) stop: AtomicBool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) cache_entries_max: usize,
}

/// Checks `ops` for linearizability under `model`.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    options: &CheckOptions,
) -> CheckResult {
    let parts: Vec<Vec<usize>> = if options.partition {
        model
            .partition(ops)
            .into_iter()
            .map(|mut p| {
                // A model bug must not become an out-of-bounds panic here.
                p.retain(|&i| i < ops.len());
                p
            })
            .filter(|p| !p.is_empty())
            .collect()
    } else if ops.is_empty() {
        Vec::new()
    } else {
        vec![(0..ops.len()).collect()]
    };
    let control = Control {
        stop: AtomicBool::new(false),
        deadline: options.timeout.and_then(|t| Instant::now().checked_add(t)),
        cache_entries_max: options.cache_entries_max.unwrap_or(usize::MAX),
    };
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = options.threads.unwrap_or(available).clamp(1, parts.len().max(1));

    // Largest partitions first, so the long poles start early.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(parts[i].len()));
    let results: Vec<Mutex<Option<PartitionResult>>> =
        parts.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let Some(&p) = order.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
        let result = search::check_partition(model, ops, &parts[p], &control);
        if result.verdict == Verdict::Illegal {
            control.stop.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slot) = results[p].lock() {
            *slot = Some(result);
        }
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }

    let partitions: Vec<PartitionResult> = results
        .into_iter()
        .zip(parts)
        .map(|(slot, part)| {
            slot.into_inner().ok().flatten().unwrap_or(PartitionResult {
                ops: part,
                verdict: Verdict::Unknown,
                linearization: Vec::new(),
                unplaceable: Vec::new(),
                stats: SearchStats::default(),
            })
        })
        .collect();
    let verdict = if partitions.iter().any(|p| p.verdict == Verdict::Illegal) {
        Verdict::Illegal
    } else if partitions.iter().any(|p| p.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Ok
    };
    CheckResult { verdict, partitioned: options.partition, partitions }
}

#[cfg(test)]
mod tests;
