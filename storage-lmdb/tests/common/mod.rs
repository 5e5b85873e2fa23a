//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use futures::executor::block_on;
use raftkv_raft::{Entry, Payload, Persisted, Storage, StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use std::path::Path;

pub fn entry(index: u64, term: u64, payload: impl Into<Bytes>) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(payload.into()),
    }
}

pub fn open(dir: &Path, options: LmdbOptions) -> LmdbStorage {
    LmdbStorage::open(dir, options).expect("open")
}

pub fn write(storage: &LmdbStorage, ops: Vec<WriteOp>) -> Result<(), StorageError> {
    block_on(storage.write(ops))
}

pub fn load(storage: &LmdbStorage) -> Result<Persisted, StorageError> {
    block_on(storage.load())
}

pub fn tiny_map() -> LmdbOptions {
    LmdbOptions {
        map_size_bytes: 1 << 20,
        ..LmdbOptions::default()
    }
}

/// splitmix64: a seeded generator, so that a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed from `RAFTKV_SEED`, or a fresh one; printed so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("RAFTKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            mix(nanos ^ u64::from(std::process::id()))
        });
    println!("RAFTKV_SEED={seed}");
    seed
}
