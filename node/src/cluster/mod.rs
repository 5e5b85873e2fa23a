//! [`LocalCluster`]: n KV nodes in this process, over real TCP on 127.0.0.1 (ports chosen by
//! the OS), on memory or LMDB storage, under any [`Runtime`] — for scripts, tests and the
//! Python package. Faults: `crash` (stop a node abruptly: what was not durable is lost),
//! `restart` (from its durable state), `partition`, `isolate`, `heal`, `set_unreliable`,
//! `set_reliable` (peer traffic, through the transports' shared [`FaultFilter`]).
//!
//! Each node `i` (0-based) has Raft id `i + 1`, a peer address and a client address; both
//! stay the same across restarts.
//!
//! Trace ([`crate::trace`]): unless [`ClusterConfig::trace_events_max`] is 0, every node's
//! driver events and every fault above are recorded into one bounded trace
//! ([`LocalCluster::trace`]), and leader changes can be followed as they happen
//! ([`LocalCluster::leader_changes`]).
//!
//! Membership (thesis §4): `add_node` starts a new node that joins as a learner and (unless
//! asked to stay one) is promoted once caught up, `promote`, `remove_node` (the leader too:
//! leadership is handed over first), `transfer_leader`, `members`. Indexes are never reused: a
//! removed node's index stays removed.
//!
//! What runs on top of Raft is a [`Host`]: the KV service by default ([`KvHost`]); the shard
//! controller and the replica groups of [`crate::sharded::ShardedCluster`] are others, with
//! the same faults.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftkv_raft::runtime::pause::PauseGate;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{
    Config, MemberAddrs, MemberChange, Membership, MembershipError, NetRuntime, Node, NodeConfig,
    NodeError, NodeId, ReconfigError, Role, Runtime, StateMachine, Status,
};
use raftkv_transport_tcp::{FaultFilter, LinkRule, TcpConfig, TcpTransport};

use raftkv_kv::clerk::{Clerk, ClerkConfig};
use raftkv_kv::service::ServiceConfig;
use raftkv_kv::state::DATA_BYTES_MAX_DEFAULT;

pub use crate::error::ClusterError;
pub use crate::host::{Host, KvHost, Serving};
use crate::metrics::{MeteredStorage, NodeMetrics};
use crate::server::ServerConfig;
use crate::storage::{lmdb_locked, open_lmdb, wall_clock_ms, AnyStorage, RELEASE_WAIT};
use crate::tcp_client::TcpConnector;
use crate::trace::{ClusterTrace, LeaderChange, TraceRecorder, TRACE_EVENTS_MAX_DEFAULT};
use raftkv_raft::driver::observer::{EventKind, MsgInfo, ObserverHandle, Observers};
use std::sync::Arc;

mod faults;
mod membership;

#[cfg(feature = "sim")]
pub(crate) use faults::partition_links;
use faults::ResumeOnDrop;
pub use membership::Members;

/// Where a node keeps its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// In memory (survives `crash`/`restart` in this process, not the process).
    Memory,
    /// LMDB in a directory per node.
    Lmdb,
}

