//! A linearizability checker in the manner of Porcupine. It knows nothing of Raft: any
//! history of operations on an object with a sequential [`Model`] can be checked.
//!
//! # A tour of the modules
//!
//! - this module: [`Operation`], the [`Model`] trait, [`check`] with [`CheckOptions`], and its
//!   outcome: a [`CheckResult`] whose [`Verdict`] is `Ok`, `Illegal` or `Unknown`.
//! - [`models`]: [`models::KvModel`] (raftkv's versioned key/value store), and Porcupine's
//!   [`models::PorcupineKvModel`] and Jepsen's etcd [`models::RegisterModel`].
//! - [`formats`]: readers for our JSON histories, Porcupine's `kv` logs and Jepsen's etcd logs;
//!   the JSON writer; [`AnyHistory`], a history of any of them.
//! - [`history`]: [`history::History`], a thread-safe recorder of a key/value store's clients.
//! - [`visualize`](mod@visualize): a self-contained HTML page of a checked history.
//! - `search`, `cache` (private): the search, the linearized-set bitset and the visited set.
//!
//! # Checking a history
//!
//! ```
//! use raftkv_checker::models::{KvErr, KvInput, KvModel, KvOp, KvOutput};
//! use raftkv_checker::{check, CheckOptions, Operation, Verdict};
//!
//! let put = KvInput { op: KvOp::Put, key: "k".into(), value: Some("v".into()), version: None };
//! let get = KvInput { op: KvOp::Get, key: "k".into(), value: None, version: None };
//! let written = KvOutput { value: None, version: Some(1), err: None };
//! let read = |value: Option<&str>, err| KvOutput { value: value.map(Into::into), version: value.map(|_| 1), err };
//! // Client 0 puts k=v during [0, 10]; client 1 reads during [20, 30], after the put returned.
//! let ok = vec![
//!     Operation { client: 0, call: 0, ret: Some(10), input: put.clone(), output: written.clone() },
//!     Operation { client: 1, call: 20, ret: Some(30), input: get.clone(), output: read(Some("v"), None) },
//! ];
//! assert_eq!(check(&KvModel, &ok, &CheckOptions::default()).verdict, Verdict::Ok);
//! // Reading "no such key" after the put returned is not linearizable.
//! let stale = vec![
//!     Operation { client: 0, call: 0, ret: Some(10), input: put, output: written },
//!     Operation { client: 1, call: 20, ret: Some(30), input: get, output: read(None, Some(KvErr::NoKey)) },
//! ];
//! let result = check(&KvModel, &stale, &CheckOptions::default());
//! assert_eq!(result.verdict, Verdict::Illegal);
//! ```
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
//!   visited set stores only words; a direct-mapped memo of (state, operation) → next state
//!   spares most calls of [`Model::step`].
//! - **P-compositionality.** When the model is a product of independent objects (a key/value
//!   store is one register per key), [`Model::partition`] splits the history and each part is
//!   checked on its own, in parallel on up to `available_parallelism` threads. The threads take
//!   turns over the partitions a slice of search at a time (as Porcupine's goroutines do), so
//!   a violation in one key is found even while another key's search is long.
//!
//! An operation whose outcome is unknown (no response: [`Operation::ret`] is `None`, or a
//! response that says "maybe", see [`Model::outcome_unknown`]) may take effect at any time after
//! its call, or never. As in Porcupine, its return is placed at +infinity and its step accepts
//! any output ([`Model::step_unknown`]): linearizing it last is the same as never linearizing it.
//!
//! For an illegal history the result carries, per partition, the longest linearizable prefix the
//! search found and the operations none of which could be placed after it; the
//! [`visualize`](visualize::visualize) module draws them.
//!
//! # Memory
//!
//! Memory is dominated by the visited set: per entry `8 × (2 + ⌈n / 64⌉)` bytes plus about 8
//! bytes of table, where `n` is the number of operations in the partition (about 80 bytes per
//! entry for 400 operations), plus one copy of each distinct model state and a transition memo
//! of at most 64 Ki entries (768 KiB) per partition being checked. Bound it with
//! [`CheckOptions::cache_entries_max`] (the verdict is then [`Verdict::Unknown`] when exceeded);
//! bound time with [`CheckOptions::timeout`].
//!
//! # Differences from Porcupine
//!
//! - One longest linearizable prefix per partition is reported, not one per operation.
//! - Porcupine stops the other partitions when one is illegal unless it computes visualization
//!   data; here they are stopped by default ([`CheckOptions::stop_on_illegal`]), visualization
//!   or not, because one hard key of an illegal history could otherwise run out of memory.
//!   Stopped partitions say so ([`Undecided::Stopped`]).
//! - A return time earlier than its call is treated as equal to the call (readers reject it).
//! - An answer that says the outcome is unknown ("maybe", "timeout") is treated as no answer
//!   (return at +infinity), as Porcupine's tests do for Jepsen's timed-out reads. That accepts
//!   slightly more than the exact semantics (the operation cannot take effect after such an
//!   answer), never less: it cannot turn a linearizable history into an illegal one.

mod cache;
pub mod formats;
pub mod history;
pub mod models;
mod search;
pub mod visualize;

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use formats::{AnyHistory, Format, ReadError};
pub use visualize::visualize;

