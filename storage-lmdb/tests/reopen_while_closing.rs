//! Regression (found by the Python fault suite: a paused node crashed and restarted at once):
//! a store reopened while the previous handle on the same directory was still closing. The old
//! WAL thread deleted its WAL segments after its checkpoint thread had released the directory
//! lock, so the new store could open, recover those segments, and then fail-stop when it came
//! to delete them ("delete wal-…1.log: No such file or directory"). The directory now stays
//! locked until the old store has deleted its WAL.

mod common;

use common::{entry, load, write};
use raftkv_raft::WriteOp;
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use std::time::{Duration, Instant};

/// Opens `dir`, retrying while another handle holds it (as `LocalCluster::restart` does).
fn open_when_free(dir: &std::path::Path) -> LmdbStorage {
    let started = Instant::now();
    loop {
        match LmdbStorage::open(dir, LmdbOptions::default()) {
            Ok(s) => return s,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{e}"),
            Err(_) => std::thread::yield_now(),
        }
    }
}

#[test]
fn regression_a_store_reopened_while_the_old_one_closes_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 1;
    let mut expected = Vec::new();
    for _ in 0..30 {
        let storage = open_when_free(dir.path());
        let batch: Vec<_> = (next..next + 20).map(|i| entry(i, 1, "v")).collect();
        next += 20;
        write(&storage, vec![WriteOp::Append(batch.clone())]).unwrap();
        expected.extend(batch);
        // Close on another thread while this one reopens at once.
        let closing = std::thread::spawn(move || drop(storage));
        let reopened = open_when_free(dir.path());
        let more = entry(next, 1, "w");
        next += 1;
        expected.push(more.clone());
        write(&reopened, vec![WriteOp::Append(vec![more])]).unwrap();
        assert_eq!(load(&reopened).unwrap().entries, expected);
        closing.join().unwrap();
        drop(reopened);
    }
}
