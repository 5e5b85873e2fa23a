//! The search over one partition: Wing & Gong's backtracking walk over a doubly linked list of
//! call and return events, with Lowe's memo of visited (linearized set, state) pairs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cache::{mix, FxBuildHasher, Insert, Linearized, Visited};
use super::{Control, Model, Operation, PartitionResult, SearchStats, Undecided, Verdict};

/// "No node" in the linked list.
const NIL: u32 = u32::MAX;
/// The head sentinel of the linked list.
const HEAD: u32 = 0;
/// Iterations between two reads of the clock.
const CLOCK_EVERY: u64 = 1 << 12;

/// The events of one partition as a doubly linked list over arrays. Node 0 is the head
/// sentinel; node `1 + j` is the `j`-th event in time order.
struct Events {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Local operation index of each node (unused for the head).
    op: Vec<u32>,
    /// For a call node, its return node; `NIL` for return nodes and the head.
    ret: Vec<u32>,
}

impl Events {
    /// Builds the list from the operations' effective intervals (`None` = +infinity). At equal
    /// times calls come before returns: intervals are closed, so touching operations are
    /// concurrent (Porcupine's order).
    fn new(intervals: &[(u64, Option<u64>)]) -> Self {
        // (time, +infinity?, return?, op): calls sort before returns at equal times; unknown
        // returns come after every finite time.
        let mut order: Vec<(bool, u64, bool, u32)> = Vec::with_capacity(intervals.len() * 2);
        for (k, &(call, ret)) in intervals.iter().enumerate() {
            order.push((false, call, false, k as u32));
            match ret {
                Some(ret) => order.push((false, ret.max(call), true, k as u32)),
                None => order.push((true, 0, true, k as u32)),
            }
        }
        order.sort_unstable();
        let nodes = order.len() + 1;
        let mut events = Events {
            next: (1..=nodes as u32).collect(),
            prev: (0..nodes as u32).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![NIL; nodes],
            ret: vec![NIL; nodes],
        };
        events.next[nodes - 1] = NIL;
        events.prev[0] = NIL;
        let mut ret_node = vec![NIL; intervals.len()];
        for (j, &(_, _, is_ret, k)) in order.iter().enumerate().rev() {
            let node = j as u32 + 1;
            events.op[node as usize] = k;
            if is_ret {
                ret_node[k as usize] = node;
            } else {
                events.ret[node as usize] = ret_node[k as usize];
            }
        }
        events
    }

    #[inline]
    fn is_call(&self, node: u32) -> bool {
        self.ret[node as usize] != NIL
    }

    /// Takes a call node and its return node out of the list.
    #[inline]
    fn lift(&mut self, call: u32) {
        let (c, r) = (call as usize, self.ret[call as usize] as usize);
        // A call always has its return after it, so `next[c]` exists.
        self.next[self.prev[c] as usize] = self.next[c];
        self.prev[self.next[c] as usize] = self.prev[c];
        self.next[self.prev[r] as usize] = self.next[r];
        if self.next[r] != NIL {
            self.prev[self.next[r] as usize] = self.prev[r];
        }
    }

    /// Puts back what [`Events::lift`] took out (dancing links: the lifted nodes kept their
    /// own pointers).
    #[inline]
    fn unlift(&mut self, call: u32) {
        let (c, r) = (call as usize, self.ret[call as usize] as usize);
        self.next[self.prev[r] as usize] = r as u32;
        if self.next[r] != NIL {
            self.prev[self.next[r] as usize] = r as u32;
        }
        self.next[self.prev[c] as usize] = c as u32;
        self.prev[self.next[c] as usize] = c as u32;
    }
}

/// Interned states and a direct-mapped memo of transitions (state id, op) → state id.
struct Transitions<'m, M: Model> {
    model: &'m M,
    states: Vec<M::State>,
    ids: HashMap<M::State, u32, FxBuildHasher>,
    /// Memo keys: `state << 32 | op`, or `u64::MAX` for an empty slot.
    memo_keys: Vec<u64>,
    /// Memo values: the next state id, or `NIL` when the model refused the step.
    memo_next: Vec<u32>,
    model_steps: u64,
}

