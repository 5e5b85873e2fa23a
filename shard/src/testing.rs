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
//! - [`ShardSimCluster`]: the sharded store — a controller cluster and replica groups, each
//!   member with its migration driver — with crashes, partitions per group, the unreliable
//!   network, ShardClerks recording one history, and the checks of issue 17 (no shard served
//!   by two groups in one config, GC done).
//! - Seeds: [`run_seeds`] prints `RAFTKV_SEED=<n>` and the replay command on failure.

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv_kv::history::History;
use raftkv_kv::service::ServiceConfig;
pub use raftkv_kv::testing::{
    lab_clerk_config, ms, run_seeds, seeds, sim, spawn_client, ClientNet, ClientNetConfig,
    SimConnector, NET_GROUP,
};
use raftkv_kv::testing::{leader_among, partition_servers};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, Runtime};

use crate::clerk::ControllerClerk;
use crate::config::{ControllerConfig, Gid, ShardConfig, ShardId};
use crate::group::{
    run_driver, DriverConfig, GroupConfig, GroupError, GroupOutcome, GroupReply, GroupRequestBody,
    GroupService, GroupStateMachine, Progress, ShardClerk, ShardClerkConfig,
};
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

// ---- replica groups ----

/// The network between group clients (ShardClerks, other groups' drivers) and group members.
pub type GroupClientNet = ClientNet<GroupRequestBody, GroupReply>;

/// One client's end of the [`GroupClientNet`].
pub type GroupSimConnector = SimConnector<GroupRequestBody, GroupReply>;

/// A ShardClerk of a simulated sharded store.
pub type SimShardClerk = ShardClerk<SimRuntime, CtrlSimConnector, GroupSimConnector>;

/// One replica group's members.
struct SimGroup {
    net: SimNet,
    storages: Vec<SimStorage>,
    services: Vec<Option<GroupService<SimRuntime>>>,
}

/// A whole sharded store on one simulation runtime: a controller cluster and up to
/// `max_groups` replica groups (gids `1..=max_groups`), each with its own Raft network, all
/// sharing one client network; every member runs its migration driver. Clerks record into
/// one [`History`].
pub struct ShardSimCluster {
    pub seed: u64,
    pub rt: SimRuntime,
    pub ctrl: CtrlSimCluster,
    /// The groups' client network (Clerks and group-to-group calls).
    pub net: GroupClientNet,
    pub history: History,
    shards: u32,
    nodes_per_group: usize,
    max_groups: Gid,
    snapshot_every_entries: u64,
    groups: BTreeMap<Gid, SimGroup>,
    /// (config num, shard) → the gid seen serving it: two gids is a violation.
    seen: BTreeMap<(u64, ShardId), Gid>,
    unreliable: bool,
}

impl ShardSimCluster {
    /// A controller cluster of `controllers` nodes for `shards` shards; no group started yet.
    pub async fn new(
        seed: u64,
        rt: &SimRuntime,
        shards: u32,
        controllers: usize,
        nodes_per_group: usize,
        max_groups: Gid,
        snapshot_every_entries: u64,
    ) -> Self {
        let ctrl_config = ControllerConfig {
            shards,
            ..ControllerConfig::default()
        };
        let ctrl = CtrlSimCluster::new(seed, rt, controllers, ctrl_config, 1_000).await;
        let rt2 = rt.clone();
        Self {
            seed,
            rt: rt.clone(),
            ctrl,
            net: GroupClientNet::new(rt),
            history: History::with_clock(move || rt2.now().as_nanos() as u64),
            shards,
            nodes_per_group,
            max_groups,
            snapshot_every_entries,
            groups: BTreeMap::new(),
            seen: BTreeMap::new(),
            unreliable: false,
        }
    }

    /// Member `i` (0-based) of group `gid`'s client address.
    pub fn addr(gid: Gid, i: usize) -> String {
        format!("g{gid}n{}", i + 1)
    }

    fn group_addrs(&self, gid: Gid) -> Vec<String> {
        (0..self.nodes_per_group)
            .map(|i| Self::addr(gid, i))
            .collect()
    }

