//! [`StandaloneNode`]: one node of a cluster spread over processes or machines — Raft over
//! [`TcpTransport`], a log on LMDB (or in memory), and on its own client port what its
//! [`Host`] serves, as a [`crate::cluster::LocalCluster`] would: the KV service by default
//! ([`StandaloneNode::start`]), or a shard controller or replica group member
//! ([`crate::sharded`], through [`StandaloneNode::start_hosting`]). `raftkv serve` uses it.
//!
//! A standalone node watches itself: a task polls the driver's status every
//! [`WATCH_INTERVAL`], logs (`tracing`, at info) when this node's role, term or leader changes
//! and when it takes or installs a snapshot, and notices when the driver stopped without being
//! asked to (fail-stop after a storage error). The cause is kept ([`StandaloneNode::failure`]),
//! logged at error, and announced on [`StandaloneNode::failed`], so that a process can exit
//! non-zero instead of answering "node is shut down" forever.
//!
//! Joining a running cluster ([`StandaloneConfig::join`], `raftkv serve --join`): the node
//! starts with no configuration ([`Config::joining`]), learns the members' peer addresses from
//! one of them (`member_list`), then asks the leader to add it (`member_add`): as a learner
//! that the leader promotes to voter by itself once it has caught up (thesis §4.2.1). A node
//! restarted with `join` that already has a configuration in its log does not ask again.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{
    Config, NetRuntime, Node, NodeConfig, NodeId, Persisted, Role, Runtime, StateMachine, Status,
    Storage, StorageError, WriteOp,
};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use raftkv_transport_tcp::{ClientTls, PeerTls, ServerTls, TcpConfig, TcpTransport, TlsFiles};

use crate::error::ClusterError;
use crate::host::{Host, KvHost, Serving};
use crate::metrics::{MeteredStorage, NodeMetrics};
use crate::storage::{wall_clock_ms, AnyStorage, RELEASE_WAIT};
use raftkv_kv::service::ServiceConfig;
use raftkv_kv::state::DATA_BYTES_MAX_DEFAULT;
use raftkv_raft::driver::observer::ObserverHandle;

use crate::server::ServerConfig;
use crate::tcp_client::{TcpConnector, TcpConnectorConfig};
use raftkv_kv::clerk::{Clerk, ClerkConfig};
use raftkv_kv::protocol::MemberList;

/// How to start one node.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// This node's Raft id (a key of `peers`).
    pub id: NodeId,
    /// Every node's Raft (peer) address, this one's included.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Every node's client address, this one's included (named in `NotLeader` answers).
    pub client_addrs: BTreeMap<NodeId, SocketAddr>,
    /// LMDB directory; `None`: the log is kept in memory (lost when the process ends).
    pub data_dir: Option<PathBuf>,
    /// Where the KV state is kept: in memory (the default) or in LMDB in `data_dir`
    /// ([`crate::kv_state::StateKind`]).
    pub state: crate::kv_state::StateKind,
    /// Peers refuse connections from another cluster id.
    pub cluster_id: u64,
    /// Snapshot after this many log entries past the last snapshot (`None`: the default).
    pub snapshot_threshold: Option<u64>,
    /// Issue 20: keep up to this many log entries before where a compaction would go, so that
    /// a follower a little behind catches up from the log instead of a whole-state snapshot
    /// ([`raftkv_raft::NodeConfig::trailing_log_entries`]; `None`: its default, 5,000; 0:
    /// none; at most [`raftkv_raft::TRAILING_LOG_ENTRIES_MAX`]).
    pub trailing_log: Option<u64>,
    /// How long the node waits for a proposal to apply.
    pub request_timeout: Duration,
    /// A write that would take the node's data past this many bytes is refused
    /// ([`raftkv_kv::state::KvStateMachine::with_data_bytes_max`]); the same on every node. At most
    /// [`crate::storage::data_bytes_max_limit_for`] the node's `state` (512 MiB in memory, 8 GiB
    /// in LMDB; [`crate::storage::data_bytes_max_default_for`] is the usual default).
    pub data_bytes_max: u64,
    /// Client addresses of members of a running cluster to join (empty: `peers` is the
    /// initial configuration). With it, `peers` and `client_addrs` need only this node.
    pub join: Vec<String>,
    /// Joining: stay a learner (no promotion to voter).
    pub join_as_learner: bool,
    /// Joining: how long to wait for the cluster to add this node.
    pub join_timeout: Duration,
    /// TLS for peer and client traffic (`None`: plain TCP).
    pub tls: Option<NodeTls>,
    /// The shared client token: clients must give it first on every connection (`None`: no
    /// token asked). A joining node gives it to the members it asks.
    pub client_token: Option<String>,
    /// thesis §6.4.1: the leader serves reads under a lease (`raftkv_raft::Config::lease_reads`,
    /// with its default drift bound of 10%). Off by default: it rests on bounded clock drift.
    pub lease_reads: bool,
    /// thesis §6.4: a follower serves reads itself with a read index from the leader
    /// (`raftkv_raft::Config::follower_reads`). Off by default.
    pub follower_reads: bool,
}