impl<'m, M: Model> Transitions<'m, M> {
    fn new(model: &'m M, ops: usize) -> Self {
        let memo = (ops * 16).next_power_of_two().clamp(64, 1 << 16);
        let mut t = Transitions {
            model,
            states: Vec::new(),
            ids: HashMap::default(),
            memo_keys: vec![u64::MAX; memo],
            memo_next: vec![NIL; memo],
            model_steps: 0,
        };
        t.intern(model.init());
        t
    }

    /// The id of `state`. (Ids are `u32`: 4 billion distinct states would exhaust memory
    /// long before the ids.)
    fn intern(&mut self, state: M::State) -> u32 {
        if let Some(&id) = self.ids.get(&state) {
            return id;
        }
        let id = self.states.len() as u32;
        self.states.push(state.clone());
        self.ids.insert(state, id);
        id
    }

    /// The state after `op` from `state`, or `None` if the model refuses.
    #[inline]
    fn step(
        &mut self,
        state: u32,
        op: u32,
        operation: &Operation<M::Input, M::Output>,
    ) -> Option<u32> {
        let key = u64::from(state) << 32 | u64::from(op);
        let slot = mix(key) as usize & (self.memo_keys.len() - 1);
        let next = if self.memo_keys[slot] == key {
            self.memo_next[slot]
        } else {
            self.model_steps += 1;
            let next = match self.model.apply(&self.states[state as usize], operation) {
                Some(s) => self.intern(s),
                None => NIL,
            };
            self.memo_keys[slot] = key;
            self.memo_next[slot] = next;
            next
        };
        (next != NIL).then_some(next)
    }
}

/// The outcome of a finished search.
type Outcome = (Verdict, Option<Undecided>);

/// The search over one partition, resumable: [`Search::run`] advances it by a bounded number
/// of iterations, so that a few threads can take turns over many partitions (as Porcupine's
/// goroutines do) and an illegal partition is found even while a hard one is being searched.
pub(crate) struct Search<'a, M: Model> {
    part: Vec<usize>,
    ops: Vec<&'a Operation<M::Input, M::Output>>,
    events: Events,
    transitions: Transitions<'a, M>,
    linearized: Linearized,
    visited: Visited,
    /// The lifted calls, each with the state before it.
    calls: Vec<(u32, u32)>,
    state: u32,
    /// The deepest prefix met at a backtrack, with the calls tried there.
    best: Option<(Vec<u32>, Vec<u32>)>,
    entry: u32,
    iterations: u64,
    outcome: Option<Outcome>,
}

impl<'a, M: Model> Search<'a, M> {
    /// A search over the operations `part` (indices into `history`).
    pub(crate) fn new(
        model: &'a M,
        history: &'a [Operation<M::Input, M::Output>],
        part: Vec<usize>,
        cache_entries_max: usize,
    ) -> Self {
        let mut ops: Vec<&Operation<M::Input, M::Output>> =
            part.iter().map(|&i| &history[i]).collect();
        // Node numbers (two per operation, plus the head) must fit in u32 with NIL to spare.
        let too_large = ops.len() >= (u32::MAX / 2 - 1) as usize;
        if too_large {
            ops.clear();
        }
        let n = ops.len();
        // An unknown outcome returns at +infinity (`None`).
        let ret = |o: &Operation<M::Input, M::Output>| {
            if model.op_outcome_unknown(o) {
                None
            } else {
                o.ret
            }
        };
        let intervals: Vec<(u64, Option<u64>)> = ops.iter().map(|o| (o.call, ret(o))).collect();
        let events = Events::new(&intervals);
        let entry = events.next[HEAD as usize];
        Search {
            part,
            ops,
            events,
            transitions: Transitions::new(model, n),
            linearized: Linearized::new(n),
            visited: Visited::new(n.div_ceil(64), cache_entries_max),
            calls: Vec::new(),
            state: 0,
            best: None,
            entry,
            iterations: 0,
            outcome: too_large.then_some((Verdict::Unknown, Some(Undecided::TooLarge))),
        }
    }

    /// Searches for at most `iterations_max` more steps; true once the search is over.
    pub(crate) fn run(&mut self, control: &Control, iterations_max: u64) -> bool {
        if self.outcome.is_none() {
            self.outcome = self.advance(control, iterations_max);
        }
        self.outcome.is_some()
    }

