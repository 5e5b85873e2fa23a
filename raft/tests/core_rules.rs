//! One test per protocol rule, named as a sentence: set up a node, feed one input, compare
//! the exact output. Reference: the section in each test's comment.

use bytes::Bytes;
use raftkv_raft::{
    AppendResult, Body, Config, ConflictHint, Entry, Error, HardState, LogId, Membership, Message,
    Payload, Persisted, Raft, Ready, Role, Snapshot, SnapshotReceiver, Term,
};

fn config(id: u64) -> Config {
    Config::new(id, [1, 2, 3])
}

/// A node restored with `term`, `vote` and a log whose entries have the given terms.
fn node(id: u64, term: Term, voted_for: Option<u64>, log_terms: &[Term]) -> Raft {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            index: i as u64 + 1,
            term: t,
            payload: Payload::Command(Bytes::from(format!("e{}", i + 1))),
        })
        .collect();
    let persisted = Persisted {
        hard_state: HardState {
            term,
            voted_for,
            commit: 0,
        },
        snapshot: None,
        entries,
    };
    Raft::restore(config(id), persisted).expect("valid state")
}

fn msg(from: u64, to: u64, term: Term, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Elects node 1 of a 3-node cluster in `term`-1 → `term` by feeding it votes directly.
fn leader(log_terms: &[Term], term: Term) -> Raft {
    let mut r = node(1, term - 1, None, log_terms);
    r.campaign(); // pre-vote
    r.step(msg(2, 1, term, Body::PreVoteResponse { granted: true }));
    r.step(msg(2, 1, term, Body::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    let ready = r.take_ready();
    if let Some(token) = ready.persist_token {
        r.persisted(token);
    }
    r
}

#[test]
fn follower_rejects_append_with_stale_term_and_tells_its_term() {
    // Raft §5.1: reply false if term < currentTerm (and the reply carries our term).
    let mut r = node(1, 3, None, &[1, 1]);
    r.step(msg(
        2,
        1,
        2,
        Body::Append {
            base: LogId::new(2, 1),
            entries: vec![],
            commit: 2,
        },
    ));
    let ready = r.take_ready();
    // An acknowledgement promises nothing durable: it leaves before any write (thesis §6.4).
    assert_eq!(
        ready.send_now,
        vec![msg(1, 2, 3, Body::HeartbeatResponse { read_seq: 0 })]
    );
    assert!(ready.send_after_persist.is_empty());
    assert_eq!(r.commit_index(), 0);
}

#[test]
fn vote_is_granted_to_one_candidate_per_term() {
    // Raft §5.2: each server votes for at most one candidate in a given term.
    let mut r = node(1, 1, None, &[1]);
    let last_log = LogId::new(1, 1);
    r.step(msg(
        2,
        1,
        2,
        Body::Vote {
            last_log,
            transfer: false,
        },
    ));
    r.step(msg(
        3,
        1,
        2,
        Body::Vote {
            last_log,
            transfer: false,
        },
    ));
    let ready = r.take_ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 2,
            voted_for: Some(2),
            commit: 0
        })
    );
    assert_eq!(
        ready.send_after_persist,
        vec![
            msg(1, 2, 2, Body::VoteResponse { granted: true }),
            msg(1, 3, 2, Body::VoteResponse { granted: false }),
        ]
    );
    assert!(
        ready.send_now.is_empty(),
        "a vote must not leave before it is durable"
    );
}

#[test]
fn vote_is_refused_to_a_candidate_whose_log_is_behind() {
    // Raft §5.4.1: grant only if the candidate's log is at least as up to date.
    let mut r = node(1, 2, None, &[1, 2]);
    r.step(msg(
        2,
        1,
        3,
        Body::Vote {
            last_log: LogId::new(5, 1),
            transfer: false,
        },
    ));
    r.step(msg(
        3,
        1,
        4,
        Body::Vote {
            last_log: LogId::new(1, 2),
            transfer: false,
        },
    ));
    let ready = r.take_ready();
    assert_eq!(
        ready.send_after_persist,
        vec![
            msg(1, 2, 3, Body::VoteResponse { granted: false }),
            msg(1, 3, 4, Body::VoteResponse { granted: false }),
        ]
    );
    assert_eq!(r.term(), 4);
}

