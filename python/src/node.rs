//! `Node`: one raftkv node, for clusters spread over processes or machines. Nodes are named by
//! their Raft id (1..), as in `peers`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use raftkv_node::host::{Host, KvHost};
use raftkv_node::kv_state::StateKind;
use raftkv_node::sharded::{ControllerHost, GroupHost};
use raftkv_node::standalone::{Failure, NodeTls, StandaloneConfig, StandaloneNode};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::NetRuntime;
use raftkv_shard::config::SHARDS_MAX;
use raftkv_shard::group::{DriverConfig, GroupConfig};
use raftkv_shard::{ControllerConfig, SHARDS_DEFAULT};
use raftkv_transport_tcp::TlsFiles;

use crate::convert::{resolve, status_dict};
use crate::errors::{ce, ClusterError};
use crate::runtime::{block_on, tokio_runtime};

/// What a node serves: the KV service, or a member of a sharded store's controller or of one
/// of its replica groups.
#[derive(Clone, Debug)]
enum Role {
    Kv,
    Controller(ControllerHost),
    Group(GroupHost),
}

/// A running node of any role on either runtime.
enum AnyNode {
    Tokio(RoleNode<TokioRuntime>, TokioRuntime),
    Smol(RoleNode<SmolRuntime>, SmolRuntime),
}

enum RoleNode<R: NetRuntime> {
    Kv(StandaloneNode<R, KvHost>),
    Controller(StandaloneNode<R, ControllerHost>),
    Group(StandaloneNode<R, GroupHost>),
}

/// `$body` with `$n` bound to the running node, whatever its runtime and role.
macro_rules! with_node {
    ($any:expr, $n:ident, $r:ident => $body:expr) => {
        match $any {
            AnyNode::Tokio(RoleNode::Kv($n), $r) => $body,
            AnyNode::Tokio(RoleNode::Controller($n), $r) => $body,
            AnyNode::Tokio(RoleNode::Group($n), $r) => $body,
            AnyNode::Smol(RoleNode::Kv($n), $r) => $body,
            AnyNode::Smol(RoleNode::Controller($n), $r) => $body,
            AnyNode::Smol(RoleNode::Group($n), $r) => $body,
        }
    };
}

/// The error of a call that needs a running node.
fn not_running() -> PyErr {
    ClusterError::new_err("the node is not running; start() it first")
}

impl<R: NetRuntime> RoleNode<R> {
    async fn start(runtime: R, config: StandaloneConfig, role: Role) -> PyResult<Self> {
        async fn one<R: NetRuntime, H: Host>(
            runtime: R,
            config: StandaloneConfig,
            host: H,
        ) -> PyResult<StandaloneNode<R, H>> {
            ce(StandaloneNode::start_hosting(runtime, config, host).await)
        }
        Ok(match role {
            Role::Kv => Self::Kv(one(runtime, config, KvHost).await?),
            Role::Controller(h) => Self::Controller(one(runtime, config, h).await?),
            Role::Group(h) => Self::Group(one(runtime, config, h).await?),
        })
    }
}

