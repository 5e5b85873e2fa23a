//! Looking at a node: [`Raft::status`], [`Raft::describe`] for failure reports, and
//! [`Raft::check_invariants`], which the simulator runs after every event.

use crate::membership::Membership;
use crate::progress::ReplicationState;
use crate::raft::{Raft, RoleState};
use crate::types::{FollowerStatus, Index, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a simulation starts in this process: nodes then check their invariants after every
/// input in release builds too (debug builds always do).
static CHECK_EVERY_INPUT: AtomicBool = AtomicBool::new(false);

/// Makes every node in this process check its invariants after every input, whatever the
/// build (the simulation runtime turns it on; it is never turned off).
pub(crate) fn check_after_every_input() {
    CHECK_EVERY_INPUT.store(true, Ordering::Relaxed);
}

impl Raft {
    /// A point-in-time view of the node, for operators and tests.
    pub fn status(&self) -> Status {
        let (followers, transferring_to) = match &self.role {
            RoleState::Leader(l) => {
                let active_ticks = self.config.election_timeout_ticks_min;
                let followers = l
                    .progress
                    .iter()
                    .map(|(id, p)| {
                        let status = FollowerStatus {
                            match_index: p.match_index,
                            next_index: p.next_index,
                            snapshotting: matches!(p.state, ReplicationState::Snapshot { .. }),
                            active: p.active(l.ticks, active_ticks),
                        };
                        (*id, status)
                    })
                    .collect();
                (followers, l.transfer.as_ref().map(|t| t.target))
            }
            _ => (BTreeMap::new(), None),
        };
        Status {
            id: self.config.id,
            role: self.role(),
            term: self.term,
            leader: self.leader,
            commit_index: self.commit,
            applied_index: self.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot().index,
            persisted_index: self.log.persisted(),
            membership: self.log.membership().clone(),
            removed: self.is_removed(),
            followers,
            transferring_to,
        }
    }

    /// Issue 20: the lowest match index (Raft Figure 2) among this node's followers, if it
    /// leads (followers being sent a snapshot left out); `None` on other nodes. Read-only:
    /// the driver keeps the log a follower a little behind still needs (its trailing log).
    pub fn lowest_follower_match(&self) -> Option<Index> {
        let RoleState::Leader(l) = &self.role else {
            return None;
        };
        l.progress
            .values()
            .filter(|p| !matches!(p.state, ReplicationState::Snapshot { .. }))
            .map(|p| p.match_index)
            .min()
    }

    /// A one-line description of the node's state (and, for a leader, of each follower's
    /// replication progress), for failure reports.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "n{} {} term={} last={} commit={} applied={} persisted={} snapshot={}",
            self.config.id,
            self.role(),
            self.term,
            self.log.last_id(),
            self.commit,
            self.applied,
            self.log.persisted(),
            self.log.snapshot()
        );
        let membership = self.log.membership();
        if *membership != Membership::from_voters(self.config.voters.iter().copied()) {
            out.push_str(&format!(" {membership}"));
        }
        if self.is_removed() {
            out.push_str(" removed");
        }
        if let RoleState::Leader(l) = &self.role {
            if let Some(t) = &l.transfer {
                out.push_str(&format!(" transfer→n{}", t.target));
            }
            for (id, p) in &l.progress {
                out.push_str(&format!(
                    " | n{id} match={} next={} {:?} inflight={}",
                    p.match_index,
                    p.next_index,
                    p.state,
                    p.inflight.len()
                ));
                if membership.is_learner(*id) {
                    out.push_str(" learner");
                } else if !membership.contains(*id) {
                    out.push_str(" removed");
                }
            }
        }
        out
    }

    pub(crate) fn debug_check(&self) {
        if cfg!(debug_assertions) || CHECK_EVERY_INPUT.load(Ordering::Relaxed) {
            self.check_invariants();
        }
    }

    /// Checks every invariant on the node's fields; panics naming the broken rule. Called after
    /// every input in debug builds, and by the simulator after every event.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        let snap = self.log.snapshot();
        assert!(
            snap.index <= self.applied && self.applied <= self.commit,
            "invariant: snapshot {snap} <= applied {} <= commit {}",
            self.applied,
            self.commit
        );
        assert!(
            self.commit <= self.log.last_index(),
            "invariant: commit {} <= last index {}",
            self.commit,
            self.log.last_index()
        );
        assert!(
            self.log.last_id().term <= self.term,
            "invariant: no entry from a future term"
        );
        if snap.index > 0 {
            assert_eq!(
                self.snapshot.as_ref().map(|s| s.last),
                Some(snap),
                "invariant: the held snapshot is the log's snapshot point"
            );
        }
        let membership = self.log.membership();
        if let Err(e) = membership.validate() {
            panic!("invariant: the configuration is valid: {e}");
        }
        if matches!(
            self.role,
            RoleState::PreCandidate { .. } | RoleState::Candidate { .. }
        ) {
            assert!(
                self.promotable(),
                "invariant: only a voter campaigns (thesis §4.2.1)"
            );
        }
        if let RoleState::Leader(l) = &self.role {
            assert_eq!(
                self.voted_for,
                Some(self.config.id),
                "invariant: a leader voted for itself"
            );
            assert_eq!(
                self.leader,
                Some(self.config.id),
                "invariant: a leader knows it leads"
            );
            assert!(
                l.term_start <= snap.index || self.log.term_at(l.term_start) == Some(self.term),
                "invariant: the term's first entry is in the log or its snapshot"
            );
            /// thesis §4.2.2: a leader outside C_new leads until C_new is committed.
            assert!(
                membership.is_voter(self.config.id) || self.log.config_index() > self.commit,
                "invariant: a leader is a voter, or its removal is not committed yet"
            );
            if cfg!(debug_assertions) || self.log.config_index() > self.log.snapshot().index {
                assert!(
                    l.progress.keys().eq(self.replication_targets().iter()),
                    "invariant: the leader tracks exactly its replication targets"
                );
            } else {
                // The common case, without allocating: no configuration entry since the
                // snapshot, so the targets are the other members.
                let id = self.config.id;
                let members = membership.members_iter().filter(|m| *m != id);
                assert!(
                    l.progress.len() == members.clone().count()
                        && members.into_iter().all(|m| l.progress.contains_key(&m)),
                    "invariant: the leader tracks exactly its replication targets"
                );
            }
            if let Some(t) = &l.transfer {
                assert!(
                    membership.voters().contains(&t.target),
                    "invariant: leadership is only transferred to a voter"
                );
            }
            for (id, pr) in &l.progress {
                assert!(
                    pr.match_index < pr.next_index && pr.next_index <= self.log.last_index() + 1,
                    "invariant: n{id} match {} < next {} <= last + 1",
                    pr.match_index,
                    pr.next_index
                );
                assert!(
                    pr.inflight.len() <= self.config.inflight_appends_max,
                    "invariant: in-flight appends are bounded"
                );
            }
            assert!(
                l.reads
                    .iter()
                    .zip(l.reads.iter().skip(1))
                    .all(|(a, b)| a.seq <= b.seq),
                "invariant: pending reads are ordered by sequence"
            );
        }
    }
}
