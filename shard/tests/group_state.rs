//! The replica group's state machine alone, applied by hand: configs in order, ownership
//! checked at apply time, the pull/insert/delete/confirm steps and their idempotence,
//! exactly-once across a migration, typed refusals of bad input, snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_kv::state::{KvError, Op, Outcome, SessionConfig};
use raftkv_raft::StateMachine;
use raftkv_shard::group::{
    GroupCommand, GroupConfig, GroupError, GroupOutcome, GroupQuery, GroupStateMachine, ShardStatus,
};
use raftkv_shard::{key_to_shard, Gid, ShardConfig, ShardId};

const SHARDS: u32 = 4;

fn config(num: u64, shards: [Gid; SHARDS as usize]) -> ShardConfig {
    let groups: BTreeMap<Gid, Vec<String>> = shards
        .iter()
        .filter(|&&g| g != 0)
        .map(|&g| (g, vec![format!("g{g}")]))
        .collect();
    ShardConfig {
        num,
        shards: shards.to_vec(),
        groups,
    }
}

fn group(gid: Gid) -> GroupStateMachine {
    GroupStateMachine::new(GroupConfig::new(gid, SHARDS))
}

fn apply(g: &mut GroupStateMachine, c: GroupCommand) -> GroupOutcome {
    g.apply(1, &c.encode())
}

/// Pull asks for `shards`, each from its first key.
fn from_start(shards: &[ShardId]) -> Vec<(ShardId, Option<Bytes>)> {
    shards.iter().map(|&s| (s, None)).collect()
}

fn key_in(shard: ShardId) -> Bytes {
    (0..)
        .map(|i| Bytes::from(format!("key{i}")))
        .find(|k| key_to_shard(k, SHARDS).unwrap() == shard)
        .unwrap()
}

fn append(session: u64, seq: u64, key: &Bytes) -> GroupCommand {
    GroupCommand::Request {
        session,
        seq,
        now_ms: 0,
        op: Op::Append {
            key: key.clone(),
            value: Bytes::from_static(b"x"),
        },
    }
}

fn status(g: &GroupStateMachine, shard: ShardId) -> Option<ShardStatus> {
    g.progress()
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .map(|s| s.status)
}

/// Moves shard 0 from group 1 to group 2 through every step; returns both.
fn migrate() -> (GroupStateMachine, GroupStateMachine) {
    let (mut a, mut b) = (group(1), group(2));
    let c1 = config(1, [1, 1, 1, 1]);
    let c2 = config(2, [2, 1, 1, 1]);
    apply(&mut a, GroupCommand::Config(c1.clone()));
    apply(&mut b, GroupCommand::Config(c1));
    let k = key_in(0);
    assert_eq!(
        apply(&mut a, append(7, 1, &k)),
        GroupOutcome::Kv(Outcome::Written { version: 1 })
    );
    apply(&mut a, GroupCommand::Config(c2.clone()));
    apply(&mut b, GroupCommand::Config(c2));
    assert_eq!(status(&a, 0), Some(ShardStatus::BePulled));
    assert_eq!(status(&b, 0), Some(ShardStatus::Pulling));
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    assert_eq!(
        apply(&mut b, GroupCommand::Insert { num: 2, shards }),
        GroupOutcome::Done
    );
    (a, b)
}

#[test]
fn configs_are_installed_in_order_and_only_once_settled() {
    let mut a = group(1);
    assert_eq!(
        apply(&mut a, GroupCommand::Config(config(2, [1, 1, 1, 1]))),
        GroupOutcome::NotReady { installed: 0 }
    );
    assert_eq!(
        apply(&mut a, GroupCommand::Config(config(1, [1, 1, 1, 1]))),
        GroupOutcome::Done
    );
    assert_eq!(a.config().num, 1);
    // Unassigned before: served at once, empty.
    assert_eq!(status(&a, 0), Some(ShardStatus::Serving));
    // Config 2 hands shard 0 off; config 3 cannot enter before group 2 has it.
    apply(&mut a, GroupCommand::Config(config(2, [2, 1, 1, 1])));
    assert_eq!(
        apply(&mut a, GroupCommand::Config(config(3, [1, 1, 1, 1]))),
        GroupOutcome::NotReady { installed: 2 }
    );
    // A repeat of an installed config changes nothing.
    let before = a.clone();
    assert_eq!(
        apply(&mut a, GroupCommand::Config(config(2, [2, 1, 1, 1]))),
        GroupOutcome::Done
    );
    assert_eq!(a, before);
    a.validate().unwrap();
}

