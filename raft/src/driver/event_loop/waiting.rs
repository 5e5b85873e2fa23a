//! What the event loop owes beyond proposals and reads ([`super::super::pending`]): membership
//! changes, leadership transfers and callers waiting for a leader; their deadlines; and failing
//! everything when the node stops.

use super::EventLoop;
use crate::driver::error::NodeError;
use crate::driver::node::Request;
use crate::io::{Runtime, StateMachine, Transport};
use crate::types::{Payload, Role, Snapshot};
use std::time::Duration;

/// Takes out of `waiting` the items whose deadline is at or before `now`.
fn take_expired<T>(
    waiting: &mut Vec<T>,
    now: Duration,
    deadline: impl Fn(&T) -> Duration,
) -> Vec<T> {
    let mut expired = Vec::new();
    let mut i = 0;
    while i < waiting.len() {
        if deadline(&waiting[i]) <= now {
            expired.push(waiting.swap_remove(i));
        } else {
            i += 1;
        }
    }
    expired
}

impl<R: Runtime, M: StateMachine, T: Transport> EventLoop<R, M, T> {
    /// A configuration entry was applied: changes waiting for it (or, after their joint
    /// configuration, for C_new) complete. An entry of another term at a change's index means
    /// the change was lost with a leadership change.
    pub(super) fn applied_entry(&mut self, e: &crate::types::Entry) {
        if self.changes.is_empty() {
            return;
        }
        let leader_hint = self.raft.leader();
        let membership = match &e.payload {
            Payload::Membership(m) => Some(&**m),
            _ => None,
        };
        let mut i = 0;
        while i < self.changes.len() {
            let c = &mut self.changes[i];
            let done = if c.joint_applied {
                membership.filter(|m| !m.is_joint()).map(|m| Ok(m.clone()))
            } else if c.index == e.index {
                match membership {
                    Some(m) if e.term == c.term && m.is_joint() => {
                        c.joint_applied = true;
                        None
                    }
                    Some(m) if e.term == c.term => Some(Ok(m.clone())),
                    _ => Some(Err(NodeError::NotLeader { leader_hint }.into())),
                }
            } else {
                None
            };
            match done {
                Some(result) => {
                    let c = self.changes.swap_remove(i);
                    c.reply.send(result);
                }
                None => i += 1,
            }
        }
    }

    /// Transfers complete once their target leads; they fail once abandoned (this node leads
    /// and no longer transfers) or once another node leads.
    pub(super) fn check_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let (me, leader) = (self.raft.id(), self.raft.leader());
        let abandoned = self.raft.role() == Role::Leader;
        let transferring = self.raft.transferring_to();
        let mut i = 0;
        while i < self.transfers.len() {
            let target = self.transfers[i].0;
            let result = if leader == Some(target) {
                Some(Ok(()))
            } else if abandoned && transferring != Some(target) {
                Some(Err(NodeError::Timeout.into()))
            } else if leader.is_some_and(|l| l != me) {
                Some(Err(NodeError::NotLeader {
                    leader_hint: leader,
                }
                .into()))
            } else {
                None
            };
            match result {
                Some(r) => {
                    let (_, reply) = self.transfers.swap_remove(i);
                    reply.send(r);
                }
                None => i += 1,
            }
        }
    }

    /// Fails with `Timeout` every request whose deadline is at or before `now` (at each
    /// tick; see [`super::pending`]). What it asked for may still happen.
    pub(super) fn expire(&mut self, now: Duration) {
        self.proposals.expire(now);
        self.reads.expire(now);
        for c in take_expired(&mut self.changes, now, |c| c.reply.deadline) {
            c.reply.fail(NodeError::Timeout);
        }
        for (_, reply) in take_expired(&mut self.transfers, now, |t| t.1.deadline) {
            reply.fail(NodeError::Timeout);
        }
        for w in take_expired(&mut self.leader_waiters, now, |w| w.deadline) {
            w.fail(NodeError::Timeout);
        }
    }

    /// Answers the callers waiting for a leader, once this node knows one.
    pub(super) fn answer_leader_waiters(&mut self) {
        if let Some(leader) = self.raft.leader() {
            for w in self.leader_waiters.drain(..) {
                w.send(Ok(leader));
            }
        }
    }

    /// The node stopped: everything waiting fails with why (`Shutdown` if it was asked to).
    pub(super) fn fail_all(&mut self) {
        let err = self.stopped.clone().unwrap_or(NodeError::Shutdown);
        self.proposals.fail_all(&err);
        self.reads.fail_all(&err);
        for c in self.changes.drain(..) {
            c.reply.fail(err.clone());
        }
        for (_, reply) in self.transfers.drain(..) {
            reply.fail(err.clone());
        }
        for w in self.leader_waiters.drain(..) {
            w.fail(err.clone());
        }
        self.requests.close();
        while let Some(r) = self.requests.try_next() {
            match r {
                Request::Propose(_, reply) | Request::Read(_, reply) => reply.fail(err.clone()),
                Request::Status(reply) => {
                    let _ = reply.send(self.raft.status());
                }
                Request::Change(_, reply) => reply.fail(err.clone()),
                Request::Transfer(_, reply) => reply.fail(err.clone()),
                Request::WaitLeader(reply) => reply.fail(err.clone()),
                Request::Shutdown => {}
            }
        }
    }
    /// A snapshot from the leader was restored: changes it covers are done if it holds C_new
    /// after their joint configuration, of unknown outcome if it covers their entry unseen.
    pub(super) fn changes_restored(&mut self, s: &Snapshot) {
        let mut i = 0;
        while i < self.changes.len() {
            let c = &self.changes[i];
            let result = if c.joint_applied && !s.membership.is_joint() {
                Some(Ok(s.membership.clone()))
            } else if !c.joint_applied && c.index <= s.last.index {
                Some(Err(NodeError::OutcomeUnknown.into()))
            } else {
                None
            };
            match result {
                Some(r) => {
                    self.changes.swap_remove(i).reply.send(r);
                }
                None => i += 1,
            }
        }
    }
}