#[test]
fn pre_vote_changes_neither_term_nor_vote() {
    // thesis §9.6: a pre-vote is granted without the voter changing any state.
    let mut r = node(1, 2, Some(3), &[1, 2]);
    r.step(msg(
        2,
        1,
        3,
        Body::PreVote {
            last_log: LogId::new(2, 2),
        },
    ));
    let ready = r.take_ready();
    assert_eq!(ready.hard_state, None);
    assert_eq!(
        ready.send_after_persist,
        vec![msg(1, 2, 3, Body::PreVoteResponse { granted: true })]
    );
    assert_eq!((r.term(), r.hard_state().voted_for), (2, Some(3)));
}

#[test]
fn pre_candidate_does_not_raise_its_term_until_it_wins() {
    // thesis §9.6: the term is incremented only after a majority granted the pre-vote.
    let mut r = node(1, 5, None, &[5]);
    r.campaign();
    assert_eq!((r.role(), r.term()), (Role::PreCandidate, 5));
    let ready = r.take_ready();
    assert_eq!(
        ready.send_after_persist,
        vec![
            msg(
                1,
                2,
                6,
                Body::PreVote {
                    last_log: LogId::new(1, 5)
                }
            ),
            msg(
                1,
                3,
                6,
                Body::PreVote {
                    last_log: LogId::new(1, 5)
                }
            ),
        ]
    );
    r.step(msg(3, 1, 6, Body::PreVoteResponse { granted: true }));
    assert_eq!((r.role(), r.term()), (Role::Candidate, 6));
}

#[test]
fn leader_replicates_before_persisting_and_counts_itself_only_when_durable() {
    // thesis §10.2.1: the leader sends Appends in parallel with its own write, and counts its
    // own copy toward a majority only once it is durable.
    let mut r = leader(&[], 1);
    r.step(msg(
        2,
        1,
        1,
        Body::AppendResponse {
            base_index: 0,
            result: AppendResult::Accepted { match_index: 1 },
        },
    ));
    let idx = r.propose(Bytes::from_static(b"x")).expect("leader");
    let ready = r.take_ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(
        ready.send_now.iter().any(|m| matches!(&m.body, Body::Append { entries, .. } if entries.last().map(|e| e.index) == Some(idx))),
        "Appends go out before the leader's write"
    );
    // One follower acknowledges, the leader's own write is not durable: no commit yet.
    r.step(msg(
        3,
        1,
        1,
        Body::AppendResponse {
            base_index: 1,
            result: AppendResult::Accepted { match_index: idx },
        },
    ));
    let before = r.commit_index();
    r.persisted(ready.persist_token.expect("entries to persist"));
    assert!(
        before < idx && r.commit_index() == idx,
        "commit {before} → {}",
        r.commit_index()
    );
}

/// The entry indexes of each Append to `to` in `ready`, in order.
fn appends_to(ready: &raftkv_raft::Ready, to: u64) -> Vec<Vec<u64>> {
    ready
        .send_now
        .iter()
        .chain(&ready.send_after_persist)
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            Body::Append { entries, .. } => Some(entries.iter().map(|e| e.index).collect()),
            _ => None,
        })
        .collect()
}

/// Node 1 leading term 1 with Appends of at most `entries_max` entries, a partial one only
/// with none unanswered; node 2 holds its first entry, so it is replicated to (pipelined);
/// node 3 is silent (probing).
fn pipelined_leader(entries_max: usize) -> Raft {
    pipelined_leader_with(entries_max, 1)
}

