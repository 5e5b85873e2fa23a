//! Issue 21 #3: deleting the newest WAL segment silently rolled a node back to an older log
//! (thousands of acknowledged entries gone, no warning). A store whose WAL lost records it had
//! made durable must refuse to open, saying what is missing and how to recover; a torn last
//! write (what a crash leaves) must still open.
//!
//! Each test takes a crash image: the store's files copied while it is open (after a `load`,
//! which the checkpoint thread answers only once every checkpoint before it is committed, so
//! LMDB's file is not mid-transaction), as `kill -9` would leave them.

mod common;

use common::{entry, load, open, write};
use raftkv_raft::{StorageError, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage, DATA_FILE_NAME};
use std::fs;
use std::path::{Path, PathBuf};

const ENTRIES: u64 = 800;

fn options() -> LmdbOptions {
    LmdbOptions {
        map_size_bytes: 1 << 20,
        wal_segment_bytes: 16 << 10,
        wal_checkpoint_bytes: 8 << 10,
        ..LmdbOptions::default()
    }
}

/// Writes `ENTRIES` entries one write each (each acknowledged), and returns a crash image of
/// the store taken while it is still open.
fn crash_image() -> (tempfile::TempDir, tempfile::TempDir) {
    let live = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let storage = open(live.path(), options());
    for i in 1..=ENTRIES {
        let payload = format!("entry {i:05} ").repeat(4);
        write(&storage, vec![WriteOp::Append(vec![entry(i, 1, payload)])]).unwrap();
    }
    load(&storage).unwrap();
    copy_files(live.path(), image.path());
    drop(storage);
    (live, image)
}

/// Copies the store's files (LMDB's data file and the WAL segments) from `from` to `to`.
fn copy_files(from: &Path, to: &Path) {
    for item in fs::read_dir(from).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == DATA_FILE_NAME || name.starts_with("wal-") {
            fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    found.sort();
    found
}

fn last_index(dir: &Path) -> u64 {
    let storage = open(dir, options());
    let persisted = load(&storage).unwrap();
    persisted.entries.last().map_or(0, |e| e.index)
}

#[test]
fn deleting_the_newest_wal_segment_is_refused_not_a_silent_rollback() {
    let (_live, image) = crash_image();
    let segments = wal_segments(image.path());
    assert!(
        segments.len() >= 2,
        "the image should hold several segments: {segments:?}"
    );
    let newest = segments.last().unwrap();
    fs::remove_file(newest).unwrap();
    let err = LmdbStorage::open(image.path(), options()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    assert!(text.contains("missing WAL data"), "{text}");
    assert!(
        text.contains(&image.path().display().to_string()),
        "names the directory: {text}"
    );
    assert!(
        text.contains("wipe this node's data directory") && text.contains("rejoin"),
        "says how to recover: {text}"
    );
}

#[test]
fn deleting_every_wal_segment_is_refused() {
    let (_live, image) = crash_image();
    for segment in wal_segments(image.path()) {
        fs::remove_file(segment).unwrap();
    }
    let err = LmdbStorage::open(image.path(), options()).unwrap_err();
    assert!(err.to_string().contains("missing WAL data"), "{err}");
}

#[test]
fn a_torn_last_write_still_opens_without_that_write() {
    let (_live, image) = crash_image();
    let newest = wal_segments(image.path()).pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 10..end].fill(0);
    fs::write(&newest, &bytes).unwrap();
    assert_eq!(last_index(image.path()), ENTRIES - 1);
    // And the open that recovered it sealed the old segment: it opens again, and a deleted
    // newest segment is still found.
    assert_eq!(last_index(image.path()), ENTRIES - 1);
}

#[test]
fn an_untouched_crash_image_opens_with_every_entry_and_so_does_a_clean_close() {
    let (live, image) = crash_image();
    assert_eq!(last_index(image.path()), ENTRIES);
    // The live store was closed cleanly: one empty segment is left, and it opens.
    let left = wal_segments(live.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(fs::metadata(&left[0]).unwrap().len(), 0);
    assert_eq!(last_index(live.path()), ENTRIES);
    assert_eq!(last_index(live.path()), ENTRIES);
}

#[test]
fn a_segment_deleted_after_a_reopen_is_still_found() {
    let (_live, image) = crash_image();
    // Open the crash image (recovery) and crash again after more writes.
    let storage = open(image.path(), options());
    for i in ENTRIES + 1..=ENTRIES + 10 {
        write(&storage, vec![WriteOp::Append(vec![entry(i, 1, "more")])]).unwrap();
    }
    load(&storage).unwrap();
    let again = tempfile::tempdir().unwrap();
    copy_files(image.path(), again.path());
    drop(storage);
    fs::remove_file(wal_segments(again.path()).pop().unwrap()).unwrap();
    let err = LmdbStorage::open(again.path(), options()).unwrap_err();
    assert!(err.to_string().contains("missing WAL data"), "{err}");
}

/// Found by the real-process fault suite (`tests/test_process_faults.py`): a store that had not
/// yet checkpointed (its first MiB of writes) kept no record of its WAL in LMDB, so a node
/// killed then, its WAL segment deleted, restarted empty at term 0 (its log and its vote gone,
/// no warning). An open now records the WAL's head in LMDB before it acknowledges anything.
#[test]
fn deleting_the_wal_of_a_store_that_never_checkpointed_is_refused() {
    let options = LmdbOptions {
        map_size_bytes: 1 << 20,
        wal_segment_bytes: 64 << 10,
        // Far more than the test writes: no checkpoint before the crash.
        wal_checkpoint_bytes: 1 << 20,
        ..LmdbOptions::default()
    };
    let live = tempfile::tempdir().unwrap();
    let (untouched, damaged) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let storage = open(live.path(), options);
    for i in 1..=50 {
        write(&storage, vec![WriteOp::Append(vec![entry(i, 1, "young")])]).unwrap();
    }
    // A crash image with no `load` (which would checkpoint): LMDB is written only at open.
    copy_files(live.path(), untouched.path());
    copy_files(live.path(), damaged.path());
    drop(storage);
    let reopened = open(untouched.path(), options);
    assert_eq!(
        load(&reopened).unwrap().entries.len(),
        50,
        "the image holds every write"
    );
    drop(reopened);
    for segment in wal_segments(damaged.path()) {
        fs::remove_file(segment).unwrap();
    }
    let err = LmdbStorage::open(damaged.path(), options).unwrap_err();
    assert!(err.to_string().contains("missing WAL data"), "{err}");
}