#[test]
fn requests_for_shards_not_served_answer_wrong_group() {
    let mut a = group(1);
    apply(&mut a, GroupCommand::Config(config(1, [1, 2, 1, 2])));
    assert_eq!(
        apply(&mut a, append(7, 1, &key_in(1))),
        GroupOutcome::WrongGroup
    );
    assert_eq!(a.get(&key_in(1)), GroupOutcome::WrongGroup);
    // Pulling: owned, not arrived.
    let (a, b) = {
        let (mut a, mut b) = (group(1), group(2));
        apply(&mut a, GroupCommand::Config(config(1, [1, 1, 1, 1])));
        apply(&mut b, GroupCommand::Config(config(1, [1, 1, 1, 1])));
        apply(&mut a, GroupCommand::Config(config(2, [2, 1, 1, 1])));
        apply(&mut b, GroupCommand::Config(config(2, [2, 1, 1, 1])));
        (a, b)
    };
    assert_eq!(b.get(&key_in(0)), GroupOutcome::WrongGroup, "still pulling");
    assert_eq!(a.get(&key_in(0)), GroupOutcome::WrongGroup, "handed off");
    assert!(
        matches!(a.get(&key_in(1)), GroupOutcome::Kv(_)),
        "unaffected"
    );
}

#[test]
fn a_migrated_shard_keeps_its_data_and_sessions() {
    let (mut a, mut b) = migrate();
    let k = key_in(0);
    assert_eq!(status(&b, 0), Some(ShardStatus::GcPending));
    assert_eq!(
        b.get(&k),
        GroupOutcome::Kv(Outcome::Value {
            value: Bytes::from_static(b"x"),
            version: 1
        })
    );
    // The retry of a write the old owner applied is answered from the moved table.
    assert_eq!(
        apply(&mut b, append(7, 1, &k)),
        GroupOutcome::Kv(Outcome::Written { version: 1 })
    );
    assert_eq!(
        apply(&mut b, append(7, 2, &k)),
        GroupOutcome::Kv(Outcome::Written { version: 2 })
    );
    assert_eq!(
        apply(&mut b, append(7, 1, &k)),
        GroupOutcome::Kv(Outcome::Err(KvError::Stale))
    );
    // And the old owner no longer answers it.
    assert_eq!(apply(&mut a, append(7, 1, &k)), GroupOutcome::WrongGroup);
}

#[test]
fn gc_deletes_only_handed_off_shards_and_every_step_is_idempotent() {
    let (mut a, mut b) = migrate();
    // A late second Insert changes nothing.
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    let before = b.clone();
    apply(&mut b, GroupCommand::Insert { num: 2, shards });
    assert_eq!(b, before);
    // Delete of a shard still served is ignored.
    apply(
        &mut a,
        GroupCommand::Delete {
            num: 2,
            shards: vec![1],
        },
    );
    assert_eq!(status(&a, 1), Some(ShardStatus::Serving));
    for _ in 0..2 {
        assert_eq!(
            apply(
                &mut a,
                GroupCommand::Delete {
                    num: 2,
                    shards: vec![0]
                }
            ),
            GroupOutcome::Done
        );
    }
    assert_eq!(status(&a, 0), None, "deleted");
    assert_eq!(
        apply(
            &mut a,
            GroupCommand::Delete {
                num: 3,
                shards: vec![0]
            }
        ),
        GroupOutcome::NotReady { installed: 2 }
    );
    for _ in 0..2 {
        apply(
            &mut b,
            GroupCommand::Confirmed {
                num: 2,
                shards: vec![0],
            },
        );
    }
    assert_eq!(status(&b, 0), Some(ShardStatus::Serving));
    assert!(a.progress().settled() && b.progress().settled());
    // Both may move on.
    let c3 = config(3, [2, 2, 1, 1]);
    assert_eq!(
        apply(&mut a, GroupCommand::Config(c3.clone())),
        GroupOutcome::Done
    );
    assert_eq!(apply(&mut b, GroupCommand::Config(c3)), GroupOutcome::Done);
    a.validate().unwrap();
    b.validate().unwrap();
}

