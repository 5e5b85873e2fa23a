//! A deterministic simulator of a whole Raft cluster: 1–7 nodes in one thread, virtual time,
//! every choice drawn from one seed.
//!
//! Each node is a real [`Raft`] core driven the way a production driver drives it (the
//! [`crate::Ready`] contract): a simulated network delivers messages with latency, loss,
//! duplication, long reordering, and symmetric or one-way partitions; a simulated disk makes
//! writes durable after a latency, in order, so a crash loses exactly what was not yet durable;
//! a small test state machine applies commands and takes snapshots. After every event the
//! simulator checks Raft's safety properties ([`check`]) and the node's own invariants; a broken
//! one (or a panic in the core) becomes a [`Failure`] carrying `RAFTKV_SEED` and the tail of the
//! trace. The same seed always replays the same run (and the same [`Sim::trace_hash`]).

pub mod chaos;
pub mod check;
pub mod lab;
pub mod manual;
pub mod store;
pub mod trace;

pub use check::SafetyChecker;
pub use store::MemStore;
pub use trace::{fx_hash, Failure, Trace};

use crate::config::Config;
use crate::io::WriteOp;
use crate::message::Message;
use crate::raft::Error;
use crate::rng::Rng;
use crate::types::{Entry, Index, LogId, NodeId, Payload, Role, Term};
use crate::Raft;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The simulated network's behaviour. Latencies are in virtual milliseconds.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    /// The 6.5840 unreliable network: drop requests and replies with these chances, and delay
    /// every message by a further `0..=delay_ms_max`.
    pub unreliable: bool,
    pub drop_request: f64,
    pub drop_reply: f64,
    pub delay_ms_max: u64,
    /// The 6.5840 long reordering: 2 in 3 replies arrive 200–2,200 ms late.
    pub long_reordering: bool,
    /// Chance that a delivered message is delivered twice.
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_ms_min: 1,
            latency_ms_max: 4,
            unreliable: false,
            drop_request: 0.1,
            drop_reply: 0.1,
            delay_ms_max: 26,
            long_reordering: false,
            duplicate: 0.0,
        }
    }
}

/// How to build a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// 1 to 7 nodes, with ids 1..=nodes.
    pub nodes: usize,
    pub seed: u64,
    /// Virtual milliseconds per `tick()`.
    pub tick_ms: u64,
    /// The node configuration; `id`, `voters` and `seed` are filled in per node.
    pub config: Config,
    pub net: NetConfig,
    /// A disk write becomes durable after this many virtual milliseconds (a range).
    pub disk_latency_ms: (u64, u64),
    /// The test state machine snapshots once this many entries were applied since the last
    /// snapshot (`None`: never).
    pub snapshot_entries: Option<u64>,
    /// Trace lines kept for a failure report (0 formats nothing: fastest).
    pub trace_lines: usize,
}

impl SimOptions {
    pub fn new(nodes: usize, seed: u64) -> Self {
        let mut config = Config::new(1, [1]);
        config.snapshot_chunk_bytes_max = 512;
        Self {
            nodes,
            seed,
            tick_ms: 10,
            config,
            net: NetConfig::default(),
            disk_latency_ms: (0, 3),
            snapshot_entries: None,
            trace_lines: 64,
        }
    }
}

/// The simulator's test state machine: it records every command applied, by index, and its
/// snapshot holds all of them (as the 6.5840 tester's does), so nodes can be compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestSm {
    pub last_applied: Index,
    pub commands: BTreeMap<Index, Bytes>,
}

impl TestSm {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 + self.commands.len() * 20);
        out.extend_from_slice(&self.last_applied.to_le_bytes());
        for (index, cmd) in &self.commands {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
            out.extend_from_slice(cmd);
        }
        Bytes::from(out)
    }

    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let take = |data: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
            if data.len() < n {
                return Err("truncated test snapshot".into());
            }
            let (head, tail) = data.split_at(n);
            *data = tail;
            Ok(head.to_vec())
        };
        let mut rest = data;
        let u64_of = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let last_applied = u64_of(take(&mut rest, 8)?);
        let mut commands = BTreeMap::new();
        while !rest.is_empty() {
            let index = u64_of(take(&mut rest, 8)?);
            let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().unwrap_or([0; 4]));
            commands.insert(index, Bytes::from(take(&mut rest, len as usize)?));
        }
        Ok(Self {
            last_applied,
            commands,
        })
    }
}

#[derive(Clone, Debug)]
enum Event {
    Tick { node: usize, life: u64 },
    Deliver { msg: Message },
    DiskDone { node: usize, life: u64 },
}

#[derive(Clone, Debug)]
struct PendingWrite {
    done_ms: u64,
    write: Vec<WriteOp>,
    token: Option<LogId>,
    after: Vec<Message>,
}

