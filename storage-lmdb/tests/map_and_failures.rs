//! Map growth, fail-stop, the order of writes, and exclusive opening.

mod common;

use common::{entry, load, open, tiny_map, write};
use futures::executor::block_on;
use raftkv_raft::{HardState, Storage, StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};

#[test]
fn the_map_grows_from_one_mib_to_hold_twenty_mib_of_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), tiny_map());
    assert_eq!(storage.map_size_bytes(), 1 << 20);
    // 200 writes of 10 entries of 10 KiB: 20 MiB.
    for w in 0..200u64 {
        let entries = (1..=10)
            .map(|i| entry(w * 10 + i, 1, vec![(w % 251) as u8; 10 << 10]))
            .collect();
        write(&storage, vec![WriteOp::Append(entries)]).unwrap();
    }
    assert!(
        storage.map_size_bytes() >= 20 << 20,
        "{}",
        storage.map_size_bytes()
    );
    drop(storage);

    let storage = open(dir.path(), tiny_map());
    let p = load(&storage).unwrap();
    assert_eq!(p.entries.len(), 2000);
    for (i, e) in p.entries.iter().enumerate() {
        let w = i as u64 / 10;
        assert_eq!(e.index, i as u64 + 1);
        assert_eq!(
            e.payload,
            entry(0, 0, vec![(w % 251) as u8; 10 << 10]).payload
        );
    }
}

/// A write is durable once in the WAL; LMDB takes it at the next checkpoint. If LMDB's map
/// cannot hold it, the checkpoint fails and the store stops, and the write stays in the WAL:
/// reopened with a larger map, nothing is lost.
#[test]
fn a_checkpoint_beyond_the_largest_map_stops_the_store_and_a_larger_map_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = LmdbOptions {
        map_size_bytes: 1 << 20,
        map_size_bytes_max: 2 << 20,
        ..LmdbOptions::default()
    };
    let storage = open(dir.path(), options);
    let hs = HardState {
        term: 1,
        voted_for: None,
        commit: 1,
    };
    write(
        &storage,
        vec![
            WriteOp::Append(vec![entry(1, 1, "a")]),
            WriteOp::HardState(hs),
        ],
    )
    .unwrap();

    let big: Vec<_> = (2..=5).map(|i| entry(i, 1, vec![0; 1 << 20])).collect();
    write(&storage, vec![WriteOp::Append(big.clone())]).unwrap();
    // `load` checkpoints first: LMDB cannot hold 4 MiB in a 2 MiB map.
    let err = load(&storage).unwrap_err();
    // Issue 19: the error says what (the map is full), where (the store) and the bound.
    assert_eq!(
        err,
        StorageError::MapFull {
            path: dir.path().to_path_buf(),
            map_bytes: 2 << 20,
            map_bytes_max: 2 << 20,
        }
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&dir.path().display().to_string())
            && shown.contains("map_size_bytes_max")
            && shown.contains(&(2u64 << 20).to_string()),
        "{shown}"
    );
    assert_eq!(storage.map_size_bytes(), 2 << 20);

    // Fail-stop: no retry, not even of a small write; load too reports the failure.
    let small = vec![WriteOp::Append(vec![entry(6, 1, "b")])];
    assert_eq!(write(&storage, small), Err(err.clone()));
    assert_eq!(load(&storage), Err(err));
    drop(storage);

    // The same map still cannot take the WAL. Opening and loading work (the WAL's writes are
    // merged in memory), but the first checkpoint fails again and stops the store.
    let mut expected = vec![entry(1, 1, "a")];
    expected.extend(big.clone());
    {
        let storage = open(dir.path(), options);
        assert_eq!(load(&storage).unwrap().entries, expected);
        let _ = write(&storage, vec![WriteOp::Append(vec![entry(6, 1, "c")])]);
        let err = load(&storage).unwrap_err();
        assert!(matches!(&err, StorageError::MapFull { .. }), "{err:?}");
    }

    // A larger map takes it: every write that returned Ok is there.
    let storage = open(dir.path(), LmdbOptions::default());
    let p = load(&storage).unwrap();
    expected.push(entry(6, 1, "c"));
    assert_eq!(p.entries, expected);
    assert_eq!(p.hard_state, hs);
}

#[test]
fn an_append_that_would_leave_a_gap_is_rejected_and_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), LmdbOptions::default());
    write(&storage, vec![WriteOp::Append(vec![entry(1, 1, "a")])]).unwrap();
    let err = write(&storage, vec![WriteOp::Append(vec![entry(3, 1, "c")])]).unwrap_err();
    assert!(
        matches!(&err, StorageError::Rejected { path, reason }
            if reason.contains("gap") && path == dir.path()),
        "{err:?}"
    );
    let next = vec![WriteOp::Append(vec![entry(2, 1, "b")])];
    assert_eq!(write(&storage, next), Err(err));
    drop(storage);
    let storage = open(dir.path(), LmdbOptions::default());
    assert_eq!(load(&storage).unwrap().entries, vec![entry(1, 1, "a")]);
}

#[test]
fn writes_apply_in_the_order_they_were_called_not_polled() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), LmdbOptions::default());
    let first = storage.write(vec![WriteOp::Append(vec![
        entry(1, 1, "a"),
        entry(2, 1, "b"),
    ])]);
    let second = storage.write(vec![WriteOp::Append(vec![entry(2, 2, "c")])]);
    block_on(second).unwrap();
    block_on(first).unwrap();
    assert_eq!(
        load(&storage).unwrap().entries,
        vec![entry(1, 1, "a"), entry(2, 2, "c")]
    );
}

#[test]
fn a_store_open_in_this_process_cannot_be_opened_again_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), LmdbOptions::default());
    let again = LmdbStorage::open(dir.path(), LmdbOptions::default());
    // Issue 19: the error names the operation and the lock file, and keeps the OS error.
    match &again {
        Err(StorageError::Io { op, path, source }) => {
            assert!(op.starts_with("lock"), "{op}");
            assert_eq!(path, &dir.path().join(raftkv_storage_lmdb::LOCK_FILE_NAME));
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock, "{source}");
            let shown = again.as_ref().unwrap_err().to_string();
            assert!(shown.contains("is the store open elsewhere"), "{shown}");
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    drop(storage);
    let storage = open(dir.path(), LmdbOptions::default());
    assert_eq!(load(&storage).unwrap().entries, vec![]);
}

/// Writes reach LMDB in checkpoints while they go on, and the WAL segments they are in are
/// deleted: the WAL stays a few checkpoints long however much is written (the WAL thread hands
/// writes to the checkpoint thread a checkpoint's worth at a time, and waits when 4 are queued).
#[test]
fn checkpoints_keep_the_wal_a_few_segments_long_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = LmdbOptions {
        wal_segment_bytes: 64 << 10,
        wal_checkpoint_bytes: 64 << 10,
        ..LmdbOptions::default()
    };
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .count()
    };
    let storage = open(dir.path(), options);
    let mut most = 0;
    // 3.2 MiB in 400 writes: 50 segments' worth.
    for i in 1..=400u64 {
        write(
            &storage,
            vec![WriteOp::Append(vec![entry(i, 1, vec![7u8; 8 << 10])])],
        )
        .unwrap();
        most = most.max(segments());
    }
    assert!(most <= 10, "up to {most} WAL segments");
    drop(storage);
    let storage = open(dir.path(), options);
    let p = load(&storage).unwrap();
    assert_eq!(p.entries.len(), 400);
    assert_eq!(p.entries.last().map(|e| e.index), Some(400));
}