/// One raftkv node, for clusters spread over processes or machines.
///
/// `Node(id, peers, data_dir=None, storage="lmdb", runtime="tokio", client_addrs=None,
/// client_port_offset=1000, snapshot_threshold=None)`: `peers` maps every node's Raft id
/// (int >= 1, this one's included) to its Raft (peer) address "host:port". The client
/// address of a node (the one Clerks use) is, unless `client_addrs` {id: "host:port"} is
/// given, the same host with port + 1000 (`client_port_offset`). storage "lmdb" needs
/// `data_dir`; "memory" keeps the log in memory only. start() binds and starts the node,
/// status() returns a dict (id, role, term, leader as Raft ids...), stop() stops it.
/// `failure` is None while the node runs, and says why once it stopped by itself (fail-stop
/// after a storage error: it then answers "node is shut down" until stopped).
///
/// `data_bytes_max` bounds the node's data (keys and values, plus 32 bytes a key; 512 MiB by
/// default, at most 512 MiB; with state "lmdb" 8 GiB by default and at most, as no stored
/// snapshot copy bounds it, but a snapshot sent to a lagging follower is still whole in
/// memory): a write that would take it past is refused with `StoreFull`.
/// Give every node of a cluster the same bound.
///
/// `state` is where the KV state lives: "memory" (the default: a map rebuilt from the snapshot
/// and the log at each start) or "lmdb" (with storage "lmdb": in LMDB under `data_dir`, so the
/// data may be larger than memory and a restart resumes from it without rebuilding a map).
///
/// `trailing_log` (issue 20): how many log entries are kept before where a compaction would go
/// (`None`: 5,000; 0: none; at most 10,000,000; their bytes at most 16 MiB), so that a node
/// only a little behind (a pause, a restart) catches up from the log instead of a whole-state
/// snapshot.
///
/// `tls_cert`, `tls_key`, `tls_ca` (PEM files, all three or none) turn on TLS: mutual TLS
/// between peers, each checking the other's certificate against the CA, and TLS on the client
/// port. The certificate must name the host of the node's peer and client addresses. With
/// `tls_client_ca`, clients must present a certificate that CA signed. Files are read by
/// start(), which raises ClusterError if one cannot be used.
///
/// `client_token_file`: a file whose first line is a shared client token; clients must then
/// give it (`Clerk(..., token=...)`), else they are refused (raftkv.Unauthorized).
///
/// `join=[client addresses]` starts a node that joins a running cluster: `peers` (and
/// `client_addrs`) then name this node only; start() asks a member to add it as a learner,
/// which the leader promotes to voter once it has caught up (unless `join_as_learner`).
///
/// `role` says what the node serves: "kv" (the default: the KV service, for Clerk), or a
/// member of a sharded store (for ShardClerk): "controller", a node of the shard
/// controller's group; "group", a member of replica group `gid` (>= 1), whose migration
/// driver asks the controller at `controller` (its nodes' client addresses) for configs.
/// `shards` (default 256) is fixed for the store's life: give the controller and every group
/// the same. Then join each group through the controller (ShardController.join, `raftkv
/// shard join`). The shard roles take no TLS, client token or `join`.
///
/// `follower_reads=True`: a follower serves gets itself (a Clerk with `read_from="any"` sends
/// them to any node): it asks the leader for a read index and answers once it has applied it,
/// so reads stay linearizable and scale with replicas. `lease_reads=True`: the leader answers
/// gets under a lease (thesis §6.4.1) instead of a heartbeat round per batch of reads. A lease
/// is safe only if the nodes' clocks run at rates within 10% of each other (stalls included):
/// it is off by default; give every node the same setting.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct Node {
    config: StandaloneConfig,
    role: Role,
    runtime: String,
    running: Arc<tokio::sync::Mutex<Option<AnyNode>>>,
    /// The running node's failure cause, readable without waiting on `running`'s lock.
    failure: Arc<std::sync::Mutex<Option<Failure>>>,
}

impl Node {
    /// `f` on the running node, under its lock; `not_running()` if it is not running.
    fn on_running<T: Send + 'static>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&AnyNode) -> PyResult<T> + Send + 'static,
    ) -> PyResult<T> {
        let running = self.running.clone();
        block_on(py, async move {
            match running.lock().await.as_ref() {
                None => Err(not_running()),
                Some(n) => f(n),
            }
        })?
    }
}