/// One simulated node: the core (None while crashed), its durable store, its disk queue.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub raft: Option<Raft>,
    pub store: MemStore,
    disk: VecDeque<PendingWrite>,
    pub sm: TestSm,
    /// Bumped at each crash, so that stale timers and disk completions are dropped.
    life: u64,
    last_commit: Index,
    last_role_term: (Role, Term),
    /// Reads in flight: id → the highest commit index in the cluster when it was requested.
    reads: BTreeMap<u64, Index>,
    /// Completed reads: (id, read index).
    pub reads_done: Vec<(u64, Index)>,
    pub reads_aborted: Vec<u64>,
}

/// Message and byte counters, for the 6.5840 RPC-count checks.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Requests (not responses) sent, per node index.
    pub requests_sent: Vec<u64>,
    /// Application payload bytes sent in Appends.
    pub append_payload_bytes: u64,
    /// Appends rejected by followers (counted at the leader).
    pub append_rejections: u64,
    pub delivered: u64,
    pub dropped: u64,
}

/// A simulated cluster. Node indexes are 0-based; node `i` has id `i + 1`.
pub struct Sim {
    pub opts: SimOptions,
    rng: Rng,
    now_ms: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    pub nodes: Vec<SimNode>,
    connected: Vec<bool>,
    blocked: Vec<Vec<bool>>,
    pub checker: SafetyChecker,
    trace: Trace,
    pub stats: SimStats,
    failure: Option<Failure>,
    next_read_id: u64,
}

impl Sim {
    pub fn new(opts: SimOptions) -> Self {
        assert!(
            (1..=7).contains(&opts.nodes),
            "the simulator runs 1 to 7 nodes"
        );
        let n = opts.nodes;
        let mut sim = Self {
            rng: Rng::new(opts.seed),
            now_ms: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes: Vec::with_capacity(n),
            connected: vec![true; n],
            blocked: vec![vec![false; n]; n],
            checker: SafetyChecker::default(),
            trace: Trace::new(opts.trace_lines),
            stats: SimStats {
                requests_sent: vec![0; n],
                ..SimStats::default()
            },
            failure: None,
            next_read_id: 1,
            opts,
        };
        for i in 0..n {
            let raft = Raft::new(sim.node_config(i)).expect("simulator config is valid");
            sim.nodes.push(SimNode {
                raft: Some(raft),
                store: MemStore::default(),
                disk: VecDeque::new(),
                sm: TestSm::default(),
                life: 0,
                last_commit: 0,
                last_role_term: (Role::Follower, 0),
                reads: BTreeMap::new(),
                reads_done: Vec::new(),
                reads_aborted: Vec::new(),
            });
            let phase = sim.rng.range(0, sim.opts.tick_ms);
            sim.schedule(phase, Event::Tick { node: i, life: 0 });
        }
        sim
    }

    fn node_config(&self, i: usize) -> Config {
        let mut c = self.opts.config.clone();
        c.id = i as NodeId + 1;
        c.voters = (1..=self.opts.nodes as NodeId).collect();
        c.seed = self.opts.seed.wrapping_mul(31).wrapping_add(i as u64);
        c
    }

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The hash of every event so far: equal for equal seeds.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    pub fn events_processed(&self) -> u64 {
        self.trace.events
    }

