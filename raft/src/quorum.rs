//! Majority arithmetic: the committed index of a set of match indexes, and vote tallies.

use crate::types::Index;

/// The size of a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Raft §5.3/§5.4.2: the highest index that a majority of voters hold, given each voter's match
/// index (the leader's own durable index included).
pub fn committed_index(mut matches: Vec<Index>) -> Index {
    if matches.is_empty() {
        return 0;
    }
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[majority(matches.len()) - 1]
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `granted` and `rejected` votes out of `n` voters.
pub fn vote_result(n: usize, granted: usize, rejected: usize) -> VoteResult {
    if granted >= majority(n) {
        VoteResult::Won
    } else if rejected >= majority(n) || n - rejected < majority(n) {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The committed index against a dumb oracle: the largest i that a majority has.
        #[test]
        fn committed_index_matches_oracle(matches in proptest::collection::vec(0u64..20, 1..8)) {
            let n = matches.len();
            let oracle = (0..20u64)
                .filter(|i| matches.iter().filter(|m| **m >= *i).count() >= majority(n))
                .max()
                .unwrap_or(0);
            prop_assert_eq!(committed_index(matches), oracle);
        }
    }

    #[test]
    fn votes_decide_only_on_a_majority() {
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 1), VoteResult::Pending);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 2), VoteResult::Lost);
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
    }
}
