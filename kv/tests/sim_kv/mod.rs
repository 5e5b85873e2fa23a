//! The harness of `kvraft_sim.rs`: whole KV clusters — the real driver [`Node`], [`KvService`]
//! and [`Clerk`] — on the deterministic simulation runtime ([`SimRuntime`], [`SimNet`],
//! [`SimStorage`]), in the manner of 6.5840's kvraft `config.go`.
//!
//! - [`ClientNet`] / [`SimConnector`]: the network between Clerks and servers. A call sleeps a
//!   request latency, is served by a task spawned in the server's runtime group (so a crash —
//!   killing the group — drops requests in flight: the Clerk sees `Lost`), sleeps a reply
//!   latency. Unreliable mode drops requests and replies (a drop answers `Lost` after up to
//!   100 ms, as labrpc's `false`, or — a fraction of the time — never, so that the Clerk's
//!   attempt timeout is exercised). A crashed server, or one outside the set a client is
//!   connected to, is `Unreachable`. Calls travel in tasks of their own, so a request the
//!   Clerk abandoned may still arrive; the hostile mode also delays requests by seconds and
//!   delivers some twice (as a connector that resends after a reconnect would; see the test
//!   `duplicated_request_meets_expired_session`).
//! - [`KvSimCluster`]: n nodes with crash (storage survives), restart, server partitions
//!   ([`SimNet::partition`]), client partitions ([`KvSimCluster::connect_client`]), unreliable
//!   mode, the lab's `maxraftstate` as snapshot thresholds, and the persisted log and snapshot
//!   sizes the lab checks.
//! - [`LabClerk`]: a Clerk recording into the cluster's [`History`] on virtual time, with the
//!   lab's `Get`/`Put`/`Append` (a missing key reads as "", no error is acceptable).
//! - Checks: [`assert_linearizable`] (every partition `Ok`, else the HTML visualization is
//!   written and named), [`check_clnt_appends`], [`check_concurrent_appends`].
//! - Seeds: [`run_seeds`] prints `RAFTKV_SEED=<n>` on failure; `RAFTKV_SEED` runs one seed,
//!   `RAFTKV_SEEDS` (`3,7,9`, `10..20`, or a count `n` for `0..n`) overrides the defaults.
#![allow(dead_code)] // Each test uses its own subset.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use raftkv_kv::checker::models::{KvInput, KvModel, KvOutput};
use raftkv_kv::checker::{check, visualize, CheckOptions, CheckResult, Operation, Verdict};
use raftkv_kv::clerk::{CallError, Clerk, ClerkConfig, ClerkError, Connector};
use raftkv_kv::history::History;
use raftkv_kv::protocol::{Reply, RequestBody};
use raftkv_kv::service::{KvService, ServiceConfig};
use raftkv_kv::state::{Command, KvStateMachine, Outcome, SessionConfig};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, Role, Runtime, StateMachine, ENTRY_OVERHEAD_BYTES};

/// The lab's `electionTimeout`: the tester allows a second for an election.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The runtime group of client tasks (never killed). Nodes use groups 1..=n, the network 0.
pub const CLIENT_GROUP: u64 = 1 << 32;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- seeds ----

/// The seeds to run: `RAFTKV_SEED=<n>` (one), `RAFTKV_SEEDS` (`3,7,9`, `10..20`, or a count),
/// else `default`.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("RAFTKV_SEED") {
        return vec![s.trim().parse().expect("RAFTKV_SEED must be a number")];
    }
    if let Ok(s) = std::env::var("RAFTKV_SEEDS") {
        let s = s.trim();
        if let Some((a, b)) = s.split_once("..") {
            let a: u64 = a.parse().expect("RAFTKV_SEEDS: a..b");
            let b: u64 = b.parse().expect("RAFTKV_SEEDS: a..b");
            return (a..b).collect();
        }
        if s.contains(',') {
            return s
                .split(',')
                .map(|x| x.trim().parse().expect("RAFTKV_SEEDS: a,b,c"))
                .collect();
        }
        let n: u64 = s.parse().expect("RAFTKV_SEEDS: a count, a..b or a,b,c");
        return (0..n).collect();
    }
    default.to_vec()
}

