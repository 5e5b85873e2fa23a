//! The storage conformance suite (feature `testing`): every [`Storage`] must pass it.
//!
//! ```ignore
//! raftkv_raft::testing::storage_conformance(|| MyStorage::open(&dir).unwrap());
//! ```
//! `open` is called repeatedly and must reopen the *same* underlying store (the suite drops the
//! previous handle first), so that "reopen after close" is tested.

use crate::io::{Storage, WriteOp};
use crate::membership::{MemberAddrs, MemberChange, Membership};
use crate::types::{Entry, HardState, LogId, Payload, Persisted, Snapshot};
use bytes::Bytes;
use futures::executor::block_on;

fn entry(index: u64, term: u64, tag: &str) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(Bytes::from(format!("{tag}{index}"))),
    }
}

fn entries(from: u64, to: u64, term: u64, tag: &str) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term, tag)).collect()
}

/// A configuration that differs with `n`: voters 1..=3, learner `n + 3`, with addresses.
fn membership(n: u64) -> Membership {
    let addrs = MemberAddrs::new(format!("10.0.0.{n}:7000"), format!("10.0.0.{n}:8000"));
    Membership::from_voters([1, 2, 3])
        .apply_changes(&[MemberChange::AddLearner {
            id: n + 3,
            addrs,
            auto_promote: n % 2 == 0,
        }])
        .expect("a valid change")
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        last: LogId::new(index, term),
        data: Bytes::from(vec![index as u8; 100]),
        membership: membership(index),
    }
}

/// Runs every check; panics with the name of the one that fails.
pub fn storage_conformance<S: Storage>(mut open: impl FnMut() -> S) {
    let write = |s: &S, ops: Vec<WriteOp>| block_on(s.write(ops)).expect("write succeeds");
    let load = |s: &S| block_on(s.load()).expect("load succeeds");

    let s = open();
    assert_eq!(load(&s), Persisted::default(), "a new store is empty");

    // Append and hard state, then reopen.
    let hs = HardState {
        term: 2,
        voted_for: Some(3),
        commit: 4,
    };
    write(
        &s,
        vec![
            WriteOp::Append(entries(1, 5, 1, "a")),
            WriteOp::HardState(hs),
        ],
    );
    drop(s);
    let s = open();
    let p = load(&s);
    assert_eq!(p.hard_state, hs, "hard state survives reopen");
    assert_eq!(p.entries, entries(1, 5, 1, "a"), "entries survive reopen");

    // An append at an earlier index truncates the suffix.
    write(&s, vec![WriteOp::Append(entries(3, 4, 2, "b"))]);
    let mut expect = entries(1, 2, 1, "a");
    expect.extend(entries(3, 4, 2, "b"));
    assert_eq!(
        load(&s).entries,
        expect,
        "append truncates the conflicting suffix"
    );

    // An empty append changes nothing; appending at the end extends, a configuration too.
    write(&s, vec![WriteOp::Append(Vec::new())]);
    let config = Entry {
        index: 5,
        term: 2,
        payload: Payload::Membership(Box::new(membership(5))),
    };
    write(&s, vec![WriteOp::Append(vec![config.clone()])]);
    write(&s, vec![WriteOp::Append(entries(6, 6, 2, "c"))]);
    expect.push(config);
    expect.extend(entries(6, 6, 2, "c"));
    assert_eq!(
        load(&s).entries,
        expect,
        "append at the end extends; configurations round-trip"
    );

    // Save a snapshot, then compact up to it, in one write.
    write(
        &s,
        vec![
            WriteOp::SaveSnapshot(snapshot(3, 2)),
            WriteOp::CompactTo(LogId::new(3, 2)),
        ],
    );
    let p = load(&s);
    assert_eq!(
        p.snapshot,
        Some(snapshot(3, 2)),
        "snapshot saved, with its configuration"
    );
    assert_eq!(
        p.entries,
        expect[3..].to_vec(),
        "compaction drops the prefix"
    );

    // Compacting at the very last entry leaves an empty log; appends continue after it.
    write(
        &s,
        vec![
            WriteOp::SaveSnapshot(snapshot(6, 2)),
            WriteOp::CompactTo(LogId::new(6, 2)),
        ],
    );
    assert!(load(&s).entries.is_empty(), "compaction of everything");
    write(&s, vec![WriteOp::Append(entries(7, 8, 3, "d"))]);
    assert_eq!(
        load(&s).entries,
        entries(7, 8, 3, "d"),
        "append after a full compaction"
    );

    // Installing a snapshot whose last entry matches keeps the suffix after it.
    write(&s, vec![WriteOp::InstallSnapshot(snapshot(7, 3))]);
    let p = load(&s);
    assert_eq!(
        p.snapshot,
        Some(snapshot(7, 3)),
        "installed snapshot replaces"
    );
    assert_eq!(p.entries, entries(8, 8, 3, "d"), "matching suffix kept");

    // Installing a snapshot that does not match drops the whole log.
    write(&s, vec![WriteOp::InstallSnapshot(snapshot(20, 5))]);
    let p = load(&s);
    assert_eq!(p.snapshot, Some(snapshot(20, 5)));
    assert!(p.entries.is_empty(), "non-matching install drops the log");

    // Large entries, many ops in one write, and a last reopen.
    let big = Entry {
        index: 21,
        term: 5,
        payload: Payload::Command(Bytes::from(vec![0xAB; 1 << 20])),
    };
    let hs = HardState {
        term: 5,
        voted_for: None,
        commit: 21,
    };
    write(
        &s,
        vec![
            WriteOp::Append(vec![big.clone()]),
            WriteOp::Append(entries(22, 40, 5, "e")),
            WriteOp::HardState(hs),
        ],
    );
    drop(s);
    let s = open();
    let p = load(&s);
    let mut expect = vec![big];
    expect.extend(entries(22, 40, 5, "e"));
    assert_eq!(
        p.entries, expect,
        "large entries and multi-op writes survive reopen"
    );
    assert_eq!(p.hard_state, hs);
    assert_eq!(p.snapshot, Some(snapshot(20, 5)));
}
