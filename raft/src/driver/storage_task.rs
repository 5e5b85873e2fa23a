//! The storage task: one durable write at a time, group commit, fail-stop.

use crate::io::{Runtime, Storage, StorageError, WriteOp};
use crate::message::Message;
use crate::types::LogId;
use futures::channel::mpsc;
use futures::StreamExt;

/// A write for the storage task, and what to do once it is durable.
pub(super) struct Job {
    pub(super) ops: Vec<WriteOp>,
    pub(super) token: Option<LogId>,
    pub(super) after: Vec<Message>,
}

/// What a finished write releases.
pub(super) struct Done {
    pub(super) tokens: Vec<LogId>,
    pub(super) after: Vec<Message>,
    pub(super) jobs: usize,
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

/// Performs writes one at a time; everything queued while one is in flight becomes the next
/// write (group commit). Stops at the first error (fail-stop).
pub(super) async fn storage_task<R: Runtime, S: Storage>(
    storage: Closing<R, S>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Result<Done, StorageError>>,
) {
    while let Some(first) = jobs.next().await {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let count = batch.len();
        let mut ops = Vec::new();
        let mut finished = Done {
            tokens: Vec::new(),
            after: Vec::new(),
            jobs: count,
        };
        for job in batch {
            ops.extend(job.ops);
            finished.tokens.extend(job.token);
            finished.after.extend(job.after);
        }
        if !ops.is_empty() {
            if let Err(e) = storage.write(ops).await {
                let _ = done.unbounded_send(Err(e));
                return;
            }
        }
        if done.unbounded_send(Ok(finished)).is_err() {
            return;
        }
    }
}
