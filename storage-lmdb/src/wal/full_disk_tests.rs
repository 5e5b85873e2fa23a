//! A full disk (issue 21 #5): the WAL on a simulated disk with a capacity (`sim_fs`), where
//! growing a file beyond it fails with `ENOSPC`. A node recovering on a nearly full disk must
//! start (a whole 16 MiB segment is not needed), keep every record it acknowledged, and say
//! how much room it needs when it has not even that.

use super::recover::recover_checked;
use super::segment::{segment_name, SEGMENT_BYTES_SHORT_MIN};
use super::sim_fs::{Faults, SimFs};
use super::*;
use raftkv_raft::{Entry, HardState, Payload};

const SEGMENT_BYTES: u64 = 16 << 20;

fn ops_of(seq: u64, payload_bytes: usize) -> Vec<WriteOp> {
    vec![
        WriteOp::Append(vec![Entry {
            index: seq,
            term: 1,
            payload: Payload::Command(bytes::Bytes::from(vec![b'x'; payload_bytes])),
        }]),
        WriteOp::HardState(HardState {
            term: 1,
            voted_for: Some(1),
            commit: seq,
        }),
    ]
}

fn dir() -> &'static Path {
    Path::new("/node/data")
}

#[test]
fn a_wal_opens_on_a_disk_without_room_for_a_whole_segment() {
    let fs = SimFs::new(Faults::default());
    fs.set_capacity(1 << 20);
    let mut wal = Wal::create(fs.clone(), dir(), 0, SEGMENT_BYTES).unwrap();
    let first = fs.content(&dir().join(segment_name(1))).unwrap().len() as u64;
    assert!(
        (SEGMENT_BYTES_SHORT_MIN..=1 << 20).contains(&first),
        "segment of {first} bytes"
    );
    // Records fill the short segment and rotate into smaller ones while room lasts.
    let mut acknowledged = 0;
    for seq in 1..=100 {
        match wal.append(&ops_of(seq, 10_000)) {
            Ok(s) => acknowledged = s,
            Err(e) => {
                assert!(e.to_string().contains("no space left"), "{e}");
                break;
            }
        }
    }
    assert!(
        acknowledged >= 50,
        "only {acknowledged} records on a 1 MiB disk"
    );
    drop(wal);
    let recovered = recover_checked(&fs, dir(), 0, None).unwrap();
    assert_eq!(recovered.last_seq, acknowledged);
}

#[test]
fn a_wal_without_room_for_a_small_segment_says_how_much_it_needs() {
    let fs = SimFs::new(Faults::default());
    fs.set_capacity(SEGMENT_BYTES_SHORT_MIN / 2);
    let Err(e) = Wal::create(fs.clone(), dir(), 0, SEGMENT_BYTES) else {
        panic!(
            "a WAL opened on a {} byte disk",
            SEGMENT_BYTES_SHORT_MIN / 2
        );
    };
    let text = e.to_string();
    assert!(text.contains("no space left"), "{text}");
    assert!(
        text.contains(&format!("at least {SEGMENT_BYTES_SHORT_MIN} bytes free")),
        "{text}"
    );
    assert!(text.contains(&dir().display().to_string()), "{text}");
    // The failed segment gave its room back.
    assert_eq!(
        fs.content(&dir().join(segment_name(1))).map(|c| c.len()),
        Some(0)
    );
}

#[test]
fn a_wal_whose_disk_fills_keeps_what_it_acknowledged_and_resumes_once_room_is_freed() {
    let fs = SimFs::new(Faults::default());
    fs.set_capacity(512 << 10);
    let mut wal = Wal::create(fs.clone(), dir(), 0, 128 << 10).unwrap();
    let mut acknowledged = 0;
    for seq in 1..=1000 {
        match wal.append(&ops_of(seq, 8_000)) {
            Ok(s) => acknowledged = s,
            Err(_) => break,
        }
    }
    assert!(acknowledged > 0 && acknowledged < 1000);
    drop(wal);
    let recovered = recover_checked(&fs, dir(), 0, None).unwrap();
    assert_eq!(recovered.last_seq, acknowledged);
    // LMDB took the records (as a checkpoint would), so their segments can go: the WAL
    // resumes in the room they leave, with a short first segment if need be.
    fs.set_capacity(4 << 20);
    let mut wal = Wal::resume(fs.clone(), dir(), &recovered, SEGMENT_BYTES).unwrap();
    wal.release(acknowledged).unwrap();
    let next = wal.append(&ops_of(acknowledged + 1, 8_000)).unwrap();
    assert_eq!(next, acknowledged + 1);
}

/// Regression (CI failure of 2026-12-07, `test_a_node_whose_disk_fills_up_exits_1_and_catches_up_once_there_is_room`):
/// a node restarted on a disk just big enough for its old segment, a whole new segment and a
/// little more preallocated the whole new segment, and LMDB then had no room for the
/// checkpoint that would have freed the old one. A WAL resumed beside its old segments writes
/// a short segment first; once the old ones are released, rotation asks for whole ones again.
#[test]
fn regression_restart_after_a_full_disk_leaves_the_checkpoint_room() {
    let fs = SimFs::new(Faults::default());
    fs.set_capacity(3 * SEGMENT_BYTES);
    let mut wal = Wal::create(fs.clone(), dir(), 0, SEGMENT_BYTES).unwrap();
    for seq in 1..=100 {
        wal.append(&ops_of(seq, 10_000)).unwrap();
    }
    drop(wal);
    let recovered = recover_checked(&fs, dir(), 0, None).unwrap();
    assert_eq!(recovered.last_seq, 100);
    let mut wal = Wal::resume(fs.clone(), dir(), &recovered, SEGMENT_BYTES).unwrap();
    let resumed = fs.content(&dir().join(segment_name(101))).unwrap().len() as u64;
    assert!(
        resumed <= SEGMENT_BYTES / 16,
        "a {resumed}-byte segment beside the old {SEGMENT_BYTES}-byte one"
    );
    // Until the checkpoint frees the old segment, rotations stay short.
    let mut seq = 100;
    let mut rotate = |wal: &mut Wal<SimFs>| {
        let first = wal.first_seq();
        while wal.first_seq() == first {
            seq += 1;
            assert_eq!(wal.append(&ops_of(seq, 10_000)).unwrap(), seq);
        }
        fs.content(&dir().join(segment_name(wal.first_seq())))
            .unwrap()
            .len() as u64
    };
    let second = rotate(&mut wal);
    assert!(
        second <= SEGMENT_BYTES / 16,
        "a {second}-byte second segment"
    );
    // LMDB took the old records; the next rotation gets a whole segment.
    wal.release(100).unwrap();
    assert_eq!(fs.content(&dir().join(segment_name(1))), None);
    assert_eq!(rotate(&mut wal), SEGMENT_BYTES);
}
