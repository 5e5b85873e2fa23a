//! The request queue from a node's handles to its event loop: an unbounded channel whose depth
//! is bounded by a count the handles and the loop share.
//!
//! A bounded `futures` channel sends through `&mut Sender`, so a handle shared by reference had
//! to clone its `Sender` for every request (an allocation and a few atomics, ≈ 3% of the CPU in
//! the in-process benchmark). Here sending takes `&self`: one atomic add to reserve a place,
//! and the loop gives it back when it takes the request.

use futures::channel::mpsc;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a request was not queued.
pub(crate) enum QueueError {
    /// `max` requests are queued already.
    Full,
    /// The event loop stopped.
    Closed,
}

/// The handles' side. Cheap to clone.
pub(crate) struct QueueTx<T> {
    tx: mpsc::UnboundedSender<T>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            max: self.max,
        }
    }
}

/// The event loop's side.
pub(crate) struct QueueRx<T> {
    rx: mpsc::UnboundedReceiver<T>,
    queued: Arc<AtomicUsize>,
}

/// A queue that holds at most `max` requests (at least one).
pub(crate) fn queue<T>(max: usize) -> (QueueTx<T>, QueueRx<T>) {
    let (tx, rx) = mpsc::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let tx = QueueTx {
        tx,
        queued: queued.clone(),
        max: max.max(1),
    };
    (tx, QueueRx { rx, queued })
}

impl<T> QueueTx<T> {
    /// Queues `item` if fewer than `max` requests are queued.
    pub(crate) fn try_send(&self, item: T) -> Result<(), QueueError> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueError::Full);
        }
        self.send(item)
    }

    /// Queues `item` however many are queued (a shutdown must never be refused).
    pub(crate) fn send_always(&self, item: T) -> Result<(), QueueError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.send(item)
    }

    /// Sends `item`, whose place is reserved.
    fn send(&self, item: T) -> Result<(), QueueError> {
        if self.tx.unbounded_send(item).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueError::Closed);
        }
        Ok(())
    }
}

impl<T> QueueRx<T> {
    fn took(&self, item: Option<T>) -> Option<T> {
        if item.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }

    /// The next request; `None` once every handle is gone.
    pub(crate) async fn next(&mut self) -> Option<T> {
        let item = self.rx.next().await;
        self.took(item)
    }

    /// A request that is already queued, if any.
    pub(crate) fn try_next(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok();
        self.took(item)
    }

    /// Refuses every later request (`Closed`); those queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }
}
