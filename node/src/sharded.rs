//! [`ShardedCluster`]: a sharded store in this process over real TCP on 127.0.0.1 — the shard
//! controller's Raft group and replica groups (`raftkv_shard`), each a
//! [`LocalCluster`] with its faults (crash, restart, partition, pause...), served by the same
//! [`crate::server::KvServer`] and reached by the same [`TcpConnector`] as the KV service.
//!
//! - [`ControllerHost`]: a node of the controller group ([`ControllerStateMachine`] behind
//!   [`ControllerService`]).
//! - [`GroupHost`]: a member of replica group `gid` ([`GroupStateMachine`] behind
//!   [`GroupService`]) and its migration driver ([`run_driver`]), which asks the controller
//!   for configs and pulls shards from other groups. `Pull` and `Delete` are served only to
//!   members of the groups of the installed config or the one before
//!   ([`raftkv_shard::group::trust`]).
//! - [`ShardedCluster`]: starts the controller and `groups` replica groups (gids `1..`), joins
//!   them; `add_group`, `join`, `leave`, `move_shard`, `query`, `wait_config`, and
//!   [`ShardedCluster::clerk`] for [`ShardClerk`]s.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::lock::Mutex;
use raftkv_kv::clerk::ClerkConfig;
use raftkv_kv::history::History;
use raftkv_kv::protocol::Reply;
use raftkv_kv::service::ServiceConfig;
use raftkv_raft::{NetRuntime, Node, NodeId, Runtime};
use raftkv_shard::clerk::{ControllerClerk, CtrlClerkError};
use raftkv_shard::group::{
    run_driver, DriverConfig, GroupConfig, GroupOutcome, GroupQuery, GroupRequestBody,
    GroupService, GroupStateMachine, Progress, ShardClerk, ShardClerkConfig,
};
use raftkv_shard::protocol::CtrlRequestBody;
use raftkv_shard::service::ControllerService;
use raftkv_shard::state::Outcome as CtrlOutcome;
use raftkv_shard::{
    ControllerConfig, ControllerStateMachine, CtrlError, Gid, ShardConfig, ShardId,
};
use thiserror::Error;

use crate::cluster::{ClusterConfig, ClusterError, LocalCluster, StorageKind};
use crate::host::{Host, Serving};
use crate::metrics::NodeMetrics;
use crate::rpc::Handler;
use crate::server::{KvServer, ServerConfig};
use crate::tcp_client::{TcpConnector, TcpConnectorConfig};

/// The connector of the controller's protocol.
pub type CtrlConnector<R> = TcpConnector<R, CtrlOutcome>;
/// The connector of the replica groups' protocol.
pub type GroupConnector<R> = TcpConnector<R, GroupOutcome>;
/// A [`ShardClerk`] over TCP.
pub type TcpShardClerk<R> = ShardClerk<R, CtrlConnector<R>, GroupConnector<R>>;
/// A [`ControllerClerk`] over TCP.
pub type TcpControllerClerk<R> = ControllerClerk<R, CtrlConnector<R>>;
/// A Raft group of a sharded cluster, shared with whoever injects its faults.
pub type Shared<T> = Arc<Mutex<T>>;
/// The controller's group.
pub type ControllerCluster<R> = LocalCluster<R, ControllerHost>;
/// A replica group.
pub type GroupCluster<R> = LocalCluster<R, GroupHost>;

impl<R: Runtime> Handler for ControllerService<R> {
    type Body = CtrlRequestBody;
    type Outcome = CtrlOutcome;

    async fn handle(&self, _peer: SocketAddr, body: CtrlRequestBody) -> Reply<CtrlOutcome> {
        ControllerService::handle(self, body).await
    }
}

/// A group member's endpoint over a network: the trust boundary applies.
struct GroupHandler<R: Runtime>(GroupService<R>);

impl<R: Runtime> Clone for GroupHandler<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: Runtime> Handler for GroupHandler<R> {
    type Body = GroupRequestBody;
    type Outcome = GroupOutcome;

    async fn handle(&self, peer: SocketAddr, body: GroupRequestBody) -> Reply<GroupOutcome> {
        self.0.handle_from(peer.ip(), body).await
    }
}

/// A node of the shard controller's group.
#[derive(Clone, Copy, Debug)]
pub struct ControllerHost {
    config: ControllerConfig,
}

impl ControllerHost {
    /// A controller of `config` (checked here: a bad one is refused before any node starts).
    pub fn new(config: ControllerConfig) -> Result<Self, CtrlError> {
        ControllerStateMachine::new(config)?;
        Ok(Self { config })
    }
}

impl Host for ControllerHost {
    type Machine = ControllerStateMachine;

