//! Issue 20: a node whose state machine keeps its own state stores and holds no copy of it.
//! Its log is compacted with metadata only ([`Raft::compacted_to`]), and when a follower needs
//! a snapshot the core asks its driver to read one ([`raftkv_raft::Ready::snapshot_request`]),
//! sends it, and drops it once no follower is being sent it.

use bytes::Bytes;
use raftkv_raft::{
    AppendResult, Body, Config, ConflictHint, Entry, Error, HardState, LogId, Membership, Message,
    Payload, Persisted, Raft, Role, Snapshot,
};

fn msg(from: u64, to: u64, term: u64, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// A node of {1, 2, 3} restored from a metadata-only snapshot at 5 (term 1) and entries 6..=8,
/// all committed, with snapshots on demand; elected leader of term 2 by node 3's votes, its
/// first `Ready` handled (entries 6..=8 applied).
fn on_demand_leader() -> Raft {
    let mut c = Config::new(1, [1, 2, 3]);
    c.snapshot_chunk_bytes_max = 10;
    let persisted = Persisted {
        hard_state: HardState {
            term: 1,
            voted_for: None,
            commit: 8,
        },
        snapshot: Some(Snapshot {
            last: LogId::new(5, 1),
            data: Bytes::new(),
            membership: Membership::from_voters([1, 2, 3]),
        }),
        entries: (6..=8)
            .map(|index| Entry {
                index,
                term: 1,
                payload: Payload::Command(Bytes::from(format!("e{index}"))),
            })
            .collect(),
    };
    let mut r = Raft::restore(c, persisted).expect("valid state");
    r.snapshots_on_demand();
    r.campaign();
    r.step(msg(3, 1, 2, Body::PreVoteResponse { granted: true }));
    r.step(msg(3, 1, 2, Body::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    let ready = r.take_ready();
    if let Some(token) = ready.persist_token {
        r.persisted(token);
    }
    r
}

/// Node `from` has nothing: the leader must send it a snapshot.
fn has_nothing(from: u64, base_index: u64) -> Message {
    let hint = ConflictHint {
        term: None,
        first_index_of_term: 0,
        last_index: 0,
    };
    let result = AppendResult::Rejected { hint };
    msg(from, 1, 2, Body::AppendResponse { base_index, result })
}

/// The (last, offset, len) of each snapshot chunk the next `Ready` sends to `to`, and whether
/// it asks for a snapshot to be read.
fn chunks_to(r: &mut Raft, to: u64) -> (Vec<(LogId, u64, u64)>, bool) {
    let ready = r.take_ready();
    let chunks = ready
        .send_now
        .into_iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match m.body {
            Body::InstallSnapshot {
                last, offset, len, ..
            } => Some((last, offset, len)),
            _ => None,
        })
        .collect();
    (chunks, ready.snapshot_request)
}

#[test]
fn a_leader_holding_no_snapshot_data_asks_for_it_sends_it_then_drops_it() {
    let mut r = on_demand_leader();
    assert_eq!(
        r.applied_index(),
        8,
        "the new term's no-op is not committed yet"
    );
    // Raft §7: node 2 lacks what the log no longer holds: the snapshot is asked for, not sent.
    r.step(has_nothing(2, 8));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    // The driver read the state at the applied entry: it goes out, from offset 0.
    r.snapshot_for_transfer(8, Bytes::from(vec![1u8; 25]))
        .expect("the applied entry is in the log");
    let at = LogId::new(8, 1);
    assert_eq!(chunks_to(&mut r, 2), (vec![(at, 0, 25)], false));
    r.step(msg(
        2,
        1,
        2,
        Body::SnapshotResponse {
            last: at,
            next_offset: 10,
        },
    ));
    assert_eq!(chunks_to(&mut r, 2), (vec![(at, 10, 25)], false));
    // Node 2 installed it: the snapshot is dropped, so that node 3, lagging now, makes the
    // leader ask for a new one instead of sending the old.
    let result = AppendResult::Accepted { match_index: 8 };
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 8,
            result,
        },
    ));
    r.take_ready();
    r.step(has_nothing(3, 8));
    assert_eq!(chunks_to(&mut r, 3), (vec![], true));
    r.check_invariants();
}

