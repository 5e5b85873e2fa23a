//! Raft's safety properties (Raft §5.2, Figure 3), checked incrementally after every event, and
//! those of reconfiguration (Raft §6, thesis §4): nodes that hold an entry agree on the
//! configuration at it, every committed configuration's quorums intersect its predecessor's,
//! a leader's votes and its commits come from quorums of its voters (learners never count).

use super::trace::fx_hash;
use crate::membership::Membership;
use crate::types::{Entry, Index, LogId, NodeId, Payload, Snapshot, Term};
use crate::Raft;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What the checker has learned of the whole cluster so far.
#[derive(Clone, Debug, Default)]
pub struct SafetyChecker {
    /// Election Safety: the one leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log Matching: every (index, term) appended and not lost, with its payload hash, the
    /// term of the entry before it and the configuration in effect at it. Two logs that share
    /// an entry then share every entry before it.
    entries: HashMap<(Index, Term), EntryRecord>,
    /// thesis §4.1: the hash of the configuration at the last entry of each snapshot installed.
    configs: HashMap<(Index, Term), u64>,
    /// Configuration entries whose transition from their predecessor was checked.
    transitions: HashSet<(Index, Term)>,
    /// State Machine Safety: what was applied at each index, by anyone.
    applied: BTreeMap<Index, (Term, u64)>,
    /// The highest commit index any node has had.
    pub commit_max: Index,
}

pub type Violation = String;