/// How to build a local cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub storage: StorageKind,
    /// LMDB: node `i` uses `data_dir/node{i+1}`. `None`: a temporary directory, removed when
    /// the cluster is dropped.
    pub data_dir: Option<PathBuf>,
    /// Seeds elections and the fault filter.
    pub seed: u64,
    /// Snapshot after this many log entries past the last snapshot (`None`: the default).
    pub snapshot_threshold: Option<u64>,
    /// Issue 20: keep up to this many log entries before where a compaction would go, so that
    /// a follower a little behind catches up from the log instead of a whole-state snapshot
    /// ([`raftkv_raft::NodeConfig::trailing_log_entries`]; `None`: its default, 5,000; 0:
    /// none; at most [`raftkv_raft::TRAILING_LOG_ENTRIES_MAX`]).
    pub trailing_log: Option<u64>,
    /// A node's request timeout (how long it waits for a proposal to apply).
    pub request_timeout: Duration,
    /// A write that would take a node's data past this many bytes is refused
    /// ([`raftkv_kv::state::KvStateMachine::with_data_bytes_max`]). At most
    /// [`crate::storage::data_bytes_max_limit_for`] the nodes' `state` (512 MiB in memory, 8 GiB
    /// in LMDB; [`crate::storage::data_bytes_max_default_for`] is the usual default).
    pub data_bytes_max: u64,
    /// The trace keeps at most this many events (the oldest are dropped beyond it); 0: no
    /// trace (the drivers get no observer).
    pub trace_events_max: usize,
    /// Keep each node's Prometheus metrics ([`LocalCluster::metrics`]).
    pub metrics: bool,
    /// Where each node keeps its KV state ([`crate::kv_state::StateKind`]; `lmdb` needs LMDB
    /// storage).
    pub state: crate::kv_state::StateKind,
    /// Leaders answer reads from a lease (thesis §6.4.1; [`raftkv_raft::Config::lease_reads`]).
    pub lease_reads: bool,
    /// Followers serve reads with a read index from the leader (thesis §6.4;
    /// [`raftkv_raft::Config::follower_reads`]).
    pub follower_reads: bool,
}

impl ClusterConfig {
    pub fn new(nodes: usize, storage: StorageKind) -> Self {
        Self {
            nodes,
            storage,
            data_dir: None,
            seed: 1,
            snapshot_threshold: None,
            trailing_log: None,
            request_timeout: Duration::from_secs(2),
            data_bytes_max: DATA_BYTES_MAX_DEFAULT,
            trace_events_max: TRACE_EVENTS_MAX_DEFAULT,
            metrics: true,
            state: crate::kv_state::StateKind::Memory,
            lease_reads: false,
            follower_reads: false,
        }
    }
}

struct Running<R: Runtime, M: StateMachine> {
    node: Node<R, M>,
    /// The host's server (and tasks): serving until dropped.
    _server: Serving,
    /// Pauses the node's tasks ([`LocalCluster::pause`]); `None` on a runtime that cannot.
    /// Resumed when dropped, so that a crashed or closed node's tasks run to their end.
    pause: Option<ResumeOnDrop>,
}

/// The network faults in force, reapplied to the filter as a whole on every change.
#[derive(Clone, Debug, Default)]
struct Faults {
    /// Directed links (from, to) that drop everything (node ids).
    blocked: BTreeSet<(NodeId, NodeId)>,
    drop_probability: f64,
    delay_ms: (u64, u64),
    duplicate_probability: f64,
}

/// n nodes in this process, each running `H` (the KV service by default). Dropping it stops
/// every node (without waiting); call [`LocalCluster::close`] to wait until every thread, port
/// and file is released.
pub struct LocalCluster<R: Runtime, H: Host = KvHost> {
    runtime: R,
    host: H,
    config: ClusterConfig,
    peer_addrs: Vec<SocketAddr>,
    client_addrs: Vec<SocketAddr>,
    filter: FaultFilter,
    faults: Faults,
    nodes: Vec<Option<Running<R, H::Machine>>>,
    memory: Vec<MemStorage>,
    data_dir: Option<PathBuf>,
    /// Keeps a temporary data directory alive; removed on drop.
    _temp_dir: Option<tempfile::TempDir>,
    cluster_id: u64,
    /// Nodes `0..initial` start with the initial configuration; later ones join.
    initial: usize,
    /// Nodes taken out of the configuration by `remove_node` (stopped for good).
    removed: BTreeSet<usize>,
    /// Where every node's events and the cluster's faults are recorded (`None`: not traced).
    trace: Option<TraceRecorder>,
    /// Each node's metrics, by index (empty when not kept); kept across restarts.
    metrics: Vec<NodeMetrics>,
}

/// A local cluster starts at most this many nodes over its life.
pub const NODES_MAX: usize = 64;

impl<R: NetRuntime> LocalCluster<R> {
    /// Binds every node's addresses, then starts every node, each serving KV.
    pub async fn start(runtime: R, config: ClusterConfig) -> Result<Self, ClusterError> {
        Self::start_hosting(runtime, config, KvHost).await
    }

