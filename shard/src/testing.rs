//! Whole controller clusters — the real driver `Node`, [`ControllerService`] and
//! [`ControllerClerk`] — on the deterministic simulation runtime, in the manner of 6.5840's
//! shardctrler `config.go`. Built on `raftkv_kv::testing`: the seeded `sim` runner, seeds and
//! [`run_seeds`], runtime groups, server partitions, and the client network.
//!
//! - [`CtrlClientNet`] / [`CtrlSimConnector`]: kv's [`ClientNet`] carrying the controller's
//!   protocol: latency, per-client reachability (the lab's `ConnectClient`), requests served by
//!   a task in the server's runtime group (a crash drops them mid-flight), the unreliable mode
//!   (lost requests and replies, some never answered) and the hostile one (requests held up to
//!   seconds, and delivered twice).
//! - [`CtrlSimCluster`]: n controllers with crash (storage survives), restart, server
//!   partitions, the unreliable or hostile network and a snapshot threshold.
//! - Seeds: [`run_seeds`] prints `RAFTKV_SEED=<n>` and the replay command on failure.

use std::time::Duration;

use raftkv_kv::service::ServiceConfig;
use raftkv_kv::testing::leader_among;
pub use raftkv_kv::testing::{
    lab_clerk_config, ms, run_seeds, seeds, sim, spawn_client, ClientNet, ClientNetConfig,
    SimConnector, NET_GROUP,
};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, Runtime};

use crate::clerk::ControllerClerk;
use crate::config::ControllerConfig;
use crate::protocol::{CtrlReply, CtrlRequestBody};
use crate::service::ControllerService;
use crate::state::ControllerStateMachine;

/// The network between controller Clerks and servers.
pub type CtrlClientNet = ClientNet<CtrlRequestBody, CtrlReply>;

/// One controller client's end of the [`CtrlClientNet`].
pub type CtrlSimConnector = SimConnector<CtrlRequestBody, CtrlReply>;

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
    pub clients: CtrlClientNet,
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
            clients: CtrlClientNet::new(rt),
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
        let serving = service.clone();
        self.clients.serve(&Self::addr(i), id, move |body| {
            let service = serving.clone();
            async move { service.handle(body).await }
        });
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
            self.clients.set_config(ClientNetConfig::unreliable());
        } else {
            self.net.set_drop_chance(0.0);
            self.net.set_latency_ms(1, 5);
            self.clients.set_config(ClientNetConfig::reliable());
        }
    }

    /// Beyond the lab: the unreliable network, and clients' requests also held up to seconds
    /// (reaching a server after the Clerk gave up on them) and delivered twice.
    pub fn set_hostile(&mut self) {
        self.set_unreliable(true);
        self.clients.set_config(ClientNetConfig::hostile());
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

    /// Whether server `i`'s durable state holds a snapshot.
    pub fn has_snapshot(&self, i: usize) -> bool {
        self.storages[i].durable().snapshot.is_some()
    }
}
