//! Cluster membership as data (thesis §4): who votes, who only learns, and where members can
//! be reached. A [`Membership`] travels in the log as [`crate::Payload::Membership`] and in
//! snapshots; the core carries addresses but never interprets them.
//!
//! A change request ([`MemberChange`]s, several at once) is turned into the next configuration
//! by [`Membership::apply_changes`]: when the set of voters changes, the result is the joint
//! configuration C_old,new (Raft §6, thesis §4.3), which [`Membership::leave_joint`] later turns
//! into C_new; a change that leaves the voters as they are (learners, addresses) takes effect
//! directly, since every quorum stays the same.

use crate::quorum::{self, VoteResult};
use crate::types::{Index, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// Where a member can be reached. Opaque to the core: the driver hands `peer_addr` to the
/// transport ([`crate::Transport::set_peers`]) and the application reads `client_addr`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// The address other nodes reach this one at (Raft traffic).
    pub peer_addr: String,
    /// The address clients reach this one at.
    pub client_addr: String,
}

impl MemberAddrs {
    pub fn new(peer_addr: impl Into<String>, client_addr: impl Into<String>) -> Self {
        Self {
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
        }
    }

    fn is_empty(&self) -> bool {
        self.peer_addr.is_empty() && self.client_addr.is_empty()
    }
}

/// A cluster configuration: voters, the outgoing voters of a joint configuration, learners and
/// addresses.
///
/// Invariants (checked by [`Membership::validate`]): no id is 0; learners are neither voters
/// nor outgoing voters; `auto_promote` holds only learners; addresses are only kept for
/// members. A configuration is *joint* (C_old,new) while `voters_outgoing` is non-empty.
///
/// The encoding (serde, postcard in storage) is part of the stored format: fields are only
/// ever added in a new `Payload` variant, never here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    voters: BTreeSet<NodeId>,
    voters_outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    auto_promote: BTreeSet<NodeId>,
    addrs: BTreeMap<NodeId, MemberAddrs>,
}

/// One change of a change request; a request holds several, applied together.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new voter at once (through a joint configuration). Prefer [`MemberChange::AddLearner`]
    /// with `auto_promote` for an empty node: a voter that must first catch up can stall
    /// commits (thesis §4.2.1).
    AddVoter { id: NodeId, addrs: MemberAddrs },
    /// A new learner (thesis §4.2.1): it receives the log, never votes or counts. With
    /// `auto_promote`, the leader promotes it by itself once it is caught up (within
    /// [`crate::Config::promote_lag_entries_max`]).
    AddLearner {
        id: NodeId,
        addrs: MemberAddrs,
        auto_promote: bool,
    },
    /// A learner becomes a voter (through a joint configuration).
    Promote { id: NodeId },
    /// A voter (through a joint configuration) or a learner leaves the cluster.
    Remove { id: NodeId },
    /// A member's addresses change (no quorum changes).
    UpdateAddrs { id: NodeId, addrs: MemberAddrs },
}

impl MemberChange {
    pub fn id(&self) -> NodeId {
        match self {
            MemberChange::AddVoter { id, .. }
            | MemberChange::AddLearner { id, .. }
            | MemberChange::Promote { id }
            | MemberChange::Remove { id }
            | MemberChange::UpdateAddrs { id, .. } => *id,
        }
    }
}

