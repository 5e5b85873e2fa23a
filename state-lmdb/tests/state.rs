//! The KV state in LMDB against the heap state (`raftkv_kv::testing::durable`): the same
//! answers and snapshots, long keys included, and after a crash the state of its last commit.

use raftkv_kv::testing::durable::durable_matches_heap;
use raftkv_state_lmdb::{LmdbState, StateOptions};

#[test]
fn lmdb_and_heap_state_machines_answer_alike_snapshot_alike_and_survive_crashes() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let options = StateOptions {
            map_size_bytes: 64 << 20,
        };
        durable_matches_heap(seed, &mut || LmdbState::open(dir.path(), options).unwrap());
    }
}
