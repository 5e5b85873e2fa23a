//! The two queues between the caller and the transport's tasks: a bounded outbound queue per
//! peer (drained by that peer's writer task) and the delay queue of the fault filter (drained by
//! the delay task). Both push without blocking and refuse when full; both wake their task on
//! push and on close. A queue stores its task's waker under its lock, so a push wakes the task
//! only when it is parked on that queue.

use raftkv_raft::{Message, Runtime};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A runtime's sleep, boxed so that it can be kept across polls.
pub(crate) type BoxedSleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Locks, ignoring poisoning: every critical section here leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps `cx`'s waker in `slot` (cloning only if it changed).
fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A bounded FIFO of messages to one peer.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    state: Mutex<PeerQueueState>,
    /// Invariant: `state.messages.len() <= len_max`.
    len_max: usize,
}

#[derive(Debug, Default)]
struct PeerQueueState {
    messages: VecDeque<Message>,
    closed: bool,
    /// The writer task, while it waits for a message or for the queue to close.
    waiter: Option<Waker>,
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
        state.messages.push_back(msg);
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waker) = waiter {
            waker.wake();
        }
        Ok(())
    }

    /// Waits until a message is queued, then moves every queued message to `batch`. Returns
    /// false (and moves nothing) once the queue is closed.
    pub async fn next_batch(&self, batch: &mut Vec<Message>) -> bool {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(false);
            }
            if !state.messages.is_empty() {
                batch.extend(state.messages.drain(..));
                return Poll::Ready(true);
            }
            park(&mut state.waiter, cx);
            Poll::Pending
        })
        .await
    }

    /// Runs `future` unless the queue is closed first: `None` if closed. A push meanwhile only
    /// polls it again.
    pub async fn unless_closed<F: Future + Unpin>(&self, mut future: F) -> Option<F::Output> {
        poll_fn(|cx| {
            {
                let mut state = lock(&self.state);
                if state.closed {
                    return Poll::Ready(None);
                }
                park(&mut state.waiter, cx);
            }
            Pin::new(&mut future).poll(cx).map(Some)
        })
        .await
    }

    /// Sleeps for `duration` on `runtime` unless the queue is closed first. Returns false if
    /// closed.
    pub async fn sleep<R: Runtime>(&self, runtime: &R, duration: Duration) -> bool {
        self.unless_closed(Box::pin(runtime.sleep(duration)))
            .await
            .is_some()
    }

    /// Discards every queued message and returns how many.
    pub fn clear(&self) -> usize {
        let mut state = lock(&self.state);
        let n = state.messages.len();
        state.messages.clear();
        n
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Closes the queue: drops what is queued and wakes the writer.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.messages.clear();
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waker) = waiter {
            waker.wake();
        }
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

/// A bounded priority queue of delayed messages, drained by one delay task.
#[derive(Debug)]
pub(crate) struct DelayQueue {
    state: Mutex<DelayState>,
    /// Invariant: `state.heap.len() <= len_max`.
    len_max: usize,
}

#[derive(Debug, Default)]
struct DelayState {
    heap: BinaryHeap<Delayed>,
    seq: u64,
    closed: bool,
    /// The delay task, while it waits for the earliest message to fall due.
    waiter: Option<Waker>,
}

impl DelayQueue {
    pub fn new(len_max: usize) -> Self {
        Self {
            state: Mutex::new(DelayState::default()),
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
        // The task sleeps until the earliest message is due: wake it if that changed.
        let earliest = state.heap.peek().is_some_and(|d| d.seq == seq);
        let waiter = if earliest { state.waiter.take() } else { None };
        drop(state);
        if let Some(waker) = waiter {
            waker.wake();
        }
        Ok(())
    }

    /// The delay task's loop: hands each message to `deliver` once due (sleeping on `runtime`
    /// until then); returns on close.
    pub async fn run<R: Runtime>(&self, runtime: &R, mut deliver: impl FnMut(Message)) {
        // The sleep in progress, and the time it ends.
        let mut timer: Option<(Instant, BoxedSleep)> = None;
        poll_fn(|cx| loop {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(());
            }
            let now = Instant::now();
            let Some(due) = state.heap.peek().map(|d| d.due) else {
                park(&mut state.waiter, cx);
                timer = None;
                return Poll::Pending;
            };
            if due <= now {
                let delayed = state.heap.pop().expect("peeked");
                drop(state);
                deliver(delayed.msg);
                continue;
            }
            park(&mut state.waiter, cx);
            drop(state);
            let sleep = match &mut timer {
                Some((until, sleep)) if *until == due => sleep,
                _ => &mut timer.insert((due, Box::pin(runtime.sleep(due - now)))).1,
            };
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => timer = None,
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// Closes the queue: drops what is held and stops the delay task.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.heap.clear();
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waker) = waiter {
            waker.wake();
        }
    }
}
