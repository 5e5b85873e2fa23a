//! A hand-driven cluster: nothing happens unless asked (`tick`, `deliver`, `stabilize`), disk
//! writes are durable at once, and every step is described in one line of the trace notation.
//! Golden scripts and unit tests use it to show exact protocol behaviour.

use super::store::MemStore;
use super::TestSm;
use crate::config::Config;
use crate::io::WriteOp;
use crate::membership::{MemberChange, Membership, MembershipError};
use crate::message::Message;
use crate::raft::Error;
use crate::types::{Index, LogId, NodeId, Payload, Role, Term};
use crate::{Raft, SnapshotReceiver};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One node of a [`ManualCluster`].
#[derive(Clone, Debug)]
pub struct ManualNode {
    pub raft: Option<Raft>,
    pub store: MemStore,
    pub sm: TestSm,
    /// Issue 20: the snapshot being received, spooled in memory.
    receiving: SnapshotReceiver<Vec<u8>>,
    /// The node's configuration (its initial voters), for restarts.
    config: Config,
    role_term: (Role, Term),
    /// The configuration in effect as last reported, and whether the node was removed.
    membership: (Membership, bool),
}

/// A cluster driven step by step. Node ids are 1..=n.
#[derive(Clone, Debug)]
pub struct ManualCluster {
    pub nodes: BTreeMap<NodeId, ManualNode>,
    config: Config,
    /// Messages sent and not yet delivered, in order.
    pub queue: VecDeque<Message>,
    /// Directed links that drop messages.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Every message ever sent (a corpus for fuzzing).
    pub sent: Vec<Message>,
    /// Lines describing what happened since the last `take_output`.
    output: Vec<String>,
}

