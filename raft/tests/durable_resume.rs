//! Issue 20: a node over a state machine that kept its state across a restart resumes from
//! where that state is — at an entry of its log (only the entries after it are applied), or
//! ahead of its log (it installed a leader's snapshot, and the node stopped before its storage
//! recorded it: the state is then that snapshot, Raft §7) — and a state behind the stored
//! snapshot is restored from it.

use bytes::Bytes;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime};
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{
    Config, Entry, HardState, LogId, Membership, Node, NodeConfig, Payload, Role, Runtime,
    Snapshot, StateMachine, Storage, StorageError, WriteOp,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A state machine that says it holds the entries through `position`, and records what it is
/// handed.
struct Held {
    position: Option<(LogId, Membership)>,
    applied: Arc<Mutex<Vec<u64>>>,
    restored: Arc<Mutex<Vec<LogId>>>,
}

impl StateMachine for Held {
    type Response = u64;

    fn apply(&mut self, index: u64, _command: &[u8]) -> u64 {
        self.applied.lock().unwrap().push(index);
        index
    }

    fn query(&self, _query: &[u8]) -> u64 {
        0
    }

    fn snapshot(&self) -> Bytes {
        let at = self.position.as_ref().map_or(0, |(at, _)| at.index);
        Bytes::from(format!("state at {at}"))
    }

    fn restore(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.restored.lock().unwrap().push(snapshot.last);
        self.position = Some((snapshot.last, snapshot.membership.clone()));
        Ok(())
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self.position.clone())
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.position = Some((last, membership.clone()));
        Ok(())
    }

    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(Some(
            self.position
                .as_ref()
                .map_or(LogId::default(), |(at, _)| *at),
        ))
    }
}

fn command(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Payload::Command(Bytes::from(format!("c{index}"))),
    }
}

/// What a run saw: the indexes the state machine was handed, the snapshots it restored, and
/// the storage afterwards.
struct Seen {
    applied: Vec<u64>,
    restored: Vec<LogId>,
    storage: MemStorage,
    snapshot_index: u64,
}

/// Starts a single-voter node on a storage holding `ops`, over a state machine at `position`,
/// lets it elect itself and commit one command, and reports what happened.
fn run(ops: Vec<WriteOp>, position: Option<LogId>) -> Seen {
    let rt = SimRuntime::new(20);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let net = SimNet::new(&rt);
        let storage = MemStorage::new();
        storage.write(ops).await.unwrap();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let restored = Arc::new(Mutex::new(Vec::new()));
        let sm = Held {
            position: position.map(|at| (at, Membership::from_voters([1]))),
            applied: applied.clone(),
            restored: restored.clone(),
        };
        let mut raft = Config::new(1, 1..=1);
        raft.seed = 20;
        let node = Node::start(
            rt.with_group(1),
            NodeConfig::new(raft),
            storage.clone(),
            net.endpoint(1),
            sm,
        )
        .await
        .expect("the node starts");
        while node.status().await.unwrap().role != Role::Leader {
            rt.sleep(Duration::from_millis(20)).await;
        }
        let index = node.propose(Bytes::from_static(b"new")).await.unwrap();
        let status = node.status().await.unwrap();
        assert_eq!(status.applied_index, status.last_index);
        assert!(applied.lock().unwrap().ends_with(&[index]));
        node.shutdown().await;
        rt.sleep(Duration::from_millis(20)).await;
        let applied = applied.lock().unwrap().clone();
        let restored = restored.lock().unwrap().clone();
        Seen {
            applied,
            restored,
            storage,
            snapshot_index: status.snapshot_index,
        }
    })
    .expect("the run ends")
}

fn log_1_to_5(term: u64, commit: u64) -> Vec<WriteOp> {
    vec![
        WriteOp::HardState(HardState {
            term,
            voted_for: Some(1),
            commit,
        }),
        WriteOp::Append((1..=5).map(|i| command(i, 1)).collect()),
    ]
}

/// Only the entries after the state's are applied again: none of 1..=3 twice, none skipped
/// (the stored commit index, 2, is behind the state's: the state's entries are committed).
#[test]
fn a_state_at_an_entry_of_the_log_resumes_after_it() {
    let seen = run(log_1_to_5(1, 2), Some(LogId::new(3, 1)));
    assert_eq!(seen.applied, [4, 5, 7], "entry 6 is the new term's no-op");
    assert!(seen.restored.is_empty());
}

/// A state machine without a state (or an in-memory one) applies the whole log.
#[test]
fn a_state_machine_without_a_position_applies_the_whole_log() {
    let seen = run(log_1_to_5(1, 5), None);
    assert_eq!(seen.applied, [1, 2, 3, 4, 5, 7]);
}

/// A state behind the stored snapshot is replaced by it.
#[test]
fn a_state_behind_the_stored_snapshot_is_restored_from_it() {
    let mut ops = log_1_to_5(1, 5);
    ops.push(WriteOp::SaveSnapshot(Snapshot {
        last: LogId::new(3, 1),
        data: Bytes::from_static(b"state at 3"),
        membership: Membership::from_voters([1]),
    }));
    let seen = run(ops, Some(LogId::new(2, 1)));
    assert_eq!(seen.restored, [LogId::new(3, 1)]);
    assert_eq!(seen.applied, [4, 5, 7]);
}

/// Raft §7: a state past the end of the log (a leader's snapshot installed, not yet recorded
/// by the storage when the node stopped) is stored as the snapshot it is, and the log it
/// replaces is dropped; the term it was taken in is adopted.
#[test]
fn a_state_ahead_of_the_log_is_stored_as_a_snapshot() {
    let seen = run(log_1_to_5(1, 5), Some(LogId::new(20, 2)));
    assert!(seen.applied.iter().all(|&i| i > 20), "{:?}", seen.applied);
    assert!(seen.restored.is_empty());
    assert_eq!(seen.snapshot_index, 20);
    let stored = futures::executor::block_on(seen.storage.load()).unwrap();
    let snapshot = stored.snapshot.expect("the state was stored as a snapshot");
    assert_eq!(snapshot.last, LogId::new(20, 2));
    assert!(
        snapshot.data.is_empty(),
        "issue 20: only the metadata of a state that keeps itself is stored"
    );
    assert!(stored.hard_state.term >= 2);
    assert!(stored.entries.iter().all(|e| e.index > 20));
}

/// Raft §7: a state at an index the log holds with another term is not of this log: it too is
/// the snapshot it is, and the whole log goes.
#[test]
fn a_state_whose_entry_conflicts_with_the_log_is_stored_as_a_snapshot() {
    let seen = run(log_1_to_5(2, 5), Some(LogId::new(4, 2)));
    let stored = futures::executor::block_on(seen.storage.load()).unwrap();
    assert_eq!(stored.snapshot.map(|s| s.last), Some(LogId::new(4, 2)));
    assert!(stored.entries.iter().all(|e| e.index > 4 && e.term > 2));
    assert!(seen.applied.iter().all(|&i| i > 5), "{:?}", seen.applied);
}
