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
