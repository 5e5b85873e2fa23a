//! Unit tests of the WAL: records, segments, recovery.

use super::fs::StdFs;
use super::record::{encode_record, encode_seal, read_slot, Slot, HEADER_BYTES};
use super::recover::{check_head, recover, Recovered};
use super::segment::{segment_name, segment_seq, segments};
use super::*;
use raftkv_raft::{Entry, HardState, LogId, Payload};
use std::fs;

fn entry(index: u64, term: u64, payload: &str) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(bytes::Bytes::copy_from_slice(payload.as_bytes())),
    }
}

fn ops_of(seq: u64) -> Vec<WriteOp> {
    vec![
        WriteOp::Append(vec![entry(seq, 1, "payload"), entry(seq + 1, 1, "more")]),
        WriteOp::HardState(HardState {
            term: 1,
            voted_for: Some(2),
            commit: seq,
        }),
    ]
}

fn wal_with(records: u64, segment_bytes: u64) -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(StdFs, dir.path(), 0, segment_bytes).unwrap();
    for seq in 1..=records {
        assert_eq!(wal.append(&ops_of(seq)).unwrap(), seq);
    }
    (dir, wal)
}

fn ops_count(r: &Recovered) -> usize {
    r.ops.len()
}

#[test]
fn records_round_trip_across_segments() {
    let (dir, wal) = wal_with(100, 1024);
    assert!(
        wal.closed.len() >= 3,
        "{} closed segments",
        wal.closed.len()
    );
    drop(wal);
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.last_seq, 100);
    let expected: Vec<WriteOp> = (1..=100).flat_map(ops_of).collect();
    assert_eq!(r.ops, expected);
    // What LMDB holds is skipped.
    let r = recover(&StdFs, dir.path(), 60).unwrap();
    assert_eq!(r.last_seq, 100);
    assert_eq!(r.ops, (61..=100).flat_map(ops_of).collect::<Vec<_>>());
    let r = recover(&StdFs, dir.path(), 100).unwrap();
    assert_eq!((ops_count(&r), r.last_seq), (0, 100));
}

#[test]
fn snapshot_and_compaction_ops_are_refused_as_records() {
    let mut buf = Vec::new();
    let snapshot = raftkv_raft::Snapshot {
        last: LogId::new(1, 1),
        data: bytes::Bytes::new(),
        membership: Default::default(),
    };
    assert!(encode_record(1, &[WriteOp::SaveSnapshot(snapshot)], &mut buf).is_err());
    let compaction = WriteOp::CompactTo(LogId::new(1, 1));
    assert!(!is_record_op(&compaction));
    assert!(encode_record(1, &[compaction], &mut buf).is_err());
}

#[test]
fn released_segments_are_deleted_and_the_rest_recovers() {
    let (dir, mut wal) = wal_with(100, 1024);
    let before = segments(&StdFs, dir.path()).unwrap().len();
    wal.release(50).unwrap();
    let after = segments(&StdFs, dir.path()).unwrap();
    assert!(after.len() < before);
    // Only segments wholly at or below 50 went: the first left starts after 1.
    let first_left = after[0].0;
    assert!((2..=51).contains(&first_left), "{first_left}");
    drop(wal);
    let r = recover(&StdFs, dir.path(), 50).unwrap();
    assert_eq!(r.ops, (51..=100).flat_map(ops_of).collect::<Vec<_>>());
    // LMDB one record short of the first segment left: that record is missing, not
    // silently skipped.
    let err = recover(&StdFs, dir.path(), first_left - 2).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
}

/// The bytes of the last segment and where its records end.
fn last_segment(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
    let (_, path) = segments(&StdFs, dir).unwrap().pop().unwrap();
    let bytes = fs::read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    (path, bytes, end)
}

