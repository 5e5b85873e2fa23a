//! [`MemStorage`]: a [`Storage`] in memory, for tests and for users who need no durability
//! across process restarts (a "crash" of a node in the same process keeps it).

use crate::io::{Storage, StorageError, WriteOp};
use crate::sim::MemStore;
use crate::types::Persisted;
use std::sync::{Arc, Mutex};

/// Memory storage. Clones share the same data, so a node "restarted" in the same process
/// (from a clone) finds everything that was written.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    store: Arc<Mutex<MemStore>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    async fn load(&self) -> Result<Persisted, StorageError> {
        let store = self.store.lock().map_err(|_| StorageError::Closed)?;
        Ok(store.persisted())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut store = self.store.lock().map_err(|_| StorageError::Closed)?;
        store.apply(ops);
        Ok(())
    }
}
