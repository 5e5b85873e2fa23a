//! The controller state machine alone: 6.5840 lab 5A's checks applied to
//! [`ControllerStateMachine`] directly (the replicated versions are in `controller_sim.rs`),
//! typed errors, exactly-once sessions, historical queries and snapshot/restore.

use std::collections::BTreeMap;

use raftkv_kv::state::SessionConfig;
use raftkv_raft::StateMachine;
use raftkv_shard::rebalance::moves;
use raftkv_shard::state::{Command, CtrlOp, Outcome, Query, CHECKPOINT_EVERY};
use raftkv_shard::{ControllerConfig, ControllerStateMachine, CtrlError, Gid, ShardConfig};

fn controller(shards: u32) -> ControllerStateMachine {
    ControllerStateMachine::new(ControllerConfig::with_shards(shards)).unwrap()
}

fn addrs(gid: Gid) -> Vec<String> {
    (1..=3).map(|i| format!("g{gid}-n{i}:7000")).collect()
}

fn join(gids: &[Gid]) -> CtrlOp {
    CtrlOp::Join {
        groups: gids.iter().map(|&g| (g, addrs(g))).collect(),
    }
}

fn leave(gids: &[Gid]) -> CtrlOp {
    CtrlOp::Leave {
        gids: gids.to_vec(),
    }
}

/// The lab's `check`: the config's groups are exactly `gids`, every shard is served by one of
/// them, and counts differ by at most one.
fn check(config: &ShardConfig, gids: &[Gid]) {
    let groups: Vec<Gid> = config.groups.keys().copied().collect();
    let mut want = gids.to_vec();
    want.sort_unstable();
    assert_eq!(groups, want, "config {}: wrong groups", config.num);
    if !gids.is_empty() {
        for (s, g) in config.shards.iter().enumerate() {
            assert!(
                config.groups.contains_key(g),
                "shard {s} -> invalid group {g}"
            );
        }
        let counts: Vec<usize> = gids.iter().map(|&g| config.count_of(g)).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "max {max} too much larger than min {min}");
    }
}

#[test]
fn config_zero_is_empty() {
    let c = controller(10);
    let zero = c.query(Some(0));
    assert_eq!(zero, ShardConfig::empty(10));
    assert_eq!(c.query(None), zero);
    assert_eq!(c.query(Some(99)), zero, "beyond the latest: the latest");
}