    fn state_machine(&self, _id: NodeId, _data_bytes_max: u64) -> ControllerStateMachine {
        ControllerStateMachine::new(self.config).expect("the config was checked by new")
    }

    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, ControllerStateMachine>,
        runtime: R,
        service: ServiceConfig,
        _peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        server: ServerConfig,
        _metrics: Option<NodeMetrics>,
    ) -> io::Result<Serving> {
        let service = ControllerService::new(node, runtime.clone(), service);
        let server = KvServer::start(listener, service, runtime, server)?;
        Ok(Box::new(server))
    }
}

/// A member of replica group `gid`: its server and its migration driver.
#[derive(Clone, Debug)]
pub struct GroupHost {
    settings: GroupConfig,
    controllers: Vec<String>,
    driver: DriverConfig,
}

impl GroupHost {
    /// A member of the group `settings.gid` of a store whose controller serves at
    /// `controllers` (client addresses, not empty).
    pub fn new(settings: GroupConfig, controllers: Vec<String>, driver: DriverConfig) -> Self {
        Self {
            settings,
            controllers,
            driver,
        }
    }
}

/// Stops a member's driver when dropped (with the member's server).
struct GroupServing {
    _server: KvServer,
    _stop_driver: oneshot::Sender<()>,
}

impl Host for GroupHost {
    type Machine = GroupStateMachine;

    /// The group's data, every shard it holds, within `data_bytes_max`
    /// ([`GroupConfig::data_bytes_max`]).
    fn state_machine(&self, _id: NodeId, data_bytes_max: u64) -> GroupStateMachine {
        GroupStateMachine::new(GroupConfig {
            data_bytes_max,
            ..self.settings
        })
    }

    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, GroupStateMachine>,
        runtime: R,
        service: ServiceConfig,
        _peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        server: ServerConfig,
        _metrics: Option<NodeMetrics>,
    ) -> io::Result<Serving> {
        let service = GroupService::new(node, runtime.clone(), service);
        let server = KvServer::start(
            listener,
            GroupHandler(service.clone()),
            runtime.clone(),
            server,
        )?;
        let controller = ControllerClerk::new(
            runtime.clone(),
            CtrlConnector::for_protocol(runtime.clone(), TcpConnectorConfig::default()),
            self.controllers.clone(),
            self.driver.calls.clone(),
        );
        let groups = GroupConnector::for_protocol(runtime.clone(), TcpConnectorConfig::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let driver = run_driver(service, controller, groups, self.driver.clone());
        runtime.spawn(async move {
            // The driver runs until the member stops (its `GroupServing` dropped).
            futures::pin_mut!(driver);
            let _ = futures::future::select(driver, stopped).await;
        });
        Ok(Box::new(GroupServing {
            _server: server,
            _stop_driver: stop,
        }))
    }
}

/// Why a sharded-cluster operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ShardedError {
    /// Starting or operating one of the Raft groups failed.
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// The controller refused the change, or could not be reached.
    #[error("controller: {0}")]
    Controller(#[from] CtrlClerkError),
    /// The controller's configuration is invalid (shard count out of range...).
    #[error("bad controller configuration: {0}")]
    Config(CtrlError),
    /// A cluster of this shape cannot be started.
    #[error("bad sharded cluster: {0}")]
    Shape(String),
    /// No running group has this gid.
    #[error("no group {gid} (running groups: {running:?})")]
    NoSuchGroup { gid: Gid, running: Vec<Gid> },
    /// Some groups had not installed config `num` within `waited`.
    #[error("groups {behind:?} had not installed config {num} within {waited:?}")]
    WaitTimeout {
        num: u64,
        behind: Vec<Gid>,
        waited: Duration,
    },
}

/// How to build a [`ShardedCluster`].
#[derive(Clone, Debug)]
pub struct ShardedConfig {
    /// Replica groups started and joined at start (gids `1..=groups`); 0 starts none.
    pub groups: usize,
    /// Members of each replica group started at start (1..=7).
    pub nodes_per_group: usize,
    /// Nodes of the controller group (1..=7).
    pub controllers: usize,
    /// The number of shards, fixed for the cluster's life.
    pub shards: u32,
    pub storage: StorageKind,
    /// LMDB: the controller in `data_dir/controller`, group `gid` in `data_dir/group{gid}`.
    /// `None`: temporary directories.
    pub data_dir: Option<PathBuf>,
    /// Seeds elections and fault filters (each group's from this one).
    pub seed: u64,
    /// The groups' migration drivers' pace and call deadlines.
    pub driver: DriverConfig,
    /// Each replica group's data, all its shards, stays within this
    /// ([`GroupConfig::data_bytes_max`]).
    pub data_bytes_max: u64,
}

impl ShardedConfig {
    pub fn new(groups: usize, nodes_per_group: usize, controllers: usize, shards: u32) -> Self {
        Self {
            groups,
            nodes_per_group,
            controllers,
            shards,
            storage: StorageKind::Memory,
            data_dir: None,
            seed: 1,
            driver: DriverConfig::default(),
            data_bytes_max: raftkv_kv::state::DATA_BYTES_MAX_DEFAULT,
        }
    }
}

