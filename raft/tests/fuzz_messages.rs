//! Input from outside never panics the core: random and mutated messages, fed to nodes in every
//! role, leave every invariant intact. (≥ 100,000 messages per run, deterministic.)

use bytes::Bytes;
use raftkv_raft::sim::manual::ManualCluster;
use raftkv_raft::{
    AppendResult, Body, Config, ConflictHint, Entry, LogId, MemberAddrs, MemberChange, Membership,
    Message, Payload, Raft, Rng, Role,
};

/// A random configuration over ids 0..5 (id 0 makes it invalid), sometimes joint, sometimes
/// with a learner.
fn random_membership(rng: &mut Rng) -> Membership {
    let m = Membership::from_voters((0..5).filter(|_| rng.chance(0.5)));
    let change = match rng.range(0, 3) {
        0 => return m,
        1 => MemberChange::Remove {
            id: rng.range(0, 5),
        },
        _ => MemberChange::AddLearner {
            id: rng.range(0, 5),
            addrs: MemberAddrs::new("p", "c"),
            auto_promote: rng.chance(0.5),
        },
    };
    m.apply_changes(&[change]).unwrap_or(m)
}

/// A corpus of real messages and nodes in every role, from a scripted cluster run.
fn corpus_and_nodes() -> (Vec<Message>, Vec<Raft>) {
    let mut config = Config::new(1, [1]);
    config.snapshot_chunk_bytes_max = 16;
    let mut c = ManualCluster::new(3, config).expect("valid config");
    c.campaign(1).unwrap();
    c.stabilize(100).unwrap();
    for i in 0..20 {
        c.propose(1, Bytes::from(format!("cmd{i}")))
            .unwrap()
            .unwrap();
        if i % 5 == 4 {
            c.stabilize(100).unwrap();
        }
    }
    c.stabilize(100).unwrap();
    c.snapshot(1).unwrap().unwrap();
    c.crash(3).unwrap();
    c.propose(1, Bytes::from_static(b"more")).unwrap().unwrap();
    c.restart(3).unwrap();
    for _ in 0..30 {
        for id in [1, 2, 3] {
            c.tick(id, 1).unwrap();
        }
        c.stabilize(100).unwrap();
    }
    c.read(1, &[1, 2]).unwrap();
    c.partition(&[vec![1], vec![2, 3]]);
    for _ in 0..100 {
        for id in [1, 2, 3] {
            c.tick(id, 1).unwrap();
        }
        c.stabilize(100).unwrap();
    }
    let mut nodes: Vec<Raft> = [1, 2, 3]
        .iter()
        .filter_map(|id| c.raft(*id).cloned())
        .collect();
    // Nodes in the remaining roles: a pre-candidate and a candidate.
    let mut pre = Raft::new(Config::new(1, [1, 2, 3])).unwrap();
    pre.campaign();
    let mut cand_config = Config::new(2, [1, 2, 3]);
    cand_config.pre_vote = false;
    let mut cand = Raft::new(cand_config).unwrap();
    cand.campaign();
    nodes.push(pre);
    nodes.push(cand);
    let roles: Vec<Role> = nodes.iter().map(|n| n.role()).collect();
    for role in [
        Role::Leader,
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
    ] {
        assert!(roles.contains(&role), "no node in role {role}: {roles:?}");
    }
    (c.sent.clone(), nodes)
}

fn small(rng: &mut Rng, around: u64) -> u64 {
    match rng.range(0, 6) {
        0 => 0,
        1 => u64::MAX - rng.range(0, 3),
        2 => around.saturating_sub(rng.range(0, 4)),
        _ => around.saturating_add(rng.range(0, 4)),
    }
}

fn random_entries(rng: &mut Rng, base: LogId, term: u64) -> Vec<Entry> {
    let n = rng.range(0, 5);
    let mut index = base.index;
    (0..n)
        .map(|_| {
            index = if rng.chance(0.9) {
                index.saturating_add(1)
            } else {
                small(rng, index)
            };
            let payload = if rng.chance(0.1) {
                Payload::Membership(Box::new(random_membership(rng)))
            } else if rng.chance(0.3) {
                Payload::Noop
            } else {
                Payload::Command(Bytes::from(vec![
                    rng.range(0, 256) as u8;
                    rng.range(0, 20) as usize
                ]))
            };
            Entry {
                index,
                term: small(rng, term.max(base.term)),
                payload,
            }
        })
        .collect()
}

