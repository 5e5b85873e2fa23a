//! What clients and tests do to a simulated cluster (propose, read, campaign) and what they
//! observe (the 6.5840 tester's helpers).

use super::Sim;
use crate::raft::Error;
use crate::types::{Index, Role, Term};
use bytes::Bytes;
use std::collections::BTreeMap;

impl Sim {
    /// Proposes `data` at node `i`; returns the entry's (index, term) if `i` leads.
    pub fn propose(&mut self, i: usize, data: Bytes) -> Result<(Index, Term), Error> {
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Err(Error::NotLeader { leader_hint: None });
        };
        let index = raft.propose(data)?;
        let term = raft.term();
        self.note(format!("propose n{} → {index}@{term}", i + 1));
        if let Err(v) = self.after_input(i) {
            self.fail(v);
        }
        Ok((index, term))
    }

    /// Starts a linearizable read at node `i`; its id comes back in `nodes[i].reads_done`.
    pub fn read(&mut self, i: usize) -> Result<u64, Error> {
        let id = self.next_read_id;
        let commit_max = self.checker.commit_max;
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Err(Error::NotLeader { leader_hint: None });
        };
        raft.read_index(id)?;
        self.next_read_id += 1;
        self.nodes[i].reads.insert(id, commit_max);
        if let Err(v) = self.after_input(i) {
            self.fail(v);
        }
        Ok(id)
    }

    /// Starts an election at node `i` now.
    pub fn campaign(&mut self, i: usize) {
        if let Some(raft) = self.nodes[i].raft.as_mut() {
            raft.campaign();
        }
        if let Err(v) = self.after_input(i) {
            self.fail(v);
        }
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
