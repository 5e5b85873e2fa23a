//! [`PauseGate`]: stops a set of tasks from being polled and lets them go again, as SIGSTOP and
//! SIGCONT do a process: a fault for tests of an in-process cluster. A runtime handle made with
//! [`Runtime::with_pause_gate`](crate::Runtime::with_pause_gate) wraps every task spawned
//! through it (and through its clones) in the gate; while paused, those tasks keep their state,
//! sockets and timers, but nothing of theirs runs; once resumed, what woke them meanwhile (a
//! timer, a message) runs, late.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A switch shared by the tasks it pauses. Cheap to clone; clones switch the same tasks.
#[derive(Clone, Default)]
pub struct PauseGate {
    state: Arc<Mutex<GateState>>,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    /// Tasks that found the gate closed, to wake when it opens.
    waiting: Vec<Waker>,
}

impl fmt::Debug for PauseGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseGate")
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl PauseGate {
    /// An open gate (its tasks run).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the gate's tasks at their next turn (a task being polled finishes its turn).
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Lets the gate's tasks run again; those woken meanwhile run at once.
    pub fn resume(&self) {
        let waiting = {
            let mut state = self.lock();
            state.paused = false;
            std::mem::take(&mut state.waiting)
        };
        for w in waiting {
            w.wake();
        }
    }

    /// Whether the gate is paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// `future`, polled only while the gate is open.
    pub fn wrap<F: Future>(&self, future: F) -> Gated<F> {
        Gated {
            gate: self.clone(),
            future: Box::pin(future),
        }
    }
}

/// A future that is polled only while its [`PauseGate`] is open.
pub struct Gated<F> {
    gate: PauseGate,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            // Checked and registered under one lock: a resume cannot slip in between.
            let mut state = self.gate.lock();
            if state.paused {
                if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiting.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        self.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_paused_gate_holds_its_future_until_resumed_and_wakes_it() {
        let gate = PauseGate::new();
        let polled = Arc::new(AtomicUsize::new(0));
        let p = polled.clone();
        let mut fut = gate.wrap(std::future::poll_fn(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(())
        }));
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        gate.pause();
        assert!(gate.is_paused());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(polled.load(Ordering::SeqCst), 0);
        gate.resume();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken once on resume");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polled.load(Ordering::SeqCst), 1);
    }
}