fn random_message(rng: &mut Rng, to: u64, term: u64, last: LogId) -> Message {
    let from = rng.range(0, 5);
    let t = small(rng, term);
    let id = |rng: &mut Rng| LogId::new(small(rng, last.index), small(rng, last.term));
    let body = match rng.range(0, 13) {
        0 => Body::PreVote { last_log: id(rng) },
        1 => Body::PreVoteResponse {
            granted: rng.chance(0.5),
        },
        2 => Body::Vote {
            last_log: id(rng),
            transfer: rng.chance(0.3),
        },
        3 => Body::VoteResponse {
            granted: rng.chance(0.5),
        },
        4 => {
            let base = id(rng);
            Body::Append {
                base,
                entries: random_entries(rng, base, t),
                commit: small(rng, last.index),
            }
        }
        5 => Body::AppendResponse {
            base_index: small(rng, last.index),
            result: if rng.chance(0.5) {
                AppendResult::Accepted {
                    match_index: small(rng, last.index),
                }
            } else {
                AppendResult::Rejected {
                    hint: ConflictHint {
                        term: rng.chance(0.5).then(|| small(rng, last.term)),
                        first_index_of_term: small(rng, last.index),
                        last_index: small(rng, last.index),
                    },
                }
            },
        },
        6 => Body::Heartbeat {
            commit: small(rng, last.index),
            read_seq: small(rng, 3),
        },
        7 => Body::HeartbeatResponse {
            read_seq: small(rng, 3),
        },
        8 => Body::InstallSnapshot {
            last: id(rng),
            membership: Box::new(random_membership(rng)),
            offset: small(rng, 16),
            data: Bytes::from(vec![7u8; rng.range(0, 40) as usize]),
            done: rng.chance(0.5),
            len: small(rng, 48),
            crc32c: rng.next_u64() as u32,
        },
        9 => Body::SnapshotResponse {
            last: id(rng),
            next_offset: small(rng, 16),
        },
        10 => Body::TimeoutNow,
        11 => Body::ReadIndex { id: small(rng, 8) },
        _ => Body::ReadIndexResponse {
            id: small(rng, 8),
            index: rng.chance(0.5).then(|| small(rng, 16)),
        },
    };
    Message {
        from,
        to: if rng.chance(0.95) {
            to
        } else {
            rng.range(0, 5)
        },
        term: t,
        body,
    }
}

/// Changes one field of a real message.
fn mutate(rng: &mut Rng, mut m: Message, to: u64) -> Message {
    m.to = to;
    match rng.range(0, 4) {
        0 => m.term = small(rng, m.term),
        1 => m.from = rng.range(0, 5),
        2 => match &mut m.body {
            Body::Append {
                base,
                entries,
                commit,
            } => match rng.range(0, 4) {
                0 => base.index = small(rng, base.index),
                1 => base.term = small(rng, base.term),
                2 => *commit = small(rng, *commit),
                _ => {
                    if let Some(e) = entries.last_mut() {
                        e.term = small(rng, e.term);
                    }
                }
            },
            Body::AppendResponse { base_index, result } => {
                *base_index = small(rng, *base_index);
                if let AppendResult::Accepted { match_index } = result {
                    *match_index = small(rng, *match_index);
                }
            }
            Body::InstallSnapshot { offset, done, .. } => {
                *offset = small(rng, *offset);
                *done = !*done;
            }
            Body::SnapshotResponse { next_offset, .. } => *next_offset = small(rng, *next_offset),
            Body::Heartbeat { commit, .. } => *commit = small(rng, *commit),
            _ => m.term += 1,
        },
        _ => {} // replayed as is: a duplicate or reordered delivery
    }
    m
}

#[test]
fn random_and_mutated_messages_never_break_a_node() {
    let (corpus, nodes) = corpus_and_nodes();
    assert!(corpus.len() > 50, "corpus of {} messages", corpus.len());
    let mut fed = 0u64;
    for seed in 0..4u64 {
        fed += feed(&corpus, &nodes, seed);
    }
    assert!(fed >= 400_000, "fed only {fed} messages");
}

fn feed(corpus: &[Message], nodes: &[Raft], seed: u64) -> u64 {
    let mut rng = Rng::new(0xF022 + seed);
    let mut fed = 0u64;
    let rounds = 1_000;
    let per_round = 24;
    for round in 0..rounds {
        for base in nodes {
            let mut r = base.clone();
            for _ in 0..per_round {
                let to = r.id();
                let m = if rng.chance(0.5) {
                    let pick = corpus[rng.range(0, corpus.len() as u64) as usize].clone();
                    mutate(&mut rng, pick, to)
                } else {
                    random_message(&mut rng, to, r.term(), r.last_log_id())
                };
                r.step(m);
                fed += 1;
                r.check_invariants();
                if rng.chance(0.3) {
                    r.tick();
                }
                let ready = r.take_ready();
                if let Some(t) = ready.persist_token {
                    if rng.chance(0.8) {
                        r.persisted(t);
                    }
                }
                if round % 7 == 0 && rng.chance(0.1) {
                    let _ = r.propose(Bytes::from_static(b"p"));
                    let _ = r.read_index(rng.next_u64());
                    let id = rng.range(0, 6);
                    let _ = match rng.range(0, 4) {
                        0 => r.transfer_leader(id).map(|_| 0),
                        1 => r.propose_change(&[MemberChange::Remove { id }]),
                        2 => r.propose_change(&[MemberChange::Promote { id }]),
                        _ => r.propose_change(&[MemberChange::AddLearner {
                            id,
                            addrs: MemberAddrs::default(),
                            auto_promote: true,
                        }]),
                    };
                }
                r.check_invariants();
            }
        }
    }
    fed
}