/// Runs `f` for each seed; a failure names its seed and how to replay it.
pub fn run_seeds<T>(name: &str, default: &[u64], f: impl Fn(u64) -> T) -> Vec<T> {
    seeds(default)
        .into_iter()
        .map(|seed| match catch_unwind(AssertUnwindSafe(|| f(seed))) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "{name} FAILED with RAFTKV_SEED={seed}; replay: RAFTKV_SEED={seed} cargo test \
                     --release -p raftkv-kv --test kvraft_sim -- {name} --exact --include-ignored \
                     --nocapture"
                );
                resume_unwind(e)
            }
        })
        .collect()
}

/// Runs `body` on a fresh simulation runtime seeded with `seed`, then tears every task down
/// (so that nothing of the run stays alive). Panics if the simulation deadlocks.
pub fn sim<T, F, Fut>(seed: u64, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(SimRuntime) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let rt = SimRuntime::new(seed);
    let out = rt.block_on(body(rt.clone()));
    for group in (0..=16).chain([CLIENT_GROUP, NET_GROUP, u64::MAX]) {
        rt.kill_group(group);
    }
    out.unwrap_or_else(|| panic!("RAFTKV_SEED={seed}: the simulation deadlocked"))
}

/// Spawns `future` as a client task; its output arrives on the receiver.
pub fn spawn_client<T: Send + 'static>(
    rt: &SimRuntime,
    future: impl Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    rt.with_group(CLIENT_GROUP).spawn(async move {
        let _ = tx.send(future.await);
    });
    rx
}

// ---- the client network ----

type Handler =
    Arc<dyn Fn(RequestBody) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// How the client network behaves.
#[derive(Clone, Copy, Debug)]
pub struct ClientNetConfig {
    /// One-way latency, virtual ms (inclusive range).
    pub latency_ms: (u64, u64),
    /// Chance that a request is lost before reaching the server.
    pub drop_request: f64,
    /// Chance that a reply is lost on its way back.
    pub drop_reply: f64,
    /// Of the drops, the fraction that never answer (the Clerk's attempt timeout ends them);
    /// the others answer `Lost` after up to 100 ms, like labrpc's `false`.
    pub silent_fraction: f64,
    /// Chance that a request is held up to `long_delay_ms` more: it may reach the server long
    /// after the Clerk gave up on it and moved on.
    pub long_delay_chance: f64,
    pub long_delay_ms: u64,
    /// Chance that a request is delivered twice (the second copy a little later).
    pub duplicate_chance: f64,
}

impl ClientNetConfig {
    pub fn reliable() -> Self {
        Self {
            latency_ms: (1, 3),
            drop_request: 0.0,
            drop_reply: 0.0,
            silent_fraction: 0.0,
            long_delay_chance: 0.0,
            long_delay_ms: 0,
            duplicate_chance: 0.0,
        }
    }

    /// labrpc's unreliable mode: up to 27 ms of delay, 10% of requests and 10% of replies lost.
    pub fn unreliable() -> Self {
        Self {
            latency_ms: (1, 27),
            drop_request: 0.1,
            drop_reply: 0.1,
            silent_fraction: 0.2,
            ..Self::reliable()
        }
    }

    /// Beyond labrpc: also requests held up to 3 s, which may reach a server after the Clerk
    /// gave up on them, and requests delivered twice.
    pub fn hostile() -> Self {
        Self {
            long_delay_chance: 0.03,
            long_delay_ms: 3_000,
            duplicate_chance: 0.03,
            ..Self::unreliable()
        }
    }
}

/// What the client network did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientNetStats {
    pub calls: u64,
    pub served: u64,
    pub dropped_requests: u64,
    pub dropped_replies: u64,
    pub unreachable: u64,
    /// Requests dropped because their server crashed while serving them.
    pub lost_in_crash: u64,
    pub delayed: u64,
    pub duplicated: u64,
}

struct Server {
    group: u64,
    handler: Handler,
}

struct ClientNetInner {
    servers: BTreeMap<String, Server>,
    /// client → the addresses it is connected to.
    reach: BTreeMap<u64, BTreeSet<String>>,
    config: ClientNetConfig,
    next_client: u64,
    stats: ClientNetStats,
}

/// How a call ended, as the network tells the caller.
enum Delivery {
    Answer(Result<Reply, CallError>),
    /// Lost without a trace: the caller waits until it gives up.
    Silent,
}