#[test]
fn a_snapshot_read_for_a_transfer_is_dropped_by_a_node_that_stopped_leading() {
    let mut r = on_demand_leader();
    r.step(has_nothing(2, 8));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    // A higher term: node 1 follows now; the snapshot read meanwhile is not sent.
    r.step(msg(
        3,
        1,
        3,
        Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    assert_eq!(r.role(), Role::Follower);
    r.snapshot_for_transfer(8, Bytes::from_static(b"state"))
        .expect("still a valid entry");
    assert_eq!(chunks_to(&mut r, 2), (vec![], false));
}

#[test]
fn a_snapshot_for_a_transfer_must_be_of_an_applied_entry() {
    let mut r = on_demand_leader();
    r.step(has_nothing(2, 8));
    r.take_ready();
    let err = r.snapshot_for_transfer(9, Bytes::new()).unwrap_err();
    assert!(
        matches!(err, Error::SnapshotIndex { index: 9, .. }),
        "{err}"
    );
}

#[test]
fn compaction_to_a_durable_state_stores_only_the_metadata() {
    let mut r = on_demand_leader();
    let snapshot = r.compacted_to(7).expect("7 is applied");
    assert_eq!(snapshot.last, LogId::new(7, 1));
    assert!(snapshot.data.is_empty());
    assert_eq!(snapshot.membership, Membership::from_voters([1, 2, 3]));
    assert_eq!(r.take_ready().compact_to, Some(LogId::new(7, 1)));
    assert_eq!(r.snapshot_index(), 7);
    // Raft §7: never past what is applied, never back.
    assert!(r.compacted_to(9).is_err());
    assert!(r.compacted_to(6).is_err());
}

#[test]
fn compaction_without_a_copy_is_refused_to_a_node_that_holds_snapshot_data() {
    let mut r = Raft::new(Config::new(1, [1])).expect("valid config");
    r.campaign();
    let ready = r.take_ready();
    if let Some(token) = ready.persist_token {
        r.persisted(token);
    }
    r.take_ready();
    assert_eq!(r.applied_index(), 1);
    let err = r.compacted_to(1).unwrap_err();
    assert!(err.to_string().contains("snapshots_on_demand"), "{err}");
}

/// Regression (found by `benchmarks/restart.py` and a LocalCluster at 3,000 keys): a snapshot
/// read for a follower before the log was compacted past it was sent again to that follower
/// after it had installed it — it lacked the entries after it, which the log no longer held —
/// and it answered that it held it already, forever. Now it is dropped at that compaction and
/// a new one is read.
#[test]
fn regression_a_snapshot_read_before_a_compaction_past_it_is_not_sent_again() {
    let mut r = on_demand_leader();
    r.step(has_nothing(2, 8));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    r.snapshot_for_transfer(8, Bytes::from(vec![1u8; 5]))
        .expect("the applied entry is in the log");
    assert_eq!(chunks_to(&mut r, 2).0.len(), 1);
    // Node 3 holds the no-op: it commits, is applied, and the log is compacted past 8.
    let result = AppendResult::Accepted { match_index: 9 };
    r.step(msg(
        3,
        1,
        2,
        Body::AppendResponse {
            base_index: 8,
            result,
        },
    ));
    r.take_ready();
    assert_eq!(r.applied_index(), 9);
    r.compacted_to(9).expect("9 is applied");
    r.take_ready();
    // Node 2 installed the snapshot at 8; it needs 9, compacted: a new snapshot is read.
    let result = AppendResult::Accepted { match_index: 8 };
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 8,
            result,
        },
    ));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    r.check_invariants();
}

/// Issue 20: the driver reads a snapshot off its loop, so the node moves on while it is read:
/// here the read for node 2 started at the applied entry 8, then 9 was applied and the log
/// compacted past 8 before the read came back. The core refuses it (the log no longer holds
/// what follows it), the driver drops it, and the core asks for a new read at its next
/// attempt to reach node 2.
#[test]
fn a_snapshot_read_that_the_log_was_compacted_past_while_it_was_read_is_refused_then_asked_again() {
    let mut r = on_demand_leader();
    r.step(has_nothing(2, 8));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    let result = AppendResult::Accepted { match_index: 9 };
    r.step(msg(
        3,
        1,
        2,
        Body::AppendResponse {
            base_index: 8,
            result,
        },
    ));
    r.take_ready();
    assert_eq!(r.applied_index(), 9);
    r.compacted_to(9).expect("9 is applied");
    r.take_ready();
    let err = r
        .snapshot_for_transfer(8, Bytes::from_static(b"state at 8"))
        .unwrap_err();
    assert!(
        matches!(err, Error::SnapshotIndex { index: 8, .. }),
        "{err}"
    );
    let asked_again = (0..100).any(|_| {
        r.tick();
        chunks_to(&mut r, 2).1
    });
    assert!(asked_again, "the core never asked for a new snapshot");
    // The new read, at 9, goes out.
    r.snapshot_for_transfer(9, Bytes::from_static(b"state at 9"))
        .expect("9 is the compaction point and applied");
    assert_eq!(chunks_to(&mut r, 2).0, vec![(LogId::new(9, 2), 0, 10)]);
    r.check_invariants();
}

/// Issue 20 (seen loading 10M keys): a follower that fell behind a leader under a steady load
/// never caught up, because each compaction passed the snapshot being sent to it and the
/// transfer started over. The core says which snapshot is on its way, for as long as it is,
/// so that the driver holds compactions back to it.
#[test]
fn the_snapshot_on_its_way_to_a_follower_is_named_until_the_follower_has_it() {
    let mut r = on_demand_leader();
    assert_eq!(r.snapshot_being_sent(), None, "no follower needs one");
    r.step(has_nothing(2, 8));
    assert_eq!(chunks_to(&mut r, 2), (vec![], true));
    assert_eq!(r.snapshot_being_sent(), None, "asked for, not read yet");
    r.snapshot_for_transfer(8, Bytes::from(vec![1u8; 25]))
        .expect("the applied entry is in the log");
    let at = LogId::new(8, 1);
    assert_eq!(chunks_to(&mut r, 2), (vec![(at, 0, 25)], false));
    assert_eq!(r.snapshot_being_sent(), Some(8));
    // Raft §7: the follower installed it and goes on from its last entry: nothing is on its
    // way any more.
    let result = AppendResult::Accepted { match_index: 8 };
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 8,
            result,
        },
    ));
    r.take_ready();
    assert_eq!(r.snapshot_being_sent(), None);
    r.check_invariants();
}
