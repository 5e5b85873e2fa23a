//! The KV state in LMDB against the heap state (`raftkv_kv::testing::durable`): the same
//! answers and snapshots, long keys included, and after a crash the state of its last commit.

use raftkv_kv::testing::durable::durable_matches_heap;
use raftkv_state_lmdb::{LmdbState, StateOptions};

#[test]
fn lmdb_and_heap_state_machines_answer_alike_snapshot_alike_and_survive_crashes() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let options = StateOptions {
            map_size_bytes: 64 << 20,
        };
        durable_matches_heap(seed, &mut || LmdbState::open(dir.path(), options).unwrap());
    }
}

mod in_flight {
    //! Issue 20: commits run on the `raftkv-state-commit` thread, behind the state machine.

    use bytes::Bytes;
    use raftkv_kv::durable::DurableKv;
    use raftkv_kv::state::{Command, KvData, Op};
    use raftkv_kv::testing::durable::{membership, SESSIONS};
    use raftkv_raft::{LogId, StateMachine};
    use raftkv_state_lmdb::{LmdbState, StateOptions};
    use std::path::Path;

    const OPTIONS: StateOptions = StateOptions {
        map_size_bytes: 256 << 20,
    };

    fn open(dir: &Path, every: u64) -> DurableKv<LmdbState> {
        DurableKv::open(LmdbState::open(dir, OPTIONS).unwrap(), SESSIONS, u64::MAX)
            .unwrap()
            .with_commit_every(every, 1 << 30)
    }

    fn put(seq: u64, key: String) -> Bytes {
        Command::Request {
            session: 1,
            seq,
            now_ms: 1,
            op: Op::Put {
                key: Bytes::from(key),
                value: Bytes::from(vec![b'v'; 100]),
                version: None,
            },
        }
        .encode()
    }

    /// Applies puts of `keys` at `first..`, one batch, and returns the last index.
    fn apply(sm: &mut DurableKv<LmdbState>, first: u64, keys: u64, prefix: &str) -> u64 {
        for i in 0..keys {
            sm.apply(first + i, &put(first + i, format!("{prefix}{i:06}")));
        }
        let last = first + keys - 1;
        sm.applied_to(LogId::new(last, 1), &membership()).unwrap();
        last
    }

    fn has(sm: &DurableKv<LmdbState>, key: &str) -> bool {
        sm.durable().read(key.as_bytes()).is_some()
    }

    #[test]
    fn a_commit_on_the_thread_is_durable_once_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path(), 100);
        sm.apply(1, &Command::Register { now_ms: 0 }.encode());
        let last = apply(&mut sm, 2, 300, "a");
        // Due: started on the thread; readable meanwhile, from the batch in flight or the
        // store, whichever holds it now.
        assert!(sm.durable().in_flight_index().is_some() || sm.durable().committed_index() > 0);
        assert!(has(&sm, "a000299"));
        // Waits for it, then commits and syncs the rest.
        assert_eq!(sm.make_durable().unwrap(), Some(LogId::new(last, 1)));
        assert_eq!(sm.durable().durable_at(), LogId::new(last, 1));
        drop(sm);
        let sm = open(dir.path(), 100);
        assert_eq!(
            sm.applied().unwrap().map(|(at, _)| at),
            Some(LogId::new(last, 1))
        );
        assert!(has(&sm, "a000000") && has(&sm, "a000299"));
    }

    /// A crash (the state dropped without waiting) while a big batch is in flight: the state
    /// is the commit before it or the whole batch, never a part of it, and never less.
    #[test]
    fn a_crash_loses_only_the_batch_in_flight() {
        const BATCH: u64 = 20_000;
        let (mut lost, mut landed) = (0, 0);
        for round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut sm = open(dir.path(), BATCH);
            sm.apply(1, &Command::Register { now_ms: 0 }.encode());
            let before = apply(&mut sm, 2, 10, "a");
            assert_eq!(sm.make_durable().unwrap(), Some(LogId::new(before, 1)));
            let last = apply(&mut sm, before + 1, BATCH, "b");
            assert_eq!(sm.durable().in_flight_index(), Some(last), "round {round}");
            drop(sm);
            let sm = open(dir.path(), BATCH);
            let at = sm.applied().unwrap().map(|(at, _)| at.index);
            assert!(
                has(&sm, "a000009"),
                "round {round}: the commit before is kept"
            );
            let first_b = has(&sm, "b000000");
            let last_b = has(&sm, &format!("b{:06}", BATCH - 1));
            match at {
                Some(i) if i == before => {
                    assert!(!first_b && !last_b, "round {round}: a part of the batch");
                    lost += 1;
                }
                Some(i) if i == last => {
                    assert!(first_b && last_b, "round {round}: a part of the batch");
                    landed += 1;
                }
                other => panic!("round {round}: the state is at {other:?}"),
            }
        }
        println!("batches in flight at a crash: {lost} lost, {landed} landed");
    }
}