/// The network between Clerks and KV servers. Clones share it.
///
/// A call is carried by a task of its own (in [`NET_GROUP`], never killed): a request keeps
/// travelling after the Clerk abandons it, and may reach the server later.
#[derive(Clone)]
pub struct ClientNet {
    rt: SimRuntime,
    inner: Arc<Mutex<ClientNetInner>>,
}

/// The runtime group of the client network's delivery tasks (never killed).
pub const NET_GROUP: u64 = CLIENT_GROUP + 1;

impl ClientNet {
    pub fn new(rt: &SimRuntime) -> Self {
        Self {
            rt: rt.with_group(NET_GROUP),
            inner: Arc::new(Mutex::new(ClientNetInner {
                servers: BTreeMap::new(),
                reach: BTreeMap::new(),
                config: ClientNetConfig::reliable(),
                next_client: 0,
                stats: ClientNetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClientNetInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> ClientNetConfig {
        self.lock().config
    }

    pub fn set_config(&self, config: ClientNetConfig) {
        self.lock().config = config;
    }

    pub fn stats(&self) -> ClientNetStats {
        self.lock().stats
    }

    /// Serves `addr` with `service`, whose tasks run in runtime group `group`.
    pub fn register<M: StateMachine<Response = Outcome>>(
        &self,
        addr: &str,
        group: u64,
        service: KvService<SimRuntime, M>,
    ) {
        let handler: Handler = Arc::new(move |body| {
            let service = service.clone();
            Box::pin(async move { service.handle(body).await })
        });
        self.lock()
            .servers
            .insert(addr.to_string(), Server { group, handler });
    }

    /// `addr` is down: calls to it are `Unreachable`.
    pub fn unregister(&self, addr: &str) {
        self.lock().servers.remove(addr);
    }

    /// A connector for a new client connected to `addrs`.
    pub fn connector(&self, addrs: &[String]) -> SimConnector {
        let mut n = self.lock();
        let client = n.next_client;
        n.next_client += 1;
        n.reach.insert(client, addrs.iter().cloned().collect());
        SimConnector {
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

    fn latency(&self, config: &ClientNetConfig) -> Duration {
        ms(self.rt.random(config.latency_ms.0, config.latency_ms.1 + 1))
    }

    fn reachable(&self, client: u64, addr: &str) -> bool {
        self.lock()
            .reach
            .get(&client)
            .is_some_and(|r| r.contains(addr))
    }

    /// A lost message: `Lost` after a while, or no answer at all.
    async fn dropped(&self, config: ClientNetConfig) -> Delivery {
        if self.rt.chance(config.silent_fraction) {
            return Delivery::Silent;
        }
        self.rt.sleep(ms(self.rt.random(0, 100))).await;
        Delivery::Answer(Err(CallError::Lost("dropped by the network".into())))
    }

    async fn call(&self, client: u64, addr: String, body: RequestBody) -> Result<Reply, CallError> {
        let config = self.config();
        self.lock().stats.calls += 1;
        if self.rt.chance(config.duplicate_chance) {
            self.lock().stats.duplicated += 1;
            let (net, addr, body) = (self.clone(), addr.clone(), body.clone());
            let extra = ms(self.rt.random(0, 50));
            self.rt.spawn(async move {
                net.rt.sleep(extra).await;
                let _ = net.deliver(client, addr, body, config).await;
            });
        }
        let (tx, rx) = oneshot::channel();
        let net = self.clone();
        self.rt.spawn(async move {
            let _ = tx.send(net.deliver(client, addr, body, config).await);
        });
        match rx.await {
            Ok(Delivery::Answer(answer)) => answer,
            Ok(Delivery::Silent) | Err(_) => futures::future::pending().await,
        }
    }

    /// Carries one request to its server and the reply back.
    async fn deliver(
        &self,
        client: u64,
        addr: String,
        body: RequestBody,
        config: ClientNetConfig,
    ) -> Delivery {
        let mut delay = self.latency(&config);
        if self.rt.chance(config.long_delay_chance) {
            self.lock().stats.delayed += 1;
            delay += ms(self.rt.random(0, config.long_delay_ms + 1));
        }
        self.rt.sleep(delay).await;
        let server = {
            let mut n = self.lock();
            let connected = n.reach.get(&client).is_some_and(|r| r.contains(&addr));
            match n.servers.get(&addr) {
                Some(s) if connected => Some((s.group, s.handler.clone())),
                _ => {
                    n.stats.unreachable += 1;
                    None
                }
            }
        };
        let Some((group, handler)) = server else {
            return Delivery::Answer(Err(CallError::Unreachable(format!(
                "{addr} is down or not connected"
            ))));
        };
        if self.rt.chance(config.drop_request) {
            self.lock().stats.dropped_requests += 1;
            return self.dropped(config).await;
        }
        // Served by the server's group: a crash drops the request mid-flight.
        let (tx, rx) = oneshot::channel();
        self.rt.with_group(group).spawn(async move {
            let _ = tx.send(handler(body).await);
        });
        let Ok(reply) = rx.await else {
            self.lock().stats.lost_in_crash += 1;
            return Delivery::Answer(Err(CallError::Lost(format!(
                "{addr} crashed while serving"
            ))));
        };
        self.rt.sleep(self.latency(&config)).await;
        if !self.reachable(client, &addr) || self.rt.chance(config.drop_reply) {
            self.lock().stats.dropped_replies += 1;
            return self.dropped(config).await;
        }
        self.lock().stats.served += 1;
        Delivery::Answer(Ok(reply))
    }
}

/// One client's end of the [`ClientNet`].
pub struct SimConnector {
    net: ClientNet,
    client: u64,
}

impl SimConnector {
    pub fn client(&self) -> u64 {
        self.client
    }
}

impl Connector for SimConnector {
    fn call(
        &self,
        addr: &str,
        body: RequestBody,
    ) -> impl Future<Output = Result<Reply, CallError>> + Send {
        let net = self.net.clone();
        let client = self.client;
        let addr = addr.to_string();
        async move { net.call(client, addr, body).await }
    }
}

// ---- the cluster ----

/// How a cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub servers: usize,
    /// The lab's unreliable network, for Raft messages and for clients.
    pub unreliable: bool,
    /// The lab's `maxraftstate` (bytes): snapshot once about this much log was applied since
    /// the last snapshot. `None`: never snapshot (the lab's -1).
    pub maxraftstate: Option<u64>,
    /// Disk latency, virtual ms (inclusive).
    pub disk_latency_ms: (u64, u64),
}

impl ClusterConfig {
    pub fn new(servers: usize) -> Self {
        Self {
            servers,
            unreliable: false,
            maxraftstate: None,
            disk_latency_ms: (0, 3),
        }
    }

    pub fn unreliable(mut self, unreliable: bool) -> Self {
        self.unreliable = unreliable;
        self
    }

    pub fn maxraftstate(mut self, bytes: Option<u64>) -> Self {
        self.maxraftstate = bytes;
        self
    }
}

/// "Never" as a snapshot threshold, without overflow in the driver's arithmetic.
const NEVER: u64 = 1 << 40;

/// n KV servers on one simulation runtime, and the clients' network.
pub struct KvSimCluster<M: StateMachine<Response = Outcome> = KvStateMachine> {
    pub seed: u64,
    pub rt: SimRuntime,
    /// The servers' network (Raft messages).
    pub net: SimNet,
    /// The clients' network.
    pub clients: ClientNet,
    /// Every Clerk made by [`KvSimCluster::clerk`] records here, on virtual time.
    pub history: History,
    config: ClusterConfig,
    storages: Vec<SimStorage>,
    services: Vec<Option<KvService<SimRuntime, M>>>,
    make_sm: Box<dyn Fn() -> M + Send + Sync>,
}

impl KvSimCluster<KvStateMachine> {
    /// Starts a cluster of [`KvStateMachine`]s.
    pub async fn new(seed: u64, rt: &SimRuntime, config: ClusterConfig) -> Self {
        Self::with_state_machine(seed, rt, config, || {
            KvStateMachine::new(SessionConfig::default())
        })
        .await
    }
}

impl<M: StateMachine<Response = Outcome>> KvSimCluster<M> {
    /// Starts a cluster whose nodes run `make_sm()`.
    pub async fn with_state_machine(
        seed: u64,
        rt: &SimRuntime,
        config: ClusterConfig,
        make_sm: impl Fn() -> M + Send + Sync + 'static,
    ) -> Self {
        let n = config.servers;
        let rt2 = rt.clone();
        let mut cluster = Self {
            seed,
            rt: rt.clone(),
            net: SimNet::new(rt),
            clients: ClientNet::new(rt),
            history: History::with_clock(move || rt2.now().as_nanos() as u64),
            storages: (0..n)
                .map(|_| SimStorage::new(rt, config.disk_latency_ms))
                .collect(),
            services: (0..n).map(|_| None).collect(),
            make_sm: Box::new(make_sm),
            config,
        };
        cluster.set_unreliable(cluster.config.unreliable);
        for i in 0..n {
            cluster.start(i).await;
        }
        cluster
    }

    pub fn n(&self) -> usize {
        self.config.servers
    }

    /// Every server, by index (0-based, as in the lab; node ids are index + 1).
    pub fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// Server `i`'s client address.
    pub fn addr(i: usize) -> String {
        format!("n{}", i + 1)
    }

    pub fn addrs(servers: &[usize]) -> Vec<String> {
        servers.iter().map(|&i| Self::addr(i)).collect()
    }

    /// Starts (or restarts, from its storage) server `i`.
    pub async fn start(&mut self, i: usize) {
        assert!(self.services[i].is_none(), "n{} is already up", i + 1);
        let n = self.n() as u64;
        let id = i as u64 + 1;
        let mut raft = Config::new(id, 1..=n);
        raft.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        let mut config = NodeConfig::new(raft);
        match self.config.maxraftstate {
            // Either bound keeps the log applied since the last snapshot near `max` bytes as
            // `log_bytes` counts them (payload + per-entry overhead).
            Some(max) => {
                config.snapshot_threshold_bytes = max;
                config.snapshot_threshold_entries = (max / ENTRY_OVERHEAD_BYTES as u64).max(1);
            }
            None => {
                config.snapshot_threshold_bytes = NEVER;
                config.snapshot_threshold_entries = NEVER;
            }
        }
        let node = Node::start(
            self.rt.with_group(id),
            config,
            self.storages[i].clone(),
            self.net.endpoint(id),
            (self.make_sm)(),
        )
        .await
        .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: n{id} failed to start: {e}", self.seed));
        let client_addrs = (1..=n).map(|j| (j, format!("n{j}"))).collect();
        let service = KvService::new(
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

    /// Crashes server `i`: its tasks are dropped mid-flight, writes not yet durable are lost,
    /// its storage survives.
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

    pub fn service(&self, i: usize) -> Option<&KvService<SimRuntime, M>> {
        self.services[i].as_ref()
    }

    /// Only servers in the same group can talk (the lab's `partition`; clients unaffected).
    pub fn partition(&self, groups: &[Vec<usize>]) {
        partition_servers(&self.net, groups);
    }

    /// Reconnects every server to every other (the lab's `ConnectAll` for servers).
    pub fn heal(&self) {
        self.net.heal();
    }

    /// Beyond the lab: the unreliable network, and requests to servers that arrive late (after
    /// the Clerk gave up on them).
    pub fn set_hostile(&mut self) {
        self.set_unreliable(true);
        self.clients.set_config(ClientNetConfig::hostile());
    }

    /// The lab's unreliable network, for Raft messages and for clients.
    pub fn set_unreliable(&mut self, unreliable: bool) {
        self.config.unreliable = unreliable;
        if unreliable {
            self.net.set_drop_chance(0.1);
            self.net.set_latency_ms(1, 27);
            self.clients.set_config(ClientNetConfig::unreliable());
        } else {
            self.net.set_drop_chance(0.0);
            self.net.set_latency_ms(1, 5);
            self.clients.set_config(ClientNetConfig::reliable());
        }
    }

    /// A Clerk that knows every server but is connected only to `servers` (the lab's
    /// `makeClient(to)`), recording into the cluster's history.
    pub fn clerk(&self, servers: &[usize]) -> LabClerk {
        let connector = self.clients.connector(&Self::addrs(servers));
        let client = connector.client();
        let ck = Clerk::new(
            self.rt.clone(),
            connector,
            Self::addrs(&self.all()),
            lab_clerk_config(),
        )
        .with_history(self.history.clone());
        LabClerk {
            client,
            seed: self.seed,
            ck,
        }
    }

    /// Connects `client` to exactly `servers` (the lab's `ConnectClient`).
    pub fn connect_client(&self, client: u64, servers: &[usize]) {
        self.clients.connect(client, &Self::addrs(servers));
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

    /// The lab's `make_partition`: the leader and n/2 others (a majority), and the rest.
    pub async fn make_partition(&self) -> (Vec<usize>, Vec<usize>) {
        let l = self.wait_leader(Duration::from_secs(10)).await;
        let others: Vec<usize> = self.all().into_iter().filter(|&i| i != l).collect();
        let majority = self.n() / 2 + 1;
        let mut p1: Vec<usize> = others[..majority - 1].to_vec();
        p1.push(l);
        let p2 = others[majority - 1..].to_vec();
        (p1, p2)
    }

    /// What server `i` has durably now.
    pub fn durable(&self, i: usize) -> raftkv_raft::sim::MemStore {
        self.storages[i].durable()
    }

    /// The persisted log of server `i`, in bytes (payloads plus the per-entry overhead the
    /// core counts); the lab's `RaftStateSize` without the hard state.
    pub fn log_bytes_of(&self, i: usize) -> usize {
        self.storages[i]
            .durable()
            .entries
            .values()
            .map(|e| e.size_bytes())
            .sum()
    }

    /// The largest persisted log over all servers (the lab's `LogSize`).
    pub fn log_bytes(&self) -> usize {
        (0..self.n())
            .map(|i| self.log_bytes_of(i))
            .max()
            .unwrap_or(0)
    }

    /// The largest persisted snapshot over all servers (the lab's `SnapshotSize`).
    pub fn snapshot_bytes(&self) -> usize {
        (0..self.n())
            .map(|i| {
                self.storages[i]
                    .durable()
                    .snapshot
                    .map_or(0, |s| s.data.len())
            })
            .max()
            .unwrap_or(0)
    }

    /// The lab's log-size checks after a phase: with a `maxraftstate` the persisted log stays
    /// within 8 × it; without one, no snapshot was taken.
    pub fn check_log_size(&self) {
        match self.config.maxraftstate {
            Some(max) => {
                let sz = self.log_bytes();
                assert!(
                    sz as u64 <= 8 * max,
                    "RAFTKV_SEED={}: logs were not trimmed ({sz} > 8*{max})",
                    self.seed
                );
            }
            None => {
                let ssz = self.snapshot_bytes();
                assert_eq!(
                    ssz, 0,
                    "RAFTKV_SEED={}: snapshot ({ssz} bytes) taken without maxraftstate",
                    self.seed
                );
            }
        }
    }
}

/// Partitions the servers (0-based indices) of `net`.
pub fn partition_servers(net: &SimNet, groups: &[Vec<usize>]) {
    let ids: Vec<Vec<u64>> = groups
        .iter()
        .map(|g| g.iter().map(|&i| i as u64 + 1).collect())
        .collect();
    net.partition(&ids);
}

/// The Clerk settings of the lab tests: a lab Clerk never gives up, so the deadline is far
/// beyond any test (an operation that still times out is a liveness failure).
pub fn lab_clerk_config() -> ClerkConfig {
    ClerkConfig {
        timeout: Duration::from_secs(600),
        attempt_timeout: Duration::from_secs(1),
        backoff_min: ms(5),
        backoff_max: ms(100),
        follow_hints: true,
    }
}

/// A Clerk with the lab's operations: every operation must succeed; a missing key reads as "".
pub struct LabClerk {
    /// This client's id on the client network (for [`KvSimCluster::connect_client`]).
    pub client: u64,
    seed: u64,
    pub ck: Clerk<SimRuntime, SimConnector>,
}

impl LabClerk {
    pub async fn get(&mut self, key: &str) -> String {
        match self.ck.get(Bytes::from(key.to_string())).await {
            Ok((v, _)) => String::from_utf8_lossy(&v).into_owned(),
            Err(ClerkError::NoKey) => String::new(),
            Err(e) => panic!("RAFTKV_SEED={}: Get({key:?}) failed: {e}", self.seed),
        }
    }

    pub async fn put(&mut self, key: &str, value: &str) {
        let r = self
            .ck
            .put(
                Bytes::from(key.to_string()),
                Bytes::from(value.to_string()),
                None,
            )
            .await;
        if let Err(e) = r {
            panic!(
                "RAFTKV_SEED={}: Put({key:?}, {value:?}) failed: {e}",
                self.seed
            );
        }
    }

    pub async fn append(&mut self, key: &str, value: &str) {
        let r = self
            .ck
            .append(Bytes::from(key.to_string()), Bytes::from(value.to_string()))
            .await;
        if let Err(e) = r {
            panic!(
                "RAFTKV_SEED={}: Append({key:?}, {value:?}) failed: {e}",
                self.seed
            );
        }
    }

    /// The lab's `check`: a Get of `key` returns `value`.
    pub async fn check(&mut self, key: &str, value: &str) {
        let v = self.get(key).await;
        assert_eq!(
            v, value,
            "RAFTKV_SEED={}: Get({key:?}): expected {value:?}, got {v:?}",
            self.seed
        );
    }
}

// ---- checks ----

/// The lab's `checkClntAppends`: client `clnt`'s appends `x clnt 0 y` .. `x clnt count-1 y`
/// each appear exactly once in `v`, in order.
pub fn check_clnt_appends(clnt: usize, v: &str, count: usize) -> Result<(), String> {
    let mut lastoff: Option<usize> = None;
    for j in 0..count {
        let wanted = format!("x {clnt} {j} y");
        let Some(off) = v.find(&wanted) else {
            return Err(format!(
                "{clnt} missing element {wanted:?} in Append result {v:?}"
            ));
        };
        if v.rfind(&wanted) != Some(off) {
            return Err(format!("duplicate element {wanted:?} in Append result"));
        }
        if lastoff.is_some_and(|l| off <= l) {
            return Err(format!(
                "wrong order for element {wanted:?} in Append result"
            ));
        }
        lastoff = Some(off);
    }
    Ok(())
}

/// The lab's `checkConcurrentAppends`: for every client i, its `counts[i]` appends appear
/// exactly once each, in order.
pub fn check_concurrent_appends(v: &str, counts: &[usize]) -> Result<(), String> {
    for (i, &count) in counts.iter().enumerate() {
        check_clnt_appends(i, v, count)?;
    }
    Ok(())
}

/// Checks `ops` with the default options (no timeout: the verdict is decided).
pub fn check_ops(ops: &[Operation<KvInput, KvOutput>]) -> CheckResult {
    check(&KvModel, ops, &CheckOptions::default())
}

/// Writes the HTML visualization of a checked history to the temp directory; returns its path.
pub fn write_visualization(
    ops: &[Operation<KvInput, KvOutput>],
    result: &CheckResult,
    name: &str,
    seed: u64,
) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kvraft_sim-{name}-seed{seed}.html"));
    let mut file = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    visualize(&KvModel, ops, result, &mut file)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Checks the whole history: every partition must be `Ok`. Otherwise writes the
/// visualization and fails naming the seed and the file.
pub fn assert_linearizable(history: &History, name: &str, seed: u64) -> CheckResult {
    let ops = history.operations();
    let result = check_ops(&ops);
    let bad = result
        .partitions
        .iter()
        .filter(|p| p.verdict != Verdict::Ok)
        .count();
    if bad > 0 || result.verdict != Verdict::Ok {
        let path = write_visualization(&ops, &result, name, seed);
        let json = path.with_extension("json");
        let _ = std::fs::write(&json, history.to_json());
        panic!(
            "RAFTKV_SEED={seed}: {name}: the history ({} ops) is not linearizable: verdict {}, \
             {bad} of {} partitions not Ok; visualization written to {} (history: {})",
            ops.len(),
            result.verdict,
            result.partitions.len(),
            path.display(),
            json.display()
        );
    }
    result
}

// ---- a deliberately wrong server ----

/// A state machine that breaks exactly-once: every request's sequence number is replaced by
/// its log index, so a retry of an applied write looks new and is applied again.
pub struct DropsDedup(pub KvStateMachine);

impl StateMachine for DropsDedup {
    type Response = Outcome;

    fn apply(&mut self, index: u64, command: &[u8]) -> Outcome {
        match Command::decode(command) {
            Ok(Command::Request {
                session,
                seq: _,
                now_ms,
                op,
            }) => {
                let forged = Command::Request {
                    session,
                    seq: index,
                    now_ms,
                    op,
                };
                self.0.apply(index, &forged.encode())
            }
            _ => self.0.apply(index, command),
        }
    }

    fn query(&self, query: &[u8]) -> Outcome {
        self.0.query(query)
    }

    fn snapshot(&self) -> Bytes {
        self.0.snapshot()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        self.0.restore(data)
    }
}
