//! Membership changes (Raft §6, thesis §4): proposing a change, joint consensus, learners'
//! promotion, and what a leader does once a configuration commits.
//!
//! The configuration in effect on a node is the latest one in its log, committed or not
//! (thesis §4.1); `log.rs` keeps the history since the snapshot so that a truncation rolls it
//! back. A change that alters the voters goes through C_old,new; once that commits the leader
//! appends C_new by itself, and a leader outside C_new steps down once C_new commits.

use crate::membership::{MemberChange, Membership, MembershipError};
use crate::message::Body;
use crate::progress::{Progress, ReplicationState};
use crate::raft::{Raft, RoleState};
use crate::types::{Entry, Index, NodeId, Payload};
use std::collections::{BTreeMap, BTreeSet};

impl Raft {
    /// thesis §4.1: the configuration in effect on this node (the latest in its log).
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// The configuration in effect at `index`, if this node can tell (`index` is at or after
    /// its snapshot point, and within its log).
    pub fn membership_at(&self, index: Index) -> Option<&Membership> {
        (index >= self.log.snapshot().index && index <= self.log.last_index())
            .then(|| self.log.membership_at(index))
    }

    /// The index of the entry holding the configuration in effect (or the snapshot point).
    pub fn membership_index(&self) -> Index {
        self.log.config_index()
    }

    /// True if this node may campaign: a voter of either half of the configuration in effect,
    /// or of the committed one while a configuration that removes it is not committed yet.
    /// thesis §4.2.2: "a server that is not part of its own latest configuration should still
    /// start new elections, as it might still be needed until the C_new entry is committed";
    /// its own vote then does not count (the tally uses the latest configuration). Chaos seed
    /// 16668: a leader removing itself had the only complete log and stepped down (CheckQuorum)
    /// before C_new committed; the remaining voter needed its vote, and could not get it.
    /// thesis §4.2.1: never a learner.
    pub(crate) fn promotable(&self) -> bool {
        let id = self.config.id;
        self.log.membership().is_voter(id)
            || (self.log.config_index() > self.commit
                && self.log.membership_at(self.commit).is_voter(id))
    }

    /// True if this node's log says it is no longer a member (a node that is joining, with no
    /// configuration yet, is not "removed"). It stops campaigning once it knows the
    /// configuration that removed it is committed.
    pub fn is_removed(&self) -> bool {
        let m = self.log.membership();
        !m.voters().is_empty() && !m.contains(self.config.id)
    }

    /// Proposes a membership change (several changes at once are fine). Returns the index of
    /// the configuration entry. When the voters change, that entry is C_old,new (Raft §6) and
    /// the leader appends C_new by itself once it commits; the change is complete when a
    /// configuration that is not joint is committed.
    ///
    /// Refused unless this node leads, has committed an entry of its own term, has no change
    /// pending and is not transferring leadership, or if the voters of the new configuration
    /// that are reachable and up to date would not form a quorum of it.
    pub fn propose_change(&mut self, changes: &[MemberChange]) -> Result<Index, MembershipError> {
        let leader_hint = self.leader;
        let active_ticks = self.config.election_timeout_ticks_min;
        let id = self.config.id;
        let RoleState::Leader(l) = &self.role else {
            return Err(MembershipError::NotLeader { leader_hint });
        };
        if let Some(t) = &l.transfer {
            return Err(MembershipError::TransferInProgress { target: t.target });
        }
        /// thesis §4.1 (the single-server bug, raft-dev 2015): a leader may change the
        /// configuration only once an entry of its own term is committed, so that no
        /// configuration an earlier leader appended and it overwrote can still commit.
        if self.commit < l.term_start {
            return Err(MembershipError::NotCommittedInTerm);
        }
        /// thesis §4.1: one change at a time: the previous configuration must be committed,
        /// and a joint one left.
        let current = self.log.membership();
        if self.log.config_index() > self.commit || current.is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        let next = current.apply_changes(changes)?;
        if next.voters() != current.voters() {
            let healthy = next
                .voters()
                .iter()
                .filter(|v| {
                    **v == id
                        || l.progress.get(v).is_some_and(|p| {
                            p.match_index >= l.term_start && p.active(l.ticks, active_ticks)
                        })
                })
                .count();
            if 2 * healthy <= next.voters().len() {
                return Err(MembershipError::WouldLoseQuorum {
                    healthy,
                    voters: next.voters().len(),
                });
            }
        }
        let index = self.append_membership(next);
        self.debug_check();
        Ok(index)
    }

