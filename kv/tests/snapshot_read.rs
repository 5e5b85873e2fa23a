//! Issue 20: the in-memory KV state machine's snapshot read off the event loop
//! ([`StateMachine::snapshot_read`]): a copy of the map and sessions taken on the loop, encoded
//! elsewhere into exactly the bytes [`StateMachine::snapshot`] gives.

use bytes::Bytes;
use raftkv_kv::state::{Command, KvStateMachine, Op, SessionConfig, OFF_LOOP_ENTRY_BYTES_MIN};
use raftkv_raft::StateMachine;

fn put(session: u64, seq: u64, key: String, value: Bytes) -> Bytes {
    Command::Request {
        session,
        seq,
        now_ms: seq,
        op: Op::Put {
            key: Bytes::from(key),
            value,
            version: None,
        },
    }
    .encode()
}

/// A state of `keys` keys of `value_bytes` bytes each, applied at entries 2..; the session
/// registered at 1.
fn state(keys: u64, value_bytes: usize) -> KvStateMachine {
    let mut sm = KvStateMachine::new(SessionConfig::default()).with_data_bytes_max(u64::MAX);
    sm.apply(1, &Command::Register { now_ms: 0 }.encode());
    let value = Bytes::from(vec![7u8; value_bytes]);
    for k in 0..keys {
        sm.apply(k + 2, &put(1, k + 1, format!("key{k:08}"), value.clone()));
    }
    sm
}

#[test]
fn a_snapshot_read_off_the_loop_has_the_bytes_of_the_snapshot_at_the_applied_entry() {
    let mut sm = state(200, 2_000);
    let before = sm.snapshot();
    let read = sm
        .snapshot_read(201)
        .expect("the heap state reads off the loop");
    // The state moves on before the read runs: the read is of the state it was built from.
    sm.apply(
        202,
        &put(1, 201, "key00000003".into(), Bytes::from_static(b"new")),
    );
    sm.apply(203, &put(1, 202, "later".into(), Bytes::from_static(b"x")));
    let (index, bytes) = read().expect("an in-memory read cannot fail");
    assert_eq!(index, 201);
    assert_eq!(bytes, before);
    assert_ne!(bytes, sm.snapshot());
    let (index, bytes) = sm.snapshot_read(203).expect("reads")().expect("reads");
    assert_eq!((index, bytes), (203, sm.snapshot()));
    // An empty state too.
    let empty = KvStateMachine::default();
    assert_eq!(
        empty.snapshot_read(0).expect("reads")().expect("reads"),
        (0, empty.snapshot())
    );
}

#[test]
fn a_state_of_small_entries_is_encoded_on_the_loop_where_copying_it_would_cost_as_much() {
    let small = state(200, 100);
    assert!(small.data_bytes() / 200 < OFF_LOOP_ENTRY_BYTES_MIN);
    assert!(small.snapshot_read(201).is_none());
    let large = state(200, OFF_LOOP_ENTRY_BYTES_MIN as usize);
    assert!(large.snapshot_read(201).is_some());
}

/// What the read costs the loop: the copy of a 1M-key map (`cargo test --release -p raftkv-kv
/// --test snapshot_read -- --ignored --nocapture`), against the encode it moves off the loop.
#[test]
#[ignore = "a measurement: prints figures"]
fn measure_the_copy_of_a_million_keys() {
    for (keys, value_bytes) in [(1_000_000u64, 16usize), (1_024, 65_536), (64, 1 << 20)] {
        let sm = state(keys, value_bytes);
        // What the read's building costs the loop: a copy of the map and sessions (the first
        // copy of a key or value made from a `Vec` also moves it into a shared buffer).
        let mut builds = Vec::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let copy = sm.clone();
            builds.push(format!("{:.1}", t.elapsed().as_secs_f64() * 1e3));
            drop(copy);
        }
        let Some(read) = sm.snapshot_read(keys + 1) else {
            let t = std::time::Instant::now();
            let bytes = sm.snapshot();
            println!(
                "{keys} keys of {value_bytes} B ({} MiB snapshot): a copy of the map takes {} ms \
                 (3 times), snapshot() {:.1} ms: encoded on the loop",
                bytes.len() >> 20,
                builds.join(", "),
                t.elapsed().as_secs_f64() * 1e3,
            );
            continue;
        };
        let t = std::time::Instant::now();
        let (_, bytes) = read().expect("reads");
        let encoded = t.elapsed();
        let t = std::time::Instant::now();
        let on_loop = sm.snapshot();
        let snapshot = t.elapsed();
        assert_eq!(bytes, on_loop);
        println!(
            "{keys} keys of {value_bytes} B ({} MiB snapshot): a copy of the map takes {} ms \
             (3 times), encoded off it in {:.1} ms; snapshot() on the loop {:.1} ms",
            bytes.len() >> 20,
            builds.join(", "),
            encoded.as_secs_f64() * 1e3,
            snapshot.as_secs_f64() * 1e3,
        );
    }
}