#[test]
fn pull_before_the_owner_installed_the_config_is_not_ready() {
    let mut a = group(1);
    apply(&mut a, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    assert_eq!(
        a.pull(2, &from_start(&[0])),
        GroupOutcome::NotReady { installed: 1 }
    );
}

#[test]
fn bad_input_gets_typed_errors() {
    let mut a = group(1);
    assert_eq!(
        a.apply(1, b"\xff\xff\xff"),
        GroupOutcome::Err(GroupError::Malformed)
    );
    let mut wrong = config(1, [1, 1, 1, 1]);
    wrong.shards.push(1);
    assert!(matches!(
        apply(&mut a, GroupCommand::Config(wrong)),
        GroupOutcome::Err(GroupError::ShardCount { .. })
    ));
    // A shard payload that does not decode, or is too large, is refused as a whole.
    let mut b = group(2);
    apply(&mut b, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    apply(&mut b, GroupCommand::Config(config(2, [2, 2, 1, 1])));
    let garbage = GroupCommand::Insert {
        num: 2,
        shards: vec![(0, Bytes::from_static(b"\x05garbage"))],
    };
    assert!(matches!(
        apply(&mut b, garbage),
        GroupOutcome::Err(GroupError::BadShard { shard: 0, .. })
    ));
    let mut small = GroupConfig::new(2, SHARDS);
    small.shard_bytes_max = 4;
    let mut c = GroupStateMachine::new(small);
    apply(&mut c, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    apply(&mut c, GroupCommand::Config(config(2, [2, 2, 1, 1])));
    let (a2, _) = migrate();
    let GroupOutcome::Shards { shards, .. } = a2.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    assert!(shards[0].1.len() > 4);
    assert!(matches!(
        apply(&mut c, GroupCommand::Insert { num: 2, shards }),
        GroupOutcome::Err(GroupError::BadShard { shard: 0, .. })
    ));
    assert_eq!(status(&c, 0), Some(ShardStatus::Pulling));
    // A malformed query is refused, not a panic.
    assert!(matches!(
        a.query(b"\xff\xff"),
        GroupOutcome::Kv(Outcome::Err(KvError::Malformed))
    ));
    // A corrupt snapshot is refused.
    assert!(a.restore(b"\x01\x02").is_err());
}

#[test]
fn a_migrated_session_table_is_trimmed_to_the_receivers_bounds() {
    let (a, _) = migrate();
    let mut settings = GroupConfig::new(2, SHARDS);
    settings.sessions = SessionConfig {
        ttl_ms: 1_000,
        sessions_max: 0,
    };
    let mut c = GroupStateMachine::new(settings);
    apply(&mut c, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    apply(&mut c, GroupCommand::Config(config(2, [2, 1, 1, 1])));
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    apply(&mut c, GroupCommand::Insert { num: 2, shards });
    let info = c
        .progress()
        .shards
        .into_iter()
        .find(|s| s.shard == 0)
        .unwrap();
    assert_eq!((info.keys, info.sessions), (1, 0));
}

#[test]
fn snapshot_restores_every_status() {
    let (a, b) = migrate();
    for g in [a, b] {
        let mut restored = group(g.settings().gid);
        restored.restore(&g.snapshot()).unwrap();
        assert_eq!(restored, g);
        assert_eq!(
            restored.query(&GroupQuery::Progress.encode()),
            GroupOutcome::Progress(g.progress())
        );
    }
    // A snapshot of one group does not restore as another (its shards break the invariants).
    let (a, _) = migrate();
    assert!(group(3).restore(&a.snapshot()).is_err());
}

#[test]
fn one_pull_answer_carries_a_bounded_number_of_bytes() {
    // Group 1 hands off all four shards, each holding a 100-byte value; with a 250-byte budget
    // one answer carries two shards, and asking again for the rest gives the others.
    let mut settings = GroupConfig::new(1, SHARDS);
    settings.shard_bytes_max = 250;
    let mut a = GroupStateMachine::new(settings);
    apply(&mut a, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    for s in 0..SHARDS {
        let put = GroupCommand::Request {
            session: 9,
            seq: u64::from(s) + 1,
            now_ms: 0,
            op: Op::Put {
                key: key_in(s),
                value: Bytes::from(vec![b'v'; 100]),
                version: None,
            },
        };
        assert!(matches!(
            apply(&mut a, put),
            GroupOutcome::Kv(Outcome::Written { .. })
        ));
    }
    apply(&mut a, GroupCommand::Config(config(2, [2, 2, 2, 2])));
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0, 1, 2, 3])) else {
        panic!("pull")
    };
    let first: Vec<ShardId> = shards.iter().map(|(s, _)| *s).collect();
    assert_eq!(first, [0, 1]);
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[2, 3])) else {
        panic!("pull")
    };
    assert_eq!(shards.len(), 2);
    // A shard alone larger than the budget still goes (and the receiver judges its size).
    let mut tiny = GroupConfig::new(1, SHARDS);
    tiny.shard_bytes_max = 10;
    let mut b = GroupStateMachine::new(tiny);
    b.restore(&a.snapshot()).unwrap();
    let GroupOutcome::Shards { shards, .. } = b.pull(2, &from_start(&[3, 2])) else {
        panic!("pull")
    };
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].0, 3);
}

