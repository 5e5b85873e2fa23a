//! Whole controller clusters — the real driver `Node`, [`ControllerService`] and
//! [`ControllerClerk`] — on the deterministic simulation runtime, in the manner of 6.5840's
//! shardctrler `config.go`. Built on `raftkv_kv::testing` (the seeded `sim` runner, seeds,
//! runtime groups, server partitions).
//!
//! - [`CtrlNet`] / [`CtrlSimConnector`]: the network between controller Clerks and servers:
//!   latency, per-client reachability (the lab's `ConnectClient`), an unreliable mode that
//!   loses requests and replies (answering `Lost`), requests served by a task in the server's
//!   runtime group (a crash drops them mid-flight). Unification note: this is a small copy of
//!   `raftkv_kv::testing::ClientNet`, which is written for the KV request and reply types;
//!   generic over them it would serve both.
//! - [`CtrlSimCluster`]: n controllers with crash (storage survives), restart, server
//!   partitions, the unreliable network and a snapshot threshold.
//! - Seeds: [`run_seeds`] prints `RAFTKV_SEED=<n>` and the replay command on failure.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::oneshot;
use raftkv_kv::clerk::CallError;
use raftkv_kv::service::ServiceConfig;
pub use raftkv_kv::testing::{lab_clerk_config, ms, seeds, sim, spawn_client, NET_GROUP};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, Role, Runtime};

use crate::clerk::{ControllerClerk, CtrlConnector};
use crate::config::ControllerConfig;
use crate::protocol::{CtrlReply, CtrlRequestBody};
use crate::service::ControllerService;
use crate::state::ControllerStateMachine;

/// Runs `f` for each seed; a failure names its seed and how to replay it.
pub fn run_seeds<T>(test: &str, name: &str, default: &[u64], f: impl Fn(u64) -> T) -> Vec<T> {
    seeds(default)
        .into_iter()
        .map(|seed| match catch_unwind(AssertUnwindSafe(|| f(seed))) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "{name} FAILED with RAFTKV_SEED={seed}; replay: RAFTKV_SEED={seed} cargo test \
                     --release -p raftkv-shard --test {test} -- {name} --exact --nocapture"
                );
                resume_unwind(e)
            }
        })
        .collect()
}

// ---- the client network ----

type Handler =
    Arc<dyn Fn(CtrlRequestBody) -> Pin<Box<dyn Future<Output = CtrlReply> + Send>> + Send + Sync>;

struct NetInner {
    /// addr → (runtime group, handler).
    servers: BTreeMap<String, (u64, Handler)>,
    /// client → the addresses it is connected to.
    reach: BTreeMap<u64, BTreeSet<String>>,
    next_client: u64,
    /// One-way latency, virtual ms (inclusive).
    latency_ms: (u64, u64),
    /// Chance that a request, and separately its reply, is lost.
    drop_chance: f64,
}

/// The network between controller Clerks and servers. Clones share it.
#[derive(Clone)]
pub struct CtrlNet {
    rt: SimRuntime,
    inner: Arc<Mutex<NetInner>>,
}

