//! Rebalancing: the pure function that decides which group serves each shard after a Join or
//! a Leave.
//!
//! The rule, for `n` shards and `g` groups: every group gets `n / g` shards and the `n % g`
//! groups that currently hold the most shards (ties: the lower gid) get one more — so counts
//! differ by at most one, and when `g > n` the `n` groups holding the most get one each and the
//! rest none. A group keeps as many of its current shards as its target allows (it gives up its
//! highest-numbered ones first); shards of departed groups and unassigned ones are free; free
//! shards go, lowest-numbered first, to the groups below target in gid order.
//!
//! This moves as few shards as possible: a shard stays put whenever its group keeps it, and
//! handing the extra shard to the groups that hold the most maximises the shards that stay.
//! Only ordered collections are iterated, so every replica computes the same result.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Gid, ShardId};

/// The assignment after rebalancing `shards` (shard → gid) over `groups`. Shards are all
/// unassigned (0) when there are no groups.
pub fn rebalance(shards: &[Gid], groups: &BTreeSet<Gid>) -> Vec<Gid> {
    let n = shards.len();
    if groups.is_empty() {
        return vec![0; n];
    }
    let mut owned: BTreeMap<Gid, Vec<ShardId>> = groups.iter().map(|&g| (g, Vec::new())).collect();
    let mut free: Vec<ShardId> = Vec::new();
    for (shard, gid) in shards.iter().enumerate() {
        let shard = ShardId::try_from(shard).expect("shard counts fit in a u32");
        match owned.get_mut(gid) {
            Some(list) => list.push(shard),
            None => free.push(shard),
        }
    }
    let targets = targets(n, &owned);
    for (gid, list) in owned.iter_mut() {
        // Ascending, so popping gives up the highest-numbered shards first.
        while list.len() > targets[gid] {
            free.extend(list.pop());
        }
    }
    free.sort_unstable();
    let mut free = free.into_iter();
    let mut out = shards.to_vec();
    for (gid, list) in &owned {
        for _ in list.len()..targets[gid] {
            let shard = free
                .next()
                .expect("targets sum to the shard count: there is a free shard for each gap");
            out[shard as usize] = *gid;
        }
    }
    assert!(free.next().is_none(), "every free shard is assigned");
    out
}

/// Each group's shard count after rebalancing: `n / g`, plus one for the `n % g` groups that
/// hold the most now (ties: the lower gid).
fn targets(n: usize, owned: &BTreeMap<Gid, Vec<ShardId>>) -> BTreeMap<Gid, usize> {
    let g = owned.len();
    let (base, extra) = (n / g, n % g);
    let mut order: Vec<(usize, Gid)> = owned.iter().map(|(&gid, l)| (l.len(), gid)).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order
        .iter()
        .enumerate()
        .map(|(rank, &(_, gid))| (gid, base + usize::from(rank < extra)))
        .collect()
}

/// How many shards changed group between two assignments of the same length.
pub fn moves(before: &[Gid], after: &[Gid]) -> usize {
    before.iter().zip(after).filter(|(a, b)| a != b).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(gids: &[Gid]) -> BTreeSet<Gid> {
        gids.iter().copied().collect()
    }

    #[test]
    fn first_join_takes_every_shard() {
        assert_eq!(rebalance(&[0; 4], &set(&[7])), vec![7; 4]);
    }

    #[test]
    fn second_join_takes_half_from_the_top() {
        assert_eq!(rebalance(&[1; 4], &set(&[1, 2])), vec![1, 1, 2, 2]);
    }

    #[test]
    fn leave_hands_shards_to_the_smallest_gids_below_target() {
        let before = vec![1, 1, 2, 2, 3, 3];
        assert_eq!(rebalance(&before, &set(&[1, 3])), vec![1, 1, 1, 3, 3, 3]);
    }

    #[test]
    fn extra_shard_stays_with_the_group_holding_most() {
        // 5 shards, groups 1 (3 shards) and 2 (2 shards): nothing moves.
        let before = vec![2, 1, 2, 1, 1];
        assert_eq!(rebalance(&before, &set(&[1, 2])), before);
    }

    #[test]
    fn more_groups_than_shards_leaves_some_groups_without() {
        let after = rebalance(&[1, 2], &set(&[1, 2, 3, 4]));
        assert_eq!(after, vec![1, 2]);
        assert_eq!(rebalance(&[0, 0], &set(&[5, 3, 4])), vec![3, 4]);
    }

    #[test]
    fn no_groups_unassigns_everything() {
        assert_eq!(rebalance(&[1, 2, 3], &set(&[])), vec![0, 0, 0]);
    }
}
