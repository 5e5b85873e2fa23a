//! The `Storage` conformance suite from `raftkv-raft`, on LMDB.

use raftkv_raft::testing::storage_conformance;
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};

#[test]
fn lmdb_storage_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    storage_conformance(|| LmdbStorage::open(dir.path(), LmdbOptions::default()).unwrap());
}

/// The suite writes a 1 MiB entry: with a 1 MiB map, that write grows the map.
#[test]
fn lmdb_storage_passes_the_conformance_suite_with_a_tiny_map() {
    let dir = tempfile::tempdir().unwrap();
    let options = LmdbOptions {
        map_size_bytes: 1 << 20,
        ..LmdbOptions::default()
    };
    storage_conformance(|| LmdbStorage::open(dir.path(), options).unwrap());
}