impl CtrlNet {
    pub fn new(rt: &SimRuntime) -> Self {
        Self {
            rt: rt.with_group(NET_GROUP),
            inner: Arc::new(Mutex::new(NetInner {
                servers: BTreeMap::new(),
                reach: BTreeMap::new(),
                next_client: 0,
                latency_ms: (1, 3),
                drop_chance: 0.0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// labrpc's unreliable mode (up to 27 ms of delay, 10% of requests and replies lost), or
    /// a reliable network.
    pub fn set_unreliable(&self, unreliable: bool) {
        let mut n = self.lock();
        (n.latency_ms, n.drop_chance) = if unreliable {
            ((1, 27), 0.1)
        } else {
            ((1, 3), 0.0)
        };
    }

    /// Serves `addr` with `service`, whose tasks run in runtime group `group`.
    pub fn register(&self, addr: &str, group: u64, service: ControllerService<SimRuntime>) {
        let handler: Handler = Arc::new(move |body| {
            let service = service.clone();
            Box::pin(async move { service.handle(body).await })
        });
        self.lock()
            .servers
            .insert(addr.to_string(), (group, handler));
    }

    /// `addr` is down: calls to it are `Unreachable`.
    pub fn unregister(&self, addr: &str) {
        self.lock().servers.remove(addr);
    }

    /// A connector for a new client connected to `addrs`.
    pub fn connector(&self, addrs: &[String]) -> CtrlSimConnector {
        let mut n = self.lock();
        let client = n.next_client;
        n.next_client += 1;
        n.reach.insert(client, addrs.iter().cloned().collect());
        CtrlSimConnector {
            net: self.clone(),
            client,
        }
    }

    /// Connects `client` to exactly `addrs` (the lab's `ConnectClient`).
    pub fn connect(&self, client: u64, addrs: &[String]) {
        self.lock()
            .reach
            .insert(client, addrs.iter().cloned().collect());
    }

    async fn sleep_latency(&self) {
        let (lo, hi) = self.lock().latency_ms;
        self.rt.sleep(ms(self.rt.random(lo, hi + 1))).await;
    }

    fn dropped(&self) -> bool {
        let p = self.lock().drop_chance;
        self.rt.chance(p)
    }

    /// Carries one request to its server and the reply back, in a task of its own: a request
    /// the Clerk abandoned may still arrive.
    async fn call(
        &self,
        client: u64,
        addr: String,
        body: CtrlRequestBody,
    ) -> Result<CtrlReply, CallError> {
        let (tx, rx) = oneshot::channel();
        let net = self.clone();
        self.rt.spawn(async move {
            let _ = tx.send(net.deliver(client, addr, body).await);
        });
        rx.await
            .unwrap_or_else(|_| Err(CallError::Lost("the network stopped".into())))
    }

    async fn deliver(
        &self,
        client: u64,
        addr: String,
        body: CtrlRequestBody,
    ) -> Result<CtrlReply, CallError> {
        self.sleep_latency().await;
        let server = {
            let n = self.lock();
            let connected = n.reach.get(&client).is_some_and(|r| r.contains(&addr));
            n.servers.get(&addr).filter(|_| connected).cloned()
        };
        let Some((group, handler)) = server else {
            return Err(CallError::Unreachable(format!(
                "{addr} is down or not connected"
            )));
        };
        if self.dropped() {
            self.rt.sleep(ms(self.rt.random(0, 100))).await;
            return Err(CallError::Lost("request dropped".into()));
        }
        // Served by the server's group: a crash drops the request mid-flight.
        let (tx, rx) = oneshot::channel();
        self.rt.with_group(group).spawn(async move {
            let _ = tx.send(handler(body).await);
        });
        let Ok(reply) = rx.await else {
            return Err(CallError::Lost(format!("{addr} crashed while serving")));
        };
        self.sleep_latency().await;
        let still_connected = self
            .lock()
            .reach
            .get(&client)
            .is_some_and(|r| r.contains(&addr));
        if !still_connected || self.dropped() {
            self.rt.sleep(ms(self.rt.random(0, 100))).await;
            return Err(CallError::Lost("reply dropped".into()));
        }
        Ok(reply)
    }
}

/// One client's end of the [`CtrlNet`].
pub struct CtrlSimConnector {
    net: CtrlNet,
    client: u64,
}

impl CtrlSimConnector {
    pub fn client(&self) -> u64 {
        self.client
    }
}

impl CtrlConnector for CtrlSimConnector {
    fn call(
        &self,
        addr: &str,
        body: CtrlRequestBody,
    ) -> impl Future<Output = Result<CtrlReply, CallError>> + Send {
        let net = self.net.clone();
        let client = self.client;
        let addr = addr.to_string();
        async move { net.call(client, addr, body).await }
    }
}

// ---- the cluster ----

/// A Clerk of a simulated controller cluster.
pub type SimCtrlClerk = ControllerClerk<SimRuntime, CtrlSimConnector>;

/// n controllers on one simulation runtime, and the clients' network.
pub struct CtrlSimCluster {
    pub seed: u64,
    pub rt: SimRuntime,
    /// The servers' network (Raft messages).
    pub net: SimNet,
    /// The clients' network.
    pub clients: CtrlNet,
    controller: ControllerConfig,
    /// Snapshot once this many entries were applied since the last snapshot.
    snapshot_every_entries: u64,
    storages: Vec<SimStorage>,
    services: Vec<Option<ControllerService<SimRuntime>>>,
}

impl CtrlSimCluster {
    /// Starts `servers` controllers of `controller`'s shape, snapshotting every
    /// `snapshot_every_entries` applied entries.
    pub async fn new(
        seed: u64,
        rt: &SimRuntime,
        servers: usize,
        controller: ControllerConfig,
        snapshot_every_entries: u64,
    ) -> Self {
        let mut cluster = Self {
            seed,
            rt: rt.clone(),
            net: SimNet::new(rt),
            clients: CtrlNet::new(rt),
            controller,
            snapshot_every_entries,
            storages: (0..servers).map(|_| SimStorage::new(rt, (0, 3))).collect(),
            services: (0..servers).map(|_| None).collect(),
        };
        cluster.set_unreliable(false);
        for i in 0..servers {
            cluster.start(i).await;
        }
        cluster
    }

    pub fn n(&self) -> usize {
        self.services.len()
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// Server `i`'s client address (0-based; node ids are index + 1).
    pub fn addr(i: usize) -> String {
        format!("c{}", i + 1)
    }

    pub fn addrs(servers: &[usize]) -> Vec<String> {
        servers.iter().map(|&i| Self::addr(i)).collect()
    }

    /// Starts (or restarts, from its storage) server `i`.
    pub async fn start(&mut self, i: usize) {
        assert!(self.services[i].is_none(), "c{} is already up", i + 1);
        let n = self.n() as u64;
        let id = i as u64 + 1;
        let mut raft = Config::new(id, 1..=n);
        raft.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        let mut config = NodeConfig::new(raft);
        config.snapshot_threshold_entries = self.snapshot_every_entries;
        let sm = ControllerStateMachine::new(self.controller)
            .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: bad controller config: {e}", self.seed));
        let node = Node::start(
            self.rt.with_group(id),
            config,
            self.storages[i].clone(),
            self.net.endpoint(id),
            sm,
        )
        .await
        .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: c{id} failed to start: {e}", self.seed));
        let client_addrs = (1..=n).map(|j| (j, Self::addr(j as usize - 1))).collect();
        let service = ControllerService::new(
            node,
            self.rt.with_group(id),
            ServiceConfig {
                clock_epoch_ms: 0,
                client_addrs,
            },
        );
        self.clients.register(&Self::addr(i), id, service.clone());
        self.services[i] = Some(service);
    }

    /// Crashes server `i`: its tasks are dropped mid-flight, its storage survives.
    pub fn crash(&mut self, i: usize) {
        self.clients.unregister(&Self::addr(i));
        self.rt.kill_group(i as u64 + 1);
        self.services[i] = None;
    }

    pub async fn restart(&mut self, i: usize) {
        if self.services[i].is_some() {
            self.crash(i);
        }
        self.start(i).await;
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.services[i].is_some()
    }

    pub fn service(&self, i: usize) -> Option<&ControllerService<SimRuntime>> {
        self.services[i].as_ref()
    }

    /// Only servers in the same group can talk (clients unaffected).
    pub fn partition(&self, groups: &[Vec<usize>]) {
        raftkv_kv::testing::partition_servers(&self.net, groups);
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// The lab's unreliable network, for Raft messages and for clients.
    pub fn set_unreliable(&mut self, unreliable: bool) {
        if unreliable {
            self.net.set_drop_chance(0.1);
            self.net.set_latency_ms(1, 27);
        } else {
            self.net.set_drop_chance(0.0);
            self.net.set_latency_ms(1, 5);
        }
        self.clients.set_unreliable(unreliable);
    }

    /// A Clerk that knows every server but is connected only to `servers`.
    pub fn clerk(&self, servers: &[usize]) -> SimCtrlClerk {
        let connector = self.clients.connector(&Self::addrs(servers));
        ControllerClerk::new(
            self.rt.clone(),
            connector,
            Self::addrs(&self.all()),
            lab_clerk_config(),
        )
    }

    /// The leader of the highest term among the servers that are up, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, s) in self.services.iter().enumerate() {
            let Some(s) = s else { continue };
            let Ok(st) = s.node().status().await else {
                continue;
            };
            if st.role == Role::Leader && best.is_none_or(|(t, _)| st.term > t) {
                best = Some((st.term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits up to `within` for a leader.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let until = self.rt.now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(
                self.rt.now() < until,
                "RAFTKV_SEED={}: no leader within {within:?}",
                self.seed
            );
            self.rt.sleep(ms(50)).await;
        }
    }

    /// Whether server `i`'s durable state holds a snapshot.
    pub fn has_snapshot(&self, i: usize) -> bool {
        self.storages[i].durable().snapshot.is_some()
    }
}