/// A local cluster starts at most this many replica groups over its life.
pub const GROUPS_MAX: usize = 64;

/// The shard controller and the replica groups, in this process. Dropping it stops every node
/// (without waiting); [`ShardedCluster::close`] waits until everything is released.
pub struct ShardedCluster<R: NetRuntime> {
    runtime: R,
    config: ShardedConfig,
    controller: Shared<ControllerCluster<R>>,
    /// Their client addresses stay the same for their life.
    controller_addrs: Vec<String>,
    groups: BTreeMap<Gid, (Shared<GroupCluster<R>>, Vec<String>)>,
    /// For joins, leaves, moves and queries.
    admin: TcpControllerClerk<R>,
    next_gid: Gid,
}

impl<R: NetRuntime> ShardedCluster<R> {
    /// Starts the controller group, then `config.groups` replica groups, and joins them (one
    /// config), so that every shard is assigned.
    pub async fn start(runtime: R, config: ShardedConfig) -> Result<Self, ShardedError> {
        if config.groups > GROUPS_MAX {
            return Err(ShardedError::Shape(format!(
                "at most {GROUPS_MAX} groups, not {}",
                config.groups
            )));
        }
        for (what, n) in [
            ("nodes_per_group", config.nodes_per_group),
            ("controllers", config.controllers),
        ] {
            if n == 0 || n > 7 {
                return Err(ShardedError::Shape(format!(
                    "{what} must be 1 to 7, not {n}"
                )));
            }
        }
        let ctrl = ControllerHost::new(ControllerConfig {
            shards: config.shards,
            ..ControllerConfig::default()
        })
        .map_err(ShardedError::Config)?;
        let mut ctrl_config = ClusterConfig::new(config.controllers, config.storage);
        ctrl_config.data_dir = config.data_dir.as_ref().map(|d| d.join("controller"));
        ctrl_config.seed = config.seed;
        let controller = LocalCluster::start_hosting(runtime.clone(), ctrl_config, ctrl).await?;
        let controller_addrs = controller.addrs();
        let admin = controller_clerk(&runtime, controller_addrs.clone(), ClerkConfig::default());
        let mut cluster = Self {
            runtime,
            config,
            controller: Arc::new(Mutex::new(controller)),
            controller_addrs,
            groups: BTreeMap::new(),
            admin,
            next_gid: 1,
        };
        let mut gids = Vec::new();
        for _ in 0..cluster.config.groups {
            gids.push(cluster.start_group(cluster.config.nodes_per_group).await?);
        }
        if !gids.is_empty() {
            cluster.join(&gids).await?;
        }
        Ok(cluster)
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.config.shards
    }