    /// A Clerk that knows every node's client address.
    pub fn clerk(&self, config: ClerkConfig) -> Clerk<R, TcpConnector<R>> {
        Clerk::new(
            self.runtime.clone(),
            TcpConnector::with_runtime(self.runtime.clone()),
            self.addrs(),
            config,
        )
    }
}

impl<R: NetRuntime, H: Host> LocalCluster<R, H> {
    /// Binds every node's addresses, then starts every node, each running `host`'s state
    /// machine and serving its protocol.
    pub async fn start_hosting(
        runtime: R,
        config: ClusterConfig,
        host: H,
    ) -> Result<Self, ClusterError> {
        if config.nodes == 0 || config.nodes > 7 {
            return Err(ClusterError::Size {
                nodes: config.nodes,
            });
        }
        let n = config.nodes;
        let peer_listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let client_listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let peer_addrs = peer_listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let client_addrs = client_listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let (data_dir, temp_dir) = match (config.storage, &config.data_dir) {
            (StorageKind::Memory, _) => (None, None),
            (StorageKind::Lmdb, Some(d)) => (Some(d.clone()), None),
            (StorageKind::Lmdb, None) => {
                let t = tempfile::Builder::new().prefix("raftkv-").tempdir()?;
                (Some(t.path().to_path_buf()), Some(t))
            }
        };
        let cluster_id = config.seed ^ 0x5241_4654_4b56; // "RAFTKV"
        let trace = (config.trace_events_max > 0)
            .then(|| TraceRecorder::new(runtime.now(), config.trace_events_max));
        let mut cluster = Self {
            filter: FaultFilter::new(config.seed),
            runtime,
            host,
            peer_addrs,
            client_addrs,
            faults: Faults::default(),
            nodes: (0..n).map(|_| None).collect(),
            memory: (0..n).map(|_| MemStorage::new()).collect(),
            data_dir,
            _temp_dir: temp_dir,
            cluster_id,
            initial: n,
            removed: BTreeSet::new(),
            trace,
            metrics: Vec::new(),
            config,
        };
        if let Some(t) = &cluster.trace {
            // Messages lost at random (set_unreliable) show in the trace as dropped; those on
            // blocked links the recorder marks itself.
            let (t, runtime) = (t.clone(), cluster.runtime.clone());
            cluster.filter.on_random_drop(move |m| {
                let kind = EventKind::Drop {
                    to: m.to,
                    msg: MsgInfo::of(m),
                    reason: "random".to_string(),
                };
                t.record(runtime.now(), m.from, kind);
            });
        }
        for (i, (peer, client)) in peer_listeners.into_iter().zip(client_listeners).enumerate() {
            cluster.start_node(i, peer, client).await?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Client addresses, `"127.0.0.1:PORT"`, index = node.
    pub fn addrs(&self) -> Vec<String> {
        self.client_addrs.iter().map(|a| a.to_string()).collect()
    }

    /// Peer (Raft) addresses, index = node.
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
    }

    /// Node `i`'s LMDB directory (`None` on memory storage).
    pub fn node_dir(&self, i: usize) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| node_dir(d, i))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.is_some())
    }

    fn check(&self, i: usize) -> Result<(), ClusterError> {
        if i >= self.nodes.len() {
            return Err(ClusterError::NoSuchNode {
                index: i,
                nodes: self.nodes.len(),
            });
        }
        Ok(())
    }

    /// A running node's handle.
    pub fn node(&self, i: usize) -> Result<&Node<R, H::Machine>, ClusterError> {
        self.check(i)?;
        let running = match &self.nodes[i] {
            Some(r) => r,
            None if self.removed.contains(&i) => return Err(ClusterError::Removed { index: i }),
            None => return Err(ClusterError::NotRunning { index: i }),
        };
        // A paused node would not answer: calls on it fail at once.
        if running.pause.as_ref().is_some_and(|p| p.0.is_paused()) {
            return Err(ClusterError::Paused { index: i });
        }
        Ok(&running.node)
    }

    /// Node `i`'s status.
    pub async fn status(&self, i: usize) -> Result<Status, ClusterError> {
        Ok(self.node(i)?.status().await?)
    }

    /// The leader of the highest term among running nodes, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.nodes.len() {
            if let Ok(s) = self.status(i).await {
                if s.role == Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits until some node leads (and has committed an entry of its term, so it serves).
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = self.runtime.now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if self.runtime.now() >= deadline {
                return Err(ClusterError::NoLeader { waited: timeout });
            }
            self.runtime.sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops node `i` abruptly: its tasks stop, its connections close; what its storage had
    /// made durable stays.
    pub async fn crash(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        let running = self.nodes[i]
            .take()
            .ok_or(ClusterError::NotRunning { index: i })?;
        running.node.shutdown().await;
        drop(running); // the server shuts down: accept loop, connections
        self.record(i, EventKind::Crash);
        Ok(())
    }

    /// Records a fault (or another action of the cluster) about node `i` in the trace.
    fn record(&self, i: usize, kind: EventKind) {
        if let Some(t) = &self.trace {
            t.record(self.runtime.now(), i as NodeId + 1, kind);
        }
    }

    /// Everything recorded so far: every node's events and the cluster's faults (empty when
    /// the cluster was started with `trace_events_max` 0).
    pub fn trace(&self) -> ClusterTrace {
        match &self.trace {
            Some(t) => t.snapshot(),
            None => TraceRecorder::new(Duration::ZERO, 1).snapshot(),
        }
    }

    /// Node `i`'s metrics in the Prometheus text format (kept across its restarts; empty when
    /// the cluster keeps none).
    pub fn metrics(&self, i: usize) -> Result<String, ClusterError> {
        self.check(i)?;
        Ok(self
            .metrics
            .get(i)
            .map(NodeMetrics::encode)
            .unwrap_or_default())
    }

    /// The recorder, to follow the cluster as it runs (`None`: not traced).
    pub fn trace_recorder(&self) -> Option<&TraceRecorder> {
        self.trace.as_ref()
    }

    /// Leader changes as they happen (the first message: the leader now), from the nodes'
    /// events; `None` when the cluster is not traced. The channel closes when the cluster is
    /// closed.
    pub fn leader_changes(&self) -> Option<std::sync::mpsc::Receiver<LeaderChange>> {
        self.trace.as_ref().map(TraceRecorder::leader_changes)
    }

    /// Starts node `i` again from its durable state, on the same addresses.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if self.nodes[i].is_some() {
            return Err(ClusterError::Running { index: i });
        }
        if self.removed.contains(&i) {
            return Err(ClusterError::Removed { index: i });
        }
        let peer = self.rebind(self.peer_addrs[i]).await?;
        let client = self.rebind(self.client_addrs[i]).await?;
        self.record(i, EventKind::Restart);
        self.start_node(i, peer, client).await
    }

    /// Binds `addr` again, waiting while the crashed node still holds it.
    async fn rebind(&self, addr: SocketAddr) -> Result<TcpListener, ClusterError> {
        let deadline = self.runtime.now() + RELEASE_WAIT;
        loop {
            match TcpListener::bind(addr) {
                Ok(l) => return Ok(l),
                Err(e) if self.runtime.now() >= deadline => return Err(e.into()),
                Err(_) => self.runtime.sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn open_storage(&self, i: usize) -> Result<AnyStorage, ClusterError> {
        let Some(dir) = &self.data_dir else {
            return Ok(AnyStorage::Memory(self.memory[i].clone()));
        };
        let dir = node_dir(dir, i);
        std::fs::create_dir_all(&dir)?;
        Ok(AnyStorage::Lmdb(open_lmdb(&self.runtime, &dir).await?))
    }

    async fn start_node(
        &mut self,
        i: usize,
        peer: TcpListener,
        client: TcpListener,
    ) -> Result<(), ClusterError> {
        let id = i as u64 + 1;
        // Nodes added later start empty and wait for the leader (thesis §4.2.1).
        let mut raft = match i < self.initial {
            true => Config::new(id, 1..=self.initial as u64),
            false => Config::joining(id),
        };
        raft.seed = self.config.seed.wrapping_mul(0x9E37_79B9).wrapping_add(id);
        raft.lease_reads = self.config.lease_reads;
        raft.follower_reads = self.config.follower_reads;
        crate::storage::apply_data_bounds(
            self.config.data_bytes_max,
            self.config.state,
            &mut raft,
        )?;
        let mut node_config = NodeConfig::new(raft);
        node_config.request_timeout = self.config.request_timeout;
        let mut observers = Vec::new();
        if let Some(t) = &self.trace {
            t.add_node(id);
            observers.push(ObserverHandle(Arc::new(t.clone())));
        }
        if self.config.metrics {
            while self.metrics.len() <= i {
                self.metrics.push(NodeMetrics::new());
            }
            observers.push(ObserverHandle(Arc::new(self.metrics[i].clone())));
        }
        node_config.observer = match observers.len() {
            0 => None,
            1 => observers.pop(),
            _ => Some(ObserverHandle(Arc::new(Observers(observers)))),
        };
        if let Some(t) = self.config.snapshot_threshold {
            node_config.snapshot_threshold_entries = t.max(1);
        }
        if let Some(t) = self.config.trailing_log {
            node_config.trailing_log_entries = t;
        }
        let peers: BTreeMap<NodeId, SocketAddr> = (0..self.nodes.len())
            .filter(|&j| j != i && !self.removed.contains(&j))
            .map(|j| (j as u64 + 1, self.peer_addrs[j]))
            .collect();
        let mut tcp = TcpConfig::new(id, self.cluster_id, self.peer_addrs[i], peers);
        tcp.fault_filter = Some(self.filter.clone());
        tcp.reconnect_backoff_min = Duration::from_millis(5);
        tcp.reconnect_backoff_max = Duration::from_millis(100);
        // Every task of the node (transport, driver, service, server) runs behind its gate.
        let gate = PauseGate::new();
        let (runtime, pause) = match self.runtime.with_pause_gate(gate.clone()) {
            Some(gated) => (gated, Some(ResumeOnDrop(gate))),
            None => (self.runtime.clone(), None),
        };
        let transport = TcpTransport::start_on(runtime.clone(), tcp, peer)?;
        let metrics = self.metrics.get(i).cloned();
        let storage = MeteredStorage::new(self.open_storage(i).await?, metrics.clone());
        let dir = self.node_dir(i);
        let sm = self
            .host
            .open_state_machine(
                &runtime,
                id,
                self.config.data_bytes_max,
                self.config.state,
                dir.as_deref(),
            )
            .await?;
        let node = Node::start(runtime.clone(), node_config, storage, transport, sm).await?;
        let service = ServiceConfig {
            clock_epoch_ms: wall_clock_ms(),
            client_addrs: (0..self.nodes.len())
                .map(|j| (j as u64 + 1, self.client_addrs[j].to_string()))
                .collect(),
        };
        let peer_addrs = (0..self.nodes.len())
            .map(|j| (j as u64 + 1, self.peer_addrs[j].to_string()))
            .collect();
        let server = self.host.serve(
            node.clone(),
            runtime,
            service,
            peer_addrs,
            client,
            ServerConfig::default(),
            metrics,
        )?;
        self.nodes[i] = Some(Running {
            node,
            _server: server,
            pause,
        });
        Ok(())
    }

    pub async fn close(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                let _ = self.crash(i).await;
            }
        }
        if let Some(t) = &self.trace {
            t.close_subscriptions();
        }
        // Wait until every LMDB environment is closed (its lock released).
        if let Some(dir) = self.data_dir.clone() {
            for i in 0..self.nodes.len() {
                let deadline = self.runtime.now() + RELEASE_WAIT;
                while lmdb_locked(&node_dir(&dir, i)) && self.runtime.now() < deadline {
                    self.runtime.sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

impl<R: Runtime, H: Host> Drop for LocalCluster<R, H> {
    fn drop(&mut self) {
        if let Some(t) = &self.trace {
            t.close_subscriptions();
        }
        for running in self.nodes.iter_mut().filter_map(Option::take) {
            // Shutdown is a message to the event loop: poll it once, without a runtime.
            futures::executor::block_on(running.node.shutdown());
        }
    }
}

fn node_dir(data_dir: &Path, i: usize) -> PathBuf {
    data_dir.join(format!("node{}", i + 1))
}