/// [`pipelined_leader`] sending a partial Append while fewer than `partial_max` are unanswered.
fn pipelined_leader_with(entries_max: usize, partial_max: usize) -> Raft {
    let mut config = config(1);
    config.append_entries_max = entries_max;
    config.partial_appends_inflight_max = partial_max;
    let persisted = Persisted {
        hard_state: HardState::default(),
        snapshot: None,
        entries: Vec::new(),
    };
    let mut r = Raft::restore(config, persisted).expect("valid state");
    r.campaign();
    r.step(msg(2, 1, 1, Body::PreVoteResponse { granted: true }));
    r.step(msg(2, 1, 1, Body::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    let ready = r.take_ready();
    r.persisted(ready.persist_token.expect("the leader's first entry"));
    // Node 2 holds the leader's first entry: it is replicated to, pipelined.
    r.step(msg(2, 1, 1, accepted(1)));
    let _ = r.take_ready();
    r
}

fn accepted(match_index: u64) -> Body {
    Body::AppendResponse {
        base_index: 0,
        result: AppendResult::Accepted { match_index },
    }
}

#[test]
fn leader_pipelines_only_full_appends_and_a_partial_one_waits_for_the_answer() {
    // thesis §10.2.2: with an Append unanswered, another goes only if it is full; the rest
    // waits for the answer and leaves with what arrived meanwhile.
    let mut r = pipelined_leader(2);
    for i in 0..5 {
        r.propose(Bytes::from(format!("p{i}"))).expect("leader");
    }
    let ready = r.take_ready();
    assert_eq!(
        appends_to(&ready, 2),
        [vec![2, 3], vec![4, 5]],
        "6 alone waits"
    );
    r.step(msg(2, 1, 1, accepted(3)));
    assert_eq!(
        appends_to(&r.take_ready(), 2),
        Vec::<Vec<u64>>::new(),
        "6 alone waits"
    );
    // 6..=7 fill an Append, even at the end of the log.
    r.propose(Bytes::from_static(b"p5")).expect("leader");
    assert_eq!(appends_to(&r.take_ready(), 2), [vec![6, 7]]);
    r.propose(Bytes::from_static(b"p6")).expect("leader");
    r.step(msg(2, 1, 1, accepted(5)));
    assert_eq!(
        appends_to(&r.take_ready(), 2),
        Vec::<Vec<u64>>::new(),
        "8 alone waits"
    );
    // Nothing unanswered: the partial Append goes.
    r.step(msg(2, 1, 1, accepted(7)));
    assert_eq!(appends_to(&r.take_ready(), 2), [vec![8]]);
}

#[test]
fn leader_sends_a_partial_append_while_fewer_than_partial_appends_inflight_max_are_unanswered() {
    // thesis §10.2.2 with `partial_appends_inflight_max` = 2: a partial batch goes with one
    // Append unanswered (leader and follower then work at once), and waits with two.
    let mut r = pipelined_leader_with(4, 2);
    r.propose(Bytes::from_static(b"p0")).expect("leader");
    assert_eq!(appends_to(&r.take_ready(), 2), [vec![2]], "none unanswered");
    r.propose(Bytes::from_static(b"p1")).expect("leader");
    assert_eq!(appends_to(&r.take_ready(), 2), [vec![3]], "one unanswered");
    r.propose(Bytes::from_static(b"p2")).expect("leader");
    assert_eq!(
        appends_to(&r.take_ready(), 2),
        Vec::<Vec<u64>>::new(),
        "4 waits: two unanswered"
    );
    r.propose(Bytes::from_static(b"p3")).expect("leader");
    r.step(msg(2, 1, 1, accepted(2)));
    assert_eq!(
        appends_to(&r.take_ready(), 2),
        [vec![4, 5]],
        "one unanswered again"
    );
}

#[test]
fn leader_writes_an_entry_with_its_first_append_not_before() {
    // thesis §10.2.1: the leader's write goes in parallel with the Append, so entries that
    // wait to fill an Append also wait to share one write.
    let mut r = pipelined_leader(2);
    for i in 0..3 {
        r.propose(Bytes::from(format!("p{i}"))).expect("leader");
    }
    let ready = r.take_ready();
    assert_eq!(appends_to(&ready, 2), [vec![2, 3]], "4 waits for an answer");
    let written: Vec<u64> = ready.entries.iter().map(|e| e.index).collect();
    assert_eq!(written, [2, 3], "4 is not written yet");
    r.propose(Bytes::from_static(b"p3")).expect("leader");
    r.step(msg(2, 1, 1, accepted(3)));
    let ready = r.take_ready();
    assert_eq!(appends_to(&ready, 2), [vec![4, 5]]);
    let written: Vec<u64> = ready.entries.iter().map(|e| e.index).collect();
    assert_eq!(written, [4, 5], "written together, with their Append");
}

#[test]
fn leader_commits_an_earlier_term_entry_only_with_one_of_its_own() {
    // Raft §5.4.2: never commit log entries from previous terms by counting replicas.
    let mut r = leader(&[1, 1], 2); // log: 1@1 2@1, then the no-op 3@2
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 2,
            result: AppendResult::Accepted { match_index: 2 },
        },
    ));
    assert_eq!(
        r.commit_index(),
        0,
        "2@1 on a majority is not committed by counting"
    );
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 2,
            result: AppendResult::Accepted { match_index: 3 },
        },
    ));
    assert_eq!(
        r.commit_index(),
        3,
        "the no-op of term 2 commits 2@1 with it"
    );
}

