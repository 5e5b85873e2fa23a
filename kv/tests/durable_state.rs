//! The KV state machine over the heap [`DurableStore`] ([`HeapStore`]) against the heap one:
//! see `raftkv_kv::testing::durable`.

use bytes::Bytes;
use raftkv_kv::durable::{DurableKv, HeapStore};
use raftkv_kv::state::{Command, KvStateMachine, Op};
use raftkv_kv::testing::durable::{durable_matches_heap, membership, SESSIONS};
use raftkv_raft::{LogId, Snapshot, StateMachine};

#[test]
fn durable_and_heap_state_machines_answer_alike_snapshot_alike_and_survive_crashes() {
    for seed in 1..=40u64 {
        let store = HeapStore::new();
        durable_matches_heap(seed, &mut || store.clone());
    }
}

fn open(store: &HeapStore, every: u64) -> DurableKv<HeapStore> {
    DurableKv::open(store.clone(), SESSIONS, 300)
        .unwrap()
        .with_commit_every(every, 1 << 20)
}

#[test]
fn a_restored_snapshot_is_the_state_at_its_entry_after_a_restart() {
    let mut heap = KvStateMachine::new(SESSIONS);
    heap.apply(1, &Command::Register { now_ms: 0 }.encode());
    let put = Command::Request {
        session: 1,
        seq: 1,
        now_ms: 1,
        op: Op::Append {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        },
    };
    heap.apply(2, &put.encode());
    let snapshot = Snapshot {
        last: LogId::new(7, 3),
        data: heap.snapshot(),
        membership: membership(),
    };
    let store = HeapStore::new();
    let mut durable = open(&store, 1000);
    durable.restore_snapshot(&snapshot).unwrap();
    // Committed at once, with its position: nothing waits for the commit interval.
    let reopened = open(&store, 1000);
    assert_eq!(
        reopened.applied().unwrap(),
        Some((LogId::new(7, 3), membership()))
    );
    assert_eq!(reopened.snapshot(), heap.snapshot());
    // A snapshot restored without its entry (`restore`) is stored at no known entry, so a
    // restart restores the stored snapshot again rather than trust it.
    let elsewhere = HeapStore::new();
    let mut other = open(&elsewhere, 1000);
    other.restore(&heap.snapshot()).unwrap();
    assert_eq!(other.applied().unwrap(), None);
    let reopened = open(&elsewhere, 1000);
    assert_eq!(reopened.applied().unwrap().map(|(at, _)| at.index), Some(0));
    assert_eq!(reopened.snapshot(), heap.snapshot());
    // Bad bytes are refused, and leave the state as it was.
    assert!(durable.restore(b"\xff\xff").is_err());
    assert_eq!(durable.snapshot(), heap.snapshot());
}