    fn every_group_addr(&self) -> Vec<String> {
        (1..=self.max_groups)
            .flat_map(|g| self.group_addrs(g))
            .collect()
    }

    /// The runtime group of member `i` of `gid` (killed by a crash).
    fn runtime_group(gid: Gid, i: usize) -> u64 {
        1_000 * gid + i as u64 + 1
    }

    /// Gids of the started groups.
    pub fn gids(&self) -> Vec<Gid> {
        self.groups.keys().copied().collect()
    }

    /// Starts every member of group `gid` (not joined).
    pub async fn start_group(&mut self, gid: Gid) {
        assert!(gid >= 1 && gid <= self.max_groups, "gid {gid} out of range");
        let net = SimNet::new(&self.rt);
        if self.unreliable {
            net.set_drop_chance(0.1);
            net.set_latency_ms(1, 27);
        }
        self.groups.insert(
            gid,
            SimGroup {
                net,
                storages: (0..self.nodes_per_group)
                    .map(|_| SimStorage::new(&self.rt, (0, 3)))
                    .collect(),
                services: (0..self.nodes_per_group).map(|_| None).collect(),
            },
        );
        for i in 0..self.nodes_per_group {
            self.start(gid, i).await;
        }
    }

    /// Starts (or restarts, from its storage) member `i` of group `gid`.
    pub async fn start(&mut self, gid: Gid, i: usize) {
        let n = self.nodes_per_group as u64;
        let rg = Self::runtime_group(gid, i);
        let rt = self.rt.with_group(rg);
        let group = self.groups.get(&gid).expect("the group was started");
        assert!(
            group.services[i].is_none(),
            "{} is already up",
            Self::addr(gid, i)
        );
        let id = i as u64 + 1;
        let mut raft = Config::new(id, 1..=n);
        raft.seed = self.seed.wrapping_mul(131).wrapping_add(rg);
        let mut config = NodeConfig::new(raft);
        config.snapshot_threshold_entries = self.snapshot_every_entries;
        let sm = GroupStateMachine::new(GroupConfig::new(gid, self.shards));
        let node = Node::start(
            rt.clone(),
            config,
            group.storages[i].clone(),
            group.net.endpoint(id),
            sm,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RAFTKV_SEED={}: g{gid}n{id} failed to start: {e}",
                self.seed
            )
        });
        let client_addrs = (1..=n)
            .map(|j| (j, Self::addr(gid, j as usize - 1)))
            .collect();
        let service = GroupService::new(
            node,
            rt.clone(),
            ServiceConfig {
                clock_epoch_ms: 0,
                client_addrs,
            },
        );
        let serving = service.clone();
        self.net.serve(&Self::addr(gid, i), rg, move |body| {
            let service = serving.clone();
            async move { service.handle(body).await }
        });
        let driver = DriverConfig::default();
        let controller = ControllerClerk::new(
            rt.clone(),
            self.ctrl
                .clients
                .connector(&CtrlSimCluster::addrs(&self.ctrl.all())),
            CtrlSimCluster::addrs(&self.ctrl.all()),
            driver.calls.clone(),
        );
        let peers = self.net.connector(&self.every_group_addr());
        rt.spawn(run_driver(service.clone(), controller, peers, driver));
        self.groups.get_mut(&gid).expect("started").services[i] = Some(service);
    }

    /// Crashes member `i` of `gid`: its tasks (driver included) are dropped, storage survives.
    pub fn crash(&mut self, gid: Gid, i: usize) {
        self.net.unregister(&Self::addr(gid, i));
        self.rt.kill_group(Self::runtime_group(gid, i));
        if let Some(g) = self.groups.get_mut(&gid) {
            g.services[i] = None;
        }
    }

    pub async fn restart(&mut self, gid: Gid, i: usize) {
        if self.is_up(gid, i) {
            self.crash(gid, i);
        }
        self.start(gid, i).await;
    }

    pub fn is_up(&self, gid: Gid, i: usize) -> bool {
        self.groups
            .get(&gid)
            .is_some_and(|g| g.services[i].is_some())
    }

    /// Whether member `i` of `gid`'s durable state holds a snapshot.
    pub fn has_snapshot(&self, gid: Gid, i: usize) -> bool {
        self.groups
            .get(&gid)
            .is_some_and(|g| g.storages[i].durable().snapshot.is_some())
    }

    /// Crashes every member of `gid`.
    pub fn crash_group(&mut self, gid: Gid) {
        for i in 0..self.nodes_per_group {
            self.crash(gid, i);
        }
    }

    /// Restarts every member of `gid` that is down.
    pub async fn restart_group(&mut self, gid: Gid) {
        for i in 0..self.nodes_per_group {
            if !self.is_up(gid, i) {
                self.start(gid, i).await;
            }
        }
    }

    /// Only members of `gid` in the same part can talk (clients unaffected).
    pub fn partition(&self, gid: Gid, parts: &[Vec<usize>]) {
        if let Some(g) = self.groups.get(&gid) {
            partition_servers(&g.net, parts);
        }
    }

    pub fn heal(&self, gid: Gid) {
        if let Some(g) = self.groups.get(&gid) {
            g.net.heal();
        }
    }

    /// The lab's unreliable network everywhere: every group's Raft messages, the controller's,
    /// and the client networks.
    pub fn set_unreliable(&mut self, unreliable: bool) {
        self.unreliable = unreliable;
        for g in self.groups.values() {
            if unreliable {
                g.net.set_drop_chance(0.1);
                g.net.set_latency_ms(1, 27);
            } else {
                g.net.set_drop_chance(0.0);
                g.net.set_latency_ms(1, 5);
            }
        }
        self.ctrl.set_unreliable(unreliable);
        self.net.set_config(if unreliable {
            ClientNetConfig::unreliable()
        } else {
            ClientNetConfig::reliable()
        });
    }

    /// A controller Clerk for configuration changes.
    pub fn admin(&self) -> SimCtrlClerk {
        self.ctrl.clerk(&self.ctrl.all())
    }

    /// Joins `gids` (their addresses are their members').
    pub async fn join(&self, gids: &[Gid]) -> u64 {
        let groups = gids.iter().map(|&g| (g, self.group_addrs(g))).collect();
        self.admin()
            .join(groups)
            .await
            .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: join {gids:?}: {e}", self.seed))
    }

    pub async fn leave(&self, gids: &[Gid]) -> u64 {
        self.admin()
            .leave(gids.to_vec())
            .await
            .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: leave {gids:?}: {e}", self.seed))
    }

    pub async fn move_shard(&self, shard: ShardId, gid: Gid) -> u64 {
        self.admin()
            .move_shard(shard, gid)
            .await
            .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: move {shard} to {gid}: {e}", self.seed))
    }

    /// A ShardClerk recording into the history.
    pub fn clerk(&self) -> SimShardClerk {
        self.clerk_without_history()
            .with_history(self.history.clone())
    }

    /// A ShardClerk that records nothing (bulk loads, measurements).
    pub fn clerk_without_history(&self) -> SimShardClerk {
        let controller = self.admin();
        let groups = self.net.connector(&self.every_group_addr());
        let config = ShardClerkConfig {
            timeout: Duration::from_secs(600),
            group: lab_clerk_config_with_timeout(Duration::from_secs(2)),
            refresh_pause: ms(100),
        };
        ShardClerk::new(self.rt.clone(), controller, groups, config)
    }

    /// Group `gid`'s state as its leader reads it (`None` without a leader answering).
    pub async fn progress(&self, gid: Gid) -> Option<Progress> {
        let g = self.groups.get(&gid)?;
        for s in g.services.iter().flatten() {
            if let Some(p) = s.progress().await {
                return Some(p);
            }
        }
        None
    }

    /// A client outside the groups (at `peer`, no member's address) sends every group member
    /// a `Pull` and a `Delete` of every shard for the group's installed config, as a TCP host
    /// would receive them ([`GroupService::handle_from`]); fails if any is served (the trust
    /// boundary of `crate::group::trust`). Returns how many were refused.
    pub async fn rogue_pull_and_delete(&self, peer: std::net::IpAddr) -> usize {
        let mut refused = 0;
        for (gid, g) in &self.groups {
            let Some(p) = self.progress(*gid).await else {
                continue;
            };
            let shards: Vec<ShardId> = (0..self.shards).collect();
            for s in g.services.iter().flatten() {
                for body in [
                    GroupRequestBody::Pull {
                        num: p.config.num,
                        shards: shards.iter().map(|&s| (s, None)).collect(),
                    },
                    GroupRequestBody::Delete {
                        num: p.config.num,
                        shards: shards.clone(),
                    },
                ] {
                    match s.handle_from(peer, body).await {
                        GroupReply::Done(GroupOutcome::Err(GroupError::NotAGroupMember {
                            ..
                        })) => refused += 1,
                        reply @ GroupReply::Done(_) => panic!(
                            "RAFTKV_SEED={}: group {gid} served a rogue Pull/Delete: {reply:?}",
                            self.seed
                        ),
                        // Not the leader, no answer in time: nothing read or changed.
                        _ => {}
                    }
                }
            }
        }
        refused
    }

    /// Samples every group's installed config and served shards, and fails if two groups serve
    /// one shard in the same config number (issue 17: a shard is served by one group).
    pub async fn sample(&mut self) {
        for gid in self.gids() {
            let Some(p) = self.progress(gid).await else {
                continue;
            };
            for shard in p.serving() {
                let other = *self.seen.entry((p.config.num, shard)).or_insert(gid);
                assert_eq!(
                    other, gid,
                    "RAFTKV_SEED={}: shard {shard} served by groups {other} and {gid} in config {}",
                    self.seed, p.config.num
                );
            }
        }
    }

    /// How many (config, shard) pairs [`ShardSimCluster::sample`] saw served.
    pub fn samples(&self) -> usize {
        self.seen.len()
    }

    /// Waits up to `within` until every started group has installed the controller's latest
    /// config and settled every shard (pulled, and the old owners' copies deleted).
    pub async fn wait_settled(&mut self, within: Duration) -> ShardConfig {
        let until = self.rt.now() + within;
        loop {
            let latest = self
                .admin()
                .query(None)
                .await
                .unwrap_or_else(|e| panic!("RAFTKV_SEED={}: query: {e}", self.seed));
            let mut all = true;
            for gid in self.gids() {
                match self.progress(gid).await {
                    Some(p) if p.config.num == latest.num && p.settled() => {}
                    _ => all = false,
                }
            }
            self.sample().await;
            if all {
                return latest;
            }
            assert!(
                self.rt.now() < until,
                "RAFTKV_SEED={}: groups did not settle on config {} within {within:?}",
                self.seed,
                latest.num
            );
            self.rt.sleep(ms(100)).await;
        }
    }

    /// 6.5840 challenge 1: after [`ShardSimCluster::wait_settled`], each shard's data is held by
    /// exactly its owner in `config`, and no group holds another one's.
    pub async fn assert_gc_done(&self, config: &ShardConfig) {
        for gid in self.gids() {
            let p = self
                .progress(gid)
                .await
                .unwrap_or_else(|| panic!("RAFTKV_SEED={}: group {gid} has no leader", self.seed));
            let held: Vec<ShardId> = p.shards.iter().map(|s| s.shard).collect();
            let owned: Vec<ShardId> = (0..self.shards)
                .filter(|&s| config.shards[s as usize] == gid)
                .collect();
            assert_eq!(
                held, owned,
                "RAFTKV_SEED={}: group {gid} holds shards {held:?} but owns {owned:?} in config {}",
                self.seed, config.num
            );
        }
    }

    /// Kills every task of every group member and controller (the end of a test).
    pub fn stop_all(&mut self) {
        for gid in self.gids() {
            self.crash_group(gid);
        }
        for i in self.ctrl.all() {
            if self.ctrl.is_up(i) {
                self.ctrl.crash(i);
            }
        }
    }
}

/// The lab Clerk's settings with another per-group deadline.
fn lab_clerk_config_with_timeout(timeout: Duration) -> raftkv_kv::clerk::ClerkConfig {
    raftkv_kv::clerk::ClerkConfig {
        timeout,
        ..lab_clerk_config()
    }
}
