//! [`MeteredStorage`]: a node's storage, timing each durable write into its metrics.

use std::time::Instant;

use raftkv_raft::{Persisted, Storage, StorageError, WriteOp};

use super::NodeMetrics;

/// A [`Storage`] that counts the time and size of every write into
/// `raftkv_storage_write_seconds` / `raftkv_storage_write_ops`. The driver hands its storage
/// one write at a time, everything queued meanwhile batched into the next (group commit), so
/// one observation is one append + fsync as the disk saw it. A failed write is not counted
/// (the node stops on it).
pub struct MeteredStorage<S> {
    inner: S,
    metrics: Option<NodeMetrics>,
}

impl<S: Storage> MeteredStorage<S> {
    /// `inner`, timed into `metrics` (`None`: not timed, no clock read).
    pub fn new(inner: S, metrics: Option<NodeMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S: Storage> Storage for MeteredStorage<S> {
    async fn load(&self) -> Result<Persisted, StorageError> {
        self.inner.load().await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let Some(metrics) = &self.metrics else {
            return self.inner.write(ops).await;
        };
        let count = ops.len();
        let start = Instant::now();
        self.inner.write(ops).await?;
        metrics.storage_write(count, start.elapsed().as_secs_f64());
        Ok(())
    }
}
