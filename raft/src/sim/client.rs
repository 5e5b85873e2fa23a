//! What clients and tests do to a simulated cluster (propose, read, campaign) and what they
//! observe (the 6.5840 tester's helpers).

use super::Sim;
use crate::membership::{MemberChange, MembershipError};
use crate::raft::{Error, Raft};
use crate::types::{Index, NodeId, Role, Term};
use bytes::Bytes;
use std::collections::BTreeMap;

impl Sim {
    /// Feeds a client's input to node `i` and drives the node through the resulting `Ready`s,
    /// guarded as an event is. `None` if the node is down or paused, or the run failed.
    fn client_input<R>(&mut self, i: usize, input: impl FnOnce(&mut Raft) -> R) -> Option<R> {
        self.guard(|sim| {
            if sim.is_paused(i) {
                return Ok(None);
            }
            sim.catch_up_ticks(i)?;
            let Some(raft) = sim.nodes[i].raft.as_mut() else {
                return Ok(None);
            };
            let result = input(raft);
            sim.after_input(i)?;
            Ok(Some(result))
        })
        .flatten()
    }

    /// Proposes `data` at node `i`; returns the entry's (index, term) if `i` leads.
    pub fn propose(&mut self, i: usize, data: Bytes) -> Result<(Index, Term), Error> {
        let result = self
            .client_input(i, |raft| {
                raft.propose(data).map(|index| (index, raft.term()))
            })
            .unwrap_or(Err(Error::NotLeader { leader_hint: None }));
        if let Ok((index, term)) = result {
            self.note(format!("propose n{} → {index}@{term}", i + 1));
        }
        result
    }

    /// Starts a linearizable read at node `i`; its id comes back in `nodes[i].reads_done`.
    pub fn read(&mut self, i: usize) -> Result<u64, Error> {
        let id = self.next_read_id;
        let commit_max = self.checker.commit_max;
        // The read is registered before the node can confirm it (a lone voter does at once).
        self.nodes[i].reads.insert(id, commit_max);
        let result = self
            .client_input(i, |raft| raft.read_index(id))
            .unwrap_or(Err(Error::NotLeader { leader_hint: None }));
        match result {
            Ok(()) => self.next_read_id += 1,
            Err(_) => {
                self.nodes[i].reads.remove(&id);
            }
        }
        result.map(|()| id)
    }

    /// Proposes a membership change at node `i` (see [`crate::Raft::propose_change`]).
    pub fn change(&mut self, i: usize, changes: &[MemberChange]) -> Result<Index, MembershipError> {
        let result = self
            .client_input(i, |raft| raft.propose_change(changes))
            .unwrap_or(Err(MembershipError::NotLeader { leader_hint: None }));
        self.note(format!("change n{} {changes:?} → {result:?}", i + 1));
        if result.is_ok() {
            self.stats.changes_accepted += 1;
        }
        result
    }

    /// Asks node `i` to hand leadership to node index `target` (thesis §3.10).
    pub fn transfer(&mut self, i: usize, target: usize) -> Result<(), MembershipError> {
        let result = self
            .client_input(i, |raft| raft.transfer_leader(target as NodeId + 1))
            .unwrap_or(Err(MembershipError::NotLeader { leader_hint: None }));
        self.note(format!(
            "transfer n{} → n{} → {result:?}",
            i + 1,
            target + 1
        ));
        if result.is_ok() {
            self.stats.transfers_started += 1;
        }
        result
    }

    /// Starts an election at node `i` now.
    pub fn campaign(&mut self, i: usize) {
        self.client_input(i, Raft::campaign);
    }

    // ---- observations (the 6.5840 tester's helpers) ----

    /// Leaders among the live, connected nodes, by term.
    pub fn leaders_by_term(&self) -> BTreeMap<Term, Vec<usize>> {
        let mut out: BTreeMap<Term, Vec<usize>> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(r) = &node.raft {
                if self.connected[i] && r.role() == Role::Leader {
                    out.entry(r.term()).or_default().push(i);
                }
            }
        }
        out
    }

    /// The leader of the highest term among live, connected nodes.
    pub fn leader(&self) -> Option<usize> {
        self.leaders_by_term()
            .into_iter()
            .next_back()
            .and_then(|(_, l)| l.first().copied())
    }

    /// How many nodes have applied a command at `index`, and which command.
    pub fn n_committed(&self, index: Index) -> (usize, Option<Bytes>) {
        let mut count = 0;
        let mut cmd = None;
        for node in &self.nodes {
            if let Some(c) = node.sm.commands.get(&index) {
                count += 1;
                cmd = Some(c.clone());
            }
        }
        (count, cmd)
    }
}
