//! [`History`]: a thread-safe recorder of client operations — call and return on one clock —
//! in the form the checker reads (the JSON history of [`crate::formats::json`], model `kv`).
//!
//! A client of any key/value store records its calls with [`History::call`] and their answers
//! with [`History::finish`]; the raftkv Clerk does (it turns its own operations into
//! [`KvInput`]s, keys and values as UTF-8 text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::formats::json::to_json;
use crate::models::{KvErr, KvInput, KvModel, KvOutput};
use crate::{check, CheckOptions, CheckResult, Operation};

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A shared history. Clones record into the same one.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
    /// What `call` and `finish` read; [`History::on_clock`] gives a view on another clock.
    clock: Clock,
}

struct Inner {
    next_client: AtomicU64,
    ops: Mutex<Vec<Operation<KvInput, KvOutput>>>,
}

/// The position of a recorded call, to be completed with [`History::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending(usize);

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "History({} ops)", self.len())
    }
}

impl History {
    /// A history on a monotonic clock (nanoseconds since its creation).
    pub fn new() -> Self {
        let origin = Instant::now();
        Self::with_clock(move || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// A history on `clock` (nanoseconds; must never go back), e.g. a simulator's virtual time.
    pub fn with_clock(clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self::from_ops_with_clock(Vec::new(), Arc::new(clock))
    }

    /// A history holding `ops` (e.g. read from a file); new calls are recorded after them.
    pub fn from_ops(ops: Vec<Operation<KvInput, KvOutput>>) -> Self {
        let last = ops
            .iter()
            .map(|o| o.ret.unwrap_or(o.call).max(o.call))
            .max();
        let origin = Instant::now();
        let base = last.map_or(0, |t| t + 1);
        Self::from_ops_with_clock(
            ops,
            Arc::new(move || {
                base.saturating_add(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
            }),
        )
    }

    fn from_ops_with_clock(ops: Vec<Operation<KvInput, KvOutput>>, clock: Clock) -> Self {
        let next_client = ops.iter().map(|o| o.client + 1).max().unwrap_or(0);
        Self {
            inner: Arc::new(Inner {
                next_client: AtomicU64::new(next_client),
                ops: Mutex::new(ops),
            }),
            clock,
        }
    }

    /// The same history (it records into the same operations and client numbers) read on
    /// `clock` instead: a simulator's Clerks record a user's history in virtual time. The
    /// clocks of one history's records must agree for its check to mean anything.
    pub fn on_clock(&self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.clone(),
            clock: Arc::new(clock),
        }
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, Vec<Operation<KvInput, KvOutput>>> {
        self.inner.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh client number (one lane in the visualization).
    pub fn new_client(&self) -> u64 {
        self.inner.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// The clock's reading now.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Records the call of `input` by `client`, now. Until [`History::finish`], its outcome is
    /// unknown (`return: null`).
    pub fn call(&self, client: u64, input: KvInput) -> Pending {
        let mut ops = self.ops();
        let call = self.now();
        ops.push(Operation {
            client,
            call,
            ret: None,
            input,
            output: KvOutput {
                value: None,
                version: None,
                err: Some(KvErr::Timeout),
            },
        });
        Pending(ops.len() - 1)
    }

    /// Records the return of a call, now, with its output. An output whose error is `maybe` or
    /// `timeout` stays with `return: null` (the checker then lets it take effect at any time
    /// after its call, or never).
    pub fn finish(&self, pending: Pending, output: KvOutput) {
        let unknown = output.err.is_some_and(KvErr::outcome_unknown);
        let mut ops = self.ops();
        let ret = self.now();
        if let Some(op) = ops.get_mut(pending.0) {
            op.ret = if unknown {
                None
            } else {
                Some(ret.max(op.call))
            };
            op.output = output;
        }
    }

    pub fn len(&self) -> usize {
        self.ops().len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops().is_empty()
    }

    /// A copy of the operations recorded so far.
    pub fn operations(&self) -> Vec<Operation<KvInput, KvOutput>> {
        self.ops().clone()
    }

    /// The history as JSON ([`crate::formats::json`]).
    pub fn to_json(&self) -> String {
        to_json(&self.ops())
    }

    /// Checks the history against the `kv` model.
    pub fn check(&self, options: &CheckOptions) -> CheckResult {
        check(&KvModel, &self.operations(), options)
    }
}