/// What every copy of one (index, term) must agree on.
#[derive(Clone, Copy, Debug)]
struct EntryRecord {
    payload: u64,
    prev_term: Term,
    /// The hash of the configuration in effect at the entry (0: no copy knows it).
    config: u64,
    /// Copies handed to storage and not lost in a crash before they were durable.
    copies: u32,
}

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

    /// The highest term in which a leader was observed (0: none yet).
    pub fn highest_leader_term(&self) -> Term {
        self.leaders.keys().copied().max().unwrap_or(0)
    }

    /// Log Matching: entries a node appended agree with every other copy of the same index and
    /// term, in payload and in the term of the entry before them.
    /// thesis §4.1: and on the configuration in effect at them.
    pub fn observe_appended(&mut self, raft: &Raft, appended: &[Entry]) -> Result<(), Violation> {
        let node = raft.id();
        for e in appended {
            let membership = raft.membership_at(e.index);
            let config = membership.map_or(0, config_hash);
            let prev_term = raft.term_at(e.index - 1).unwrap_or(0);
            let payload = payload_hash(&e.payload);
            let record = self
                .entries
                .entry((e.index, e.term))
                .or_insert(EntryRecord {
                    payload,
                    prev_term,
                    config,
                    copies: 0,
                });
            if (record.payload, record.prev_term) != (payload, prev_term) {
                return Err(format!(
                    "Log Matching: n{node} holds {} with (payload {payload:x}, prev term {prev_term}), another node (payload {:x}, prev term {})",
                    e.id(), record.payload, record.prev_term
                ));
            }
            if config != 0 && record.config != 0 && config != record.config {
                return Err(format!(
                    "Configuration agreement: n{node} has {} in effect at {}, another node holding it a different one",
                    membership.map_or(String::new(), |m| m.to_string()),
                    e.id()
                ));
            }
            if record.config == 0 {
                record.config = config;
            }
            record.copies += 1;
            if let Some(m) = membership {
                self.observe_config(node, e.id(), m)?;
            }
        }
        Ok(())
    }

    /// A crash lost these entries before they were durable: they no longer count as held (a
    /// leader that won alone may reuse a term whose entries no one else saw).
    pub fn forget_lost(&mut self, entries: &[Entry]) {
        for e in entries {
            let key = (e.index, e.term);
            if let Some(record) = self.entries.get_mut(&key) {
                record.copies = record.copies.saturating_sub(1);
                if record.copies == 0 {
                    self.entries.remove(&key);
                }
            }
        }
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

    /// thesis §4.1: nodes that hold the entry `at` agree on the configuration in effect there
    /// (it follows from Log Matching, and from snapshots carrying the configuration at their
    /// last entry). A node that joined with no configuration knows none before its first.
    fn observe_config(
        &mut self,
        node: NodeId,
        at: LogId,
        membership: &Membership,
    ) -> Result<(), Violation> {
        let hash = config_hash(membership);
        if hash == 0 {
            return Ok(());
        }
        let entry_config = self
            .entries
            .get(&(at.index, at.term))
            .map_or(0, |r| r.config);
        let seen = *self.configs.entry((at.index, at.term)).or_insert(hash);
        if seen != hash || (entry_config != 0 && entry_config != hash) {
            return Err(format!(
                "Configuration agreement: n{node} has {membership} in effect at {at}, another node a different one"
            ));
        }
        Ok(())
    }

    /// A snapshot a node installed carries the configuration at its last entry.
    pub fn observe_snapshot(&mut self, node: NodeId, s: &Snapshot) -> Result<(), Violation> {
        self.observe_config(node, s.last, &s.membership)
    }

    /// Raft §6: a committed configuration `next` (entry `at`) and the one before it in the log
    /// have no disjoint quorums, so that no two leaders can be elected (and no two commits
    /// made) by the two. Checked once per configuration entry.
    pub fn check_transition(
        &mut self,
        at: LogId,
        prev: &Membership,
        next: &Membership,
    ) -> Result<(), Violation> {
        if prev.voters().is_empty() || !self.transitions.insert((at.index, at.term)) {
            return Ok(());
        }
        if let Some((a, b)) = disjoint_quorums(prev, next) {
            return Err(format!(
                "Joint consensus: configuration {next} committed at {at} follows {prev}, but {a:?} and {b:?} are disjoint quorums of the two"
            ));
        }
        Ok(())
    }

    /// Raft §5.2, §6, thesis §4.2.1: the votes a new leader won (its own included) form a
    /// quorum of the configuration it campaigned in; learners' votes do not count.
    pub fn check_election(
        &self,
        leader: NodeId,
        term: Term,
        membership: &Membership,
        granted: &BTreeSet<NodeId>,
    ) -> Result<(), Violation> {
        let mut voters = granted.clone();
        voters.insert(leader);
        if !membership.is_quorum(&voters) {
            return Err(format!(
                "Election: n{leader} leads term {term} with votes of {voters:?}, not a quorum of {membership}"
            ));
        }
        Ok(())
    }

    /// Raft §5.4.2, §6, thesis §4.2.1: an index a leader commits is durable on a quorum of the
    /// voters of its configuration; learners' copies do not count.
    pub fn check_commit(
        &self,
        leader: NodeId,
        commit: LogId,
        membership: &Membership,
        holders: &BTreeSet<NodeId>,
    ) -> Result<(), Violation> {
        if !membership.is_quorum(holders) {
            return Err(format!(
                "Commit: n{leader} committed {commit}, durable only on {holders:?}, not a quorum of {membership}"
            ));
        }
        Ok(())
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

/// The hash of a configuration; 0 for none known (a node that joined without one).
fn config_hash(m: &Membership) -> u64 {
    match m.voters().is_empty() {
        true => 0,
        false => fx_hash(m) | 1,
    }
}

fn payload_hash(p: &Payload) -> u64 {
    match p {
        Payload::Noop => 0,
        Payload::Command(data) => fx_hash(&data[..]) | 1,
        Payload::Membership(m) => fx_hash(m) | 2,
    }
}

/// A quorum of `a` and a quorum of `b` with no member in common, if there are such (every
/// subset of their voters is tried: clusters in the simulator have at most 7 nodes).
pub fn disjoint_quorums(a: &Membership, b: &Membership) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    let universe: Vec<NodeId> = a.all_voters().union(&b.all_voters()).copied().collect();
    assert!(universe.len() <= 16, "too many voters to enumerate");
    for mask in 0u32..(1 << universe.len()) {
        let (inside, outside): (BTreeSet<NodeId>, BTreeSet<NodeId>) = universe
            .iter()
            .enumerate()
            .map(|(i, id)| (mask & (1 << i) != 0, *id))
            .fold(Default::default(), |(mut x, mut y), (inside, id)| {
                if inside {
                    x.insert(id)
                } else {
                    y.insert(id)
                };
                (x, y)
            });
        if a.is_quorum(&inside) && b.is_quorum(&outside) {
            return Some((inside.into_iter().collect(), outside.into_iter().collect()));
        }
    }
    None
}
