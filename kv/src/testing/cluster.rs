//! [`KvSimCluster`]: n KV nodes on the simulator, with faults; [`LabClerk`], the lab's client.

use super::*;

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
    /// Every node's driver reports its events here (the cluster trace), if set.
    pub observer: Option<ObserverHandle>,
    /// Lease reads (thesis §6.4.1) and follower reads (thesis §6.4) on every node, and Clerks
    /// that send each get to a node at random ([`crate::clerk::ReadFrom::Any`]).
    pub reads_anywhere: bool,
}

impl ClusterConfig {
    pub fn new(servers: usize) -> Self {
        Self {
            servers,
            unreliable: false,
            maxraftstate: None,
            disk_latency_ms: (0, 3),
            observer: None,
            reads_anywhere: false,
        }
    }

    pub fn reads_anywhere(mut self, on: bool) -> Self {
        self.reads_anywhere = on;
        self
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
    make_sm: Box<dyn Fn(usize) -> M + Send + Sync>,
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
        Self::with_node_state_machine(seed, rt, config, move |_| make_sm()).await
    }

    /// Starts a cluster whose server `i` runs `make_sm(i)` at each start: a state machine that
    /// keeps its state across crashes (a durable one over a store kept per server) is made
    /// here.
    pub async fn with_node_state_machine(
        seed: u64,
        rt: &SimRuntime,
        config: ClusterConfig,
        make_sm: impl Fn(usize) -> M + Send + Sync + 'static,
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
        raft.lease_reads = self.config.reads_anywhere;
        raft.follower_reads = self.config.reads_anywhere;
        let mut config = NodeConfig::new(raft);
        match self.config.maxraftstate {
            // Either bound keeps the log applied since the last snapshot near `max` bytes as
            // `log_bytes` counts them (payload + per-entry overhead).
            Some(max) => {
                config.snapshot_threshold_bytes = max;
                config.snapshot_threshold_entries = (max / ENTRY_OVERHEAD_BYTES as u64).max(1);
                // 6.5840 checks the log against `max` while a server lags: no trailing log
                // (issue 20) on top of the log the thresholds allow.
                config.trailing_log_entries = 0;
            }
            None => {
                config.snapshot_threshold_bytes = NEVER;
                config.snapshot_threshold_entries = NEVER;
            }
        }
        config.observer = self.config.observer.clone();
        let node = Node::start(
            self.rt.with_group(id),
            config,
            self.storages[i].clone(),
            self.net.endpoint(id),
            (self.make_sm)(i),
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
            ClerkConfig {
                read_from: match self.config.reads_anywhere {
                    true => crate::clerk::ReadFrom::Any,
                    false => crate::clerk::ReadFrom::Leader,
                },
                ..lab_clerk_config()
            },
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
        let nodes: Vec<_> = self
            .services
            .iter()
            .map(|s| s.as_ref().map(|s| s.node()))
            .collect();
        leader_among(&nodes).await
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
        read_from: crate::clerk::ReadFrom::Leader,
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

/// The index of the node that leads the highest term among `nodes` (`None` for one that is
/// down), if any: what the KV and controller harnesses both ask.
pub async fn leader_among<R: Runtime, M: StateMachine>(
    nodes: &[Option<&Node<R, M>>],
) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let Ok(st) = node.status().await else {
            continue;
        };
        if st.role == Role::Leader && best.is_none_or(|(t, _)| st.term > t) {
            best = Some((st.term, i));
        }
    }
    best.map(|(_, i)| i)
}