#[test]
fn follower_reports_a_conflict_hint_for_a_whole_term() {
    // 6.5840 fast backup: XTerm is the follower's term at the base, XIndex its first index.
    let mut r = node(1, 3, None, &[1, 2, 2, 2]);
    r.step(msg(
        2,
        1,
        3,
        Body::Append {
            base: LogId::new(4, 3),
            entries: vec![],
            commit: 0,
        },
    ));
    r.step(msg(
        2,
        1,
        3,
        Body::Append {
            base: LogId::new(9, 3),
            entries: vec![],
            commit: 0,
        },
    ));
    let ready = r.take_ready();
    let hint = |term, first_index_of_term| AppendResult::Rejected {
        hint: ConflictHint {
            term,
            first_index_of_term,
            last_index: 4,
        },
    };
    assert_eq!(
        ready.send_after_persist,
        vec![
            msg(
                1,
                2,
                3,
                Body::AppendResponse {
                    base_index: 4,
                    result: hint(Some(2), 2)
                }
            ),
            msg(
                1,
                2,
                3,
                Body::AppendResponse {
                    base_index: 9,
                    result: hint(None, 0)
                }
            ),
        ]
    );
}

#[test]
fn follower_truncates_a_conflicting_suffix_but_never_a_committed_entry() {
    // Raft §5.3: delete a conflicting entry and all that follow; a committed one is never
    // deleted: an Append based below the commit index is answered with the commit index.
    let mut r = node(1, 2, None, &[1, 1, 1]);
    let e = |index, term| Entry {
        index,
        term,
        payload: Payload::Noop,
    };
    r.step(msg(
        2,
        1,
        2,
        Body::Append {
            base: LogId::new(1, 1),
            entries: vec![e(2, 2)],
            commit: 2,
        },
    ));
    assert_eq!((r.last_log_id(), r.commit_index()), (LogId::new(2, 2), 2));
    r.step(msg(
        2,
        1,
        2,
        Body::Append {
            base: LogId::new(1, 1),
            entries: vec![e(2, 1)],
            commit: 2,
        },
    ));
    assert_eq!(r.last_log_id(), LogId::new(2, 2));
    let accepted = |base_index, match_index| {
        msg(
            1,
            2,
            2,
            Body::AppendResponse {
                base_index,
                result: AppendResult::Accepted { match_index },
            },
        )
    };
    assert_eq!(
        r.take_ready().send_after_persist,
        vec![accepted(1, 2), accepted(1, 2)]
    );
}

#[test]
fn messages_to_others_from_itself_or_from_id_0_are_ignored() {
    let mut r = node(1, 1, None, &[1]);
    let vote = || Body::Vote {
        last_log: LogId::new(9, 9),
        transfer: false,
    };
    r.step(msg(2, 7, 5, vote()));
    r.step(msg(1, 1, 5, vote()));
    r.step(msg(0, 1, 5, vote()));
    assert_eq!(r.term(), 1);
    assert!(r.take_ready().is_empty());
    assert_eq!(r.stats().ignored_messages, 3);
}

#[test]
fn a_vote_request_from_a_node_outside_the_configuration_is_answered() {
    // thesis §4.1: servers process requests without consulting their configuration: a voter
    // just added may ask for votes before this node has the entry that adds it.
    let mut r = node(1, 1, None, &[1]);
    r.step(msg(
        9,
        1,
        5,
        Body::Vote {
            last_log: LogId::new(9, 9),
            transfer: false,
        },
    ));
    assert_eq!(r.term(), 5);
    assert_eq!(
        r.take_ready().send_after_persist,
        vec![msg(1, 9, 5, Body::VoteResponse { granted: true })]
    );
}