/// TLS for one node: mutual TLS with its peers (each checks the other's certificate against
/// the CA), and TLS on its client port.
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// This node's certificate and key, and the CA that signs every node's certificate. The
    /// certificate must name the host of the node's peer and client addresses.
    pub files: TlsFiles,
    /// Clients must present a certificate this CA signed; `None`: clients need none.
    pub client_ca: Option<PathBuf>,
}

/// A node's TLS settings, loaded from their files (clones share them: a reload reaches the
/// transport, the server and the join client).
#[derive(Clone)]
struct LoadedTls {
    peer: PeerTls,
    server: ServerTls,
    client: ClientTls,
}

impl NodeTls {
    fn load(&self) -> Result<LoadedTls, ClusterError> {
        let f = &self.files;
        Ok(LoadedTls {
            peer: PeerTls::from_files(f)?,
            server: ServerTls::from_files(&f.cert, &f.key, self.client_ca.as_deref())?,
            client: ClientTls::from_files(&f.ca, Some((&f.cert, &f.key)))?,
        })
    }
}

impl StandaloneConfig {
    pub fn new(
        id: NodeId,
        peers: BTreeMap<NodeId, SocketAddr>,
        client_addrs: BTreeMap<NodeId, SocketAddr>,
        data_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            id,
            peers,
            client_addrs,
            data_dir,
            state: crate::kv_state::StateKind::Memory,
            cluster_id: 0x5241_4654_4b56,
            snapshot_threshold: None,
            trailing_log: None,
            request_timeout: Duration::from_secs(2),
            data_bytes_max: DATA_BYTES_MAX_DEFAULT,
            join: Vec::new(),
            join_as_learner: false,
            join_timeout: Duration::from_secs(30),
            tls: None,
            client_token: None,
            lease_reads: false,
            follower_reads: false,
        }
    }
}

/// How often the watch task polls the driver's status.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The name of the file storage-lmdb holds `flock`ed while a store is open.
const LOCK_FILE_NAME: &str = "raftkv-storage.lock";

/// Why a node stopped without being asked to, shared by the node, its storage and its watch task.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    /// The first storage error, once one happened.
    storage: Arc<Mutex<Option<String>>>,
    /// The cause, once the watch task saw the driver stopped.
    cause: Arc<Mutex<Option<String>>>,
}

impl Failure {
    /// Why the node stopped by itself, or `None` while it runs (or after a requested stop).
    pub fn get(&self) -> Option<String> {
        lock(&self.cause).clone()
    }

