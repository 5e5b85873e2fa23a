//! The KV state machine over the heap [`DurableStore`] ([`HeapStore`]) against the heap one:
//! see `raftkv_kv::testing::durable`.

use bytes::Bytes;
use raftkv_kv::durable::{DurableKv, HeapStore};
use raftkv_kv::state::{Command, KvStateMachine, Op};
use raftkv_kv::testing::durable::{
    a_restore_of_unsorted_and_repeated_keys_is_the_heap_states, durable_matches_heap,
    malformed_snapshots_are_refused, membership, SESSIONS,
};
use raftkv_raft::{LogId, Snapshot, StateMachine};

#[test]
fn durable_and_heap_state_machines_answer_alike_snapshot_alike_and_survive_crashes() {
    for seed in 1..=40u64 {
        let store = HeapStore::new();
        durable_matches_heap(seed, &mut || store.clone());
    }
}

#[test]
fn heap_store_refuses_malformed_snapshots_and_keeps_its_state() {
    let store = HeapStore::new();
    malformed_snapshots_are_refused(&mut || store.clone());
}

#[test]
fn heap_store_restores_unsorted_and_repeated_keys_as_a_heap_state() {
    let store = HeapStore::new();
    a_restore_of_unsorted_and_repeated_keys_is_the_heap_states(&mut || store.clone());
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

/// Issue 20: the state is its own snapshot: `make_durable` commits what was applied, with its
/// position, at once (not at the commit interval), and says where it is.
#[test]
fn make_durable_commits_what_was_applied_and_says_where() {
    let store = HeapStore::new();
    let mut durable = open(&store, 1000);
    assert_eq!(durable.make_durable().unwrap(), Some(LogId::default()));
    durable.apply(1, &Command::Register { now_ms: 0 }.encode());
    durable.applied_to(LogId::new(1, 1), &membership()).unwrap();
    assert_eq!(
        open(&store, 1000).applied().unwrap(),
        None,
        "not committed yet"
    );
    assert_eq!(durable.make_durable().unwrap(), Some(LogId::new(1, 1)));
    assert_eq!(
        open(&store, 1000).applied().unwrap(),
        Some((LogId::new(1, 1), membership()))
    );
    assert_eq!(open(&store, 1000).snapshot(), durable.snapshot());
}

/// Issue 20: a node whose state keeps itself stores only its snapshot's metadata. Started
/// over a state behind that snapshot (the state directory lost or replaced), it fails with an
/// error that says why, instead of restoring nothing.
#[test]
fn a_stored_snapshot_without_data_is_not_restored_into_a_state_behind_it() {
    use raftkv_raft::runtime::sim::{SimNet, SimRuntime};
    use raftkv_raft::storage::MemStorage;
    use raftkv_raft::{Config, HardState, Node, NodeConfig, Storage, WriteOp};
    let rt = SimRuntime::new(3);
    let r2 = rt.clone();
    let err = rt
        .block_on(async move {
            let storage = MemStorage::new();
            storage
                .write(vec![
                    WriteOp::HardState(HardState {
                        term: 1,
                        voted_for: None,
                        commit: 4,
                    }),
                    WriteOp::InstallSnapshot(Snapshot {
                        last: LogId::new(4, 1),
                        data: Bytes::new(),
                        membership: membership(),
                    }),
                ])
                .await
                .unwrap();
            let net = SimNet::new(&r2);
            let config = NodeConfig::new(Config::new(1, [1, 2, 3]));
            let fresh = open(&HeapStore::new(), 1000);
            Node::start(r2.clone(), config, storage, net.endpoint(1), fresh)
                .await
                .err()
        })
        .expect("the run ends")
        .expect("the node refuses to start");
    let text = err.to_string();
    assert!(text.contains("holds no data"), "{text}");
}

/// Issue 20: a replacement of a `HeapStore`'s state is apart until finished: dropped midway
/// (a crash, or an error), the committed state and position stay; finished, they are the new.
#[test]
fn a_heap_store_replacement_dropped_midway_leaves_the_committed_state() {
    use raftkv_kv::durable::DurableStore;
    let mut store = HeapStore::new();
    {
        let mut r = store.replace().unwrap();
        r.put(b"old", b"1", 1).unwrap();
        r.finish(b"position 1").unwrap();
    }
    {
        let mut r = store.replace().unwrap();
        for i in 0..100u32 {
            r.put(format!("new{i}").as_bytes(), b"2", 2).unwrap();
        }
    }
    let reopened = store.clone();
    assert_eq!(reopened.position().unwrap(), Some(b"position 1".to_vec()));
    assert_eq!(
        reopened.get(b"old").unwrap(),
        Some((Bytes::from_static(b"1"), 1))
    );
    assert_eq!(reopened.get(b"new0").unwrap(), None);
    let mut r = store.replace().unwrap();
    assert_eq!(r.put(b"k", b"abc", 1).unwrap(), None);
    assert_eq!(r.put(b"k", b"de", 2).unwrap(), Some(3));
    r.finish(b"position 2").unwrap();
    assert_eq!(store.get(b"old").unwrap(), None);
    assert_eq!(
        store.get(b"k").unwrap(),
        Some((Bytes::from_static(b"de"), 2))
    );
    assert_eq!(store.position().unwrap(), Some(b"position 2".to_vec()));
}
