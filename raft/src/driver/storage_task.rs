//! The storage task: one durable write at a time, group commit, fail-stop.

use crate::io::{Storage, StorageError, WriteOp};
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

/// Performs writes one at a time; everything queued while one is in flight becomes the next
/// write (group commit). Stops at the first error (fail-stop).
pub(super) async fn storage_task<S: Storage>(
    storage: S,
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
