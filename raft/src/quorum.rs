//! Quorum arithmetic for simple and joint configurations (Raft §6, thesis §4.3): the committed
//! index of a set of acknowledged indexes, and vote tallies. Every quorum question the core asks
//! (commit, elections, ReadIndex, CheckQuorum) is answered here.
//!
//! A simple configuration is a set of voters; its quorums are its majorities. A joint
//! configuration C_old,new has two sets, and a quorum is a majority of *each*. An empty set
//! agrees to everything (etcd's convention), so that a simple configuration is a joint one with
//! an empty outgoing half.

use crate::types::{Index, NodeId};
use std::collections::BTreeSet;

/// The size of a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Raft §5.3/§5.4.2: the highest index that a majority of `voters` hold, given each voter's
/// acknowledged index (the leader's own durable index included). `Index::MAX` for no voters.
pub fn committed_index(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    let mut matches: Vec<Index> = voters.iter().map(|id| acked(*id)).collect();
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[majority(matches.len()) - 1]
}

/// Raft §6: in C_old,new an index is committed once a majority of each half holds it.
pub fn joint_committed_index(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    acked: impl Fn(NodeId) -> Index,
) -> Index {
    committed_index(incoming, &acked).min(committed_index(outgoing, &acked))
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies the votes of `voters`: `vote(id)` is `Some(granted)` once `id` answered. An empty
/// set of voters is won.
pub fn vote_result(voters: &BTreeSet<NodeId>, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match vote(*id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let q = majority(voters.len());
    if granted >= q {
        VoteResult::Won
    } else if granted + missing >= q {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Raft §6: an election in C_old,new is won with a majority of each half, and lost as soon as
/// either half is lost.
pub fn joint_vote_result(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    vote: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    match (vote_result(incoming, &vote), vote_result(outgoing, &vote)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A joint configuration over ids 1..=7 and each id's answer, drawn at random: a half is a
    /// bitmask of ids (the outgoing half may be empty: a simple configuration).
    fn config() -> impl Strategy<Value = (BTreeSet<NodeId>, BTreeSet<NodeId>)> {
        let set = |mask: u8| (1..=7u64).filter(|i| mask & (1 << (i - 1)) != 0).collect();
        (1u8..128, 0u8..128).prop_map(move |(a, b)| (set(a), set(b)))
    }

    /// The dumb oracle: a set of ids is a quorum if it holds more than half of each half.
    fn is_quorum(inc: &BTreeSet<NodeId>, out: &BTreeSet<NodeId>, ids: &BTreeSet<NodeId>) -> bool {
        let half = |s: &BTreeSet<NodeId>| s.is_empty() || 2 * s.intersection(ids).count() > s.len();
        half(inc) && half(out)
    }

    proptest! {
        /// The committed index is the largest i such that the ids holding i form a quorum.
        #[test]
        fn committed_index_matches_oracle(
            (inc, out) in config(),
            acks in proptest::collection::vec(0u64..20, 7),
        ) {
            let acked = |id: NodeId| acks[id as usize - 1];
            let oracle = (0..20u64)
                .filter(|i| {
                    let holders = (1..=7).filter(|id| acked(*id) >= *i).collect();
                    is_quorum(&inc, &out, &holders)
                })
                .max()
                .unwrap_or(0);
            prop_assert_eq!(joint_committed_index(&inc, &out, acked), oracle);
        }

        /// Won iff the granted votes are a quorum; lost iff not even granted plus unanswered
        /// votes could be one; pending otherwise.
        #[test]
        fn vote_result_matches_oracle(
            (inc, out) in config(),
            answers in proptest::collection::vec(0u8..3, 7),
        ) {
            let answers: BTreeMap<NodeId, Option<bool>> = (1..=7u64)
                .map(|id| (id, [None, Some(true), Some(false)][answers[id as usize - 1] as usize]))
                .collect();
            let ids_where = |f: &dyn Fn(Option<bool>) -> bool| {
                answers.iter().filter(|(_, a)| f(**a)).map(|(id, _)| *id).collect::<BTreeSet<_>>()
            };
            let granted = ids_where(&|a| a == Some(true));
            let possible = ids_where(&|a| a != Some(false));
            let oracle = if is_quorum(&inc, &out, &granted) {
                VoteResult::Won
            } else if is_quorum(&inc, &out, &possible) {
                VoteResult::Pending
            } else {
                VoteResult::Lost
            };
            prop_assert_eq!(joint_vote_result(&inc, &out, |id| answers[&id]), oracle);
        }
    }

    #[test]
    fn votes_decide_only_on_a_majority() {
        let three = BTreeSet::from([1, 2, 3]);
        let tally = |g: &[NodeId], r: &[NodeId]| {
            vote_result(&three, |id| {
                g.contains(&id)
                    .then_some(true)
                    .or(r.contains(&id).then_some(false))
            })
        };
        assert_eq!(tally(&[1, 2], &[]), VoteResult::Won);
        assert_eq!(tally(&[1], &[2]), VoteResult::Pending);
        assert_eq!(tally(&[1], &[2, 3]), VoteResult::Lost);
        let four = BTreeSet::from([1, 2, 3, 4]);
        assert_eq!(
            vote_result(&four, |id| Some(id <= 2)),
            VoteResult::Lost,
            "2 of 4 is not a majority"
        );
        assert_eq!(
            vote_result(&BTreeSet::from([1]), |_| Some(true)),
            VoteResult::Won
        );
    }

    #[test]
    fn a_joint_election_is_lost_when_either_half_is_lost() {
        let old = BTreeSet::from([1, 2, 3]);
        let new = BTreeSet::from([3, 4, 5]);
        // 1 and 2 grant (C_old won), 4 and 5 refuse (C_new lost).
        let r = joint_vote_result(&new, &old, |id| Some(id <= 2));
        assert_eq!(r, VoteResult::Lost);
    }
}