    /// Appends a configuration as leader; it takes effect at once (thesis §4.1).
    fn append_membership(&mut self, membership: Membership) -> Index {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            payload: Payload::Membership(Box::new(membership)),
        };
        if let RoleState::Leader(l) = &mut self.role {
            l.uncommitted_bytes += entry.payload.len_bytes();
            l.replicate_pending = true;
        }
        self.log.push(entry);
        self.sync_progress();
        index
    }

    /// The nodes a leader replicates to: the other members of the configuration in effect and
    /// of the one before it. A node the latest change removed keeps receiving the log until
    /// the next change, so that it learns its removal is committed and stops campaigning.
    pub(crate) fn replication_targets(&self) -> BTreeSet<NodeId> {
        let mut members = self.log.membership().members();
        let index = self.log.config_index();
        if index > self.log.snapshot().index {
            members.extend(self.log.membership_at(index - 1).members());
        }
        members.remove(&self.config.id);
        members
    }

    /// The nodes this one may exchange messages with (the members of the configuration in
    /// effect and of the one before it), with the peer address the configuration records for
    /// each, or `""` (see [`crate::Transport::set_peers`]).
    pub fn peer_addrs(&self) -> BTreeMap<NodeId, String> {
        let mut addrs = self.log.membership().addrs().clone();
        let index = self.log.config_index();
        if index > self.log.snapshot().index {
            for (id, a) in self.log.membership_at(index - 1).addrs() {
                addrs.entry(*id).or_insert_with(|| a.clone());
            }
        }
        self.replication_targets()
            .into_iter()
            .map(|id| {
                (
                    id,
                    addrs
                        .get(&id)
                        .map_or(String::new(), |a| a.peer_addr.clone()),
                )
            })
            .collect()
    }

    /// Makes the leader's progress map track exactly its replication targets: new ones are
    /// probed from the end of the log; former ones are dropped.
    pub(crate) fn sync_progress(&mut self) {
        let next = self.log.last_index() + 1;
        let members = self.replication_targets();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.progress.retain(|m, _| members.contains(m));
        for m in members {
            l.progress.entry(m).or_insert_with(|| {
                l.replicate_pending = true;
                Progress::new(next)
            });
        }
    }

    /// A leader's commit index advanced (or it was just elected): leave a committed joint
    /// configuration, and step down if it was removed.
    pub(crate) fn after_commit(&mut self) {
        if !matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        let current = self.log.membership();
        let committed = self.log.config_index() <= self.commit;
        let removed = !current.is_voter(self.config.id);
        /// Raft §6: once C_old,new is committed, the leader appends C_new.
        if committed && current.is_joint() {
            let new = current.leave_joint();
            self.append_membership(new);
            return;
        }
        /// thesis §4.2.2: a leader that is not part of C_new steps down once C_new is
        /// committed; it hands leadership to an up-to-date voter of C_new first (thesis §3.10),
        /// so that the cluster need not wait for an election timeout.
        if committed && removed {
            if let Some(target) = self.best_successor() {
                self.send(target, Body::TimeoutNow);
            }
            self.become_follower(self.term, None);
        }
    }

    /// A voter of the configuration in effect whose log matches the leader's entirely, and
    /// that answered recently; the first by id if several.
    fn best_successor(&self) -> Option<NodeId> {
        let RoleState::Leader(l) = &self.role else {
            return None;
        };
        let last = self.log.last_index();
        let active_ticks = self.config.election_timeout_ticks_min;
        self.log.membership().voters().iter().copied().find(|v| {
            l.progress
                .get(v)
                .is_some_and(|p| p.match_index == last && p.active(l.ticks, active_ticks))
        })
    }

    /// thesis §4.2.1: promotes one learner marked for it, once its log is within
    /// `promote_lag_entries_max` of the leader's and it answered recently. Runs at each
    /// heartbeat; a change that cannot start now is tried again at the next.
    pub(crate) fn maybe_auto_promote(&mut self) {
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        let last = self.log.last_index();
        let lag_max = self.config.promote_lag_entries_max;
        let active_ticks = self.config.election_timeout_ticks_min;
        let ready = self
            .log
            .membership()
            .auto_promote()
            .iter()
            .copied()
            .find(|id| {
                l.progress.get(id).is_some_and(|p| {
                    p.match_index.saturating_add(lag_max) >= last
                        && !matches!(p.state, ReplicationState::Snapshot { .. })
                        && p.active(l.ticks, active_ticks)
                })
            });
        if let Some(id) = ready {
            let _ = self.propose_change(&[MemberChange::Promote { id }]);
        }
    }
}
