//! Property tests of rebalancing, through the controller: after every Join and Leave the
//! assignment is even, complete and minimal (against a brute-force oracle), and the same
//! operations give the same configs whatever order the join maps were built in.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use raftkv_shard::rebalance::{moves, rebalance};
use raftkv_shard::state::CtrlOp;
use raftkv_shard::{ControllerConfig, ControllerStateMachine, Gid, ShardConfig};

/// A test operation: gids are 1..=12.
#[derive(Clone, Debug)]
enum TestOp {
    Join(Vec<Gid>),
    Leave(Vec<Gid>),
    Move(u32, Gid),
}

fn test_op() -> impl Strategy<Value = TestOp> {
    prop_oneof![
        3 => prop::collection::vec(1..=12u64, 1..4).prop_map(TestOp::Join),
        2 => prop::collection::vec(1..=12u64, 1..3).prop_map(TestOp::Leave),
        1 => (0..40u32, 1..=12u64).prop_map(|(s, g)| TestOp::Move(s, g)),
    ]
}

/// The op for the controller: join maps built inserting gids in the given order, or reversed.
fn to_op(op: &TestOp, reversed: bool) -> CtrlOp {
    match op {
        TestOp::Join(gids) => {
            let mut groups = BTreeMap::new();
            let order: Vec<&Gid> = if reversed {
                gids.iter().rev().collect()
            } else {
                gids.iter().collect()
            };
            for &g in order {
                groups.insert(g, vec![format!("g{g}:1")]);
            }
            CtrlOp::Join { groups }
        }
        TestOp::Leave(gids) => CtrlOp::Leave { gids: gids.clone() },
        &TestOp::Move(shard, gid) => CtrlOp::Move { shard, gid },
    }
}

/// The fewest moves any even assignment needs: `n` minus the most shards that can stay, trying
/// every choice of the groups that get the extra shard.
fn fewest_moves(before: &[Gid], groups: &BTreeSet<Gid>) -> usize {
    let n = before.len();
    if groups.is_empty() {
        return before.iter().filter(|&&g| g != 0).count();
    }
    let counts: Vec<usize> = groups
        .iter()
        .map(|g| before.iter().filter(|&b| b == g).count())
        .collect();
    let g = counts.len();
    let (base, extra) = (n / g, n % g);
    let mut best = 0;
    for mask in 0u32..(1 << g) {
        if mask.count_ones() as usize != extra {
            continue;
        }
        let kept: usize = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.min(base + usize::from(mask & (1 << i) != 0)))
            .sum();
        best = best.max(kept);
    }
    n - best
}

fn check_even(config: &ShardConfig) {
    let n = config.shards.len();
    let groups = &config.groups;
    if groups.is_empty() {
        assert!(
            config.shards.iter().all(|&g| g == 0),
            "no groups: all unassigned"
        );
        return;
    }
    assert!(
        config.shards.iter().all(|g| groups.contains_key(g)),
        "every shard is assigned to a group when any group exists: {config:?}"
    );
    let counts: Vec<usize> = groups.keys().map(|&g| config.count_of(g)).collect();
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(max - min <= 1, "uneven: {counts:?}");
    if groups.len() > n {
        assert_eq!(max, 1);
        assert_eq!(counts.iter().filter(|&&c| c == 1).count(), n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rebalancing_is_even_minimal_and_deterministic(
        shards in 1..40u32,
        ops in prop::collection::vec(test_op(), 1..40),
    ) {
        let config = ControllerConfig::with_shards(shards);
        let mut a = ControllerStateMachine::new(config).unwrap();
        let mut b = ControllerStateMachine::new(config).unwrap();
        for op in &ops {
            let before = a.latest().clone();
            let ra = a.change(to_op(op, false));
            let rb = b.change(to_op(op, true));
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a.latest(), b.latest());
            if ra.is_err() {
                prop_assert_eq!(a.latest(), &before);
                continue;
            }
            let after = a.latest();
            match op {
                TestOp::Join(_) | TestOp::Leave(_) => {
                    check_even(after);
                    let groups: BTreeSet<Gid> = after.groups.keys().copied().collect();
                    prop_assert_eq!(
                        moves(&before.shards, &after.shards),
                        fewest_moves(&before.shards, &groups),
                        "not minimal: {:?} -> {:?}", before.shards, after.shards
                    );
                }
                TestOp::Move(s, g) => {
                    prop_assert_eq!(after.shards[*s as usize], *g);
                    prop_assert!(moves(&before.shards, &after.shards) <= 1);
                }
            }
            a.check_invariants();
        }
        // Every config is still answerable, and replaying gives the same ones.
        let mut c = ControllerStateMachine::new(config).unwrap();
        for op in &ops {
            let _ = c.change(to_op(op, false));
        }
        for num in 0..=a.latest().num {
            prop_assert_eq!(a.query(Some(num)), c.query(Some(num)));
        }
    }

    /// The pure function on arbitrary assignments (gids that are gone, unassigned shards).
    #[test]
    fn rebalance_of_any_assignment_is_even_and_minimal(
        before in prop::collection::vec(0..10u64, 1..50),
        groups in prop::collection::btree_set(1..10u64, 0..10),
    ) {
        let after = rebalance(&before, &groups);
        let mut config = ShardConfig {
            num: 1,
            shards: after.clone(),
            groups: groups.iter().map(|&g| (g, vec![])).collect(),
        };
        check_even(&config);
        prop_assert_eq!(moves(&before, &after), fewest_moves(&before, &groups));
        prop_assert_eq!(rebalance(&before, &groups), after.clone());
        // Stable: rebalancing a balanced assignment moves nothing.
        config.shards = rebalance(&after, &groups);
        prop_assert_eq!(config.shards, after);
    }
}
