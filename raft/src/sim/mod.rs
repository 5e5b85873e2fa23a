//! A deterministic simulator of a whole Raft cluster: 1–7 nodes in one thread, virtual time,
//! every choice drawn from one seed.
//!
//! Each node is a real [`Raft`] core driven the way a production driver drives it (the
//! [`crate::Ready`] contract): a simulated network delivers messages with latency, loss,
//! duplication, long reordering, and symmetric or one-way partitions; a simulated disk makes
//! writes durable after a latency, in order, so a crash loses exactly what was not yet durable;
//! a small test state machine applies commands and takes snapshots. Process faults: a node can
//! be paused (it handles nothing, then everything late, as a stopped process does) and each
//! node's clock can tick at its own rate. After every event the
//! simulator checks Raft's safety properties ([`check`]) and the node's own invariants; a broken
//! one (or a panic in the core) becomes a [`Failure`] carrying `RAFTKV_SEED` and the tail of the
//! trace. The same seed always replays the same run (and the same [`Sim::trace_hash`]).

pub mod chaos;
pub mod check;
mod client;
pub mod lab;
pub mod manual;
mod network;
mod run;
pub mod store;
mod testsm;
pub mod trace;

pub use check::SafetyChecker;
pub use store::MemStore;
pub use testsm::TestSm;
pub use trace::{fx_hash, Failure, Trace};

use crate::config::Config;
use crate::io::WriteOp;
use crate::membership::Membership;
use crate::message::Message;
use crate::rng::Rng;
use crate::types::{Index, LogId, NodeId, Role, Term};
use crate::{Raft, SnapshotReceiver};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
    /// Nodes 1..=voters start as the cluster's voters; the others start with no configuration
    /// (thesis §4: they join once a leader adds them). `None`: every node is a voter.
    pub voters: Option<usize>,
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
            voters: None,
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
    /// Issue 20: the snapshot being received, spooled in memory (lost by a crash).
    receiving: SnapshotReceiver<Vec<u8>>,
    /// Bumped at each crash, so that stale timers and disk completions are dropped.
    life: u64,
    last_commit: Index,
    last_role_term: (Role, Term),
    /// The configuration in effect as of the last event, and the id of the entry (or
    /// snapshot point) that holds it: the configuration the node's next input starts from.
    last_membership: (LogId, Membership),
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
    /// Membership changes and leadership transfers the leader accepted.
    pub changes_accepted: u64,
    pub transfers_started: u64,
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
    /// A paused node (a stopped process) handles nothing before this virtual time: its
    /// deliveries, timer ticks and disk completions wait, then run late, in order.
    paused_until: Vec<u64>,
    /// Each node's tick period in virtual milliseconds: its clock's rate (skew between nodes).
    tick_ms: Vec<u64>,
    /// With lease reads: when each node's next tick is due. Its driver counts every tick its
    /// clock owes before it handles any input (thesis §6.4.1: a lease needs tick counts that
    /// keep up with the clock), as the production driver does.
    next_tick_ms: Vec<u64>,
    pub checker: SafetyChecker,
    trace: Trace,
    pub stats: SimStats,
    failure: Option<Failure>,
    next_read_id: u64,
    /// Granted votes delivered to each candidate, by (candidate id, term): a new leader's
    /// voters must form a quorum of its configuration (learners' votes do not count).
    votes: HashMap<(NodeId, Term), BTreeSet<NodeId>>,
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
            paused_until: vec![0; n],
            tick_ms: vec![opts.tick_ms; n],
            next_tick_ms: vec![0; n],
            checker: SafetyChecker::default(),
            trace: Trace::new(opts.trace_lines),
            stats: SimStats {
                requests_sent: vec![0; n],
                ..SimStats::default()
            },
            failure: None,
            next_read_id: 1,
            votes: HashMap::new(),
            opts,
        };
        for i in 0..n {
            let raft = Raft::new(sim.node_config(i)).expect("simulator config is valid");
            let raft_membership = raft.membership().clone();
            sim.nodes.push(SimNode {
                raft: Some(raft),
                store: MemStore::default(),
                disk: VecDeque::new(),
                sm: TestSm::default(),
                receiving: SnapshotReceiver::default(),
                life: 0,
                last_commit: 0,
                last_role_term: (Role::Follower, 0),
                last_membership: (LogId::default(), raft_membership),
                reads: BTreeMap::new(),
                reads_done: Vec::new(),
                reads_aborted: Vec::new(),
            });
            let phase = sim.rng.range(0, sim.opts.tick_ms);
            sim.next_tick_ms[i] = phase;
            sim.schedule(phase, Event::Tick { node: i, life: 0 });
        }
        sim
    }

    fn node_config(&self, i: usize) -> Config {
        let mut c = self.opts.config.clone();
        c.id = i as NodeId + 1;
        let voters = self.opts.voters.unwrap_or(self.opts.nodes) as NodeId;
        c.voters = match (i as NodeId) < voters {
            true => (1..=voters).collect(),
            false => Vec::new(),
        };
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
}