#[test]
fn stale_and_duplicate_snapshot_chunks_are_ignored() {
    // Raft §7: chunks are written at their offset in order; others are answered with the
    // offset expected next.
    let mut r = node(1, 1, None, &[]);
    let mut rx = SnapshotReceiver::<Vec<u8>>::default();
    let last = LogId::new(5, 1);
    let chunk = |offset: u64, data: &'static [u8], done| {
        msg(
            2,
            1,
            1,
            Body::InstallSnapshot {
                last,
                membership: Box::new(Membership::from_voters([1, 2, 3])),
                offset,
                data: Bytes::from_static(data),
                done,
                len: 9,
                crc32c: crc32c::crc32c(b"abcdefghi"),
            },
        )
    };
    r.step(chunk(0, b"abc", false));
    r.step(chunk(0, b"abc", false)); // a duplicate of the first restarts the transfer: harmless
    r.step(chunk(3, b"def", false));
    r.step(chunk(3, b"def", false)); // duplicate: ignored
    r.step(chunk(8, b"i", true)); // a gap: ignored
    let ready = spooled(&mut r, &mut rx);
    let resp = |next_offset| msg(1, 2, 1, Body::SnapshotResponse { last, next_offset });
    assert_eq!(
        ready.send_after_persist,
        vec![resp(3), resp(3), resp(6), resp(6), resp(6)]
    );
    r.step(chunk(6, b"ghi", true));
    let ready = spooled(&mut r, &mut rx);
    assert_eq!(
        ready.snapshot,
        Some(Snapshot {
            last,
            data: Bytes::from_static(b"abcdefghi"),
            membership: Membership::from_voters([1, 2, 3]),
        })
    );
    assert_eq!(ready.persist_token, Some(last));
    assert_eq!(r.status().applied_index, 5);
    assert_eq!(
        ready.send_after_persist,
        vec![msg(
            1,
            2,
            1,
            Body::AppendResponse {
                base_index: 5,
                result: AppendResult::Accepted { match_index: 5 }
            }
        )]
    );
}

#[test]
fn proposals_and_reads_on_a_follower_are_refused_with_a_leader_hint() {
    let mut r = node(1, 1, None, &[]);
    r.step(msg(
        2,
        1,
        1,
        Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    assert_eq!(
        r.propose(Bytes::new()),
        Err(Error::NotLeader {
            leader_hint: Some(2)
        })
    );
    assert_eq!(
        r.read_index(1),
        Err(Error::NotLeader {
            leader_hint: Some(2)
        })
    );
}

#[test]
fn oversized_proposals_and_uncommitted_backlog_are_refused() {
    let mut c = config(1);
    c.entry_bytes_max = 4;
    c.uncommitted_bytes_max = 8;
    let mut r = Raft::new(c).expect("valid");
    r.campaign();
    r.step(msg(2, 1, 1, Body::PreVoteResponse { granted: true }));
    r.step(msg(2, 1, 1, Body::VoteResponse { granted: true }));
    assert!(matches!(
        r.propose(Bytes::from_static(b"12345")),
        Err(Error::ProposalTooLarge { .. })
    ));
    r.propose(Bytes::from_static(b"1234")).expect("fits");
    r.propose(Bytes::from_static(b"1234")).expect("fits");
    assert_eq!(
        r.propose(Bytes::from_static(b"1")),
        Err(Error::Busy(raftkv_raft::BusyReason::UncommittedBytes))
    );
}

#[test]
fn leader_steps_down_on_a_response_with_a_higher_term() {
    // Raft §5.1: any RPC with a higher term converts the receiver to follower.
    let mut r = leader(&[], 1);
    r.step(msg(2, 1, 7, Body::HeartbeatResponse { read_seq: 0 }));
    assert_eq!((r.role(), r.term(), r.leader()), (Role::Follower, 7, None));
}

#[test]
fn restore_rejects_inconsistent_persisted_state() {
    let e = |index, term| Entry {
        index,
        term,
        payload: Payload::Noop,
    };
    let bad = [
        Persisted {
            hard_state: HardState {
                term: 1,
                ..Default::default()
            },
            entries: vec![Entry {
                index: 1,
                term: 1,
                payload: Payload::Membership(Box::new(Membership::from_voters([0, 1]))),
            }],
            ..Default::default()
        },
        Persisted {
            hard_state: HardState {
                term: 1,
                ..Default::default()
            },
            entries: vec![e(1, 1), e(3, 1)],
            ..Default::default()
        },
        Persisted {
            hard_state: HardState {
                term: 1,
                ..Default::default()
            },
            entries: vec![e(1, 2)],
            ..Default::default()
        },
    ];
    for p in bad {
        assert!(Raft::restore(config(1), p).is_err());
    }
}

#[test]
fn config_validation_names_the_bad_field() {
    let mut c = config(1);
    c.election_timeout_ticks_min = c.heartbeat_interval_ticks;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("election_timeout_ticks_min"));
    let c = Config::new(4, [1, 2, 3]);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("not among the voters"));
    let c = Config::new(1, [1, 1, 2]);
    assert!(c.validate().is_err());
}

