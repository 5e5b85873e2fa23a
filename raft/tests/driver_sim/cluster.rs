//! The simulated cluster of the driver simulation: nodes on one `SimRuntime`, their disks
//! ([`Disk`]), the network, and the faults a test applies to them (see `driver_sim.rs`).

use crate::checks::{Applied, DurableRecord, OffLoopReads, RecordingSm, TraceCheck};
use crate::disk::{Checks, Disk};
use raftkv_raft::driver::observer::ObserverHandle;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime};
use raftkv_raft::{Config, Node, NodeConfig, NodeError, Role, Runtime, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Cluster {
    pub seed: u64,
    /// Every node's events go here.
    pub trace: Arc<TraceCheck>,
    pub rt: SimRuntime,
    pub net: SimNet,
    pub storages: Vec<Disk>,
    /// Nodes whose disk was found corrupted at a start: their data is gone, they stay down.
    pub lost: Vec<bool>,
    pub nodes: Vec<Option<Node<SimRuntime, RecordingSm>>>,
    pub global: Applied,
    /// Election Safety: the leader seen for each term.
    pub leaders: BTreeMap<u64, u64>,
    /// Nodes 1..=voters start as the voters; the others start with no configuration (to join).
    pub voters: u64,
    /// When each paused node resumes (a paused node is not asked anything: it would not answer).
    pub paused_until: Vec<Option<Duration>>,
    /// Issue 20: per node, the state a durable state machine keeps across crashes and how many
    /// entries it applies between commits; `None`: an in-memory one.
    pub durable: Vec<Option<(Arc<Mutex<DurableRecord>>, u64)>>,
    /// Issue 20: the snapshot reads the nodes ran off their loops; `None`: they read on it.
    pub reads: Option<Arc<Mutex<OffLoopReads>>>,
}

impl Cluster {
    pub fn new(seed: u64, n: usize, rt: &SimRuntime) -> Self {
        Self::with_checks(seed, n, rt, Checks::On)
    }

    pub fn with_checks(seed: u64, n: usize, rt: &SimRuntime, checks: Checks) -> Self {
        // Issue 20: in even seeds the odd nodes keep their state across crashes, committing it
        // every 1 to 30 entries.
        let durable: Vec<_> = (0..n as u64)
            .map(|i| {
                (seed % 2 == 0 && i % 2 == 0).then(|| {
                    let every = 1 + (seed / 2 + i * 7) % 30;
                    (Arc::new(Mutex::new(DurableRecord::default())), every)
                })
            })
            .collect();
        Self {
            seed,
            trace: Arc::new(TraceCheck {
                seed,
                durable: (0..n as u64)
                    .filter(|&i| durable[i as usize].is_some())
                    .map(|i| i + 1)
                    .collect(),
                state: Mutex::default(),
            }),
            durable,
            // Issue 20: in three seeds of four (not those divisible by 4) the state machines'
            // snapshots are read off the loop.
            reads: (seed % 4 != 0).then(Arc::default),
            rt: rt.clone(),
            net: SimNet::new(rt),
            storages: (0..n).map(|_| Disk::new(rt, (0, 3), checks)).collect(),
            lost: vec![false; n],
            nodes: (0..n).map(|_| None).collect(),
            global: Applied::default(),
            leaders: BTreeMap::new(),
            voters: n as u64,
            paused_until: vec![None; n],
        }
    }

    /// Stops node `i` from running for `for_` (SIGSTOP, then SIGCONT).
    pub fn pause(&mut self, i: usize, for_: Duration) {
        self.rt.pause_group(i as u64 + 1);
        self.paused_until[i] = Some(self.rt.now() + for_);
    }

    /// Resumes the paused nodes that are due (every one with `all`).
    pub fn resume_due(&mut self, all: bool) {
        for i in 0..self.paused_until.len() {
            if self.paused_until[i].is_some_and(|t| all || self.rt.now() >= t) {
                self.rt.resume_group(i as u64 + 1);
                self.paused_until[i] = None;
            }
        }
    }

    /// Starts node `i` on its disk, unless that disk was found corrupted (the node is lost).
    pub async fn start(&mut self, i: usize) {
        if self.lost[i] {
            return;
        }
        let id = i as u64 + 1;
        let mut raft = match id <= self.voters {
            true => Config::new(id, 1..=self.voters),
            false => Config::joining(id),
        };
        raft.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        raft.snapshot_chunk_bytes_max = 256;
        let mut config = NodeConfig::new(raft);
        config.snapshot_threshold_entries = 20;
        // Issue 20, the trailing log: none in one seed of three (followers a little behind
        // get snapshots), else 10 to 59 entries kept (they catch up from the log).
        config.trailing_log_entries = match self.seed % 3 {
            0 => 0,
            _ => 10 + (self.seed / 3) % 50,
        };
        config.request_timeout = Duration::from_secs(2);
        config.observer = Some(ObserverHandle(self.trace.clone()));
        let mut sm = RecordingSm::open(
            self.seed,
            id,
            self.global.clone(),
            self.durable[i].clone(),
            self.reads.clone(),
        );
        sm.spool = Some(self.storages[i].clone());
        let rt = self.rt.with_group(id);
        let started = Node::start(
            rt,
            config,
            self.storages[i].clone(),
            self.net.endpoint(id),
            sm,
        )
        .await;
        match started {
            Ok(node) => self.nodes[i] = Some(node),
            // Raft's durability rests on the disk: a node whose stored log is damaged must not
            // take part with it (it would apply or send what nobody wrote). It stays down.
            Err(NodeError::Storage(StorageError::Corrupt { .. }))
                if self.storages[i].found_corruption() =>
            {
                self.lost[i] = true;
            }
            Err(e) => panic!("RAFTKV_SEED={}: n{id} failed to start: {e}", self.seed),
        }
    }

    /// Kills node `i`'s process; with `power_cut`, its machine's power goes too (the page
    /// cache with it).
    pub fn crash(&mut self, i: usize, power_cut: bool) {
        self.rt.kill_group(i as u64 + 1);
        self.storages[i].crash(power_cut);
        // Issue 20: a power cut loses a durable state's last commit unless it was synced (the
        // worst case LMDB with `MDB_NOMETASYNC` allows: what the driver must survive).
        if let Some((d, _)) = &self.durable[i] {
            d.lock().unwrap().power_cut(power_cut);
        }
        // The next start is a new process; its disk works again (what it held stays).
        self.storages[i].repair();
        self.nodes[i] = None;
        self.paused_until[i] = None;
    }

    /// The leader of the highest term among live nodes; checks Election Safety on the way.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if self.paused_until[i].is_some() {
                continue;
            }
            let Ok(s) = node.status().await else { continue };
            if s.role == Role::Leader {
                let prev = *self.leaders.entry(s.term).or_insert(s.id);
                assert_eq!(
                    prev, s.id,
                    "RAFTKV_SEED={}: Election Safety: n{prev} and n{} lead term {}",
                    self.seed, s.id, s.term
                );
                if best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}