    pub fn raft(&self, i: usize) -> Option<&Raft> {
        self.nodes[i].raft.as_ref()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].raft.is_some()
    }

    pub fn is_connected(&self, i: usize) -> bool {
        self.connected[i]
    }

    /// The failure recorded so far, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Records a failure (the first one wins) and returns it.
    pub fn fail(&mut self, message: impl Into<String>) -> Failure {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                seed: self.opts.seed,
                message: message.into(),
                trace_tail: self.trace.tail().cloned().collect(),
            });
        }
        self.failure.clone().expect("just set")
    }

    /// Notes an outside event (a fault, a proposal) in the trace.
    pub fn note(&mut self, what: String) {
        let now = self.now_ms;
        self.trace.record(now, &what, || what.clone());
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.events
            .insert((self.now_ms + delay_ms, self.seq), event);
    }

    // ---- running ----

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
        let result = catch_unwind(AssertUnwindSafe(|| self.process_inner(event)));
        let message = match result {
            Ok(Ok(())) => return Ok(()),
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
        Err(self.fail(message))
    }

    fn process_inner(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick { node, life } => {
                if self.nodes[node].life != life {
                    return Ok(());
                }
                let tick_ms = self.opts.tick_ms;
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
                if let crate::Body::AppendResponse {
                    result: crate::AppendResult::Rejected { .. },
                    ..
                } = msg.body
                {
                    self.stats.append_rejections += 1;
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

    /// Drives node `i` through every `Ready` it has, as a production driver would, and checks
    /// the safety properties on the way.
    fn after_input(&mut self, i: usize) -> Result<(), String> {
        loop {
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                break;
            }
            let mut ready = raft.take_ready();
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
    fn queue_write(
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
        self.checker.observe_role(raft)?;
        let role_term = (raft.role(), raft.term());
        if role_term.0 == Role::Leader && self.nodes[i].last_role_term != role_term {
            self.checker.check_leader_complete(raft)?;
        }
        let commit = raft.commit_index();
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
        self.nodes[i].last_commit = commit;
        self.nodes[i].last_role_term = role_term;
        Ok(())
    }

    // ---- network ----

    fn link_ok(&self, from: usize, to: usize) -> bool {
        self.connected[from] && self.connected[to] && !self.blocked[from][to]
    }

    fn send(&mut self, msg: Message) {
        let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
        let reply = msg.body.is_response();
        if !reply {
            self.stats.requests_sent[from] += 1;
        }
        if let crate::Body::Append { entries, .. } = &msg.body {
            self.stats.append_payload_bytes += entries
                .iter()
                .map(|e| e.payload.len_bytes() as u64)
                .sum::<u64>();
        }
        if !self.link_ok(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let net = &self.opts.net;
        if net.unreliable {
            let p = if reply {
                net.drop_reply
            } else {
                net.drop_request
            };
            if self.rng.chance(p) {
                self.stats.dropped += 1;
                return;
            }
        }
        let copies = if self.rng.chance(self.opts.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let net = &self.opts.net;
            let (lo, hi, unreliable, delay_max, long) = (
                net.latency_ms_min,
                net.latency_ms_max,
                net.unreliable,
                net.delay_ms_max,
                net.long_reordering,
            );
            let mut delay = self.rng.range(lo, hi + 1);
            if unreliable {
                delay += self.rng.range(0, delay_max + 1);
            }
            if long && reply && self.rng.range(0, 900) < 600 {
                let extra = self.rng.range(0, 2001);
                delay = 200 + self.rng.range(0, 1 + extra);
            }
            self.schedule(delay, Event::Deliver { msg: msg.clone() });
        }
    }

    // ---- faults ----

    /// Stops node `i` abruptly: everything not yet durable is lost.
    pub fn crash(&mut self, i: usize) {
        self.note(format!("crash n{}", i + 1));
        let node = &mut self.nodes[i];
        node.raft = None;
        node.disk.clear();
        node.life += 1;
        node.reads.clear();
    }

    /// Starts node `i` again from its durable state.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].raft.is_some() {
            return;
        }
        self.note(format!("restart n{}", i + 1));
        let config = self.node_config(i);
        let node = &mut self.nodes[i];
        let persisted = node.store.persisted();
        node.sm = match &persisted.snapshot {
            Some(s) => TestSm::decode(&s.data).unwrap_or_default(),
            None => TestSm::default(),
        };
        node.raft = Some(Raft::restore(config, persisted).expect("persisted state is valid"));
        node.last_commit = 0;
        node.last_role_term = (Role::Follower, 0);
        let life = node.life;
        let phase = self.rng.range(0, self.opts.tick_ms);
        self.schedule(phase, Event::Tick { node: i, life });
    }

    /// Cuts node `i` off from everyone, both ways (the 6.5840 `disconnect`).
    pub fn disconnect(&mut self, i: usize) {
        self.note(format!("disconnect n{}", i + 1));
        self.connected[i] = false;
    }

    pub fn connect(&mut self, i: usize) {
        self.note(format!("connect n{}", i + 1));
        self.connected[i] = true;
    }

    /// Splits the cluster: nodes talk only within their group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.note(format!("partition {groups:?}"));
        let n = self.n();
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..n {
            for b in 0..n {
                self.blocked[a][b] = group_of(a) != group_of(b);
            }
        }
    }

    /// Drops every message from `from` to `to` (one way).
    pub fn block_one_way(&mut self, from: usize, to: usize) {
        self.note(format!("block n{} → n{}", from + 1, to + 1));
        self.blocked[from][to] = true;
    }

    /// Full connectivity again (partitions and disconnections).
    pub fn heal(&mut self) {
        self.note("heal".into());
        for row in &mut self.blocked {
            row.fill(false);
        }
        self.connected.fill(true);
    }

    pub fn set_unreliable(&mut self, on: bool) {
        self.note(format!("unreliable={on}"));
        self.opts.net.unreliable = on;
    }

    pub fn set_long_reordering(&mut self, on: bool) {
        self.note(format!("long_reordering={on}"));
        self.opts.net.long_reordering = on;
    }

    // ---- clients ----

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
