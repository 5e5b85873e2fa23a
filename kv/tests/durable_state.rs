//! The KV state machine over a durable store ([`DurableKv`]) against the heap one
//! ([`KvStateMachine`]): the same answers, the same snapshots, and after a crash (what was not
//! committed lost) the same state once the log after its position is applied again.

use bytes::Bytes;
use raftkv_kv::durable::{DurableKv, HeapStore};
use raftkv_kv::state::{Command, KvStateMachine, Op, SessionConfig};
use raftkv_raft::{LogId, Membership, Snapshot, StateMachine};

/// A small deterministic generator (xorshift).
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const SESSIONS: SessionConfig = SessionConfig {
    ttl_ms: 50,
    sessions_max: 3,
};

fn command(g: &mut Gen, index: u64, sessions: &mut Vec<(u64, u64)>) -> Command {
    let now_ms = index;
    if sessions.is_empty() || g.below(10) == 0 {
        sessions.push((index, 0));
        return Command::Register { now_ms };
    }
    let s = g.below(sessions.len() as u64) as usize;
    // Now and then a retry of the last request.
    if g.below(8) != 0 {
        sessions[s].1 += 1;
    }
    let (session, seq) = sessions[s];
    let key = Bytes::from(format!("k{}", g.below(6)));
    let value = Bytes::from(vec![b'a' + g.below(26) as u8; g.below(40) as usize]);
    let op = match g.below(6) {
        0 => Op::Get { key },
        1 => Op::Put {
            key,
            value,
            version: None,
        },
        2 => Op::Put {
            key,
            value,
            version: Some(g.below(3)),
        },
        3 | 4 => Op::Append { key, value },
        _ => Op::Delete { key },
    };
    Command::Request {
        session,
        seq,
        now_ms,
        op,
    }
}

fn membership() -> Membership {
    Membership::from_voters([1, 2, 3])
}

fn open(store: &HeapStore, every: u64) -> DurableKv<HeapStore> {
    DurableKv::open(store.clone(), SESSIONS, 300)
        .unwrap()
        .with_commit_every(every, 1 << 20)
}

/// Applies entries `from..=to` of `log` to `sm` in batches of up to `batch`, as the driver does
/// (each batch ends with `applied_to`), and returns the answers.
fn apply(
    sm: &mut DurableKv<HeapStore>,
    log: &[Bytes],
    from: u64,
    to: u64,
    batch: u64,
) -> Vec<raftkv_kv::state::Outcome> {
    let mut answers = Vec::new();
    let mut i = from;
    while i <= to {
        let end = (i + batch - 1).min(to);
        for index in i..=end {
            answers.push(sm.apply(index, &log[index as usize - 1]));
        }
        sm.applied_to(LogId::new(end, 1), &membership()).unwrap();
        i = end + 1;
    }
    answers
}

#[test]
fn durable_and_heap_state_machines_answer_alike_snapshot_alike_and_survive_crashes() {
    for seed in 1..=40u64 {
        let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let every = 1 + g.below(20);
        let mut heap = KvStateMachine::new(SESSIONS).with_data_bytes_max(300);
        let store = HeapStore::new();
        let mut durable = open(&store, every);
        let (mut log, mut sessions) = (Vec::new(), Vec::new());
        let mut applied = 0u64;
        for _round in 0..30 {
            let batch = 1 + g.below(12);
            for _ in 0..batch {
                let index = log.len() as u64 + 1;
                log.push(command(&mut g, index, &mut sessions).encode());
            }
            let last = log.len() as u64;
            let expected: Vec<_> = (applied + 1..=last)
                .map(|i| heap.apply(i, &log[i as usize - 1]))
                .collect();
            let got = apply(&mut durable, &log, applied + 1, last, 1 + g.below(5));
            assert_eq!(got, expected, "seed {seed}: answers differ");
            applied = last;
            assert_eq!(
                durable.snapshot(),
                heap.snapshot(),
                "seed {seed}: snapshots differ"
            );
            assert_eq!(durable.data_bytes(), heap.data_bytes());
            if g.below(3) == 0 {
                // A crash: what was not committed is lost; the restart applies the log after
                // the committed position again, and answers as the first time.
                let committed = durable.durable().committed_index();
                durable = open(&store, every);
                let (at, _) = durable.applied().unwrap().unwrap_or_default();
                assert_eq!(at.index, committed, "seed {seed}");
                let again = apply(&mut durable, &log, committed + 1, applied, 3);
                let mut replay = KvStateMachine::new(SESSIONS).with_data_bytes_max(300);
                let all: Vec<_> = (1..=applied)
                    .map(|i| replay.apply(i, &log[i as usize - 1]))
                    .collect();
                assert_eq!(again, all[committed as usize..], "seed {seed}");
                assert_eq!(durable.snapshot(), heap.snapshot(), "seed {seed}");
            }
        }
    }
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
