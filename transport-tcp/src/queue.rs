//! The two blocking queues between the caller and the threads: a bounded outbound queue per
//! peer (drained by that peer's writer) and the delay queue of the fault filter (drained by the
//! timer thread). Both push without blocking and refuse when full; both wake their thread on
//! close.

use raftkv_raft::Message;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Locks, ignoring poisoning: every critical section here leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bounded FIFO of messages to one peer.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    state: Mutex<PeerQueueState>,
    changed: Condvar,
    /// Invariant: `state.messages.len() <= len_max`.
    len_max: usize,
}

#[derive(Debug, Default)]
struct PeerQueueState {
    messages: VecDeque<Message>,
    closed: bool,
}

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    Closed,
}

impl PeerQueue {
    pub fn new(len_max: usize) -> Self {
        Self {
            state: Mutex::new(PeerQueueState::default()),
            changed: Condvar::new(),
            len_max,
        }
    }

    /// Queues `msg` unless the queue is full or closed. Never blocks for long.
    pub fn push(&self, msg: Message) -> Result<(), PushError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.messages.len() >= self.len_max {
            return Err(PushError::Full);
        }
        let was_empty = state.messages.is_empty();
        state.messages.push_back(msg);
        drop(state);
        if was_empty {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Waits until a message is queued, then moves every queued message to `batch`. Returns
    /// false (and moves nothing) once the queue is closed.
    pub fn wait_batch(&self, batch: &mut Vec<Message>) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return false;
            }
            if !state.messages.is_empty() {
                batch.extend(state.messages.drain(..));
                return true;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Discards every queued message and returns how many.
    pub fn clear(&self) -> usize {
        let mut state = lock(&self.state);
        let n = state.messages.len();
        state.messages.clear();
        n
    }

    /// Sleeps for `duration` unless the queue is closed first. Returns false if closed.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Closes the queue: drops what is queued and wakes the writer.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.messages.clear();
        drop(state);
        self.changed.notify_all();
    }
}

/// Messages held back by a filter delay, due at `due`. Earliest first; ties in send order.
#[derive(Debug)]
struct Delayed {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A bounded priority queue of delayed messages, drained by one timer thread.
#[derive(Debug)]
pub(crate) struct DelayQueue {
    state: Mutex<DelayState>,
    changed: Condvar,
    /// Invariant: `state.heap.len() <= len_max`.
    len_max: usize,
}

#[derive(Debug, Default)]
struct DelayState {
    heap: BinaryHeap<Delayed>,
    seq: u64,
    closed: bool,
}

impl DelayQueue {
    pub fn new(len_max: usize) -> Self {
        Self {
            state: Mutex::new(DelayState::default()),
            changed: Condvar::new(),
            len_max,
        }
    }

    /// Holds `msg` until `delay` has passed, unless the queue is full or closed.
    pub fn push(&self, msg: Message, delay: Duration) -> Result<(), PushError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.heap.len() >= self.len_max {
            return Err(PushError::Full);
        }
        state.seq += 1;
        let seq = state.seq;
        state.heap.push(Delayed {
            due: Instant::now() + delay,
            seq,
            msg,
        });
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// The timer thread's loop: hands each message to `deliver` once due; returns on close.
    pub fn run(&self, mut deliver: impl FnMut(Message)) {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return;
            }
            let now = Instant::now();
            match state.heap.peek().map(|d| d.due) {
                Some(due) if due <= now => {
                    let delayed = state.heap.pop().expect("peeked");
                    drop(state);
                    deliver(delayed.msg);
                    state = lock(&self.state);
                }
                Some(due) => {
                    state = self
                        .changed
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Closes the queue: drops what is held and stops the timer thread.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.heap.clear();
        drop(state);
        self.changed.notify_all();
    }
}
