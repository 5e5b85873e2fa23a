//! Issue 20: a leader's snapshot restored into the LMDB state key by key, into the data slot
//! that does not hold the state, in bounded write transactions, flipped to in one last one;
//! and the file spool a snapshot is read into and received in.

use bytes::Bytes;
use raftkv_kv::durable::{DurableKv, DurableStore};
use raftkv_kv::state::{Command, KvData, KvStateMachine, Op};
use raftkv_kv::testing::durable::{
    a_restore_of_unsorted_and_repeated_keys_is_the_heap_states, malformed_snapshots_are_refused,
    membership, SESSIONS,
};
use raftkv_raft::{LogId, Snapshot, SnapshotSpool, StateMachine};
use raftkv_state_lmdb::{FileSpool, LmdbState, StateOptions};
use std::path::Path;

const OPTIONS: StateOptions = StateOptions {
    map_size_bytes: 256 << 20,
};

/// The state in `dir`, its replacements in transactions of about `txn_bytes` bytes.
fn open(dir: &Path, options: StateOptions, txn_bytes: u64) -> DurableKv<LmdbState> {
    let state = LmdbState::open(dir, options)
        .unwrap()
        .with_replace_txn_bytes(txn_bytes);
    DurableKv::open(state, SESSIONS, u64::MAX).unwrap()
}

/// A heap state of `keys` keys (`{prefix}{i:06}`) of 100-byte values, at entries 1..=keys+1.
fn heap_state(keys: u64, prefix: &str) -> KvStateMachine {
    let mut heap = KvStateMachine::new(SESSIONS).with_data_bytes_max(u64::MAX);
    heap.apply(1, &Command::Register { now_ms: 0 }.encode());
    for i in 0..keys {
        let op = Op::Put {
            key: Bytes::from(format!("{prefix}{i:06}")),
            value: Bytes::from(vec![b'v'; 100]),
            version: None,
        };
        let command = Command::Request {
            session: 1,
            seq: i + 1,
            now_ms: 1,
            op,
        };
        heap.apply(i + 2, &command.encode());
    }
    heap
}

fn snapshot_of(heap: &KvStateMachine, last: LogId) -> Snapshot {
    Snapshot {
        last,
        data: heap.snapshot(),
        membership: membership(),
    }
}

fn has(sm: &DurableKv<LmdbState>, key: &str) -> bool {
    sm.durable().read(key.as_bytes()).is_some()
}

/// The files in `dir`, LMDB's own aside.
fn other_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "data.mdb" && n != "lock.mdb")
        .collect();
    names.sort();
    names
}

#[test]
fn a_restore_of_many_keys_in_many_transactions_round_trips_and_flips_the_live_slot() {
    let dir = tempfile::tempdir().unwrap();
    // 5,000 keys of 100 bytes, in transactions of about 16 KiB: some 50 of them.
    let mut sm = open(dir.path(), OPTIONS, 16 << 10);
    let old = heap_state(10, "old");
    sm.restore_snapshot(&snapshot_of(&old, LogId::new(11, 1)))
        .unwrap();
    assert_eq!(sm.durable().store().live_slot(), 1);
    let new = heap_state(5_000, "new");
    let at = LogId::new(5_001, 2);
    sm.restore_snapshot(&snapshot_of(&new, at)).unwrap();
    assert_eq!(sm.durable().store().live_slot(), 0);
    assert_eq!(sm.snapshot(), new.snapshot());
    assert_eq!(sm.data_bytes(), new.data_bytes());
    assert!(!has(&sm, "old000000") && has(&sm, "new004999"));
    // Applying goes on over the new slot, and a restart opens it.
    let command = Command::Request {
        session: 1,
        seq: 5_001,
        now_ms: 2,
        op: Op::Delete {
            key: Bytes::from("new000000"),
        },
    };
    sm.apply(5_002, &command.encode());
    sm.applied_to(LogId::new(5_002, 2), &membership()).unwrap();
    assert_eq!(sm.make_durable().unwrap(), Some(LogId::new(5_002, 2)));
    let expected = sm.snapshot();
    drop(sm);
    let sm = open(dir.path(), OPTIONS, 16 << 10);
    assert_eq!(sm.durable().store().live_slot(), 0);
    assert_eq!(
        sm.applied().unwrap().map(|(at, _)| at),
        Some(LogId::new(5_002, 2))
    );
    assert_eq!(sm.snapshot(), expected);
    assert!(!has(&sm, "new000000") && has(&sm, "new000001"));
    // The leader's read of it, into a file spool, has the same bytes.
    let (index, bytes) = sm.snapshot_read(5_002).expect("reads off the loop")().unwrap();
    assert_eq!((index, bytes), (5_002, expected));
    assert!(other_files(dir.path()).is_empty());
}