/// Why a membership change or a leadership transfer was refused. Expected conditions: each
/// message says what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// Only the leader changes the membership or transfers leadership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// thesis §4.1: one change at a time. The previous change is not committed yet, or the
    /// cluster is still in its joint configuration; retry once it has settled.
    #[error("a membership change is already in progress; retry once it has committed")]
    ChangeInProgress,
    /// thesis §4.1 (the 2015 raft-dev bug): a new leader must commit an entry of its own term
    /// before it changes the membership; retry shortly.
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    NotCommittedInTerm,
    /// thesis §3.10: while leadership is being handed over, no change starts.
    #[error("a leadership transfer to node {target} is in progress; retry shortly")]
    TransferInProgress { target: NodeId },
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is already a member")]
    AlreadyAMember(NodeId),
    #[error("node {0} is not a learner, so it cannot be promoted")]
    NotALearner(NodeId),
    /// Leadership can only go to a voter of the (incoming) configuration.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error("node id 0 is not allowed")]
    InvalidId,
    #[error("node {0} appears twice in one change request")]
    DuplicateId(NodeId),
    #[error("the change request is empty")]
    EmptyChange,
    #[error("the change would leave no voter")]
    NoVotersLeft,
    /// The voters of the new configuration that are reachable and up to date would not form
    /// a quorum of it: the cluster could not commit anything until more of them caught up.
    #[error(
        "only {healthy} of the {voters} voters of the new configuration are reachable and up \
         to date, not a quorum: bring more of them up first, or change fewer at once"
    )]
    WouldLoseQuorum { healthy: usize, voters: usize },
}

impl Membership {
    /// A simple configuration of `voters` with no addresses (how [`crate::Config::voters`]
    /// bootstraps a fresh log).
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The voters (of C_new, in a joint configuration).
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The voters of C_old while the configuration is joint; empty otherwise.
    pub fn voters_outgoing(&self) -> &BTreeSet<NodeId> {
        &self.voters_outgoing
    }

    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Learners the leader promotes once they are caught up.
    pub fn auto_promote(&self) -> &BTreeSet<NodeId> {
        &self.auto_promote
    }

    pub fn addrs(&self) -> &BTreeMap<NodeId, MemberAddrs> {
        &self.addrs
    }