#[test]
fn a_torn_last_write_is_ignored_wherever_it_was_cut() {
    let (dir, wal) = wal_with(10, 1 << 20);
    drop(wal);
    let (path, bytes, end) = last_segment(dir.path());
    // Find where the last record starts: recover up to 9 by cutting it entirely.
    let mut start = end;
    while !matches!(read_slot(&bytes, start), Slot::Record { seq: 10, .. }) {
        start -= 1;
    }
    for cut in start + 1..end {
        let mut torn = bytes.clone();
        torn[cut..end].fill(0);
        fs::write(&path, &torn).unwrap();
        let r = recover(&StdFs, dir.path(), 0).unwrap();
        assert_eq!(r.last_seq, 9, "cut at {cut}");
    }
    // Only the header lost (written out of order): the body's bytes are remains too.
    let mut torn = bytes.clone();
    torn[start..start + HEADER_BYTES].fill(0);
    fs::write(&path, &torn).unwrap();
    assert_eq!(recover(&StdFs, dir.path(), 0).unwrap().last_seq, 9);
}

#[test]
fn a_torn_write_ends_an_older_segment_when_the_next_starts_where_it_would_have_been() {
    // A crash tore record 10; the open after it started a new segment at 10 and kept the
    // old one (LMDB did not hold its records yet); then the node crashed again.
    let (dir, wal) = wal_with(10, 1 << 20);
    drop(wal);
    let (path, bytes, end) = last_segment(dir.path());
    let mut torn = bytes.clone();
    torn[end - 5..end].fill(0);
    fs::write(&path, &torn).unwrap();
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.last_seq, 9);
    let mut wal = Wal::create(StdFs, dir.path(), r.last_seq, 1 << 20).unwrap();
    for p in &r.segments {
        wal.keep_until(p, r.last_seq);
    }
    wal.append(&ops_of(10)).unwrap();
    wal.append(&ops_of(11)).unwrap();
    drop(wal);
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.last_seq, 11);
    assert_eq!(r.ops, (1..=11).flat_map(ops_of).collect::<Vec<_>>());
    // A segment whose records do not start where its name says is corrupt.
    let (_, newer) = segments(&StdFs, dir.path()).unwrap().pop().unwrap();
    fs::rename(&newer, dir.path().join(segment_name(12))).unwrap();
    assert!(matches!(
        recover(&StdFs, dir.path(), 0),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn a_flipped_bit_before_the_last_record_is_corruption() {
    let (dir, wal) = wal_with(10, 1 << 20);
    drop(wal);
    let (path, bytes, end) = last_segment(dir.path());
    for at in (0..end).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        match recover(&StdFs, dir.path(), 0) {
            // A flip inside the last record is indistinguishable from its torn write.
            Ok(r) => assert_eq!(r.last_seq, 9, "flip at {at}"),
            Err(e) => assert!(matches!(e, StorageError::Corrupt { .. }), "{e:?}"),
        }
    }
    // A flip in the first record, with nine good ones after it.
    let mut bad = bytes.clone();
    bad[HEADER_BYTES + 3] ^= 1;
    assert_recovery_finds_corruption(dir.path(), &path, &bad);
}

/// Writes `bytes` to the segment at `path` and expects recovery to report corruption.
fn assert_recovery_finds_corruption(dir: &Path, path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    let result = recover(&StdFs, dir, 0);
    assert!(
        matches!(result, Err(StorageError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn an_invalid_record_in_an_older_segment_is_corruption() {
    let (dir, wal) = wal_with(100, 1024);
    drop(wal);
    let found = segments(&StdFs, dir.path()).unwrap();
    let (_, first) = &found[0];
    let mut bytes = fs::read(first).unwrap();
    // The last byte of the last record, just before the seal.
    let seal = encode_seal(found[1].0);
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!(
        &bytes[end - seal.len()..end],
        &seal[..],
        "the segment ends sealed"
    );
    bytes[end - seal.len() - 1] ^= 0xff;
    assert_recovery_finds_corruption(dir.path(), first, &bytes);
}

/// Issue 21 #3: deleting the newest segment rolled the node back silently. A segment the WAL
/// moved on from is sealed, naming the next one: without it, recovery refuses.
#[test]
fn a_sealed_segment_without_its_successor_is_missing_data_not_a_torn_tail() {
    let (dir, wal) = wal_with(100, 1024);
    drop(wal);
    let found = segments(&StdFs, dir.path()).unwrap();
    let (_, newest) = found.last().unwrap();
    fs::remove_file(newest).unwrap();
    let err = recover(&StdFs, dir.path(), 0).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    assert!(text.contains("missing WAL data"), "{text}");
    assert!(
        text.contains(&segment_name(found.last().unwrap().0)),
        "{text}"
    );
    assert!(text.contains("wipe this node's data directory"), "{text}");
}

#[test]
fn the_last_segment_from_before_an_open_is_sealed_and_recovery_follows_the_seal() {
    let (dir, wal) = wal_with(10, 1 << 20);
    drop(wal);
    // A torn last write, as a crash leaves it: the seal goes where the good records end.
    let (path, mut bytes, end) = last_segment(dir.path());
    bytes[end - 3..end].fill(0);
    fs::write(&path, &bytes).unwrap();
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.last_seq, 9);
    let mut wal = Wal::create(StdFs, dir.path(), r.last_seq, 1 << 20).unwrap();
    wal.seal_previous(r.tail.as_ref().unwrap()).unwrap();
    wal.append(&ops_of(10)).unwrap();
    drop(wal);
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.ops, (1..=10).flat_map(ops_of).collect::<Vec<_>>());
    // Without the new segment the sealed one says data is missing.
    let (_, newest) = segments(&StdFs, dir.path()).unwrap().pop().unwrap();
    fs::remove_file(newest).unwrap();
    assert!(recover(&StdFs, dir.path(), 0)
        .unwrap_err()
        .to_string()
        .contains("missing WAL data"));
}

#[test]
fn check_head_refuses_a_wal_shorter_than_a_checkpoint_saw_and_accepts_a_torn_tail() {
    let (dir, wal) = wal_with(10, 1 << 20);
    let head = crate::codec::WalHead {
        first_seq: wal.first_seq(),
        durable_seq: 10,
    };
    drop(wal);
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    check_head(dir.path(), &r, head).unwrap();
    // The last write torn: it was never counted durable by a checkpoint that saw 9.
    let (path, mut bytes, end) = last_segment(dir.path());
    bytes[end - 3..end].fill(0);
    fs::write(&path, &bytes).unwrap();
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    let head_9 = crate::codec::WalHead {
        durable_seq: 9,
        ..head
    };
    check_head(dir.path(), &r, head_9).unwrap();
    // But a checkpoint that saw 10 durable: 10 is missing.
    let err = check_head(dir.path(), &r, head).unwrap_err().to_string();
    assert!(err.contains("records up to 10"), "{err}");
    // The only segment deleted: the one being written at the checkpoint is gone.
    fs::remove_file(&path).unwrap();
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    let err = check_head(
        dir.path(),
        &r,
        crate::codec::WalHead {
            durable_seq: 0,
            ..head
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&segment_name(head.first_seq)), "{err}");
}

#[test]
fn a_clean_close_leaves_only_an_empty_segment_named_after_the_next_record() {
    let (dir, wal) = wal_with(100, 1024);
    wal.remove_all().unwrap();
    let left = segments(&StdFs, dir.path()).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, 101);
    assert_eq!(fs::metadata(&left[0].1).unwrap().len(), 0);
    let r = recover(&StdFs, dir.path(), 100).unwrap();
    check_head(
        dir.path(),
        &r,
        crate::codec::WalHead {
            first_seq: 82,
            durable_seq: 100,
        },
    )
    .unwrap();
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(StdFs, dir.path(), 0, 1024).unwrap();
    let big = "x".repeat(10_000);
    wal.append(&[WriteOp::Append(vec![entry(1, 1, &big)])])
        .unwrap();
    wal.append(&ops_of(2)).unwrap();
    drop(wal);
    let r = recover(&StdFs, dir.path(), 0).unwrap();
    assert_eq!(r.last_seq, 2);
    assert_eq!(r.ops[0], WriteOp::Append(vec![entry(1, 1, &big)]));
}

#[test]
fn segment_names_parse_back_and_other_files_are_ignored() {
    assert_eq!(segment_seq(&segment_name(42)), Some(42));
    assert_eq!(segment_seq("wal-42.log"), None);
    assert_eq!(segment_seq("wal-0000000000000000004x.log"), None);
    assert_eq!(segment_seq("data.mdb"), None);
}
