//! What the event loop owes its callers: proposals waiting to be applied and reads waiting to
//! be confirmed, each with its reply and its deadline.
//!
//! Timeouts cost no timer per request: a request carries the deadline its handle computed
//! ([`super::node::Call`]) and the event loop fails the ones past it at each tick
//! ([`Proposals::expire`], [`Reads::expire`]). Every handle of a node has the same timeout,
//! so requests reach the loop in deadline order (up to the moments between a handle reading
//! the clock and queueing): each structure keeps them in arrival order, and expiry looks only
//! at the oldest.

use super::error::NodeError;
use super::node::Reply;
use crate::types::{Index, NodeId, Term};
use crate::Raft;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

struct Proposal<R> {
    index: Index,
    term: Term,
    reply: Reply<R>,
}

/// Proposals waiting to be applied, in index order (which is also arrival order: a leader
/// appends each at the end of its log).
pub(super) struct Proposals<R> {
    queue: VecDeque<Proposal<R>>,
}

impl<R> Proposals<R> {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }

    /// A proposal the core accepted at `index` in `term`. Call [`Self::fail_lost`] first: a
    /// proposal of an earlier term may wait at this index.
    pub(super) fn push(&mut self, index: Index, term: Term, reply: Reply<R>) {
        debug_assert!(self.queue.back().is_none_or(|p| p.index < index));
        self.queue.push_back(Proposal { index, term, reply });
    }

    /// The proposal at `index`, which is being applied, with the term it was proposed in.
    /// Proposals before it cannot be waiting (every applied entry takes its own, and a snapshot
    /// takes those it covers); if one were, it could not be applied any more: it fails.
    pub(super) fn take(
        &mut self,
        index: Index,
        leader: Option<NodeId>,
    ) -> Option<(Term, Reply<R>)> {
        while let Some(p) = self.queue.front() {
            if p.index > index {
                return None;
            }
            let p = self.queue.pop_front()?;
            if p.index == index {
                return Some((p.term, p.reply));
            }
            debug_assert!(false, "a proposal at {} was skipped by the apply", p.index);
            p.reply.fail(NodeError::NotLeader {
                leader_hint: leader,
            });
        }
        None
    }

    /// Fails with `Timeout` the proposals whose deadline is at or before `now`. Their entries
    /// stay in the log: they may still be committed (the outcome is unknown to the caller).
    pub(super) fn expire(&mut self, now: Duration) {
        while self.queue.front().is_some_and(|p| p.deadline() <= now) {
            if let Some(p) = self.queue.pop_front() {
                p.reply.fail(NodeError::Timeout);
            }
        }
    }

    /// Proposals whose entry is no longer in the log fail with `NotLeader`: another leader
    /// overwrote their index (Raft §5.3: a follower drops a conflicting suffix), so they can
    /// never commit. An entry this node proposed in term T leaves the log only through such a
    /// truncation, and everything after the truncation point goes with it, so the lost
    /// proposals are always the last ones waiting: the check costs one lookup while none is
    /// lost. Those a received snapshot covers are left to [`Self::covered`] (outcome unknown).
    pub(super) fn fail_lost(&mut self, raft: &Raft) {
        let snapshot_index = raft.snapshot_index();
        while let Some(p) = self.queue.back() {
            if p.index <= snapshot_index || raft.term_at(p.index) == Some(p.term) {
                break;
            }
            if let Some(p) = self.queue.pop_back() {
                p.reply.fail(NodeError::NotLeader {
                    leader_hint: raft.leader(),
                });
            }
        }
    }

    /// A snapshot from the leader replaced the log up to `last`: the proposals it covers have
    /// an unknown outcome (this node cannot tell whether their entries made it in).
    pub(super) fn covered(&mut self, last: Index) {
        while self.queue.front().is_some_and(|p| p.index <= last) {
            if let Some(p) = self.queue.pop_front() {
                p.reply.fail(NodeError::OutcomeUnknown);
            }
        }
    }

    /// Fails every proposal with `err` (the node stopped).
    pub(super) fn fail_all(&mut self, err: &NodeError) {
        for p in self.queue.drain(..) {
            p.reply.fail(err.clone());
        }
    }
}

impl<R> Proposal<R> {
    fn deadline(&self) -> Duration {
        self.reply.deadline
    }
}

/// Linearizable reads waiting for their ReadIndex round, by read id (ids grow with arrival).
pub(super) struct Reads<R> {
    by_id: BTreeMap<u64, (Bytes, Reply<R>)>,
    next_id: u64,
}

impl<R> Reads<R> {
    pub(super) fn new() -> Self {
        Self {
            by_id: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The id the next read gets.
    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn insert(&mut self, id: u64, query: Bytes, reply: Reply<R>) {
        self.by_id.insert(id, (query, reply));
    }

    pub(super) fn take(&mut self, id: u64) -> Option<(Bytes, Reply<R>)> {
        self.by_id.remove(&id)
    }

    /// Fails with `Timeout` the reads whose deadline is at or before `now`.
    pub(super) fn expire(&mut self, now: Duration) {
        while let Some(entry) = self.by_id.first_entry() {
            if entry.get().1.deadline > now {
                break;
            }
            entry.remove().1.fail(NodeError::Timeout);
        }
    }

    /// Fails every read with `err` (the node stopped).
    pub(super) fn fail_all(&mut self, err: &NodeError) {
        for (_, (_, reply)) in std::mem::take(&mut self.by_id) {
            reply.fail(err.clone());
        }
    }
}