    /// True while this is a joint configuration C_old,new.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// May vote and campaign: a voter of either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member: voters of both halves and learners, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.voters_outgoing);
        all.extend(&self.learners);
        all
    }

    /// Every member once, without allocating (voters, outgoing voters, learners).
    pub(crate) fn members_iter(&self) -> impl Iterator<Item = NodeId> + Clone + '_ {
        let outgoing = self.voters_outgoing.iter().copied();
        self.voters
            .iter()
            .copied()
            .chain(outgoing.filter(|id| !self.voters.contains(id)))
            .chain(self.learners.iter().copied())
    }

    /// Every voter of either half, in id order.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.voters_outgoing).copied().collect()
    }

    /// Peer addresses of the members that have one.
    pub fn peer_addrs(&self) -> BTreeMap<NodeId, String> {
        self.addrs
            .iter()
            .filter(|(_, a)| !a.peer_addr.is_empty())
            .map(|(id, a)| (*id, a.peer_addr.clone()))
            .collect()
    }

    /// Raft §6: the highest index held by a quorum: a majority of each half.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Index) -> Index {
        quorum::joint_committed_index(&self.voters, &self.voters_outgoing, acked)
    }

    /// Raft §6: an election needs a majority of each half.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        quorum::joint_vote_result(&self.voters, &self.voters_outgoing, vote)
    }

    /// True if `ids` holds a quorum (a majority of each half).
    pub fn is_quorum(&self, ids: &BTreeSet<NodeId>) -> bool {
        self.vote_result(|id| Some(ids.contains(&id))) == VoteResult::Won
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<(), String> {
        if self.contains(0) {
            return Err("node id 0 in the membership".into());
        }
        if let Some(id) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Err(format!("n{id} is both a learner and a voter"));
        }
        if let Some(id) = self.auto_promote.difference(&self.learners).next() {
            return Err(format!("n{id} is to be promoted but is not a learner"));
        }
        if let Some(id) = self.addrs.keys().find(|id| !self.contains(**id)) {
            return Err(format!("addresses for n{id}, not a member"));
        }
        if self.is_joint() && self.voters.is_empty() {
            return Err("a joint configuration without incoming voters".into());
        }
        Ok(())
    }

    /// The configuration that `changes` lead to from this one (which must not be joint).
    /// When the voters change, the result is the joint configuration C_old,new (Raft §6);
    /// otherwise it is the new configuration itself.
    pub fn apply_changes(&self, changes: &[MemberChange]) -> Result<Membership, MembershipError> {
        if self.is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        if changes.is_empty() {
            return Err(MembershipError::EmptyChange);
        }
        let mut seen = BTreeSet::new();
        let mut next = self.clone();
        for change in changes {
            let id = change.id();
            if id == 0 {
                return Err(MembershipError::InvalidId);
            }
            if !seen.insert(id) {
                return Err(MembershipError::DuplicateId(id));
            }
            match change {
                MemberChange::AddVoter { addrs, .. } => {
                    if next.contains(id) {
                        return Err(MembershipError::AlreadyAMember(id));
                    }
                    next.voters.insert(id);
                    next.set_addrs(id, addrs);
                }
                MemberChange::AddLearner {
                    addrs,
                    auto_promote,
                    ..
                } => {
                    if next.contains(id) {
                        return Err(MembershipError::AlreadyAMember(id));
                    }
                    next.learners.insert(id);
                    if *auto_promote {
                        next.auto_promote.insert(id);
                    }
                    next.set_addrs(id, addrs);
                }
                MemberChange::Promote { .. } => {
                    if !next.learners.remove(&id) {
                        return Err(match next.contains(id) {
                            true => MembershipError::NotALearner(id),
                            false => MembershipError::NotAMember(id),
                        });
                    }
                    next.auto_promote.remove(&id);
                    next.voters.insert(id);
                }
                MemberChange::Remove { .. } => {
                    if !next.contains(id) {
                        return Err(MembershipError::NotAMember(id));
                    }
                    next.voters.remove(&id);
                    next.learners.remove(&id);
                    next.auto_promote.remove(&id);
                    // A removed voter stays reachable while it is an outgoing voter.
                    if !self.voters.contains(&id) {
                        next.addrs.remove(&id);
                    }
                }
                MemberChange::UpdateAddrs { addrs, .. } => {
                    if !next.contains(id) {
                        return Err(MembershipError::NotAMember(id));
                    }
                    next.set_addrs(id, addrs);
                }
            }
        }
        if next.voters.is_empty() {
            return Err(MembershipError::NoVotersLeft);
        }
        /// Raft §6: when the voters change, the cluster first switches to C_old,new, in which
        /// agreement needs majorities of both C_old and C_new.
        if next.voters != self.voters {
            next.voters_outgoing = self.voters.clone();
        }
        debug_assert!(self.validate().is_err() || next.validate().is_ok());
        Ok(next)
    }

    /// Raft §6: C_new, once C_old,new is committed: the outgoing voters (and the addresses of
    /// those no longer members) are dropped.
    pub fn leave_joint(&self) -> Membership {
        let mut next = self.clone();
        next.voters_outgoing.clear();
        let members = next.members();
        next.addrs.retain(|id, _| members.contains(id));
        next
    }

    fn set_addrs(&mut self, id: NodeId, addrs: &MemberAddrs) {
        if addrs.is_empty() {
            self.addrs.remove(&id);
        } else {
            self.addrs.insert(id, addrs.clone());
        }
    }

    /// An estimate of the encoded size, for the byte bounds on entries.
    pub fn size_bytes(&self) -> usize {
        let ids = self.voters.len()
            + self.voters_outgoing.len()
            + self.learners.len()
            + self.auto_promote.len();
        let addrs: usize = self
            .addrs
            .values()
            .map(|a| 16 + a.peer_addr.len() + a.client_addr.len())
            .sum();
        8 * ids + addrs
    }
}

