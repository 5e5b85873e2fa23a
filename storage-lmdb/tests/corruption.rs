//! Damage to the data file is reported, never loaded silently and never a panic.

mod common;

use common::{entry, load, open, write};
use raftkv_raft::{LogId, Snapshot, StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage, DATA_FILE_NAME};
use std::fs;
use std::path::Path;

/// A payload that names its index, so its bytes can be found in the data file.
fn marked_payload(index: u64) -> Vec<u8> {
    format!("ENTRY-PATTERN-{index:04}-").repeat(10).into_bytes()
}

fn write_marked_log(dir: &Path, last: u64) {
    let storage = open(dir, LmdbOptions::default());
    let entries = (1..=last).map(|i| entry(i, 1, marked_payload(i))).collect();
    write(&storage, vec![WriteOp::Append(entries)]).unwrap();
}

/// Flips one bit in every copy of `pattern` in the data file (LMDB's copy-on-write may leave
/// stale copies in free pages); returns how many it found.
fn flip_bit_in_every_copy(dir: &Path, pattern: &[u8], offset: usize) -> usize {
    let path = dir.join(DATA_FILE_NAME);
    let mut data = fs::read(&path).unwrap();
    let starts: Vec<usize> = data
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern)
        .map(|(at, _)| at)
        .collect();
    for &at in &starts {
        data[at + offset] ^= 0x04;
    }
    fs::write(&path, data).unwrap();
    starts.len()
}

#[test]
fn a_flipped_payload_byte_is_reported_as_corrupt_at_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_marked_log(dir.path(), 50);
    let found = flip_bit_in_every_copy(dir.path(), b"ENTRY-PATTERN-0037-", 5);
    assert!(found >= 1, "the payload of entry 37 is in the data file");

    let storage = open(dir.path(), LmdbOptions::default());
    match load(&storage) {
        Err(StorageError::Corrupt { index, detail }) => {
            assert_eq!(index, Some(37), "{detail}");
            assert!(detail.contains("CRC"), "{detail}");
        }
        other => panic!("expected Corrupt at 37, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_the_snapshot_data_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path(), LmdbOptions::default());
        let snapshot = Snapshot {
            last: LogId::new(10, 2),
            data: b"SNAPSHOT-PATTERN-".repeat(100).into(),
            membership: Default::default(),
        };
        write(&storage, vec![WriteOp::SaveSnapshot(snapshot)]).unwrap();
    }
    assert!(flip_bit_in_every_copy(dir.path(), b"SNAPSHOT-PATTERN-", 3) >= 1);
    let storage = open(dir.path(), LmdbOptions::default());
    assert!(
        matches!(
            load(&storage),
            Err(StorageError::Corrupt { index: None, .. })
        ),
        "snapshot corruption is reported"
    );
}

/// Opens and loads; both must return, and one of them must fail.
fn open_and_load_fails(dir: &Path) -> StorageError {
    match LmdbStorage::open(dir, LmdbOptions::default()) {
        Err(e) => e,
        Ok(storage) => match load(&storage) {
            Err(e) => e,
            Ok(p) => panic!("a truncated store loaded {} entries", p.entries.len()),
        },
    }
}

#[test]
fn a_truncated_data_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path(), LmdbOptions::default());
        for batch in 0..20u64 {
            let entries = (1..=10)
                .map(|i| entry(batch * 10 + i, 1, vec![i as u8; 1000]))
                .collect();
            write(&storage, vec![WriteOp::Append(entries)]).unwrap();
        }
    }
    let path = dir.path().join(DATA_FILE_NAME);
    let full = fs::read(&path).unwrap();
    let page = 4096;
    // Half the file; just past the two meta pages; inside the second meta page; one page.
    for len in [full.len() / 2, 2 * page + 100, page + 2000, page] {
        fs::write(&path, &full[..len]).unwrap();
        let e = open_and_load_fails(dir.path());
        println!("truncated to {len} bytes: {e}");
    }
    // The intact file still loads.
    fs::write(&path, &full).unwrap();
    let storage = open(dir.path(), LmdbOptions::default());
    assert_eq!(load(&storage).unwrap().entries.len(), 200);
}