#[test]
fn basic_join_leave_move_query() {
    let mut c = controller(10);
    assert_eq!(c.change(join(&[1])), Ok(1));
    check(&c.query(None), &[1]);
    assert_eq!(c.change(join(&[2])), Ok(2));
    check(&c.query(None), &[1, 2]);
    assert_eq!(c.change(leave(&[1])), Ok(3));
    check(&c.query(None), &[2]);
    assert_eq!(c.change(join(&[1])), Ok(4));
    check(&c.query(None), &[1, 2]);

    // Move: explicit, and not rebalanced away by itself.
    for shard in 0..5 {
        c.change(CtrlOp::Move { shard, gid: 1 }).unwrap();
    }
    for shard in 5..10 {
        c.change(CtrlOp::Move { shard, gid: 2 }).unwrap();
    }
    let moved = c.query(None);
    assert_eq!(moved.num, 14);
    assert_eq!(moved.shards, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    assert_eq!(moved.groups[&1], addrs(1));
    c.change(leave(&[1, 2])).unwrap();
    assert_eq!(c.query(None).shards, vec![0; 10]);
    c.check_invariants();
}

#[test]
fn historical_queries_answer_every_config() {
    let mut c = controller(10);
    let mut seen = vec![c.query(None)];
    // Enough changes to cross several checkpoints.
    for round in 0..(3 * CHECKPOINT_EVERY + 5) {
        let gid = round % 7 + 1;
        let op = if c.latest().groups.contains_key(&gid) {
            leave(&[gid])
        } else {
            join(&[gid])
        };
        c.change(op).unwrap();
        seen.push(c.query(None));
    }
    for (num, config) in seen.iter().enumerate() {
        assert_eq!(&c.query(Some(num as u64)), config, "config {num}");
        assert_eq!(config.num, num as u64);
    }
    c.check_invariants();
}

#[test]
fn minimal_moves_on_join_and_leave() {
    // The lab's "Minimal transfers after joins" / "after leaves".
    let mut c = controller(10);
    let npara = 10;
    let gids: Vec<Gid> = (1..=npara).collect();
    c.change(join(&gids)).unwrap();
    let before = c.query(None);
    for i in 1..=5 {
        c.change(join(&[npara + i])).unwrap();
    }
    let after = c.query(None);
    for (s, &g) in before.shards.iter().enumerate() {
        if g <= npara && after.shards[s] <= npara {
            assert_eq!(
                after.shards[s], g,
                "shard {s} moved between old groups on join"
            );
        }
    }
    for i in 1..=5 {
        c.change(leave(&[npara + i])).unwrap();
    }
    let back = c.query(None);
    for (s, &g) in after.shards.iter().enumerate() {
        if g <= npara {
            assert_eq!(
                back.shards[s], g,
                "shard {s} of a staying group moved on leave"
            );
        }
    }
}

#[test]
fn join_moves_at_most_its_share() {
    let mut c = controller(256);
    c.change(join(&[1, 2, 3])).unwrap();
    for gid in 4..=40 {
        let before = c.query(None);
        c.change(join(&[gid])).unwrap();
        let after = c.query(None);
        let share = 256usize.div_ceil(gid as usize);
        assert!(
            moves(&before.shards, &after.shards) <= share,
            "join of {gid}"
        );
        check(&after, &(1..=gid).collect::<Vec<_>>());
    }
}

#[test]
fn typed_errors_for_bad_changes() {
    let mut c = controller(10);
    assert_eq!(c.change(join(&[0])), Err(CtrlError::ZeroGid));
    assert_eq!(c.change(join(&[])), Err(CtrlError::NoGroups));
    c.change(join(&[1])).unwrap();
    assert_eq!(
        c.change(join(&[2, 1])),
        Err(CtrlError::GidAlreadyJoined { gid: 1 })
    );
    assert_eq!(c.change(leave(&[3])), Err(CtrlError::UnknownGid { gid: 3 }));
    assert_eq!(c.change(leave(&[0])), Err(CtrlError::ZeroGid));
    assert_eq!(
        c.change(leave(&[1, 1])),
        Err(CtrlError::DuplicateGid { gid: 1 })
    );
    assert_eq!(c.change(leave(&[])), Err(CtrlError::NoGroups));
    assert_eq!(
        c.change(CtrlOp::Move { shard: 10, gid: 1 }),
        Err(CtrlError::ShardOutOfRange {
            shard: 10,
            shards: 10
        })
    );
    assert_eq!(
        c.change(CtrlOp::Move { shard: 0, gid: 9 }),
        Err(CtrlError::UnknownGid { gid: 9 })
    );
    assert_eq!(
        c.change(CtrlOp::Move { shard: 0, gid: 0 }),
        Err(CtrlError::ZeroGid)
    );
    let no_addrs = CtrlOp::Join {
        groups: BTreeMap::from([(5, vec![])]),
    };
    assert_eq!(
        c.change(no_addrs),
        Err(CtrlError::AddrCount {
            gid: 5,
            addrs: 0,
            max: 9
        })
    );
    let long = CtrlOp::Join {
        groups: BTreeMap::from([(5, vec!["x".repeat(257)])]),
    };
    assert_eq!(
        c.change(long),
        Err(CtrlError::AddrTooLong {
            gid: 5,
            bytes: 257,
            max: 256
        })
    );
    // Nothing above made a config.
    assert_eq!(c.latest().num, 1);
    assert_eq!(
        ControllerStateMachine::new(ControllerConfig::with_shards(0)).unwrap_err(),
        CtrlError::ShardCount {
            shards: 0,
            max: 4096
        }
    );
}

#[test]
fn groups_and_configs_are_bounded() {
    let mut c = ControllerStateMachine::new(ControllerConfig {
        groups_max: 3,
        configs_max: 5,
        ..ControllerConfig::with_shards(10)
    })
    .unwrap();
    assert_eq!(
        c.change(join(&[1, 2, 3, 4])),
        Err(CtrlError::TooManyGroups { groups: 4, max: 3 })
    );
    for gid in 1..=3 {
        c.change(join(&[gid])).unwrap();
    }
    c.change(leave(&[3])).unwrap();
    assert_eq!(c.latest().num, 4, "configs 0..=4: five in all");
    assert_eq!(c.change(join(&[3])), Err(CtrlError::ConfigsFull { max: 5 }));
}

fn apply(c: &mut ControllerStateMachine, index: u64, command: &Command) -> Outcome {
    let out = c.apply(index, &command.encode());
    c.check_invariants();
    out
}

#[test]
fn retried_change_answers_its_first_result() {
    let mut c = controller(10);
    let Outcome::Registered { session } = apply(&mut c, 1, &Command::Register { now_ms: 0 }) else {
        panic!("register")
    };
    let req = |seq, op| Command::Request {
        session,
        seq,
        now_ms: 1,
        op,
    };
    let first = req(1, join(&[1]));
    assert_eq!(apply(&mut c, 2, &first), Outcome::Changed { num: 1 });
    assert_eq!(apply(&mut c, 3, &first), Outcome::Changed { num: 1 });
    assert_eq!(c.latest().num, 1, "the retry made no config");
    // An error is remembered too: the retry of a refused Join does not succeed later.
    let dup = req(2, join(&[1]));
    let refused = Outcome::Err(CtrlError::GidAlreadyJoined { gid: 1 });
    assert_eq!(apply(&mut c, 4, &dup), refused);
    assert_eq!(apply(&mut c, 5, &dup), refused);
    assert_eq!(apply(&mut c, 6, &first), Outcome::Err(CtrlError::Stale));
    // A session the controller has no record of: whether its change was applied is unknown.
    let unknown = Command::Request {
        session: 99,
        seq: 1,
        now_ms: 1,
        op: join(&[2]),
    };
    assert_eq!(
        apply(&mut c, 7, &unknown),
        Outcome::Err(CtrlError::Forgotten)
    );
    assert_eq!(c.latest().num, 1, "and it was not applied");
    assert_eq!(
        c.apply(8, b"\xff\xff\xff"),
        Outcome::Err(CtrlError::Malformed)
    );
    assert_eq!(
        StateMachine::query(&c, b"\xff\xff"),
        Outcome::Err(CtrlError::Malformed)
    );
}

#[test]
fn sessions_expire_and_are_bounded() {
    let mut c = ControllerStateMachine::new(ControllerConfig {
        sessions: SessionConfig {
            ttl_ms: 100,
            sessions_max: 2,
        },
        ..ControllerConfig::with_shards(4)
    })
    .unwrap();
    for i in 1..=5 {
        apply(&mut c, i, &Command::Register { now_ms: i });
    }
    assert_eq!(c.sessions(), 2);
    let late = Command::Request {
        session: 5,
        seq: 1,
        now_ms: 500,
        op: join(&[1]),
    };
    assert_eq!(
        apply(&mut c, 6, &late),
        Outcome::Err(CtrlError::SessionExpired)
    );
}

#[test]
fn restored_controller_answers_identically() {
    let mut c = controller(16);
    apply(&mut c, 1, &Command::Register { now_ms: 5 });
    let mut index = 2;
    for round in 0..150u64 {
        let gid = round % 5 + 1;
        let op = match round % 3 {
            _ if !c.latest().groups.contains_key(&gid) => join(&[gid]),
            0 => CtrlOp::Move {
                shard: (round % 16) as u32,
                gid,
            },
            _ => leave(&[gid]),
        };
        let cmd = Command::Request {
            session: 1,
            seq: round + 1,
            now_ms: 10 + round,
            op,
        };
        apply(&mut c, index, &cmd);
        index += 1;
    }
    let snapshot = c.snapshot();
    let mut restored = controller(1);
    restored.restore(&snapshot).unwrap();
    restored.check_invariants();
    assert_eq!(restored, c);
    for num in 0..=c.latest().num + 1 {
        let q = Query { num: Some(num) }.encode();
        assert_eq!(
            StateMachine::query(&restored, &q),
            StateMachine::query(&c, &q)
        );
    }
    // Both answer the same retry and the same next change.
    let retry = Command::Request {
        session: 1,
        seq: 150,
        now_ms: 1000,
        op: join(&[1]),
    };
    let next = Command::Request {
        session: 1,
        seq: 151,
        now_ms: 1000,
        op: join(&[9]),
    };
    for cmd in [retry, next] {
        assert_eq!(
            apply(&mut restored, index, &cmd),
            apply(&mut c, index, &cmd)
        );
        index += 1;
    }
    assert_eq!(restored.snapshot(), c.snapshot());
}

#[test]
fn restore_rejects_garbage_and_keeps_state() {
    let mut c = controller(8);
    c.change(join(&[1])).unwrap();
    let before = c.clone();
    assert!(c.restore(b"not a snapshot").is_err());
    assert_eq!(c, before);
    // A well-formed snapshot that breaks an invariant (a shard served by no group).
    let mut other = controller(8);
    other.change(join(&[2])).unwrap();
    let mut bytes = other.snapshot().to_vec();
    // Flip the first occurrence of gid 2 in the latest shard list to 3 (not a group).
    let pos = bytes
        .windows(8)
        .position(|w| w == [2; 8])
        .expect("eight shards of gid 2");
    bytes[pos] = 3;
    let err = c.restore(&bytes).unwrap_err();
    assert!(err.contains("invariant"), "{err}");
    assert_eq!(c, before);
}

#[test]
fn rejoined_group_keeps_its_old_addresses_in_old_configs() {
    let mut c = controller(4);
    c.change(join(&[1])).unwrap();
    c.change(leave(&[1])).unwrap();
    let moved = CtrlOp::Join {
        groups: BTreeMap::from([(1, vec!["new-home:1".to_string()])]),
    };
    c.change(moved).unwrap();
    assert_eq!(c.query(Some(1)).groups[&1], addrs(1));
    assert!(c.query(Some(2)).groups.is_empty());
    assert_eq!(c.query(Some(3)).groups[&1], vec!["new-home:1".to_string()]);
}

/// Addresses are stored once per Join, not once per config or checkpoint: many configs after
/// one large Join cost little.
#[test]
fn addresses_are_stored_once_per_join() {
    let mut c = controller(256);
    let big = |g: Gid| {
        (0..9)
            .map(|i| format!("{g:0>3}-{i}-{}", "x".repeat(200)))
            .collect()
    };
    let groups: BTreeMap<Gid, Vec<String>> = (1..=100).map(|g| (g, big(g))).collect();
    let address_bytes: usize = groups.values().flatten().map(|a| a.len()).sum();
    c.change(CtrlOp::Join { groups }).unwrap();
    for i in 0..(4 * CHECKPOINT_EVERY) {
        let shard = (i % 256) as u32;
        c.change(CtrlOp::Move {
            shard,
            gid: i % 100 + 1,
        })
        .unwrap();
    }
    let snapshot = c.snapshot().len();
    // The latest config and the address table: two copies, plus a few KB of changes.
    assert!(
        snapshot < 2 * address_bytes + 64 * 1024,
        "snapshot {snapshot} bytes for {address_bytes} bytes of addresses"
    );
    assert_eq!(c.query(Some(200)).groups.len(), 100);
}

/// The largest configuration the default bounds allow encodes within the estimate, which fits
/// a client frame; bounds that would not fit are refused.
#[test]
fn largest_config_fits_a_client_frame() {
    let config = ControllerConfig::default();
    config.validate().unwrap();
    let mut c = ControllerStateMachine::new(config).unwrap();
    let addr = |g: Gid, i: usize| format!("{g:0>4}{i}{}", "x".repeat(config.addr_bytes_max - 5));
    let groups: BTreeMap<Gid, Vec<String>> = (0..config.groups_max as Gid)
        .map(|g| (u64::MAX - g, (0..9).map(|i| addr(g, i)).collect()))
        .collect();
    c.change(CtrlOp::Join { groups }).unwrap();
    let encoded = postcard::to_allocvec(&c.query(None)).unwrap().len();
    assert!(encoded <= config.config_bytes_max(), "{encoded} > estimate");
    assert!(encoded <= raftkv_kv::protocol::CLIENT_FRAME_BYTES_MAX);
    let too_big = ControllerConfig {
        groups_max: 10_000,
        ..ControllerConfig::default()
    };
    assert!(matches!(
        ControllerStateMachine::new(too_big),
        Err(CtrlError::ConfigTooLarge { .. })
    ));
}