    fn advance(&mut self, control: &Control, iterations_max: u64) -> Option<Outcome> {
        // The hot loop works on locals, written back when it pauses or ends.
        let events = &mut self.events;
        let (mut entry, mut state, mut iterations) = (self.entry, self.state, self.iterations);
        let end = iterations.saturating_add(iterations_max);
        let outcome = loop {
            if events.next[HEAD as usize] == NIL {
                break Some((Verdict::Ok, None));
            }
            if iterations >= end {
                break None;
            }
            iterations += 1;
            if control.stop.load(Ordering::Acquire) {
                let timed_out = control.timed_out.load(Ordering::Relaxed);
                let why = if timed_out {
                    Undecided::Timeout
                } else {
                    Undecided::Stopped
                };
                break Some((Verdict::Unknown, Some(why)));
            }
            if iterations % CLOCK_EVERY == 0
                && control.deadline.is_some_and(|d| Instant::now() >= d)
            {
                control.timed_out.store(true, Ordering::Relaxed);
                // Release: whoever sees `stop` sees `timed_out`.
                control.stop.store(true, Ordering::Release);
                break Some((Verdict::Unknown, Some(Undecided::Timeout)));
            }
            if events.is_call(entry) {
                let op = events.op[entry as usize];
                let Some(next_state) = self.transitions.step(state, op, self.ops[op as usize])
                else {
                    entry = events.next[entry as usize];
                    continue;
                };
                self.linearized.insert(op as usize);
                match self.visited.insert(&self.linearized, next_state) {
                    Insert::New => {
                        self.calls.push((entry, state));
                        state = next_state;
                        events.lift(entry);
                        entry = events.next[HEAD as usize];
                    }
                    Insert::Seen => {
                        self.linearized.remove(op as usize);
                        entry = events.next[entry as usize];
                    }
                    Insert::Full => {
                        self.linearized.remove(op as usize);
                        break Some((Verdict::Unknown, Some(Undecided::CacheFull)));
                    }
                }
            } else {
                // A return: its operation had to be linearized by now. Before backtracking,
                // remember the deepest point reached and the calls that were tried there.
                if self
                    .best
                    .as_ref()
                    .is_none_or(|(prefix, _)| self.calls.len() > prefix.len())
                {
                    let prefix = self
                        .calls
                        .iter()
                        .map(|&(c, _)| events.op[c as usize])
                        .collect();
                    let mut tried = Vec::new();
                    let mut node = events.next[HEAD as usize];
                    while node != entry {
                        if events.is_call(node) {
                            tried.push(events.op[node as usize]);
                        }
                        node = events.next[node as usize];
                    }
                    self.best = Some((prefix, tried));
                }
                let Some((call, previous)) = self.calls.pop() else {
                    break Some((Verdict::Illegal, None));
                };
                state = previous;
                self.linearized.remove(events.op[call as usize] as usize);
                events.unlift(call);
                entry = events.next[call as usize];
            }
        };
        (self.entry, self.state, self.iterations) = (entry, state, iterations);
        outcome
    }

    /// The result; a search that is not over counts as stopped.
    pub(crate) fn into_result(self) -> PartitionResult {
        let (verdict, undecided) = self
            .outcome
            .unwrap_or((Verdict::Unknown, Some(Undecided::Stopped)));
        let part = &self.part;
        let to_history =
            |local: &[u32]| local.iter().map(|&k| part[k as usize]).collect::<Vec<_>>();
        let (linearization, unplaceable) = match (verdict, &self.best) {
            (Verdict::Ok, _) => {
                let order: Vec<u32> = self
                    .calls
                    .iter()
                    .map(|&(c, _)| self.events.op[c as usize])
                    .collect();
                (to_history(&order), Vec::new())
            }
            (Verdict::Illegal, Some((prefix, tried))) => (to_history(prefix), to_history(tried)),
            (_, Some((prefix, _))) => (to_history(prefix), Vec::new()),
            (_, None) => (Vec::new(), Vec::new()),
        };
        PartitionResult {
            verdict,
            linearization,
            unplaceable,
            undecided,
            stats: SearchStats {
                cache_entries: self.visited.len(),
                states: self.transitions.states.len(),
                model_steps: self.transitions.model_steps,
            },
            ops: self.part,
        }
    }
}
