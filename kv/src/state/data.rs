//! [`KvData`]: the key → (value, version) map the KV rules run over, and [`MemData`], the heap
//! map a `memory` node keeps.

use bytes::Bytes;
use std::collections::BTreeMap;

/// The key → (value, version) map of a [`super::KvStateMachine`]. Reads and writes cannot fail
/// here: a backend whose reads can (a durable store) remembers its first error and reports it
/// when the applied batch is committed, before anything of the batch becomes durable.
pub trait KvData {
    /// The value and version of `key`, if it is present.
    fn read(&self, key: &[u8]) -> Option<(Bytes, u64)>;

    /// Sets `key` to `value` at `version`.
    fn write(&mut self, key: Bytes, value: Bytes, version: u64);

    /// Removes `key`; what it held, if it was present.
    fn remove(&mut self, key: &[u8]) -> Option<(Bytes, u64)>;
}

/// The data of a node whose state lives in memory (`--state memory`).
pub type MemData = BTreeMap<Bytes, (Bytes, u64)>;

impl KvData for MemData {
    fn read(&self, key: &[u8]) -> Option<(Bytes, u64)> {
        self.get(key).cloned()
    }

    fn write(&mut self, key: Bytes, value: Bytes, version: u64) {
        self.insert(key, (value, version));
    }

    fn remove(&mut self, key: &[u8]) -> Option<(Bytes, u64)> {
        BTreeMap::remove(self, key)
    }
}
