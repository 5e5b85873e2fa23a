//! A durable KV state machine ([`DurableKv`]) against the heap one ([`KvStateMachine`]), for
//! every [`DurableStore`]: the same answers, the same snapshots, and after a crash (what was
//! not committed lost) the same state once the log after its position is applied again.

use crate::durable::{DurableKv, DurableStore};
use crate::state::{Command, KvStateMachine, Op, Outcome, SessionConfig};
use bytes::Bytes;
use raftkv_raft::{LogId, Membership, StateMachine};

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

pub const SESSIONS: SessionConfig = SessionConfig {
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
    // Now and then a key longer than LMDB's keys may be (511 bytes), sharing a long prefix.
    let key = match g.below(8) {
        0 => Bytes::from(format!("{}{}", "L".repeat(600), g.below(3))),
        _ => Bytes::from(format!("k{}", g.below(6))),
    };
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

/// The heap state a snapshot holds (with the test's session settings and bound).
fn state_of(snapshot: &[u8], bound: u64) -> KvStateMachine {
    let mut sm = KvStateMachine::new(SESSIONS).with_data_bytes_max(bound);
    sm.restore(snapshot).unwrap();
    sm
}

pub fn membership() -> Membership {
    Membership::from_voters([1, 2, 3])
}

fn open<S: DurableStore>(store: S, every: u64, bound: u64) -> DurableKv<S> {
    DurableKv::open(store, SESSIONS, bound)
        .unwrap()
        .with_commit_every(every, 1 << 20)
}

/// Applies entries `from..=to` of `log` to `sm` in batches of up to `batch`, as the driver does
/// (each batch ends with `applied_to`), and returns the answers.
fn apply(
    sm: &mut DurableKv<impl DurableStore>,
    log: &[Bytes],
    from: u64,
    to: u64,
    batch: u64,
) -> Vec<Outcome> {
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

/// One seeded run: random commands applied in batches to a heap state and to a durable one
/// over the store `open` opens (each call opens it again, as a restarted node would: only
/// what was committed is there), with crashes in between.
pub fn durable_matches_heap<S: DurableStore>(seed: u64, open_store: &mut dyn FnMut() -> S) {
    let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let every = 1 + g.below(20);
    // Odd seeds bound the data to a few keys' worth (writes refused as StoreFull), even ones
    // let long keys in.
    let bound = if seed % 2 == 1 { 300 } else { 20_000 };
    let mut heap = KvStateMachine::new(SESSIONS).with_data_bytes_max(bound);
    let mut durable = open(open_store(), every, bound);
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
            state_of(&durable.snapshot(), bound),
            heap,
            "seed {seed}: snapshots differ"
        );
        assert_eq!(durable.data_bytes(), heap.data_bytes());
        if g.below(3) == 0 {
            // A crash: what was not committed is lost, the batch in flight with it unless
            // its commit got through (never a part of it); the restart applies the log after
            // the committed position again, and answers as the first time.
            let committed = durable.durable().committed_index();
            let in_flight = durable.durable().in_flight_index();
            drop(durable);
            durable = open(open_store(), every, bound);
            let (at, _) = durable.applied().unwrap().unwrap_or_default();
            assert!(
                at.index == committed || Some(at.index) == in_flight,
                "seed {seed}: the state is at {}, committed {committed}, in flight {in_flight:?}",
                at.index
            );
            let committed = at.index;
            let again = apply(&mut durable, &log, committed + 1, applied, 3);
            let mut replay = KvStateMachine::new(SESSIONS).with_data_bytes_max(bound);
            let all: Vec<_> = (1..=applied)
                .map(|i| replay.apply(i, &log[i as usize - 1]))
                .collect();
            assert_eq!(again, all[committed as usize..], "seed {seed}");
            assert_eq!(state_of(&durable.snapshot(), bound), heap, "seed {seed}");
        }
        // Issue 20: a snapshot read off the loop is the committed state, whole, at its
        // position — also when the state moves on (a commit) between the read's building and
        // its running: the store's state when it was built, or when it ran.
        let read = durable
            .snapshot_read(applied)
            .expect("a durable state reads off the loop");
        let built_at = durable.durable().committed_index();
        durable.commit().unwrap();
        let (index, bytes) = read().unwrap();
        assert!(
            index == built_at || index == applied,
            "seed {seed}: read at {index}"
        );
        let mut then = KvStateMachine::new(SESSIONS).with_data_bytes_max(bound);
        for i in 1..=index {
            then.apply(i, &log[i as usize - 1]);
        }
        assert_eq!(
            state_of(&bytes, bound),
            then,
            "seed {seed}: read at {index}"
        );
        // Committed, the state's snapshot has the heap state's very bytes, unless it holds
        // keys a store cannot keep in order (LMDB's longer than 510 bytes); so has the read
        // off the loop, at the applied entry.
        let read = durable
            .snapshot_read(applied)
            .expect("a durable state reads off the loop");
        let (index, bytes) = read().unwrap();
        assert_eq!(index, applied, "seed {seed}");
        assert_eq!(bytes, durable.snapshot(), "seed {seed}");
        if heap.keys().all(|k| k.len() <= 510) {
            assert_eq!(durable.snapshot(), heap.snapshot(), "seed {seed}");
        }
    }
}