impl fmt::Display for Membership {
    /// `voters=[1 2 3]`, then `outgoing=[..]`, `learners=[..]` and `promote=[..]` when not empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: &BTreeSet<NodeId>| {
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(f, "voters=[{}]", list(&self.voters))?;
        if self.is_joint() {
            write!(f, " outgoing=[{}]", list(&self.voters_outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners=[{}]", list(&self.learners))?;
        }
        if !self.auto_promote.is_empty() {
            write!(f, " promote=[{}]", list(&self.auto_promote))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(id: NodeId) -> MemberAddrs {
        MemberAddrs::new(format!("p{id}"), format!("c{id}"))
    }

    #[test]
    fn adding_a_voter_gives_a_joint_configuration_and_leaving_it_gives_c_new() {
        let old = Membership::from_voters([1, 2, 3]);
        let joint = old
            .apply_changes(&[MemberChange::AddVoter {
                id: 4,
                addrs: addrs(4),
            }])
            .unwrap();
        assert!(joint.is_joint());
        assert_eq!(joint.to_string(), "voters=[1 2 3 4] outgoing=[1 2 3]");
        let new = joint.leave_joint();
        assert_eq!(new.to_string(), "voters=[1 2 3 4]");
        assert_eq!(new.addrs().get(&4), Some(&addrs(4)));
    }

    #[test]
    fn learner_changes_take_effect_without_a_joint_configuration() {
        let old = Membership::from_voters([1, 2, 3]);
        let next = old
            .apply_changes(&[MemberChange::AddLearner {
                id: 4,
                addrs: addrs(4),
                auto_promote: true,
            }])
            .unwrap();
        assert!(!next.is_joint());
        assert_eq!(next.to_string(), "voters=[1 2 3] learners=[4] promote=[4]");
        let promoted = next
            .apply_changes(&[MemberChange::Promote { id: 4 }])
            .unwrap();
        assert_eq!(promoted.to_string(), "voters=[1 2 3 4] outgoing=[1 2 3]");
    }

    #[test]
    fn removed_voters_keep_their_addresses_until_the_joint_configuration_is_left() {
        let mut old = Membership::from_voters([1, 2, 3]);
        old.addrs.insert(3, addrs(3));
        let joint = old
            .apply_changes(&[MemberChange::Remove { id: 3 }])
            .unwrap();
        assert_eq!(joint.addrs().get(&3), Some(&addrs(3)));
        assert!(joint.is_voter(3));
        let new = joint.leave_joint();
        assert!(!new.contains(3));
        assert!(new.addrs().is_empty());
    }

    #[test]
    fn invalid_requests_are_refused_with_what_is_wrong() {
        let m = Membership::from_voters([1, 2, 3]);
        let remove = |id| MemberChange::Remove { id };
        assert_eq!(m.apply_changes(&[]), Err(MembershipError::EmptyChange));
        assert_eq!(
            m.apply_changes(&[remove(9)]),
            Err(MembershipError::NotAMember(9))
        );
        assert_eq!(
            m.apply_changes(&[remove(1), remove(1)]),
            Err(MembershipError::DuplicateId(1))
        );
        assert_eq!(
            m.apply_changes(&[remove(1), remove(2), remove(3)]),
            Err(MembershipError::NoVotersLeft)
        );
        assert_eq!(
            m.apply_changes(&[MemberChange::Promote { id: 2 }]),
            Err(MembershipError::NotALearner(2))
        );
        let joint = m.apply_changes(&[remove(3)]).unwrap();
        assert_eq!(
            joint.apply_changes(&[remove(2)]),
            Err(MembershipError::ChangeInProgress)
        );
    }

    #[test]
    fn a_joint_quorum_needs_a_majority_of_each_half() {
        let m = Membership::from_voters([1, 2, 3])
            .apply_changes(&[
                MemberChange::Remove { id: 1 },
                MemberChange::Remove { id: 2 },
                MemberChange::AddVoter {
                    id: 4,
                    addrs: MemberAddrs::default(),
                },
            ])
            .unwrap();
        // C_new = {3, 4}, C_old = {1, 2, 3}.
        assert!(!m.is_quorum(&BTreeSet::from([1, 2])));
        assert!(!m.is_quorum(&BTreeSet::from([3, 4])));
        assert!(m.is_quorum(&BTreeSet::from([1, 3, 4])));
        let acked = |id| [0, 5, 6, 7, 2][id as usize];
        // C_old: 6 (ids 1..3 hold 5, 6, 7); C_new: 2 (ids 3, 4 hold 7, 2).
        assert_eq!(m.committed_index(acked), 2);
    }
}
