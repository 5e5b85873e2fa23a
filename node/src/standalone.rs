//! [`StandaloneNode`]: one KV node of a cluster spread over processes or machines — Raft over
//! [`TcpTransport`], a log on LMDB (or in memory), a [`KvService`] behind a [`KvServer`] on its
//! own client port. The Python package's `Node` and the `raftkv serve` command use it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Config, NetRuntime, Node, NodeConfig, NodeId, Runtime, Status};
use raftkv_transport_tcp::{TcpConfig, TcpTransport};

use crate::error::ClusterError;
use crate::storage::{lmdb_locked, open_lmdb, wall_clock_ms, AnyStorage, RELEASE_WAIT};
use raftkv_kv::service::{KvService, ServiceConfig};
use raftkv_kv::state::{KvStateMachine, SessionConfig};

use crate::server::{KvServer, ServerConfig};

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
    /// Peers refuse connections from another cluster id.
    pub cluster_id: u64,
    /// Snapshot after this many log entries past the last snapshot (`None`: the default).
    pub snapshot_threshold: Option<u64>,
    /// How long the node waits for a proposal to apply.
    pub request_timeout: Duration,
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
            cluster_id: 0x5241_4654_4b56,
            snapshot_threshold: None,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// One running node.
pub struct StandaloneNode<R: Runtime> {
    node: Node<R, KvStateMachine>,
    server: Option<KvServer>,
    data_dir: Option<PathBuf>,
    peer_addr: SocketAddr,
    client_addr: SocketAddr,
}

impl<R: NetRuntime> StandaloneNode<R> {
    /// Binds the node's peer and client addresses, opens its storage and starts it.
    pub async fn start(runtime: R, config: StandaloneConfig) -> Result<Self, ClusterError> {
        let id = config.id;
        let peer_addr = *config.peers.get(&id).ok_or(ClusterError::NotAPeer { id })?;
        let client_addr = *config
            .client_addrs
            .get(&id)
            .ok_or(ClusterError::NoClientAddr { id })?;
        let peer_listener = TcpListener::bind(peer_addr)?;
        let client_listener = TcpListener::bind(client_addr)?;
        let peer_addr = peer_listener.local_addr()?;
        let client_addr = client_listener.local_addr()?;

        let mut raft = Config::new(id, config.peers.keys().copied());
        raft.seed = wall_clock_ms().wrapping_mul(0x9E37_79B9).wrapping_add(id);
        let mut node_config = NodeConfig::new(raft);
        node_config.request_timeout = config.request_timeout;
        if let Some(t) = config.snapshot_threshold {
            node_config.snapshot_threshold_entries = t.max(1);
        }
        let others: BTreeMap<NodeId, SocketAddr> = config
            .peers
            .iter()
            .filter(|(&j, _)| j != id)
            .map(|(&j, &a)| (j, a))
            .collect();
        let mut tcp = TcpConfig::new(id, config.cluster_id, peer_addr, others);
        tcp.reconnect_backoff_min = Duration::from_millis(5);
        tcp.reconnect_backoff_max = Duration::from_millis(200);
        let storage = match &config.data_dir {
            None => AnyStorage::Memory(MemStorage::new()),
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                AnyStorage::Lmdb(open_lmdb(&runtime, dir).await?)
            }
        };
        let transport = TcpTransport::start_on(runtime.clone(), tcp, peer_listener)?;
        let sm = KvStateMachine::new(SessionConfig::default());
        let node = Node::start(runtime.clone(), node_config, storage, transport, sm).await?;
        let service = KvService::new(
            node.clone(),
            runtime.clone(),
            ServiceConfig {
                clock_epoch_ms: wall_clock_ms(),
                client_addrs: config
                    .client_addrs
                    .iter()
                    .map(|(&j, a)| (j, a.to_string()))
                    .collect(),
            },
        );
        let server = KvServer::start(client_listener, service, runtime, ServerConfig::default())?;
        Ok(Self {
            node,
            server: Some(server),
            data_dir: config.data_dir,
            peer_addr,
            client_addr,
        })
    }

    /// The node's Raft handle.
    pub fn node(&self) -> &Node<R, KvStateMachine> {
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
        self.node.shutdown().await;
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
        drop(self.node);
        if let Some(dir) = &self.data_dir {
            let deadline = runtime.now() + RELEASE_WAIT;
            while lmdb_locked(dir) && runtime.now() < deadline {
                runtime.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