    /// The controller nodes' client addresses.
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controller_addrs.clone()
    }

    /// The controller's group, with the local cluster's faults.
    pub fn controller(&self) -> Shared<ControllerCluster<R>> {
        self.controller.clone()
    }

    /// Gids of the started groups (running, crashed or partitioned), in order.
    pub fn groups(&self) -> Vec<Gid> {
        self.groups.keys().copied().collect()
    }

    /// Group `gid`, with the local cluster's faults.
    pub fn group(&self, gid: Gid) -> Result<Shared<GroupCluster<R>>, ShardedError> {
        Ok(self.entry(gid)?.0.clone())
    }

    fn entry(&self, gid: Gid) -> Result<&(Shared<GroupCluster<R>>, Vec<String>), ShardedError> {
        self.groups
            .get(&gid)
            .ok_or_else(|| ShardedError::NoSuchGroup {
                gid,
                running: self.groups(),
            })
    }

    /// Group `gid`'s members' client addresses (they stay the same for its life).
    pub fn group_addrs(&self, gid: Gid) -> Result<Vec<String>, ShardedError> {
        Ok(self.entry(gid)?.1.clone())
    }

    /// Starts a new replica group of `nodes` members (not joined); returns its gid.
    pub async fn start_group(&mut self, nodes: usize) -> Result<Gid, ShardedError> {
        if self.groups.len() >= GROUPS_MAX {
            return Err(ShardedError::Shape(format!(
                "a sharded cluster starts at most {GROUPS_MAX} groups"
            )));
        }
        let gid = self.next_gid;
        let host = GroupHost::new(
            GroupConfig::new(gid, self.config.shards),
            self.controller_addrs.clone(),
            self.config.driver.clone(),
        );
        let mut config = ClusterConfig::new(nodes, self.config.storage);
        config.data_bytes_max = self.config.data_bytes_max;
        config.data_dir = self
            .config
            .data_dir
            .as_ref()
            .map(|d| d.join(format!("group{gid}")));
        config.seed = self
            .config
            .seed
            .wrapping_add(gid.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let group = LocalCluster::start_hosting(self.runtime.clone(), config, host).await?;
        self.next_gid += 1;
        let addrs = group.addrs();
        self.groups
            .insert(gid, (Arc::new(Mutex::new(group)), addrs));
        Ok(gid)
    }

    /// Starts a new replica group of `nodes` members and joins it; returns its gid.
    pub async fn add_group(&mut self, nodes: usize) -> Result<Gid, ShardedError> {
        let gid = self.start_group(nodes).await?;
        self.join(&[gid]).await?;
        Ok(gid)
    }

    /// Joins the started groups `gids` (with their members' addresses); returns the config
    /// made.
    pub async fn join(&mut self, gids: &[Gid]) -> Result<u64, ShardedError> {
        let groups = gids
            .iter()
            .map(|&g| Ok((g, self.group_addrs(g)?)))
            .collect::<Result<BTreeMap<_, _>, ShardedError>>()?;
        Ok(self.admin.join(groups).await?)
    }

    /// `gids` leave (their groups keep running, handing their shards off); returns the config
    /// made.
    pub async fn leave(&mut self, gids: &[Gid]) -> Result<u64, ShardedError> {
        Ok(self.admin.leave(gids.to_vec()).await?)
    }

    /// Hands `shard` to `gid`; returns the config made.
    pub async fn move_shard(&mut self, shard: ShardId, gid: Gid) -> Result<u64, ShardedError> {
        Ok(self.admin.move_shard(shard, gid).await?)
    }

    /// Config `num` (`None`: the latest).
    pub async fn query(&mut self, num: Option<u64>) -> Result<ShardConfig, ShardedError> {
        Ok(self.admin.query(num).await?)
    }

    /// Where group `gid` stands (installed config, shards' statuses), read through ReadIndex
    /// at its leader; `None` if no member leads and answers.
    pub async fn progress(&self, gid: Gid) -> Result<Option<Progress>, ShardedError> {
        let group = self.entry(gid)?.0.lock().await;
        let Some(leader) = group.leader().await else {
            return Ok(None);
        };
        let read = group
            .node(leader)?
            .linearizable_read(GroupQuery::Progress.encode())
            .await;
        Ok(match read {
            Ok(GroupOutcome::Progress(p)) => Some(p),
            _ => None,
        })
    }

    /// Waits until every started group has installed config `num` (`None`: the latest now)
    /// or a later one, with every shard it owns there arrived and every shard it handed off
    /// deleted. Returns the number waited for.
    pub async fn wait_config(
        &mut self,
        num: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, ShardedError> {
        let deadline = self.runtime.now() + timeout;
        let num = match num {
            Some(n) => n,
            None => self.query(None).await?.num,
        };
        loop {
            let mut behind = Vec::new();
            for gid in self.groups() {
                let done = self
                    .progress(gid)
                    .await?
                    .is_some_and(|p| p.config.num >= num && (p.config.num > num || p.settled()));
                if !done {
                    behind.push(gid);
                }
            }
            if behind.is_empty() {
                return Ok(num);
            }
            if self.runtime.now() >= deadline {
                return Err(ShardedError::WaitTimeout {
                    num,
                    behind,
                    waited: timeout,
                });
            }
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new [`ShardClerk`] (its own session, issued by the controller), recording into
    /// `history` if given.
    pub fn clerk(&self, config: ShardClerkConfig, history: Option<History>) -> TcpShardClerk<R> {
        let clerk = shard_clerk(&self.runtime, self.controller_addrs.clone(), config);
        match history {
            Some(h) => clerk.with_history(h),
            None => clerk,
        }
    }

    /// Stops every node and waits until ports and files are released.
    pub async fn close(&mut self) {
        for (group, _) in self.groups.values() {
            group.lock().await.close().await;
        }
        self.controller.lock().await.close().await;
    }
}

/// A controller clerk over TCP for the controllers at `addrs`.
pub fn controller_clerk<R: NetRuntime>(
    runtime: &R,
    addrs: Vec<String>,
    config: ClerkConfig,
) -> TcpControllerClerk<R> {
    ControllerClerk::new(
        runtime.clone(),
        CtrlConnector::for_protocol(runtime.clone(), TcpConnectorConfig::default()),
        addrs,
        config,
    )
}

/// A [`ShardClerk`] over TCP for the store whose controllers are at `controllers`.
pub fn shard_clerk<R: NetRuntime>(
    runtime: &R,
    controllers: Vec<String>,
    config: ShardClerkConfig,
) -> TcpShardClerk<R> {
    ShardClerk::new(
        runtime.clone(),
        controller_clerk(runtime, controllers, config.group.clone()),
        GroupConnector::for_protocol(runtime.clone(), TcpConnectorConfig::default()),
        config,
    )
}