    fn storage_failed(&self, e: &StorageError) {
        lock(&self.storage).get_or_insert_with(|| e.to_string());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A storage that remembers its first error (the driver logs it and stops, but keeps no cause
/// that its handle could report).
struct Watched<S> {
    inner: S,
    failure: Failure,
}

impl<S: Storage> Storage for Watched<S> {
    async fn load(&self) -> Result<Persisted, StorageError> {
        let r = self.inner.load().await;
        if let Err(e) = &r {
            self.failure.storage_failed(e);
        }
        r
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let r = self.inner.write(ops).await;
        if let Err(e) = &r {
            self.failure.storage_failed(e);
        }
        r
    }
}

/// One running node, serving what `H` hosts (the KV service by default).
pub struct StandaloneNode<R: Runtime, H: Host = KvHost> {
    node: Node<R, H::Machine>,
    /// Dropped to stop the node's server (and its host's tasks).
    server: Option<Serving>,
    data_dir: Option<PathBuf>,
    peer_addr: SocketAddr,
    client_addr: SocketAddr,
    failure: Failure,
    /// Set before a requested stop, so that the watch task does not take it for a failure.
    stopping: Arc<AtomicBool>,
    /// Resolves once the node stopped by itself (dropped, unresolved, after a requested stop).
    failed: Option<oneshot::Receiver<()>>,
    /// Counted from the driver's events ([`crate::metrics`]).
    metrics: NodeMetrics,
    /// The TLS settings in use, for [`Self::reload_tls`].
    tls: Option<LoadedTls>,
}

impl<R: NetRuntime> StandaloneNode<R> {
    /// Binds the node's peer and client addresses, opens its storage and starts it, serving
    /// the KV service.
    pub async fn start(runtime: R, config: StandaloneConfig) -> Result<Self, ClusterError> {
        Self::start_hosting(runtime, config, KvHost).await
    }
}

impl<R: NetRuntime, H: Host> StandaloneNode<R, H> {
    /// Binds the node's peer and client addresses, opens its storage and starts it, serving
    /// what `host` hosts. A host without [`Host::standalone_extras`] refuses TLS, the client
    /// token and `join` ([`ClusterError::Unsupported`]).
    pub async fn start_hosting(
        runtime: R,
        config: StandaloneConfig,
        host: H,
    ) -> Result<Self, ClusterError> {
        let id = config.id;
        let extras = [
            (config.tls.is_some(), "TLS on this node's role"),
            (
                config.client_token.is_some(),
                "a client token on this node's role",
            ),
            (
                !config.join.is_empty(),
                "joining a running cluster in this node's role",
            ),
        ];
        if let Some((_, what)) = extras.iter().find(|e| e.0 && !host.standalone_extras()) {
            return Err(ClusterError::Unsupported { what });
        }
        // TLS files are read first: a bad one stops the start before anything is bound.
        let tls = config.tls.as_ref().map(NodeTls::load).transpose()?;
        let client_tls = tls.as_ref().map(|t| t.client.clone());
        let peer_addr = *config.peers.get(&id).ok_or(ClusterError::NotAPeer { id })?;
        let client_addr = *config
            .client_addrs
            .get(&id)
            .ok_or(ClusterError::NoClientAddr { id })?;
        let peer_listener = TcpListener::bind(peer_addr)?;
        let client_listener = TcpListener::bind(client_addr)?;
        let peer_addr = peer_listener.local_addr()?;
        let client_addr = client_listener.local_addr()?;

        let joining = !config.join.is_empty();
        // Joining: the members as the cluster knows them (peer addresses for the transport,
        // client addresses for NotLeader answers).
        let members = match joining {
            true => Some(join_members(&runtime, &config, &client_tls).await?),
            false => None,
        };
        let mut raft = match joining {
            true => Config::joining(id),
            false => Config::new(id, config.peers.keys().copied()),
        };
        raft.seed = wall_clock_ms().wrapping_mul(0x9E37_79B9).wrapping_add(id);
        raft.lease_reads = config.lease_reads;
        raft.follower_reads = config.follower_reads;
        crate::storage::apply_data_bounds(config.data_bytes_max, config.state, &mut raft)?;
        let mut node_config = NodeConfig::new(raft);
        node_config.request_timeout = config.request_timeout;
        let metrics = NodeMetrics::new();
        node_config.observer = Some(ObserverHandle(Arc::new(metrics.clone())));
        if let Some(t) = config.snapshot_threshold {
            node_config.snapshot_threshold_entries = t.max(1);
        }
        if let Some(t) = config.trailing_log {
            node_config.trailing_log_entries = t;
        }
        let mut others: BTreeMap<NodeId, SocketAddr> = config
            .peers
            .iter()
            .filter(|(&j, _)| j != id)
            .map(|(&j, &a)| (j, a))
            .collect();
        let mut known_clients: BTreeMap<NodeId, String> = config
            .client_addrs
            .iter()
            .map(|(&j, a)| (j, a.to_string()))
            .collect();
        let mut known_peers: BTreeMap<NodeId, String> = config
            .peers
            .iter()
            .map(|(&j, a)| (j, a.to_string()))
            .collect();
        for m in members
            .iter()
            .flat_map(|l| &l.members)
            .filter(|m| m.id != id)
        {
            if let Some(a) = resolve(&m.peer_addr) {
                others.insert(m.id, a);
            }
            known_peers.insert(m.id, m.peer_addr.clone());
            known_clients.insert(m.id, m.client_addr.clone());
        }
        let mut tcp = TcpConfig::new(id, config.cluster_id, peer_addr, others);
        tcp.reconnect_backoff_min = Duration::from_millis(5);
        tcp.reconnect_backoff_max = Duration::from_millis(200);
        tcp.tls = tls.as_ref().map(|t| t.peer.clone());
        let storage = match &config.data_dir {
            None => AnyStorage::Memory(MemStorage::new()),
            Some(dir) => AnyStorage::Lmdb(open_storage(dir)?),
        };
        let failure = Failure::default();
        let storage = Watched {
            inner: MeteredStorage::new(storage, Some(metrics.clone())),
            failure: failure.clone(),
        };
        let transport = TcpTransport::start_on(runtime.clone(), tcp, peer_listener)?;
        let sm = host
            .open_state_machine(
                &runtime,
                id,
                config.data_bytes_max,
                config.state,
                config.data_dir.as_deref(),
            )
            .await?;
        let node = Node::start(runtime.clone(), node_config, storage, transport, sm).await?;
        let first = node.status().await?;
        tracing::info!(
            node = id,
            term = first.term,
            first_index = first.first_index,
            last_index = first.last_index,
            snapshot_index = first.snapshot_index,
            storage = %config.data_dir.as_ref().map_or("memory".into(), |d| d.display().to_string()),
            "n{id} recovered its log: last index {}, snapshot at {}, term {}",
            first.last_index,
            first.snapshot_index,
            first.term,
        );
        let stopping = Arc::new(AtomicBool::new(false));
        let (failed_tx, failed_rx) = oneshot::channel();
        runtime.spawn(watch(
            runtime.clone(),
            node.clone(),
            first,
            failure.clone(),
            stopping.clone(),
            failed_tx,
        ));
        let server = host.serve(
            node.clone(),
            runtime.clone(),
            ServiceConfig {
                clock_epoch_ms: wall_clock_ms(),
                client_addrs: known_clients,
            },
            known_peers,
            client_listener,
            ServerConfig {
                tls: tls.as_ref().map(|t| t.server.clone()),
                client_token: config.client_token.as_deref().map(Arc::from),
                ..ServerConfig::default()
            },
            Some(metrics.clone()),
        )?;
        if joining && node.status().await?.membership.members().is_empty() {
            // Addresses as configured (a wildcard bind address is no address to give out).
            let (peer, client) = (config.peers[&id], config.client_addrs[&id]);
            let (peer, client) = (
                with_port(peer, peer_addr.port()),
                with_port(client, client_addr.port()),
            );
            if let Err(e) = request_join(&runtime, &config, &client_tls, peer, client).await {
                node.shutdown().await;
                return Err(e);
            }
        }
        Ok(Self {
            node,
            server: Some(server),
            data_dir: config.data_dir,
            peer_addr,
            client_addr,
            failure,
            stopping,
            failed: Some(failed_rx),
            metrics,
            tls,
        })
    }

    /// Reads the node's TLS files again (its certificate, key and CA, and the client CA):
    /// connections opened from now on, to and from peers and from clients, use them; open
    /// ones keep theirs. A file that fails to load is an error, and the settings in force
    /// stay (`raftkv serve` does this on SIGHUP).
    pub fn reload_tls(&self) -> Result<(), ClusterError> {
        let Some(tls) = &self.tls else {
            return Err(ClusterError::Setting(
                "this node was started without TLS: there is nothing to reload".into(),
            ));
        };
        tls.peer.reload()?;
        tls.server.reload()?;
        tls.client.reload()?;
        tracing::info!("reloaded the TLS certificates and keys from their files");
        Ok(())
    }

    /// The node's metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.metrics.encode()
    }

    /// Why the node stopped by itself (a storage failure, say), or `None` while it runs.
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// A handle on [`Self::failure`] that outlives the node.
    pub fn failure_handle(&self) -> Failure {
        self.failure.clone()
    }

    /// Resolves once the node stopped by itself; then [`Self::failure`] says why. Taken once
    /// (`None` after the first call); never resolves for a node that keeps running.
    pub fn failed(&mut self) -> Option<oneshot::Receiver<()>> {
        self.failed.take()
    }

    /// The node's Raft handle.
    pub fn node(&self) -> &Node<R, H::Machine> {
        &self.node
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    pub async fn status(&self) -> Result<Status, ClusterError> {
        Ok(self.node.status().await?)
    }

    /// Stops the node and waits (up to 10 s) until its storage lock is released.
    pub async fn stop(mut self, runtime: &R) {
        self.stopping.store(true, Ordering::SeqCst);
        self.node.shutdown().await;
        drop(self.server.take());
        drop(self.node);
        if let Some(dir) = &self.data_dir {
            let deadline = runtime.now() + RELEASE_WAIT;
            while storage_locked(dir) && runtime.now() < deadline {
                runtime.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// `addr` with `port` (the one the OS chose for port 0).
fn with_port(addr: SocketAddr, port: u16) -> String {
    SocketAddr::new(addr.ip(), port).to_string()
}

/// `host:port` as a socket address (the first it resolves to), or `None`.
fn resolve(addr: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs().ok()?.next()
}

fn join_clerk<R: NetRuntime>(
    runtime: &R,
    config: &StandaloneConfig,
    tls: &Option<ClientTls>,
) -> Clerk<R, TcpConnector<R>> {
    let connector = TcpConnectorConfig {
        tls: tls.clone(),
        token: config.client_token.as_deref().map(Arc::from),
        ..TcpConnectorConfig::default()
    };
    Clerk::new(
        runtime.clone(),
        TcpConnector::new(runtime.clone(), connector),
        config.join.clone(),
        ClerkConfig {
            timeout: config.join_timeout,
            ..ClerkConfig::default()
        },
    )
}

/// The members of the cluster to join, from one of `config.join`.
async fn join_members<R: NetRuntime>(
    runtime: &R,
    config: &StandaloneConfig,
    tls: &Option<ClientTls>,
) -> Result<MemberList, ClusterError> {
    let mut clerk = join_clerk(runtime, config, tls);
    let list = clerk.member_list().await.map_err(|e| ClusterError::Join {
        reason: format!("cannot list the members at {}: {e}", config.join.join(",")),
    })?;
    if list.members.iter().any(|m| m.id == config.id) {
        tracing::info!(node = config.id, "n{} is a member already", config.id);
    }
    Ok(list)
}

/// Asks the cluster to add this node (as a learner, promoted once caught up unless
/// `join_as_learner`).
async fn request_join<R: NetRuntime>(
    runtime: &R,
    config: &StandaloneConfig,
    tls: &Option<ClientTls>,
    peer_addr: String,
    client_addr: String,
) -> Result<(), ClusterError> {
    let id = config.id;
    let mut clerk = join_clerk(runtime, config, tls);
    tracing::info!(node = id, %peer_addr, %client_addr, "n{id} asks to join the cluster");
    clerk
        .member_add(id, &peer_addr, &client_addr, config.join_as_learner)
        .await
        .map_err(|e| ClusterError::Join {
            reason: format!("the cluster did not add node {id}: {e}"),
        })?;
    tracing::info!(node = id, "n{id} was added to the cluster as a learner");
    Ok(())
}

/// Opens the LMDB storage in `dir` (made if missing) at once: a directory locked by another
/// process is an error now, not after a wait.
fn open_storage(dir: &Path) -> Result<LmdbStorage, ClusterError> {
    std::fs::create_dir_all(dir)?;
    if storage_locked(dir) {
        return Err(ClusterError::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "the data directory {} is in use: another process (or node) holds its lock {}",
                dir.display(),
                dir.join(LOCK_FILE_NAME).display()
            ),
        )));
    }
    LmdbStorage::open(dir, LmdbOptions::default()).map_err(|e| {
        tracing::error!(dir = %dir.display(), error = %e, "cannot open the storage");
        ClusterError::Storage(e)
    })
}

/// Whether an open store (in this process or another) holds the lock of `dir`. Only the lock
/// is probed: a full disk or an unreadable file does not look like a held lock.
fn storage_locked(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(LOCK_FILE_NAME)) else {
        return false;
    };
    use std::os::unix::io::AsRawFd;
    // Safety: flock on a descriptor we own (closed, and so unlocked, when `f` drops); no memory
    // is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// The watch task: logs role, leader, term and snapshot changes, and notices a driver that
/// stopped without being asked to.
async fn watch<R: Runtime, M: StateMachine>(
    runtime: R,
    node: Node<R, M>,
    mut last: Status,
    failure: Failure,
    stopping: Arc<AtomicBool>,
    failed: oneshot::Sender<()>,
) {
    let id = last.id;
    log_role(&last);
    loop {
        runtime.sleep(WATCH_INTERVAL).await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = match node.status().await {
            Ok(s) => s,
            Err(e) => {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let cause = lock(&failure.storage)
                    .clone()
                    .unwrap_or_else(|| format!("the node stopped by itself ({e})"));
                tracing::error!(node = id, "n{id} stopped (fail-stop): {cause}");
                *lock(&failure.cause) = Some(cause);
                let _ = failed.send(());
                return;
            }
        };
        if (now.role, now.term, now.leader) != (last.role, last.term, last.leader) {
            log_role(&now);
        }
        if now.snapshot_index > last.snapshot_index {
            tracing::info!(
                node = id,
                snapshot_index = now.snapshot_index,
                first_index = now.first_index,
                "n{id} has a snapshot at index {} (log from {})",
                now.snapshot_index,
                now.first_index
            );
        }
        last = now;
    }
}

fn log_role(s: &Status) {
    let (id, term) = (s.id, s.term);
    match (s.role, s.leader) {
        (Role::Leader, _) => {
            tracing::info!(node = id, term, role = %s.role, "n{id} is the leader (term {term})")
        }
        (Role::Follower, Some(l)) => {
            tracing::info!(
                node = id,
                term,
                leader = l,
                "n{id} follows leader n{l} (term {term})"
            )
        }
        (role, _) => {
            tracing::info!(node = id, term, role = %role, "n{id} is {role}, no leader known (term {term})")
        }
    }
}