/// Group `gid` (with `settings`' bounds) at config 2 with shard 0 moved from group 1 to
/// group 2, after config 1 gave every shard to group 1.
fn at_config_2(mut settings: GroupConfig) -> GroupStateMachine {
    settings.shards = SHARDS;
    let mut g = GroupStateMachine::new(settings);
    apply(&mut g, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    g
}

/// Puts `n` keys of shard 0 with 100-byte values at group `g` (session 5).
fn fill_shard_0(g: &mut GroupStateMachine, n: usize) -> Vec<Bytes> {
    let keys: Vec<Bytes> = (0..)
        .map(|i| Bytes::from(format!("k{i:06}")))
        .filter(|k| key_to_shard(k, SHARDS).unwrap() == 0)
        .take(n)
        .collect();
    for (seq, key) in keys.iter().enumerate() {
        let put = GroupCommand::Request {
            session: 5,
            seq: seq as u64 + 1,
            now_ms: 0,
            op: Op::Put {
                key: key.clone(),
                value: Bytes::from(vec![b'v'; 100]),
                version: None,
            },
        };
        assert!(matches!(
            apply(g, put),
            GroupOutcome::Kv(Outcome::Written { .. })
        ));
    }
    keys
}

/// Where shard 0 stands at `g`: the key its next piece starts after.
fn after_0(g: &GroupStateMachine) -> Option<Bytes> {
    g.progress()
        .shards
        .into_iter()
        .find(|s| s.shard == 0)
        .and_then(|s| s.after)
}

#[test]
fn a_shard_larger_than_shard_bytes_max_migrates_in_pieces() {
    // The bug: a shard was pulled and inserted whole, so one larger than shard_bytes_max (a
    // 100k-key shard of 100-byte values is ~14 MB, the bound 3 MiB) was refused at every
    // round and never moved. Scaled down: 600 keys (~80 KB) through a 4 KiB bound.
    let mut small = GroupConfig::new(1, SHARDS);
    small.shard_bytes_max = 4096;
    let mut a = at_config_2(small);
    let keys = fill_shard_0(&mut a, 600);
    let mut b = at_config_2(GroupConfig { gid: 2, ..small });
    for g in [&mut a, &mut b] {
        apply(g, GroupCommand::Config(config(2, [2, 1, 1, 1])));
    }
    let mut answers = 0;
    let mut old = None;
    while status(&b, 0) == Some(ShardStatus::Pulling) {
        let GroupOutcome::Shards { shards, .. } = a.pull(2, &[(0, after_0(&b))]) else {
            panic!("pull")
        };
        let bytes: usize = shards.iter().map(|(_, p)| p.len()).sum();
        assert!(bytes <= small.shard_bytes_max, "an answer of {bytes} bytes");
        assert!(!shards.is_empty());
        assert_eq!(
            apply(
                &mut b,
                GroupCommand::Insert {
                    num: 2,
                    shards: shards.clone()
                }
            ),
            GroupOutcome::Done
        );
        // A repeated or late answer changes nothing.
        let before = b.progress();
        let replay = old.replace(shards).unwrap_or_default();
        apply(
            &mut b,
            GroupCommand::Insert {
                num: 2,
                shards: replay,
            },
        );
        assert_eq!(b.progress(), before);
        answers += 1;
        assert!(answers < 1000, "the shard does not arrive");
    }
    assert!(answers > 10, "{answers} answers for ~80 KB through 4 KiB");
    assert_eq!(status(&b, 0), Some(ShardStatus::GcPending));
    let value = Bytes::from(vec![b'v'; 100]);
    for key in &keys {
        let want = Outcome::Value {
            value: value.clone(),
            version: 1,
        };
        assert_eq!(b.get(key), GroupOutcome::Kv(want));
    }
    let info = |g: &GroupStateMachine| g.progress().shards.into_iter().find(|s| s.shard == 0);
    assert_eq!(info(&b).unwrap().keys, 600);
    assert_eq!(info(&b).unwrap().bytes, info(&a).unwrap().bytes);
    // The session table came with the last piece: session 5's last put, retried, is answered
    // from it, not applied again.
    let retry = GroupCommand::Request {
        session: 5,
        seq: 600,
        now_ms: 0,
        op: Op::Put {
            key: keys[599].clone(),
            value: Bytes::from_static(b"again"),
            version: None,
        },
    };
    assert_eq!(
        apply(&mut b, retry),
        GroupOutcome::Kv(Outcome::Written { version: 1 })
    );
}

#[test]
fn an_arriving_shard_past_data_bytes_max_is_refused_and_stays_pulling() {
    let mut a = at_config_2(GroupConfig::new(1, SHARDS));
    fill_shard_0(&mut a, 20);
    // Group 2 has room for about 10 of the 20 keys (each 100 + 7 + 32 bytes).
    let mut bounded = GroupConfig::new(2, SHARDS);
    bounded.data_bytes_max = 1500;
    let mut b = at_config_2(bounded);
    for g in [&mut a, &mut b] {
        apply(g, GroupCommand::Config(config(2, [2, 1, 1, 1])));
    }
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    let refused = apply(&mut b, GroupCommand::Insert { num: 2, shards });
    assert!(
        matches!(
            refused,
            GroupOutcome::Err(GroupError::Full {
                shard: 0,
                data_bytes_max: 1500,
                ..
            })
        ),
        "{refused:?}"
    );
    // Not acknowledged, nothing added: the shard stays Pulling (unserved), the group's data
    // within its bound, and the old owner keeps the shard.
    assert_eq!(status(&b, 0), Some(ShardStatus::Pulling));
    assert_eq!(b.data_bytes(), 0);
    assert_eq!(status(&a, 0), Some(ShardStatus::BePulled));
}

#[test]
fn writes_are_bounded_by_the_groups_data_bytes_max_across_its_shards() {
    let mut bounded = GroupConfig::new(1, SHARDS);
    bounded.data_bytes_max = 400;
    let mut g = GroupStateMachine::new(bounded);
    apply(&mut g, GroupCommand::Config(config(1, [1, 1, 1, 1])));
    let put = |seq: u64, shard: ShardId| GroupCommand::Request {
        session: 3,
        seq,
        now_ms: 0,
        op: Op::Put {
            key: key_in(shard),
            value: Bytes::from(vec![b'v'; 150]),
            version: None,
        },
    };
    // Each put counts ~186 bytes: two fit in 400 across two shards, a third (in a third shard,
    // whose own data is empty) does not.
    assert!(matches!(
        apply(&mut g, put(1, 0)),
        GroupOutcome::Kv(Outcome::Written { .. })
    ));
    assert!(matches!(
        apply(&mut g, put(2, 1)),
        GroupOutcome::Kv(Outcome::Written { .. })
    ));
    assert_eq!(
        apply(&mut g, put(3, 2)),
        GroupOutcome::Kv(Outcome::Err(KvError::StoreFull))
    );
    assert!(g.data_bytes() <= 400);
}

#[test]
fn a_piece_holding_keys_of_another_shard_is_refused() {
    let mut a = at_config_2(GroupConfig::new(1, SHARDS));
    fill_shard_0(&mut a, 3);
    let mut b = at_config_2(GroupConfig::new(2, SHARDS));
    for g in [&mut a, &mut b] {
        apply(g, GroupCommand::Config(config(2, [2, 2, 1, 1])));
    }
    // Shard 0's piece, sent as shard 1's.
    let GroupOutcome::Shards { shards, .. } = a.pull(2, &from_start(&[0])) else {
        panic!("pull")
    };
    let forged = shards.into_iter().map(|(_, p)| (1, p)).collect();
    assert!(matches!(
        apply(
            &mut b,
            GroupCommand::Insert {
                num: 2,
                shards: forged
            }
        ),
        GroupOutcome::Err(GroupError::BadShard { shard: 1, .. })
    ));
    assert_eq!(status(&b, 1), Some(ShardStatus::Pulling));
}
