//! [`LocalCluster`]'s faults: partitions (two-way and one-way), isolation, an unreliable
//! network (drops, delays, reordering) through the transports' shared filter, and process
//! pauses (issue 21).

use super::*;

impl<R: NetRuntime, H: Host> LocalCluster<R, H> {
    /// Groups of nodes that can talk only within themselves (peer traffic; clients reach
    /// every node). Nodes in no group are cut off from everyone.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), ClusterError> {
        for &i in groups.iter().flatten() {
            self.check(i)?;
        }
        self.faults.blocked = partition_links(self.nodes.len(), groups);
        let ids = groups
            .iter()
            .map(|g| g.iter().map(|&i| i as NodeId + 1).collect())
            .collect();
        if let Some(t) = &self.trace {
            t.record(self.runtime.now(), 0, EventKind::Partition { groups: ids });
        }
        self.apply_faults();
        Ok(())
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        self.partition(&[vec![i], others])
    }

    /// Full connectivity again (unreliability set by `set_unreliable` stays).
    pub fn heal(&mut self) {
        self.faults.blocked.clear();
        if let Some(t) = &self.trace {
            t.record(self.runtime.now(), 0, EventKind::Heal);
        }
        self.apply_faults();
    }

    /// Peer messages are dropped with probability `drop` and delayed by a uniform time in
    /// `delay_ms` (which reorders them when the range is wide and `reorder` is true).
    pub fn set_unreliable(&mut self, drop: f64, delay_ms: (u64, u64), reorder: bool) {
        self.faults.drop_probability = if drop.is_nan() {
            0.0
        } else {
            drop.clamp(0.0, 1.0)
        };
        let (lo, hi) = (delay_ms.0.min(delay_ms.1), delay_ms.0.max(delay_ms.1));
        // Without reordering, a fixed delay keeps each link in order.
        self.faults.delay_ms = if reorder { (lo, hi) } else { (hi, hi) };
        if let Some(t) = &self.trace {
            let kind = EventKind::Unreliable {
                drop: self.faults.drop_probability,
                delay_ms_min: self.faults.delay_ms.0,
                delay_ms_max: self.faults.delay_ms.1,
            };
            t.record(self.runtime.now(), 0, kind);
        }
        self.apply_faults();
    }

    /// Peer messages are sent twice with probability `p` (0 ..= 1; NaN counts as 0), on top of
    /// [`Self::set_unreliable`]'s faults, until [`Self::set_reliable`].
    pub fn set_duplicate_probability(&mut self, p: f64) {
        self.faults.duplicate_probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.apply_faults();
    }

    pub fn set_reliable(&mut self) {
        self.faults.drop_probability = 0.0;
        self.faults.duplicate_probability = 0.0;
        self.faults.delay_ms = (0, 0);
        if let Some(t) = &self.trace {
            t.record(self.runtime.now(), 0, EventKind::Reliable);
        }
        self.apply_faults();
    }

    pub(super) fn apply_faults(&self) {
        if let Some(t) = &self.trace {
            t.set_blocked(self.faults.blocked.clone());
        }
        self.filter.heal();
        let n = self.nodes.len() as u64;
        for from in 1..=n {
            for to in (1..=n).filter(|&t| t != from) {
                let rule = LinkRule {
                    blocked: self.faults.blocked.contains(&(from, to)),
                    drop_probability: self.faults.drop_probability,
                    delay_ms_min: self.faults.delay_ms.0,
                    delay_ms_max: self.faults.delay_ms.1,
                    duplicate_probability: self.faults.duplicate_probability,
                };
                if rule != LinkRule::default() {
                    self.filter.set_link(from, to, rule);
                }
            }
        }
    }
}

/// The directed links (Raft ids) that a partition of `n` nodes into `groups` (node indexes)
/// blocks: those between groups, and every link of a node in no group.
pub(crate) fn partition_links(n: usize, groups: &[Vec<usize>]) -> BTreeSet<(NodeId, NodeId)> {
    let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
    let mut blocked = BTreeSet::new();
    for a in 0..n {
        for b in 0..n {
            let split = match (group_of(a), group_of(b)) {
                (Some(x), Some(y)) => x != y,
                _ => true,
            };
            if a != b && split {
                blocked.insert((a as NodeId + 1, b as NodeId + 1));
            }
        }
    }
    blocked
}

/// Resumes a node's gate when the node is dropped (crashed, closed): its paused tasks must
/// run to see the shutdown and release its storage and ports.
pub(super) struct ResumeOnDrop(pub(super) PauseGate);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        self.0.resume();
    }
}

impl<R: NetRuntime, H: Host> LocalCluster<R, H> {
    /// Pauses node `i`, as SIGSTOP does a process: it keeps its state, its sockets and its
    /// connections, but handles nothing (peer messages, client requests, timers) until
    /// [`LocalCluster::resume`]; then it handles what arrived meanwhile, late, and its timers
    /// fire late. Calls on a paused node ([`LocalCluster::status`]) fail with
    /// [`ClusterError::Paused`]; crashing it works.
    pub fn pause(&mut self, i: usize) -> Result<(), ClusterError> {
        self.gate(i)?.pause();
        self.record(i, EventKind::Pause);
        Ok(())
    }

    /// Resumes node `i` (paused or not).
    pub fn resume(&mut self, i: usize) -> Result<(), ClusterError> {
        self.gate(i)?.resume();
        self.record(i, EventKind::Resume);
        Ok(())
    }

    /// Whether node `i` is running and paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .and_then(Option::as_ref)
            .and_then(|r| r.pause.as_ref())
            .is_some_and(|p| p.0.is_paused())
    }

    /// Drops every peer message from node `from` to node `to`, one way: `to`'s messages still
    /// reach `from`. Stays until [`LocalCluster::unblock`], `heal` or `partition`.
    pub fn block(&mut self, from: usize, to: usize) -> Result<(), ClusterError> {
        self.check(from)?;
        self.check(to)?;
        if from != to {
            self.faults.blocked.insert((from as u64 + 1, to as u64 + 1));
            let to = to as NodeId + 1;
            self.record(from, EventKind::Block { to });
            self.apply_faults();
        }
        Ok(())
    }

    /// Lets peer messages from node `from` to node `to` through again.
    pub fn unblock(&mut self, from: usize, to: usize) -> Result<(), ClusterError> {
        self.check(from)?;
        self.check(to)?;
        self.faults
            .blocked
            .remove(&(from as u64 + 1, to as u64 + 1));
        self.record(
            from,
            EventKind::Unblock {
                to: to as NodeId + 1,
            },
        );
        self.apply_faults();
        Ok(())
    }

    fn gate(&self, i: usize) -> Result<&PauseGate, ClusterError> {
        self.check(i)?;
        let running = self.nodes[i]
            .as_ref()
            .ok_or(ClusterError::NotRunning { index: i })?;
        running
            .pause
            .as_ref()
            .map(|p| &p.0)
            .ok_or(ClusterError::Unsupported {
                what: "pausing a node (this runtime cannot pause tasks)",
            })
    }
}