/// A checkpoint that appends entries, saves a snapshot and compacts most of the entries away
/// again, in one LMDB transaction, reopens intact. Such transactions free pages they
/// allocated, which LMDB counts but does not write, so the data file can end up shorter than
/// its page count: `benchmarks/restart.py` at 1,000,000 keys met that (a restarted leader
/// refused its store as truncated and never came back), and the open-time check now extends
/// the file instead. This test exercises the transaction shape; it did not leave a short file
/// here, so the benchmark is the reproduction of record.
#[test]
fn a_checkpoint_that_appends_snapshots_and_compacts_in_one_transaction_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let last = 5_000;
    {
        let storage = open(dir.path(), LmdbOptions::default());
        let entries = (1..=last).map(|i| entry(i, 1, vec![7; 100])).collect();
        // One write, so one LMDB transaction: most entries' pages are freed in it.
        let snapshot = Snapshot {
            last: LogId::new(last - 1, 1),
            data: vec![1; 1000].into(),
            membership: Default::default(),
        };
        write(
            &storage,
            vec![
                WriteOp::Append(entries),
                WriteOp::SaveSnapshot(snapshot),
                WriteOp::CompactTo(LogId::new(last - 1, 1)),
            ],
        )
        .unwrap();
    }
    let len = fs::metadata(dir.path().join(DATA_FILE_NAME)).unwrap().len();
    println!("data file {len} bytes");
    let storage = open(dir.path(), LmdbOptions::default());
    let p = load(&storage).unwrap();
    assert_eq!(p.entries, vec![entry(last, 1, vec![7; 100])]);
}

/// Issue 21 #6: "storage corruption at index None" said neither what nor where. Every
/// corruption this store reports names the file and what in it failed.
#[test]
fn corruption_messages_say_what_and_where() {
    let data_file = |dir: &Path| dir.join(DATA_FILE_NAME).display().to_string();
    // An entry: the data file and the entry.
    let dir = tempfile::tempdir().unwrap();
    write_marked_log(dir.path(), 50);
    flip_bit_in_every_copy(dir.path(), b"ENTRY-PATTERN-0037-", 5);
    let storage = open(dir.path(), LmdbOptions::default());
    let err = load(&storage).unwrap_err();
    let StorageError::Corrupt { detail, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(detail.contains(&data_file(dir.path())), "{detail}");
    assert!(detail.contains("entry 37"), "{detail}");
    assert!(detail.contains("CRC"), "{detail}");
    drop(storage);

    // The snapshot: the data file and the snapshot's log id.
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path(), LmdbOptions::default());
        let snapshot = Snapshot {
            last: LogId::new(10, 2),
            data: b"SNAPSHOT-PATTERN-".repeat(100).into(),
            membership: Default::default(),
        };
        write(&storage, vec![WriteOp::SaveSnapshot(snapshot)]).unwrap();
    }
    flip_bit_in_every_copy(dir.path(), b"SNAPSHOT-PATTERN-", 3);
    let storage = open(dir.path(), LmdbOptions::default());
    let err = load(&storage).unwrap_err();
    let StorageError::Corrupt {
        index: None,
        detail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(detail.contains(&data_file(dir.path())), "{detail}");
    assert!(detail.contains("snapshot"), "{detail}");

    // A WAL record: the segment file and the offset.
    let dir = tempfile::tempdir().unwrap();
    let wal = {
        let storage = open(dir.path(), LmdbOptions::default());
        write(&storage, vec![WriteOp::Append(vec![entry(1, 1, "a")])]).unwrap();
        write(&storage, vec![WriteOp::Append(vec![entry(2, 1, "b")])]).unwrap();
        // A crash image of the WAL, taken while the store is open.
        let wal = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
            .unwrap();
        (wal.clone(), fs::read(&wal).unwrap())
    };
    let (path, mut bytes) = wal;
    bytes[10] ^= 0x40; // inside the first record, with a good one after it
    fs::write(&path, &bytes).unwrap();
    let err = LmdbStorage::open(dir.path(), LmdbOptions::default()).unwrap_err();
    let StorageError::Corrupt { detail, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(detail.contains(&path.display().to_string()), "{detail}");
    assert!(detail.contains("offset 0"), "{detail}");
}