#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let mut r = Raft::new(Config::new(1, [1])).expect("valid");
    r.campaign();
    assert_eq!(r.role(), Role::Leader);
    let idx = r.propose(Bytes::from_static(b"solo")).expect("leader");
    let ready = r.take_ready();
    r.persisted(ready.persist_token.expect("entries"));
    assert_eq!(r.commit_index(), idx);
    let ready = r.take_ready();
    assert_eq!(ready.committed_entries.len(), 2);
    r.read_index(7).expect("leader");
    assert_eq!(r.take_ready().read_states[0].index, idx);
}

#[test]
fn regression_fuzz_index_near_u64_max_is_refused_not_overflowed() {
    // Found by fuzz_messages: a snapshot chunk at index u64::MAX made first_index overflow.
    let mut r = node(1, 1, None, &[1]);
    let last = LogId::new(u64::MAX, 1);
    r.step(msg(
        2,
        1,
        1,
        Body::InstallSnapshot {
            last,
            membership: Box::new(Membership::from_voters([1, 2, 3])),
            offset: 0,
            data: Bytes::new(),
            done: true,
            len: 0,
            crc32c: 0,
        },
    ));
    assert_eq!(r.stats().protocol_violations, 1);
    assert_eq!(r.last_log_id(), LogId::new(1, 1));
    r.take_ready();
    r.check_invariants();
}

#[test]
fn regression_fuzz_rejection_for_an_unsent_base_leaves_next_within_the_log() {
    // Found by fuzz_messages: a rejection naming a base the leader never sent (past next_index)
    // moved next_index past the end of the leader's log.
    let mut r = leader(&[], 1);
    let hint = ConflictHint {
        term: None,
        first_index_of_term: 0,
        last_index: 25,
    };
    r.step(msg(
        2,
        1,
        1,
        Body::AppendResponse {
            base_index: 1,
            result: AppendResult::Accepted { match_index: 1 },
        },
    ));
    r.step(msg(
        2,
        1,
        1,
        Body::AppendResponse {
            base_index: 40,
            result: AppendResult::Rejected { hint },
        },
    ));
    r.check_invariants();
    assert!(
        r.describe().contains("n2 match=1 next=2"),
        "{}",
        r.describe()
    );
}