/// A snapshot in the heap state's layout holding `pairs` (key, value, version) in the order
/// given, repeats kept, and no sessions.
pub fn snapshot_of_pairs(pairs: &[(&[u8], &[u8], u64)]) -> Bytes {
    let pairs: Vec<(Bytes, (Bytes, u64))> = pairs
        .iter()
        .map(|(k, v, version)| {
            (
                Bytes::copy_from_slice(k),
                (Bytes::copy_from_slice(v), *version),
            )
        })
        .collect();
    let sessions = crate::session::SessionTable::<crate::state::Cached>::default();
    Bytes::from(postcard::to_allocvec(&(pairs, sessions)).expect("encodes"))
}

/// A heap state with a session and a few keys, at entries 1..=4, and its snapshot at `last`.
fn some_state(last: LogId) -> (KvStateMachine, raftkv_raft::Snapshot) {
    let mut heap = KvStateMachine::new(SESSIONS);
    heap.apply(1, &Command::Register { now_ms: 0 }.encode());
    for (seq, key) in [(1, "a"), (2, "b"), (3, "c")] {
        let op = Op::Put {
            key: Bytes::from(key),
            value: Bytes::from(format!("value of {key}")),
            version: None,
        };
        let command = Command::Request {
            session: 1,
            seq,
            now_ms: seq,
            op,
        };
        heap.apply(seq + 1, &command.encode());
    }
    let snapshot = raftkv_raft::Snapshot {
        last,
        data: heap.snapshot(),
        membership: membership(),
    };
    (heap, snapshot)
}

/// Issue 20: a restore reads a snapshot key by key into the store; a malformed one (cut
/// anywhere, a count of keys past its bytes, bytes after the sessions, a bad varint) is
/// refused before anything is stored: the state, its position and its snapshot stay as they
/// were, also once the store is opened again.
pub fn malformed_snapshots_are_refused<S: DurableStore>(open_store: &mut dyn FnMut() -> S) {
    let mut sm = open(open_store(), 1000, u64::MAX);
    let (_, good) = some_state(LogId::new(9, 2));
    sm.restore_snapshot(&good).unwrap();
    let before = (sm.snapshot(), sm.applied().unwrap(), sm.data_bytes());
    let mut bad: Vec<(String, Vec<u8>)> = (0..good.data.len())
        .map(|n| (format!("cut at {n}"), good.data[..n].to_vec()))
        .collect();
    let mut trailing = good.data.to_vec();
    trailing.push(0);
    bad.push(("a byte after the sessions".into(), trailing));
    let mut too_many = vec![0xff, 0xff, 0xff, 0x7f];
    too_many.extend_from_slice(&good.data[1..]);
    bad.push(("a count past the bytes".into(), too_many));
    bad.push(("an overlong varint".into(), vec![0xff; 11]));
    let mut long_key = good.data.to_vec();
    // The first key's length (after the count), made longer than the snapshot.
    long_key[1] = 0x7f;
    bad.push(("a key longer than the bytes left".into(), long_key));
    for (what, data) in bad {
        let snapshot = raftkv_raft::Snapshot {
            last: LogId::new(20, 3),
            data: Bytes::from(data),
            membership: membership(),
        };
        let err = sm.restore_snapshot(&snapshot).expect_err(&what);
        assert!(err.contains("bad KV snapshot"), "{what}: {err}");
        assert_eq!(
            (sm.snapshot(), sm.applied().unwrap(), sm.data_bytes()),
            before,
            "{what}"
        );
    }
    drop(sm);
    let sm = open(open_store(), 1000, u64::MAX);
    assert_eq!((sm.snapshot(), sm.applied().unwrap()), (before.0, before.1));
}

/// Issue 20: a snapshot's keys restored one by one into the store: out of order and repeated
/// (the later one wins, as in a heap state's restore), the state, its snapshot and its data's
/// size are the heap state's.
pub fn a_restore_of_unsorted_and_repeated_keys_is_the_heap_states<S: DurableStore>(
    open_store: &mut dyn FnMut() -> S,
) {
    let long = [b'L'; 600];
    let data = snapshot_of_pairs(&[
        (b"b", b"first b", 1),
        (b"a", b"a", 2),
        (&long, b"long", 3),
        (b"b", b"second, longer b", 4),
        (&long, b"long again", 5),
        (b"c", b"", 6),
    ]);
    let mut heap = KvStateMachine::new(SESSIONS).with_data_bytes_max(u64::MAX);
    heap.restore(&data).unwrap();
    let mut sm = open(open_store(), 1000, u64::MAX);
    let snapshot = raftkv_raft::Snapshot {
        last: LogId::new(5, 1),
        data,
        membership: membership(),
    };
    sm.restore_snapshot(&snapshot).unwrap();
    assert_eq!(sm.data_bytes(), heap.data_bytes());
    assert_eq!(state_of(&sm.snapshot(), u64::MAX), heap);
    drop(sm);
    let sm = open(open_store(), 1000, u64::MAX);
    assert_eq!(sm.data_bytes(), heap.data_bytes());
    assert_eq!(state_of(&sm.snapshot(), u64::MAX), heap);
}
