//! Raft's safety properties (Raft §5.2, Figure 3), checked incrementally after every event.

use super::trace::fx_hash;
use crate::types::{Entry, Index, NodeId, Payload, Term};
use crate::Raft;
use std::collections::{BTreeMap, HashMap};

/// What the checker has learned of the whole cluster so far.
#[derive(Clone, Debug, Default)]
pub struct SafetyChecker {
    /// Election Safety: the one leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log Matching: every (index, term) ever appended, with its payload hash and the term of
    /// the entry before it. Two logs that share an entry then share every entry before it.
    entries: HashMap<(Index, Term), (u64, Term)>,
    /// State Machine Safety: what was applied at each index, by anyone.
    applied: BTreeMap<Index, (Term, u64)>,
    /// The highest commit index any node has had.
    pub commit_max: Index,
}

pub type Violation = String;

impl SafetyChecker {
    /// Election Safety: at most one leader per term.
    pub fn observe_role(&mut self, raft: &Raft) -> Result<(), Violation> {
        if raft.role() != crate::Role::Leader {
            return Ok(());
        }
        let id = raft.id();
        let prev = *self.leaders.entry(raft.term()).or_insert(id);
        if prev != id {
            return Err(format!(
                "Election Safety: n{prev} and n{id} both lead term {}",
                raft.term()
            ));
        }
        Ok(())
    }

    /// Log Matching: entries a node appended agree with every other copy of the same index and
    /// term, in payload and in the term of the entry before them.
    pub fn observe_appended(&mut self, raft: &Raft, appended: &[Entry]) -> Result<(), Violation> {
        for e in appended {
            let prev_term = raft.term_at(e.index - 1).unwrap_or(0);
            let hash = payload_hash(&e.payload);
            let seen = *self
                .entries
                .entry((e.index, e.term))
                .or_insert((hash, prev_term));
            if seen != (hash, prev_term) {
                return Err(format!(
                    "Log Matching: n{} holds {} with (payload {:x}, prev term {}), another node (payload {:x}, prev term {})",
                    raft.id(), e.id(), hash, prev_term, seen.0, seen.1
                ));
            }
        }
        Ok(())
    }

    /// State Machine Safety: no two nodes apply different entries at one index.
    pub fn observe_applied(&mut self, node: NodeId, e: &Entry) -> Result<(), Violation> {
        let hash = payload_hash(&e.payload);
        let seen = *self.applied.entry(e.index).or_insert((e.term, hash));
        if seen != (e.term, hash) {
            return Err(format!(
                "State Machine Safety: n{node} applied {} but {}@{} was applied elsewhere",
                e.id(),
                e.index,
                seen.0
            ));
        }
        Ok(())
    }

    pub fn observe_commit(&mut self, commit: Index) {
        self.commit_max = self.commit_max.max(commit);
    }

    /// Leader Completeness: a leader's log holds every entry applied anywhere (those it has not
    /// compacted into its snapshot).
    pub fn check_leader_complete(&self, raft: &Raft) -> Result<(), Violation> {
        let from = raft.snapshot_index() + 1;
        for (&index, &(term, _)) in self.applied.range(from..) {
            if raft.term_at(index) != Some(term) {
                return Err(format!(
                    "Leader Completeness: leader n{} of term {} lacks committed {index}@{term} (has {:?})",
                    raft.id(),
                    raft.term(),
                    raft.term_at(index)
                ));
            }
        }
        Ok(())
    }
}

fn payload_hash(p: &Payload) -> u64 {
    match p {
        Payload::Noop => 0,
        Payload::Command(data) => fx_hash(&data[..]) | 1,
        Payload::Membership(m) => fx_hash(m) | 2,
    }
}