#[pymethods]
impl Node {
    #[new]
    #[pyo3(signature = (id, peers, data_dir=None, storage="lmdb", runtime="tokio", client_addrs=None, client_port_offset=1000, snapshot_threshold=None, cluster_id=None, join=None, join_as_learner=false, data_bytes_max=None, tls_cert=None, tls_key=None, tls_ca=None, tls_client_ca=None, client_token_file=None, role="kv", gid=None, controller=None, shards=None, lease_reads=false, follower_reads=false, state="memory", trailing_log=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        peers: BTreeMap<u64, String>,
        data_dir: Option<PathBuf>,
        storage: &str,
        runtime: &str,
        client_addrs: Option<BTreeMap<u64, String>>,
        client_port_offset: u16,
        snapshot_threshold: Option<u64>,
        cluster_id: Option<u64>,
        join: Option<Vec<String>>,
        join_as_learner: bool,
        data_bytes_max: Option<u64>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_ca: Option<PathBuf>,
        tls_client_ca: Option<PathBuf>,
        client_token_file: Option<PathBuf>,
        role: &str,
        gid: Option<u64>,
        controller: Option<Vec<String>>,
        shards: Option<u32>,
        lease_reads: bool,
        follower_reads: bool,
        state: &str,
        trailing_log: Option<u64>,
    ) -> PyResult<Self> {
        let state: StateKind = state
            .parse()
            .map_err(|e: raftkv_node::cluster::ClusterError| {
                PyValueError::new_err(e.to_string())
            })?;
        if state == StateKind::Lmdb && (storage != "lmdb" || role != "kv") {
            return Err(PyValueError::new_err(
                "state \"lmdb\" needs storage \"lmdb\" (and role \"kv\")",
            ));
        }
        if !peers.contains_key(&id) {
            return Err(PyValueError::new_err(format!(
                "node id {id} is not among the peers {:?}",
                peers.keys().collect::<Vec<_>>()
            )));
        }
        if peers.contains_key(&0) {
            return Err(PyValueError::new_err("node ids start at 1"));
        }
        if runtime != "tokio" && runtime != "smol" {
            return Err(PyValueError::new_err(format!(
                "runtime must be \"tokio\" or \"smol\", not {runtime:?}"
            )));
        }
        let data_dir = match storage {
            "lmdb" => Some(
                data_dir
                    .ok_or_else(|| PyValueError::new_err("storage \"lmdb\" needs a data_dir"))?,
            ),
            "memory" => None,
            s => {
                return Err(PyValueError::new_err(format!(
                    "storage must be \"memory\" or \"lmdb\", not {s:?}"
                )))
            }
        };
        let mut peer_map = BTreeMap::new();
        for (&j, a) in &peers {
            peer_map.insert(j, resolve(a)?);
        }
        let mut client_map = BTreeMap::new();
        match client_addrs {
            Some(m) => {
                for &j in peers.keys() {
                    let a = m.get(&j).ok_or_else(|| {
                        PyValueError::new_err(format!("client_addrs lacks node {j}"))
                    })?;
                    client_map.insert(j, resolve(a)?);
                }
            }
            None => {
                for (&j, a) in &peer_map {
                    let port = a.port().checked_add(client_port_offset).ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "peer port {} + {client_port_offset} is not a port",
                            a.port()
                        ))
                    })?;
                    client_map.insert(j, SocketAddr::new(a.ip(), port));
                }
            }
        }
        let mut config = StandaloneConfig::new(id, peer_map, client_map, data_dir);
        config.state = state;
        config.snapshot_threshold = snapshot_threshold;
        config.trailing_log = crate::cluster::trailing_log_checked(trailing_log)?;
        config.lease_reads = lease_reads;
        config.follower_reads = follower_reads;
        config.data_bytes_max = crate::cluster::data_bytes_max_checked(data_bytes_max, state)?;
        if let Some(path) = client_token_file {
            let bad = |e: String| {
                PyValueError::new_err(format!("client_token_file {}: {e}", path.display()))
            };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            // The first line, without its end of line.
            let token = text.lines().next().unwrap_or_default().to_string();
            let token = crate::convert::client_token(token).map_err(|e| bad(e.to_string()))?;
            config.client_token = Some(token.to_string());
        }
        config.tls =
            match (tls_cert, tls_key, tls_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(NodeTls {
                    files: TlsFiles { cert, key, ca },
                    client_ca: tls_client_ca,
                }),
                (None, None, None) if tls_client_ca.is_none() => None,
                _ => return Err(PyValueError::new_err(
                    "TLS needs tls_cert, tls_key and tls_ca together (tls_client_ca is optional, \
                     with them)",
                )),
            };
        if let Some(join) = join {
            if join.is_empty() || join.iter().any(|a| a.is_empty()) {
                return Err(PyValueError::new_err(
                    "join needs at least one client address of a member",
                ));
            }
            if peers.len() != 1 {
                return Err(PyValueError::new_err(
                    "a joining node's peers name this node only: the cluster's members are \
                     learned from `join`",
                ));
            }
            config.join = join;
            config.join_as_learner = join_as_learner;
        }
        let role = node_role(role, gid, controller, shards)?;
        if !matches!(role, Role::Kv)
            && (config.tls.is_some() || config.client_token.is_some() || !config.join.is_empty())
        {
            return Err(PyValueError::new_err(
                "a shard controller or replica group node takes no TLS, client token or join",
            ));
        }
        // By default each Raft group its own cluster id (the controller's, each replica
        // group's, the KV store's): a peer address of another group given by mistake is
        // refused at the handshake.
        config.cluster_id = match (cluster_id, &role) {
            (Some(c), _) => c,
            (None, Role::Kv) => config.cluster_id,
            (None, Role::Controller(_)) => config.cluster_id ^ 0x4354_524c,
            (None, Role::Group(_)) => {
                config.cluster_id ^ gid.unwrap_or(0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            }
        };
        Ok(Self {
            config,
            role,
            runtime: runtime.to_string(),
            running: Arc::new(tokio::sync::Mutex::new(None)),
            failure: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// This node's Raft id.
    #[getter]
    fn id(&self) -> u64 {
        self.config.id
    }

    /// This node's client address (for Clerks).
    #[getter]
    fn client_addr(&self) -> String {
        self.config.client_addrs[&self.config.id].to_string()
    }

    /// This node's Raft (peer) address.
    #[getter]
    fn peer_addr(&self) -> String {
        self.config.peers[&self.config.id].to_string()
    }

    /// Every node's client address, by Raft id.
    #[getter]
    fn client_addrs(&self) -> BTreeMap<u64, String> {
        self.config
            .client_addrs
            .iter()
            .map(|(&j, a)| (j, a.to_string()))
            .collect()
    }

    /// Binds the node's addresses, opens its storage and starts it. Raises raftkv.ClusterError.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let config = self.config.clone();
        let role = self.role.clone();
        let smol = self.runtime == "smol";
        let running = self.running.clone();
        let failure = self.failure.clone();
        block_on(py, async move {
            let mut g = running.lock().await;
            if g.is_some() {
                return Err(ClusterError::new_err(
                    "the node is already running; stop() it before starting it again",
                ));
            }
            let n = if smol {
                let r = SmolRuntime::new();
                AnyNode::Smol(RoleNode::start(r.clone(), config, role).await?, r)
            } else {
                let r = tokio_runtime();
                AnyNode::Tokio(RoleNode::start(r.clone(), config, role).await?, r)
            };
            let handle = with_node!(&n, n, _r => n.failure_handle());
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            *g = Some(n);
            Ok(())
        })?
    }

    /// Whether the node is running.
    #[getter]
    fn running(&self, py: Python<'_>) -> PyResult<bool> {
        let running = self.running.clone();
        block_on(py, async move { running.lock().await.is_some() })
    }

    /// Why the node stopped by itself (its storage failed, say): a message, or None while it
    /// runs, before start() and after stop(). A node that failed answers "node is shut down";
    /// stop() it (and start() it again once the cause is fixed).
    #[getter]
    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Failure::get)
    }

    /// The node's status: id, role, term, leader (Raft id or None), commit_index,
    /// applied_index, first_index, last_index, snapshot_index, persisted_index.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let running = self.running.clone();
        let s = block_on(py, async move {
            let g = running.lock().await;
            match g.as_ref() {
                None => Err(not_running()),
                Some(n) => with_node!(n, n, _r => ce(n.status().await)),
            }
        })??;
        status_dict(py, &s, None)
    }

    /// The node's metrics in the Prometheus (OpenMetrics) text format: term, role, leader,
    /// commit/applied/last/snapshot index, leader changes, elections, entries appended and
    /// applied, messages sent and received by kind, payload bytes sent per peer, votes,
    /// snapshots, restarts, durable-write latency (storage_write_seconds), client requests by
    /// kind and result with their latency (names prefixed raftkv_).
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        self.on_running(py, |n| with_node!(n, n, _r => Ok(n.metrics())))
    }

    /// Reads the node's TLS files again (certificate, key, CA, client CA): connections opened
    /// from now on use them, open ones keep theirs. Raises raftkv.ClusterError if a file
    /// fails to load (the settings in force stay) or the node has no TLS.
    fn reload_tls(&self, py: Python<'_>) -> PyResult<()> {
        self.on_running(py, |n| with_node!(n, n, _r => ce(n.reload_tls())))
    }

    /// Stops the node and waits until its ports and storage are released. Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.running.clone();
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        block_on(py, async move {
            let mut g = running.lock().await;
            match g.take() {
                None => {}
                Some(n) => with_node!(n, n, r => n.stop(&r).await),
            }
        })
    }

    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().start(py)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Node(id={}, peer_addr={:?}, client_addr={:?})",
            self.config.id,
            self.peer_addr(),
            self.client_addr()
        )
    }
}

