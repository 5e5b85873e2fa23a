//! The storage writer: one durable write at a time, group commit, fail-stop. The event loop
//! polls the write in flight itself, among its other events: a storage whose writes complete
//! at once (in memory) costs no hand-off to another task and back, and the node answers in the
//! same turn.

use crate::io::{Runtime, Storage, StorageError, WriteOp};
use crate::message::Message;
use crate::types::LogId;
use futures::future::BoxFuture;
use futures::task::noop_waker_ref;
use futures::FutureExt;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A write for the storage, and what to do once it is durable.
pub(super) struct Job {
    pub(super) ops: Vec<WriteOp>,
    pub(super) token: Option<LogId>,
    pub(super) after: Vec<Message>,
}

/// What a finished write releases.
pub(super) struct Done {
    pub(super) tokens: Vec<LogId>,
    pub(super) after: Vec<Message>,
}

/// A node's storage, dropped with [`Runtime::spawn_blocking`]: closing a storage may block
/// (LMDB's joins its threads, which finish their last checkpoint and fsync), and dropping it
/// on an executor thread would stall every task there (issue 21 #14: smol's global executor
/// has one thread, so a Clerk's deadline timer stalled with it).
pub(super) struct Closing<R: Runtime, S: Send + 'static> {
    runtime: R,
    storage: Option<S>,
}

impl<R: Runtime, S: Send + 'static> Closing<R, S> {
    pub(super) fn new(runtime: R, storage: S) -> Self {
        Self {
            runtime,
            storage: Some(storage),
        }
    }
}

impl<R: Runtime, S: Send + 'static> std::ops::Deref for Closing<R, S> {
    type Target = S;

    fn deref(&self) -> &S {
        // Invariant: `storage` is `Some` until `drop`.
        self.storage.as_ref().expect("storage taken before drop")
    }
}

impl<R: Runtime, S: Send + 'static> Drop for Closing<R, S> {
    fn drop(&mut self) {
        if let Some(storage) = self.storage.take() {
            self.runtime.spawn_blocking(move || drop(storage));
        }
    }
}

type StartWrite = Box<dyn Fn(Vec<WriteOp>) -> BoxFuture<'static, Result<(), StorageError>> + Send>;

/// Performs writes one at a time; every job queued while one is in flight becomes part of the
/// next write (group commit). After an error it starts nothing more (fail-stop: the node stops).
pub(super) struct Writer {
    start: StartWrite,
    /// The write in flight and what it releases once durable.
    in_flight: Option<(BoxFuture<'static, Result<(), StorageError>>, Done)>,
    /// Jobs waiting for the write in flight: the next write.
    queued: Vec<Job>,
}

impl Writer {
    pub(super) fn new<R: Runtime, S: Storage>(storage: Closing<R, S>) -> Self {
        let storage = Arc::new(storage);
        Self {
            start: Box::new(move |ops| {
                let storage = storage.clone();
                async move { storage.write(ops).await }.boxed()
            }),
            in_flight: None,
            queued: Vec::new(),
        }
    }

    /// Queues `job` after every job queued before it.
    pub(super) fn push(&mut self, job: Job) {
        self.queued.push(job);
    }

    /// True while some job is not durable yet.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queued.is_empty()
    }

    /// The next finished write, starting the next one from the queued jobs once none is in
    /// flight. Pending when idle: only the event loop queues jobs, and it polls after it does.
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<Done, StorageError>> {
        loop {
            if let Some((write, _)) = &mut self.in_flight {
                let result = std::task::ready!(write.poll_unpin(cx));
                if let Some((_, done)) = self.in_flight.take() {
                    return Poll::Ready(result.map(|()| done));
                }
            }
            if self.queued.is_empty() {
                return Poll::Pending;
            }
            let mut ops = Vec::new();
            let mut done = Done {
                tokens: Vec::new(),
                after: Vec::new(),
            };
            for job in self.queued.drain(..) {
                ops.extend(job.ops);
                done.tokens.extend(job.token);
                done.after.extend(job.after);
            }
            if ops.is_empty() {
                return Poll::Ready(Ok(done));
            }
            self.in_flight = Some(((self.start)(ops), done));
        }
    }

    /// A write that is finished already, if any (never waits).
    pub(super) fn done_now(&mut self) -> Option<Result<Done, StorageError>> {
        match self.poll_done(&mut Context::from_waker(noop_waker_ref())) {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        }
    }

    /// Completes every queued job, for a node that stopped for another reason than its
    /// storage: what it queued before stopping still becomes durable, as it would have had
    /// the node kept running. Stops at the first error.
    pub(super) async fn finish(mut self) {
        while self.busy() {
            if std::future::poll_fn(|cx| self.poll_done(cx)).await.is_err() {
                return;
            }
        }
    }
}