impl ManualCluster {
    /// `n` nodes configured from `template` (its id, voters and seed are replaced).
    pub fn new(n: u64, template: Config) -> Result<Self, crate::ConfigError> {
        let mut nodes = BTreeMap::new();
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            config: template,
            queue: VecDeque::new(),
            blocked: BTreeSet::new(),
            sent: Vec::new(),
            output: Vec::new(),
        };
        for id in 1..=n {
            let config = cluster.node_config(id, (1..=n).collect());
            nodes.insert(id, ManualNode::new(config)?);
        }
        cluster.nodes = nodes;
        Ok(cluster)
    }

    fn node_config(&self, id: NodeId, voters: Vec<NodeId>) -> Config {
        let mut c = self.config.clone();
        c.id = id;
        c.voters = voters;
        c.seed = id;
        c
    }

    /// Starts node `id` with no configuration: it joins once a leader adds it (thesis §4).
    pub fn add_node(&mut self, id: NodeId) -> Result<(), String> {
        if self.nodes.contains_key(&id) {
            return Err(format!("n{id} exists"));
        }
        let config = self.node_config(id, Vec::new());
        let node = ManualNode::new(config).map_err(|e| e.to_string())?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Proposes a membership change at node `id`.
    pub fn change(
        &mut self,
        id: NodeId,
        changes: &[MemberChange],
    ) -> Result<Result<Index, MembershipError>, String> {
        let r = self.raft_mut(id)?.propose_change(changes);
        self.process(id);
        Ok(r)
    }

    /// Asks node `id` to hand leadership to `target` (thesis §3.10).
    pub fn transfer(
        &mut self,
        id: NodeId,
        target: NodeId,
    ) -> Result<Result<(), MembershipError>, String> {
        let r = self.raft_mut(id)?.transfer_leader(target);
        self.process(id);
        Ok(r)
    }

    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.output)
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes.get(&id).and_then(|n| n.raft.as_ref())
    }

    fn raft_mut(&mut self, id: NodeId) -> Result<&mut Raft, String> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node n{id}"))?
            .raft
            .as_mut()
            .ok_or_else(|| format!("n{id} is crashed"))
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn tick(&mut self, id: NodeId, ticks: u64) -> Result<(), String> {
        for _ in 0..ticks {
            self.raft_mut(id)?.tick();
            self.process(id);
        }
        Ok(())
    }

    pub fn campaign(&mut self, id: NodeId) -> Result<(), String> {
        self.raft_mut(id)?.campaign();
        self.process(id);
        Ok(())
    }

    pub fn propose(&mut self, id: NodeId, data: Bytes) -> Result<Result<Index, Error>, String> {
        let r = self.raft_mut(id)?.propose(data);
        self.process(id);
        Ok(r)
    }

    /// Requests reads `read_ids` together (one heartbeat round confirms them all).
    pub fn read(&mut self, id: NodeId, read_ids: &[u64]) -> Result<Vec<Result<(), Error>>, String> {
        let raft = self.raft_mut(id)?;
        let results = read_ids.iter().map(|r| raft.read_index(*r)).collect();
        self.process(id);
        Ok(results)
    }

    /// The node snapshots its state machine at its applied index.
    pub fn snapshot(&mut self, id: NodeId) -> Result<Result<LogId, Error>, String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
        let raft = node.raft.as_mut().ok_or(format!("n{id} is crashed"))?;
        let index = node.sm.last_applied;
        let data = node.sm.encode();
        let Some(term) = raft.term_at(index) else {
            return Ok(Err(Error::SnapshotIndex {
                index,
                reason: "not in the log",
            }));
        };
        let last = LogId::new(index, term);
        let snapshot = match raft.snapshot_taken(index, data) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        node.store.apply([WriteOp::SaveSnapshot(snapshot)]);
        self.process(id);
        Ok(Ok(last))
    }

    pub fn crash(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
        node.raft = None;
        node.receiving = SnapshotReceiver::default();
        self.queue.retain(|m| m.to != id);
        Ok(())
    }

    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
        let config = node.config.clone();
        let persisted = node.store.persisted();
        node.sm = match &persisted.snapshot {
            Some(s) => TestSm::decode(&s.data)?,
            None => TestSm::default(),
        };
        node.raft = Some(Raft::restore(config, persisted).map_err(|e| e.to_string())?);
        node.role_term = (Role::Follower, 0);
        self.process(id);
        Ok(())
    }

    /// Only nodes within the same group can talk.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.blocked.clear();
        let group_of = |id: &NodeId| groups.iter().position(|g| g.contains(id));
        for a in self.nodes.keys() {
            for b in self.nodes.keys() {
                if group_of(a) != group_of(b) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Delivers the queued messages addressed to `to` (all, if empty). Returns how many.
    pub fn deliver(&mut self, to: &[NodeId]) -> usize {
        let batch: Vec<Message> = {
            let (take, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|m| to.is_empty() || to.contains(&m.to));
            self.queue = keep;
            take.into()
        };
        let count = batch.len();
        for msg in batch {
            let up = self.raft(msg.to).is_some();
            if self.blocked.contains(&(msg.from, msg.to)) || !up {
                self.output.push(format!("drop {msg}"));
                continue;
            }
            self.output.push(msg.to_string());
            let to = msg.to;
            if let Ok(raft) = self.raft_mut(to) {
                raft.step(msg);
            }
            self.process(to);
        }
        count
    }

    /// Delivers messages until none are left (at most `rounds_max` rounds).
    pub fn stabilize(&mut self, rounds_max: usize) -> Result<(), String> {
        for _ in 0..rounds_max {
            if self.deliver(&[]) == 0 {
                return Ok(());
            }
        }
        Err(format!("not stable after {rounds_max} rounds"))
    }

    /// Handles every `Ready` of node `id`: persist at once, send, apply, serve reads.
    pub fn process(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while raft.has_ready() {
            let mut ready = raft.take_ready();
            node.receiving
                .receive(raft, &mut ready, || Ok(Vec::new()))
                .expect("an in-memory spool cannot fail");
            let mut msgs = std::mem::take(&mut ready.send_now);
            let token = ready.persist_token;
            node.store.apply(ready.take_write_ops());
            msgs.append(&mut ready.send_after_persist);
            if let Some(token) = token {
                raft.persisted(token);
            }
            if let Some(s) = &ready.snapshot {
                node.sm = TestSm::decode(&s.data).unwrap_or_default();
                out.push(format!("n{id} restore snapshot {}", s.last));
            }
            for e in &ready.committed_entries {
                node.sm.last_applied = e.index;
                match &e.payload {
                    Payload::Noop => out.push(format!("n{id} apply {} noop", e.id())),
                    Payload::Membership(m) => out.push(format!("n{id} apply {} {m}", e.id())),
                    Payload::Command(data) => {
                        node.sm.commands.insert(e.index, data.clone());
                        out.push(format!(
                            "n{id} apply {} {}",
                            e.id(),
                            String::from_utf8_lossy(data)
                        ));
                    }
                }
            }
            for r in &ready.read_states {
                out.push(format!("n{id} read {} ready at index {}", r.id, r.index));
            }
            for r in &ready.aborted_reads {
                out.push(format!("n{id} read {r} aborted"));
            }
            for m in msgs {
                self.sent.push(m.clone());
                self.queue.push_back(m);
            }
        }
        let role_term = (raft.role(), raft.term());
        if role_term != node.role_term {
            out.insert(
                0,
                format!("n{id} is now {} in term {}", role_term.0, role_term.1),
            );
            node.role_term = role_term;
        }
        /// thesis §4.1: a configuration takes effect when appended (and ends when truncated).
        if (raft.membership(), raft.is_removed()) != (&node.membership.0, node.membership.1) {
            node.membership = (raft.membership().clone(), raft.is_removed());
            let removed = if node.membership.1 { " (removed)" } else { "" };
            out.insert(0, format!("n{id} config {}{removed}", node.membership.0));
        }
        self.output.extend(out);
    }

    /// One line of state per node.
    pub fn status(&self, id: NodeId) -> String {
        match self.raft(id) {
            Some(r) => r.describe(),
            None => format!("n{id} crashed"),
        }
    }

    /// The node's log as `index@term` ids, after its snapshot point.
    pub fn log(&self, id: NodeId) -> String {
        let Some(r) = self.raft(id) else {
            return format!("n{id} crashed");
        };
        let s = r.status();
        let ids: Vec<String> = (s.first_index..=s.last_index)
            .filter_map(|i| r.entry(i).map(|e| e.id().to_string()))
            .collect();
        format!(
            "n{id} snapshot={} log=[{}] commit={}",
            r.snapshot().map_or(LogId::default(), |s| s.last),
            ids.join(" "),
            s.commit_index
        )
    }
}

impl ManualNode {
    fn new(config: Config) -> Result<Self, crate::ConfigError> {
        let raft = Raft::new(config.clone())?;
        let membership = (raft.membership().clone(), raft.is_removed());
        Ok(Self {
            raft: Some(raft),
            store: MemStore::default(),
            sm: TestSm::default(),
            receiving: SnapshotReceiver::default(),
            config,
            role_term: (Role::Follower, 0),
            membership,
        })
    }
}