/// The role `role` names, with its settings checked.
fn node_role(
    role: &str,
    gid: Option<u64>,
    controller: Option<Vec<String>>,
    shards: Option<u32>,
) -> PyResult<Role> {
    let only_for = |what: &str, roles: &str| {
        PyValueError::new_err(format!("{what} is only for role {roles}, not {role:?}"))
    };
    if role == "kv" && shards.is_some() {
        return Err(only_for("shards", "\"controller\" or \"group\""));
    }
    let shards = shards.unwrap_or(SHARDS_DEFAULT);
    if shards == 0 || shards > SHARDS_MAX {
        return Err(PyValueError::new_err(format!(
            "shards must be 1 to {SHARDS_MAX}, not {shards}"
        )));
    }
    match role {
        "kv" => {
            if gid.is_some() || controller.is_some() {
                return Err(only_for("gid or controller", "\"group\""));
            }
            Ok(Role::Kv)
        }
        "controller" => {
            if gid.is_some() || controller.is_some() {
                return Err(only_for("gid or controller", "\"group\""));
            }
            let host = ControllerHost::new(ControllerConfig {
                shards,
                ..ControllerConfig::default()
            })
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
            Ok(Role::Controller(host))
        }
        "group" => {
            let gid = gid
                .filter(|&g| g >= 1)
                .ok_or_else(|| PyValueError::new_err("role \"group\" needs a gid >= 1"))?;
            let controller = controller.unwrap_or_default();
            if controller.is_empty() || controller.iter().any(|a| a.trim().is_empty()) {
                return Err(PyValueError::new_err(
                    "role \"group\" needs controller: the client addresses of the shard \
                     controller's nodes",
                ));
            }
            Ok(Role::Group(GroupHost::new(
                GroupConfig::new(gid, shards),
                controller,
                DriverConfig::default(),
            )))
        }
        r => Err(PyValueError::new_err(format!(
            "role must be \"kv\", \"controller\" or \"group\", not {r:?}"
        ))),
    }
}