/// A replacement abandoned midway (dropped: an error, or a crash between its transactions)
/// after several of its transactions were committed: the old state and position are the
/// state, also once the environment is opened again.
#[test]
fn a_replacement_stopped_midway_leaves_the_old_state_and_position_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), OPTIONS, 8 << 10);
    let old = heap_state(20, "old");
    let at = LogId::new(21, 1);
    sm.restore_snapshot(&snapshot_of(&old, at)).unwrap();
    let before = sm.snapshot();
    drop(sm);
    let mut state = LmdbState::open(dir.path(), OPTIONS)
        .unwrap()
        .with_replace_txn_bytes(8 << 10);
    let live = state.live_slot();
    let position = state.position().unwrap();
    {
        let mut replacement = state.replace().unwrap();
        for i in 0..2_000u64 {
            let key = format!("new{i:06}");
            replacement.put(key.as_bytes(), &[b'n'; 100], 1).unwrap();
        }
        // Dropped unfinished.
    }
    assert_eq!(state.live_slot(), live);
    assert_eq!(state.position().unwrap(), position);
    assert!(state.get(b"new000000").unwrap().is_none());
    assert!(state.get(b"old000019").unwrap().is_some());
    drop(state);
    let sm = open(dir.path(), OPTIONS, 8 << 10);
    assert_eq!(sm.durable().store().live_slot(), live);
    assert_eq!(sm.applied().unwrap().map(|(at, _)| at), Some(at));
    assert_eq!(sm.snapshot(), before);
    drop(sm);
    // What the abandoned one wrote was emptied at the open: a finished replacement of the
    // same slot holds only its own keys.
    let mut state = LmdbState::open(dir.path(), OPTIONS).unwrap();
    let mut replacement = state.replace().unwrap();
    replacement.put(b"only", b"1", 1).unwrap();
    replacement.finish(&position.unwrap()).unwrap();
    let mut keys = Vec::new();
    state
        .scan(&mut |k, _, _| {
            keys.push(k.to_vec());
            Ok(())
        })
        .unwrap();
    assert_eq!(keys, vec![b"only".to_vec()]);
}

/// An error of the store in the middle of a restore (the map full after some of its
/// transactions were committed): the restore fails, the old state and position stay, also
/// after reopening, and a later restore that fits succeeds.
#[test]
fn a_restore_failing_midway_leaves_the_old_state_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let small = StateOptions {
        map_size_bytes: 2 << 20,
    };
    let mut sm = open(dir.path(), small, 32 << 10);
    let old = heap_state(50, "old");
    let at = LogId::new(51, 1);
    sm.restore_snapshot(&snapshot_of(&old, at)).unwrap();
    let before = sm.snapshot();
    // About 4 MiB of keys: past the 2 MiB map, after several transactions of 32 KiB.
    let big = heap_state(30_000, "big");
    let err = sm
        .restore_snapshot(&snapshot_of(&big, LogId::new(30_001, 2)))
        .expect_err("the map is too small for it");
    assert!(err.contains("storage full"), "{err}");
    assert_eq!(sm.snapshot(), before);
    assert_eq!(sm.applied().unwrap().map(|(at, _)| at), Some(at));
    assert!(has(&sm, "old000049") && !has(&sm, "big000000"));
    drop(sm);
    let mut sm = open(dir.path(), small, 32 << 10);
    assert_eq!(sm.applied().unwrap().map(|(at, _)| at), Some(at));
    assert_eq!(sm.snapshot(), before);
    let fits = heap_state(100, "fits");
    sm.restore_snapshot(&snapshot_of(&fits, LogId::new(101, 3)))
        .unwrap();
    assert_eq!(sm.snapshot(), fits.snapshot());
}

#[test]
fn lmdb_state_refuses_malformed_snapshots_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    malformed_snapshots_are_refused(&mut || LmdbState::open(dir.path(), OPTIONS).unwrap());
}

#[test]
fn lmdb_state_restores_unsorted_and_repeated_keys_as_a_heap_state() {
    let dir = tempfile::tempdir().unwrap();
    a_restore_of_unsorted_and_repeated_keys_is_the_heap_states(&mut || {
        LmdbState::open(dir.path(), OPTIONS).unwrap()
    });
}

#[test]
fn the_file_spool_round_trips_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Box::new(FileSpool::create(dir.path()).unwrap());
    // Unlinked at once: no name in the directory while it is written.
    assert!(other_files(dir.path()).is_empty());
    let mut expected = Vec::new();
    for i in 0..300u32 {
        // Pieces of every size, past the spool's 1 MiB buffer in all.
        let piece: Vec<u8> = (0..(i * 37 % 9000)).map(|j| (i + j) as u8).collect();
        spool.append(&piece).unwrap();
        expected.extend_from_slice(&piece);
    }
    assert_eq!(spool.len(), expected.len() as u64);
    assert!(expected.len() > 1 << 20);
    let bytes = spool.finish().unwrap();
    assert_eq!(&bytes[..], &expected[..]);
    assert!(other_files(dir.path()).is_empty());
    drop(bytes);
    let empty = Box::new(FileSpool::create(dir.path()).unwrap());
    assert!(empty.is_empty());
    assert!(empty.finish().unwrap().is_empty());
    // A spool file a crash left with its name (made, not unlinked yet) is removed when the
    // state is opened.
    std::fs::write(dir.path().join("raftkv-spool-1-0"), b"left behind").unwrap();
    let state = LmdbState::open(dir.path(), OPTIONS).unwrap();
    assert!(other_files(dir.path()).is_empty());
    // The state offers its spool for a snapshot received from a leader.
    let mut spool = state.snapshot_spool().unwrap();
    spool.append(b"chunk").unwrap();
    assert_eq!(&spool.finish().unwrap()[..], b"chunk");
}

/// A spool that cannot be made (its directory gone) is an error naming the path.
#[test]
fn a_spool_that_cannot_be_made_is_an_error_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FileSpool::create(&dir.path().join("missing"));
    let err = spool.err().expect("no such directory").to_string();
    assert!(err.contains("missing"), "{err}");
}