use search::Search;

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
    /// the search), so equal states must compare equal and hash alike. A paused search may be
    /// resumed on another thread, hence `Send`.
    type State: Clone + Eq + Hash + Send;
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

    /// The state after an operation whose outcome is unknown, as if it took effect, whatever
    /// its output says (there was no usable answer); `state` itself when it could not take
    /// effect. Never refused: "never took effect" is covered by linearizing it last. The
    /// default is [`Model::step`] with the recorded output, falling back to `state`.
    fn step_unknown(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Self::State {
        self.step(state, input, output)
            .unwrap_or_else(|| state.clone())
    }

    /// True when the response itself says the outcome is unknown (a "maybe" or a timeout that
    /// still returned): the checker then treats the operation as if it had no response.
    fn outcome_unknown(&self, _input: &Self::Input, _output: &Self::Output) -> bool {
        false
    }

    /// True when `op`'s outcome is unknown: no response, or [`Model::outcome_unknown`].
    /// (Provided; not meant to be overridden.)
    fn op_outcome_unknown(&self, op: &Operation<Self::Input, Self::Output>) -> bool {
        op.ret.is_none() || self.outcome_unknown(&op.input, &op.output)
    }

    /// The transition the checker takes for `op`: [`Model::step`] for a known outcome,
    /// [`Model::step_unknown`] (never refused) for an unknown one. (Provided; not meant to be
    /// overridden.)
    fn apply(
        &self,
        state: &Self::State,
        op: &Operation<Self::Input, Self::Output>,
    ) -> Option<Self::State> {
        if self.op_outcome_unknown(op) {
            Some(self.step_unknown(state, &op.input, &op.output))
        } else {
            self.step(state, &op.input, &op.output)
        }
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
    /// found illegal ([`CheckOptions::stop_on_illegal`]).
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
    /// The same bound in bytes of visited set per partition, turned into entries from each
    /// partition's own size (module doc: Memory); the smaller of the two bounds applies.
    pub cache_bytes_max: Option<usize>,
    /// Stop the other partitions as soon as one is found illegal (default `true`, as Porcupine
    /// does): they are then `Unknown` ([`Undecided::Stopped`]), and which ones got decided
    /// depends on timing. `false` decides every partition, which on an illegal history may
    /// take far longer (a hard key that is never needed for the verdict).
    pub stop_on_illegal: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            partition: true,
            timeout: None,
            threads: None,
            cache_entries_max: None,
            cache_bytes_max: None,
            stop_on_illegal: true,
        }
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
    /// For `Unknown`: why the search did not finish.
    pub undecided: Option<Undecided>,
    /// Search counters.
    pub stats: SearchStats,
}

/// Why a partition was left undecided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Undecided {
    /// [`CheckOptions::timeout`] passed.
    Timeout,
    /// The visited set reached [`CheckOptions::cache_entries_max`].
    CacheFull,
    /// Another partition was found illegal first ([`CheckOptions::stop_on_illegal`]).
    Stopped,
    /// More than 2^31 operations in one partition.
    TooLarge,
}

impl Undecided {
    /// A short explanation, e.g. "timed out".
    pub fn describe(self) -> &'static str {
        match self {
            Undecided::Timeout => "timed out",
            Undecided::CacheFull => "visited set full (cache_entries_max / cache_bytes_max)",
            Undecided::Stopped => "not finished: another partition is not linearizable",
            Undecided::TooLarge => "too many operations",
        }
    }
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

/// Search iterations a thread gives one partition before taking the next in turn.
const SLICE_ITERATIONS: u64 = 1 << 16;

/// A partition waiting for a thread: not started yet, or paused between slices.
enum Task<'a, M: Model> {
    Pending(usize, Vec<usize>),
    Started(usize, Box<Search<'a, M>>),
}

/// Shared stop signals of one check.
pub(crate) struct Control {
    pub(crate) stop: AtomicBool,
    /// Set with `stop` when the deadline passed.
    pub(crate) timed_out: AtomicBool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) cache_entries_max: usize,
    pub(crate) cache_bytes_max: usize,
}

impl Control {
    /// The visited-set bound, in entries, of a partition of `n` operations.
    pub(crate) fn cache_entries_max_for(&self, n: usize) -> usize {
        let entry_bytes = 8 * (2 + n.div_ceil(64)) + 8;
        self.cache_entries_max
            .min((self.cache_bytes_max / entry_bytes).max(1))
    }
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
        timed_out: AtomicBool::new(false),
        deadline: options.timeout.and_then(|t| Instant::now().checked_add(t)),
        cache_entries_max: options.cache_entries_max.unwrap_or(usize::MAX),
        cache_bytes_max: options.cache_bytes_max.unwrap_or(usize::MAX),
    };
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = options
        .threads
        .unwrap_or(available)
        .clamp(1, parts.len().max(1));

    // Largest partitions first, so the long poles start early; then every partition in turn,
    // a slice of search at a time.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(parts[i].len()));
    let queue: Mutex<VecDeque<Task<'_, M>>> = Mutex::new(
        order
            .into_iter()
            .map(|p| Task::Pending(p, parts[p].clone()))
            .collect(),
    );
    let results: Vec<Mutex<Option<PartitionResult>>> =
        parts.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let Some(task) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
            break;
        };
        let (p, mut search) = match task {
            Task::Pending(p, part) => (p, {
                let max = control.cache_entries_max_for(part.len());
                Box::new(Search::new(model, ops, part, max))
            }),
            Task::Started(p, search) => (p, search),
        };
        if search.run(&control, SLICE_ITERATIONS) {
            let result = search.into_result();
            if result.verdict == Verdict::Illegal && options.stop_on_illegal {
                control.stop.store(true, Ordering::Release);
            }
            if let Ok(mut slot) = results[p].lock() {
                *slot = Some(result);
            }
        } else if let Ok(mut q) = queue.lock() {
            q.push_back(Task::Started(p, search));
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
                undecided: Some(Undecided::Stopped),
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
    CheckResult {
        verdict,
        partitioned: options.partition,
        partitions,
    }
}

#[cfg(test)]
mod tests;

/// The README's Rust snippet, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