#[test]
fn pre_vote_is_refused_while_hearing_from_a_leader_even_without_check_quorum() {
    // thesis §9.6: grant a pre-vote only if no heartbeat from a valid leader arrived within the
    // minimum election timeout.
    let mut c = config(1);
    c.check_quorum = false;
    let mut r = Raft::new(c).unwrap();
    r.step(msg(
        2,
        1,
        1,
        Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    r.take_ready();
    r.step(msg(
        3,
        1,
        2,
        Body::PreVote {
            last_log: LogId::new(5, 1),
        },
    ));
    assert_eq!(
        r.take_ready().send_after_persist,
        vec![msg(1, 3, 1, Body::PreVoteResponse { granted: false })]
    );
    for _ in 0..30 {
        r.tick(); // the leader falls silent for the minimum election timeout
    }
    if r.role() == Role::Follower {
        r.step(msg(
            3,
            1,
            2,
            Body::PreVote {
                last_log: LogId::new(5, 1),
            },
        ));
        assert!(r.take_ready().send_after_persist.contains(&msg(
            1,
            3,
            2,
            Body::PreVoteResponse { granted: true }
        )));
    }
}

/// The offsets of the snapshot chunks the leader's next `Ready` sends to node 2.
fn snapshot_chunks_to_2(r: &mut Raft) -> Vec<u64> {
    r.take_ready()
        .send_now
        .into_iter()
        .filter(|m| m.to == 2)
        .filter_map(|m| match m.body {
            Body::InstallSnapshot { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

#[test]
fn leader_resumes_a_snapshot_at_the_offset_the_follower_reports_even_a_lower_one() {
    // Raft §7. Regression, chaos seed 35116 (5 nodes): a follower crashed in the middle of a
    // snapshot transfer and restarted empty; answers it had sent before the crash arrived
    // afterwards and moved the leader past what it held, and the leader then ignored every
    // later answer (lower than its own offset, and not 0): no progress, forever.
    let mut c = config(1);
    c.snapshot_chunk_bytes_max = 10;
    let last = LogId::new(5, 1);
    let persisted = Persisted {
        hard_state: HardState {
            term: 1,
            voted_for: None,
            commit: 5,
        },
        snapshot: Some(Snapshot {
            last,
            data: Bytes::from(vec![7u8; 40]),
            membership: Membership::from_voters([1, 2, 3]),
        }),
        entries: Vec::new(),
    };
    let mut r = Raft::restore(c, persisted).expect("valid state");
    r.campaign();
    r.step(msg(3, 1, 2, Body::PreVoteResponse { granted: true }));
    r.step(msg(3, 1, 2, Body::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    r.take_ready();
    // Node 2 has nothing: the entries it needs are in the snapshot.
    let hint = ConflictHint {
        term: None,
        first_index_of_term: 0,
        last_index: 0,
    };
    r.step(msg(
        2,
        1,
        2,
        Body::AppendResponse {
            base_index: 5,
            result: AppendResult::Rejected { hint },
        },
    ));
    assert_eq!(snapshot_chunks_to_2(&mut r), vec![0]);
    let answer = |next_offset| msg(2, 1, 2, Body::SnapshotResponse { last, next_offset });
    r.step(answer(10));
    assert_eq!(snapshot_chunks_to_2(&mut r), vec![10]);
    // An answer from before the follower's crash, overtaken on the network: it moves the
    // leader ahead of what the restarted follower holds.
    r.step(answer(30));
    assert_eq!(snapshot_chunks_to_2(&mut r), vec![30]);
    // The follower's real state: the leader goes back to it.
    r.step(answer(20));
    assert_eq!(snapshot_chunks_to_2(&mut r), vec![20]);
    // The same answer again (a duplicate) sends nothing more: chunk 20 is already on its way.
    r.step(answer(20));
    assert_eq!(snapshot_chunks_to_2(&mut r), Vec::<u64>::new());
    // An answer past the snapshot's end is refused.
    r.step(answer(41));
    assert_eq!(snapshot_chunks_to_2(&mut r), Vec::<u64>::new());
    r.check_invariants();
}

/// Issue 21 #6: a corruption error names the index only when it has one.
#[test]
fn storage_error_names_the_index_only_when_there_is_one() {
    use raftkv_raft::StorageError;
    let without = StorageError::Corrupt {
        index: None,
        detail: "bad checksum in segment 3".into(),
    };
    assert_eq!(
        without.to_string(),
        "storage corruption: bad checksum in segment 3"
    );
    let with = StorageError::Corrupt {
        index: Some(42),
        detail: "bad checksum".into(),
    };
    assert_eq!(
        with.to_string(),
        "storage corruption at index 42: bad checksum"
    );
}

/// Issue 21 #10: a pre-vote rejection carries the voter's term, which is the pre-candidate's
/// own term when the voter has not moved on; it was ignored (only term + 1 was counted), so a
/// pre-candidate refused by a majority kept waiting for its timeout.
#[test]
fn pre_vote_rejections_at_the_pre_candidates_own_term_are_counted() {
    // thesis §9.6 (etcd-raft counts them too): a majority of rejections ends the pre-election,
    // the node returns to follower at its unchanged term; a grant at the old term is not one.
    let mut r = node(1, 5, None, &[5]);
    r.campaign();
    r.take_ready();
    r.step(msg(2, 1, 5, Body::PreVoteResponse { granted: true })); // stale grant: ignored
    assert_eq!((r.role(), r.term()), (Role::PreCandidate, 5));
    r.step(msg(2, 1, 5, Body::PreVoteResponse { granted: false }));
    r.step(msg(3, 1, 5, Body::PreVoteResponse { granted: false }));
    assert_eq!((r.role(), r.term()), (Role::Follower, 5));
    assert_eq!(r.hard_state().voted_for, None);
    let ready = r.take_ready();
    assert_eq!(ready.hard_state, None);
    assert!(ready.send_after_persist.is_empty());
    assert!(ready.send_now.is_empty());
}

/// An InstallSnapshot chunk of snapshot `last` (whole snapshot `whole`) from `from` in `term`.
fn snapshot_chunk(
    from: u64,
    term: Term,
    last: LogId,
    whole: &[u8],
    offset: u64,
    data: &'static [u8],
) -> Message {
    msg(
        from,
        1,
        term,
        Body::InstallSnapshot {
            last,
            membership: Box::new(Membership::from_voters([1, 2, 3])),
            offset,
            data: Bytes::from_static(data),
            done: offset as usize + data.len() == whole.len(),
            len: whole.len() as u64,
            crc32c: crc32c::crc32c(whole),
        },
    )
}

/// Issue 21 #7: the incoming snapshot buffer was keyed by the snapshot's last id only, so the
/// chunks of a new leader (or term) continued the old leader's half-received snapshot.
#[test]
fn snapshot_chunks_from_two_leaders_or_terms_never_splice() {
    // Raft §7: a transfer is one leader's, in one term; another restarts at offset 0.
    let mut r = node(1, 1, None, &[]);
    let mut rx = SnapshotReceiver::<Vec<u8>>::default();
    let last = LogId::new(5, 1);
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 0, b"abc"));
    spooled(&mut r, &mut rx);
    // Node 3 leads term 2; its snapshot at the same id would checksum fine if spliced.
    r.step(snapshot_chunk(3, 2, last, b"abcXYZ", 3, b"XYZ"));
    let ready = spooled(&mut r, &mut rx);
    assert_eq!(ready.snapshot, None);
    let restart = msg(
        1,
        3,
        2,
        Body::SnapshotResponse {
            last,
            next_offset: 0,
        },
    );
    assert_eq!(ready.send_after_persist, vec![restart]);
    // The same leader in a later term also starts over.
    r.step(snapshot_chunk(3, 2, last, b"abcXYZ", 0, b"abc"));
    r.step(snapshot_chunk(3, 3, last, b"abcXYZ", 3, b"XYZ"));
    let ready = spooled(&mut r, &mut rx);
    assert_eq!(ready.snapshot, None);
    assert_eq!(
        ready.send_after_persist.last(),
        Some(&msg(
            1,
            3,
            3,
            Body::SnapshotResponse {
                last,
                next_offset: 0
            }
        ))
    );
    // Restarted at 0, the transfer completes with the new leader's bytes only.
    r.step(snapshot_chunk(3, 3, last, b"abcXYZ", 0, b"abc"));
    r.step(snapshot_chunk(3, 3, last, b"abcXYZ", 3, b"XYZ"));
    let snapshot = spooled(&mut r, &mut rx).snapshot.expect("installed");
    assert_eq!(snapshot.data, Bytes::from_static(b"abcXYZ"));
}

/// Issue 21 #7: a received snapshot was installed (and so persisted) without any check.
#[test]
fn a_corrupted_snapshot_chunk_is_refused_and_the_transfer_restarts() {
    // Raft §7: the assembled snapshot must match the leader's length and CRC32C.
    let mut r = node(1, 1, None, &[]);
    let mut rx = SnapshotReceiver::<Vec<u8>>::default();
    let last = LogId::new(5, 1);
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 0, b"abc"));
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 3, b"dXf")); // corrupted in transit
    let ready = spooled(&mut r, &mut rx);
    assert_eq!(ready.snapshot, None);
    assert_eq!(ready.persist_token, None);
    assert_eq!(
        ready.send_after_persist.last(),
        Some(&msg(
            1,
            2,
            1,
            Body::SnapshotResponse {
                last,
                next_offset: 0
            }
        ))
    );
    assert_eq!(r.status().applied_index, 0);
    // The leader resends from 0; a chunk at 3 is not spliced onto the refused bytes.
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 3, b"def"));
    assert_eq!(spooled(&mut r, &mut rx).snapshot, None);
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 0, b"abc"));
    r.step(snapshot_chunk(2, 1, last, b"abcdef", 3, b"def"));
    let snapshot = spooled(&mut r, &mut rx).snapshot.expect("installed");
    assert_eq!(snapshot.data, Bytes::from_static(b"abcdef"));
    assert_eq!(r.status().applied_index, 5);
}

/// Issue 20: the core hands a received snapshot's chunks out; a driver spools them and fills
/// in the data of the snapshot to install (here in memory).
fn spooled(r: &mut Raft, rx: &mut SnapshotReceiver<Vec<u8>>) -> Ready {
    let mut ready = r.take_ready();
    rx.receive(r, &mut ready, || Ok(Vec::new()))
        .expect("an in-memory spool cannot fail");
    ready
}
