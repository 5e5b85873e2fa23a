//! The simulator's event loop: time, message delivery, disk completions, and driving each node
//! through its `Ready`s as a production driver would, checking safety after every event.

use super::{Event, Failure, PendingWrite, Sim, TestSm};
use crate::io::WriteOp;
use crate::message::Message;
use crate::types::{Entry, LogId, NodeId, Payload, Role};
use std::panic::{catch_unwind, AssertUnwindSafe};

impl Sim {
    /// Runs the cluster for `ms` virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) -> Result<(), Failure> {
        let end = self.now_ms + ms;
        self.run_until(end, |_| false).map(|_| ())
    }

    /// Runs until `done` holds (checked after every event) or until virtual time `end_ms`.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        end_ms: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Failure> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > end_ms {
                break;
            }
            let ((t, _), event) = entry.remove_entry();
            self.now_ms = t;
            self.process(event)?;
            if done(self) {
                return Ok(true);
            }
        }
        self.now_ms = self.now_ms.max(end_ms);
        Ok(done(self))
    }

    fn process(&mut self, event: Event) -> Result<(), Failure> {
        match self.guard(|sim| sim.process_inner(event)) {
            Some(()) => Ok(()),
            None => Err(self.failure.clone().expect("guard records the failure")),
        }
    }

    /// Runs `f` (an event, or a client's input and the node's handling of it): a broken
    /// property or a panic in the core becomes the run's failure, and `None`.
    pub(super) fn guard<R>(&mut self, f: impl FnOnce(&mut Sim) -> Result<R, String>) -> Option<R> {
        let result = catch_unwind(AssertUnwindSafe(|| f(self)));
        let message = match result {
            Ok(Ok(r)) => return Some(r),
            Ok(Err(violation)) => violation,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                format!("panic: {text}")
            }
        };
        self.fail(message);
        None
    }

    fn process_inner(&mut self, event: Event) -> Result<(), String> {
        let node = match &event {
            Event::Tick { node, .. } | Event::DiskDone { node, .. } => *node,
            Event::Deliver { msg } => msg.to as usize - 1,
        };
        // A paused node handles the event when it resumes (in the order they arrived).
        let resume = self.paused_until[node];
        if resume > self.now_ms {
            self.schedule(resume - self.now_ms, event);
            return Ok(());
        }
        if !matches!(event, Event::Tick { .. }) {
            self.catch_up_ticks(node)?;
        }
        match event {
            Event::Tick { node, life } => {
                if self.nodes[node].life != life {
                    return Ok(());
                }
                if self.opts.config.lease_reads {
                    self.catch_up_ticks(node)?;
                    let due = self.next_tick_ms[node].saturating_sub(self.now_ms).max(1);
                    self.schedule(due, Event::Tick { node, life });
                    return Ok(());
                }
                let tick_ms = self.tick_ms[node];
                self.schedule(tick_ms, Event::Tick { node, life });
                let Some(raft) = self.nodes[node].raft.as_mut() else {
                    return Ok(());
                };
                raft.tick();
                self.trace.hash_only(self.now_ms, ("tick", node));
                self.after_input(node)
            }
            Event::Deliver { msg } => {
                let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
                if !self.link_ok(from, to) || self.nodes[to].raft.is_none() {
                    self.stats.dropped += 1;
                    self.trace
                        .record(self.now_ms, ("drop", &msg), || format!("drop {msg}"));
                    return Ok(());
                }
                self.stats.delivered += 1;
                match msg.body {
                    crate::Body::AppendResponse {
                        result: crate::AppendResult::Rejected { .. },
                        ..
                    } => self.stats.append_rejections += 1,
                    crate::Body::VoteResponse { granted: true } => {
                        let voters = self.votes.entry((msg.to, msg.term)).or_default();
                        voters.insert(msg.from);
                    }
                    _ => {}
                }
                self.trace.record(self.now_ms, &msg, || msg.to_string());
                if let Some(raft) = self.nodes[to].raft.as_mut() {
                    raft.step(msg);
                }
                self.after_input(to)
            }
            Event::DiskDone { node, life } => {
                if self.nodes[node].life != life {
                    return Ok(());
                }
                let Some(w) = self.nodes[node].disk.pop_front() else {
                    return Ok(());
                };
                self.nodes[node].store.apply(w.write);
                for m in w.after {
                    self.send(m);
                }
                if let (Some(token), Some(raft)) = (w.token, self.nodes[node].raft.as_mut()) {
                    raft.persisted(token);
                }
                self.after_input(node)
            }
        }
    }

    /// With lease reads, node `i` counts the ticks its clock owes now (each with its `Ready`s)
    /// before it handles anything else: a paused node catches up when it resumes.
    pub(super) fn catch_up_ticks(&mut self, i: usize) -> Result<(), String> {
        if !self.opts.config.lease_reads {
            return Ok(());
        }
        while self.next_tick_ms[i] <= self.now_ms {
            self.next_tick_ms[i] += self.tick_ms[i];
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                continue;
            };
            raft.tick();
            self.trace.hash_only(self.now_ms, ("tick", i));
            self.after_input(i)?;
        }
        Ok(())
    }

    /// Drives node `i` through every `Ready` it has, as a production driver would, and checks
    /// the safety properties on the way.
    pub(super) fn after_input(&mut self, i: usize) -> Result<(), String> {
        loop {
            let node = &mut self.nodes[i];
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                break;
            }
            let mut ready = raft.take_ready();
            node.receiving
                .receive(raft, &mut ready, || Ok(Vec::new()))
                .map_err(|e| format!("n{}: {e}", i + 1))?;
            self.checker
                .observe_appended(self.nodes[i].raft.as_ref().expect("up"), &ready.entries)?;
            for m in std::mem::take(&mut ready.send_now) {
                self.send(m);
            }
            let token = ready.persist_token;
            let after = std::mem::take(&mut ready.send_after_persist);
            let write = ready.take_write_ops();
            self.queue_write(i, write, token, after);
            if let Some(s) = ready.snapshot.take() {
                self.checker.observe_snapshot(i as NodeId + 1, &s)?;
                let sm = TestSm::decode(&s.data)?;
                if sm.last_applied != s.last.index {
                    return Err(format!(
                        "n{} installed a snapshot for {} holding {}",
                        i + 1,
                        s.last,
                        sm.last_applied
                    ));
                }
                self.nodes[i].sm = sm;
            }
            for e in &ready.committed_entries {
                self.apply(i, e)?;
            }
            for r in &ready.read_states {
                let Some(min) = self.nodes[i].reads.remove(&r.id) else {
                    return Err(format!("n{} confirmed unknown read {}", i + 1, r.id));
                };
                /// thesis §6.4: a read must reflect every write committed before it began.
                if r.index < min {
                    return Err(format!(
                        "ReadIndex: n{} read {} at index {} but {} was committed before it began",
                        i + 1,
                        r.id,
                        r.index,
                        min
                    ));
                }
                if r.index > self.nodes[i].sm.last_applied {
                    return Err(format!(
                        "n{} served read {} before applying {}",
                        i + 1,
                        r.id,
                        r.index
                    ));
                }
                self.nodes[i].reads_done.push((r.id, r.index));
            }
            for id in ready.aborted_reads.drain(..) {
                self.nodes[i].reads.remove(&id);
                self.nodes[i].reads_aborted.push(id);
            }
            self.maybe_snapshot(i)?;
        }
        self.check_node(i)
    }

    fn apply(&mut self, i: usize, e: &Entry) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if e.index != node.sm.last_applied + 1 {
            return Err(format!(
                "n{} applied {} after {}: applies must be in order",
                i + 1,
                e.id(),
                node.sm.last_applied
            ));
        }
        self.checker.observe_applied(i as NodeId + 1, e)?;
        /// Raft §6: a committed configuration's quorums intersect its predecessor's.
        if let Payload::Membership(next) = &e.payload {
            let prev = node
                .raft
                .as_ref()
                .and_then(|r| r.membership_at(e.index - 1));
            if let Some(prev) = prev {
                self.checker.check_transition(e.id(), prev, next)?;
            }
        }
        node.sm.last_applied = e.index;
        if let Payload::Command(data) = &e.payload {
            node.sm.commands.insert(e.index, data.clone());
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self, i: usize) -> Result<(), String> {
        let Some(every) = self.opts.snapshot_entries else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let applied = node.sm.last_applied;
        if applied < raft.snapshot_index() + every {
            return Ok(());
        }
        let data = node.sm.encode();
        let snapshot = raft
            .snapshot_taken(applied, data)
            .map_err(|e| e.to_string())?;
        // The application's own snapshot write, ordered before the compaction that follows.
        self.queue_write(i, vec![WriteOp::SaveSnapshot(snapshot)], None, Vec::new());
        Ok(())
    }

    /// Queues a durable write; messages that promise it (and any earlier write) wait for it.
    pub(super) fn queue_write(
        &mut self,
        i: usize,
        write: Vec<WriteOp>,
        token: Option<LogId>,
        after: Vec<Message>,
    ) {
        let empty = write.is_empty();
        let node = &mut self.nodes[i];
        if empty && token.is_none() {
            if let Some(last) = node.disk.back_mut() {
                // Nothing to write, but these messages may depend on earlier writes.
                last.after.extend(after);
            } else {
                for m in after {
                    self.send(m);
                }
            }
            return;
        }
        let (lo, hi) = self.opts.disk_latency_ms;
        let latency = self.rng.range(lo, hi + 1);
        let node = &mut self.nodes[i];
        let done_ms = node
            .disk
            .back()
            .map_or(0, |w| w.done_ms)
            .max(self.now_ms + latency);
        let life = node.life;
        node.disk.push_back(PendingWrite {
            done_ms,
            write,
            token,
            after,
        });
        self.schedule(done_ms - self.now_ms, Event::DiskDone { node: i, life });
    }

    /// The node-level checks after each event: invariants, Election Safety, Leader
    /// Completeness, commit never going back.
    fn check_node(&mut self, i: usize) -> Result<(), String> {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        raft.check_invariants();
        let role_term = (raft.role(), raft.term());
        let id = raft.id();
        /// Raft §5.2, Election Safety: at most one leader per term, counting a leader once its
        /// term and vote are durable. A node that won alone and crashed before that write can
        /// win the same term again after its restart, or vote in it for another; it sent and
        /// committed nothing in between (chaos seeds 107444 and 304429 with reconfiguration).
        let hs = self.nodes[i].store.hard_state;
        if hs.term == role_term.1 && hs.voted_for == Some(id) {
            self.checker.observe_role(raft)?;
        }
        // The configuration the node started this event with: the one it campaigned in, or
        // counted a quorum in.
        let (last_role, last_term) = self.nodes[i].last_role_term;
        let membership = &self.nodes[i].last_membership.1;
        if role_term.0 == Role::Leader && (last_role, last_term) != role_term {
            /// Raft §5.4: Leader Completeness holds for leaders of later terms than the commit;
            /// a leader of a stale term (votes delivered late) need not hold what a later term
            /// committed (chaos seed 164196 with reconfiguration).
            if role_term.1 >= self.checker.highest_leader_term() {
                self.checker.check_leader_complete(raft)?;
            }
            let granted = self.votes.remove(&(id, role_term.1)).unwrap_or_default();
            self.checker
                .check_election(id, role_term.1, membership, &granted)?;
        }
        let commit = raft.commit_index();
        if last_role == Role::Leader
            && last_term == role_term.1
            && commit > self.nodes[i].last_commit
        {
            let term = raft
                .term_at(commit)
                .ok_or("the commit index is in the log")?;
            let at = LogId::new(commit, term);
            let holds = |v: NodeId| self.nodes[v as usize - 1].store.holds(at);
            if membership.vote_result(|v| Some(holds(v))) != crate::quorum::VoteResult::Won {
                let holders = membership.all_voters().into_iter().filter(|v| holds(*v));
                self.checker
                    .check_commit(id, at, membership, &holders.collect())?;
            }
        }
        if commit < self.nodes[i].last_commit {
            return Err(format!(
                "n{}: commit index went back from {} to {commit}",
                i + 1,
                self.nodes[i].last_commit
            ));
        }
        if raft.stats().protocol_violations > 0 {
            return Err(format!("n{} saw a protocol violation from a peer", i + 1));
        }
        self.checker.observe_commit(commit);
        let index = raft.membership_index();
        let membership_id = LogId::new(index, raft.term_at(index).unwrap_or(0));
        if self.nodes[i].last_membership.0 != membership_id {
            self.nodes[i].last_membership = (membership_id, raft.membership().clone());
        }
        self.nodes[i].last_commit = commit;
        self.nodes[i].last_role_term = role_term;
        Ok(())
    }
}
