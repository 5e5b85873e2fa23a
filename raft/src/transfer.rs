//! Leadership transfer (thesis §3.10): the leader brings the target's log up to date, stops
//! taking proposals, and sends TimeoutNow; the target campaigns at once, without a pre-vote,
//! and voters answer it despite the leader's lease. A transfer that has not completed within
//! an election timeout is abandoned (see `tick_leader`).

use crate::membership::MembershipError;
use crate::message::Body;
use crate::raft::{Raft, RoleState};
use crate::types::NodeId;

/// A leadership transfer in progress.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    pub target: NodeId,
    /// Ticks since the transfer started.
    pub elapsed_ticks: u64,
}

impl Raft {
    /// thesis §3.10: hands leadership to `target`, a voter of the configuration in effect.
    /// Proposals are refused ([`crate::Error::TransferInProgress`]) until the target has won an
    /// election (this node then follows it) or an election timeout has passed (the transfer
    /// is abandoned). Transferring to this node itself does nothing.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), MembershipError> {
        let leader_hint = self.leader;
        let membership = self.log.membership();
        let RoleState::Leader(l) = &mut self.role else {
            return Err(MembershipError::NotLeader { leader_hint });
        };
        if target == self.config.id {
            return Ok(());
        }
        if !membership.voters().contains(&target) {
            return Err(match membership.contains(target) {
                true => MembershipError::NotAVoter(target),
                false => MembershipError::NotAMember(target),
            });
        }
        match &l.transfer {
            Some(t) if t.target == target => return Ok(()),
            Some(t) => return Err(MembershipError::TransferInProgress { target: t.target }),
            None => {}
        }
        l.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        /// thesis §3.10: first bring the target's log up to date.
        self.send_appends(target);
        self.maybe_send_timeout_now();
        self.debug_check();
        Ok(())
    }

    /// The target of the leadership transfer this node (a leader) is making, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        match &self.role {
            RoleState::Leader(l) => l.transfer.as_ref().map(|t| t.target),
            _ => None,
        }
    }

    /// Sends TimeoutNow to the transfer's target if its log matches the leader's entirely.
    /// Called when the target acknowledges entries and at each heartbeat (a lost TimeoutNow is
    /// sent again while the transfer lasts).
    pub(crate) fn maybe_send_timeout_now(&mut self) {
        let last = self.log.last_index();
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        let Some(target) = l.transfer.as_ref().map(|t| t.target) else {
            return;
        };
        if l.progress
            .get(&target)
            .is_some_and(|p| p.match_index == last)
        {
            self.send(target, Body::TimeoutNow);
        }
    }

    /// thesis §3.10: the leader asks this node to start an election now. It campaigns without
    /// a pre-vote, marking its vote requests as a transfer so that voters answer them while
    /// they still hear from the leader. A node that is not a voter ignores it.
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if !self.promotable() {
            return self.ignore();
        }
        debug_assert_eq!(self.leader, Some(from));
        self.become_candidate(true);
    }
}
