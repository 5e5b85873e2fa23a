//! [`Host`]: what a [`crate::cluster::LocalCluster`] node runs on top of Raft — its state
//! machine and the server that answers its clients. [`KvHost`] serves the KV service; the
//! shard controller and the replica groups are hosts of [`crate::sharded`]. A host runs in a
//! [`crate::cluster::LocalCluster`] or as one [`crate::standalone::StandaloneNode`].

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;

use raftkv_kv::service::{KvService, ServiceConfig};
use raftkv_kv::state::{KvStateMachine, SessionConfig};
use raftkv_raft::{NetRuntime, Node, NodeId, Runtime, StateMachine};

use crate::error::ClusterError;
use crate::kv_state::{KvState, StateKind};

use crate::metrics::{MeteredHandler, NodeMetrics};
use crate::server::{KvServer, ServerConfig};

/// What keeps a node's server (and any task of its host) running: dropping it stops them.
pub type Serving = Box<dyn Any + Send + Sync>;

/// A service hosted on every node of a local cluster.
pub trait Host: Send + Sync + 'static {
    type Machine: StateMachine;

    /// A fresh state machine for node `id`, its data bounded by `data_bytes_max` (restored
    /// from storage by the node if it has a snapshot).
    fn state_machine(&self, id: NodeId, data_bytes_max: u64) -> Self::Machine;

    /// The state machine of node `id` when it keeps its state as `state` says, in `data_dir`
    /// (the node's LMDB directory, if it has one). The default: [`Host::state_machine`] for
    /// `memory`; only the KV service keeps its state in LMDB.
    fn open_state_machine<R: Runtime>(
        &self,
        runtime: &R,
        id: NodeId,
        data_bytes_max: u64,
        state: StateKind,
        data_dir: Option<&std::path::Path>,
    ) -> impl std::future::Future<Output = Result<Self::Machine, ClusterError>> + Send {
        let _ = (runtime, data_dir);
        let machine = match state {
            StateKind::Memory => Ok(self.state_machine(id, data_bytes_max)),
            StateKind::Lmdb => Err(ClusterError::Setting(
                "state \"lmdb\" is for the KV service only".into(),
            )),
        };
        std::future::ready(machine)
    }

    /// Starts serving `node`'s clients on `listener`, as `server` says (TLS, client token).
    /// `service` carries the clock epoch and every member's client address (for `NotLeader`
    /// hints), `peer_addrs` their Raft addresses. Whatever runs for the node must run on
    /// `runtime` (a node's pause gate). With `metrics`, the client requests it answers are
    /// counted there where the protocol gives them a meaning (the KV service's
    /// `raftkv_client_requests_total`); the shard hosts do not count them.
    #[allow(clippy::too_many_arguments)]
    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, Self::Machine>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        server: ServerConfig,
        metrics: Option<NodeMetrics>,
    ) -> io::Result<Serving>;

    /// Whether a standalone node of this host supports TLS, the client token and joining a
    /// running cluster: the KV service does (its clients speak `member_list`/`member_add`);
    /// the shard hosts do not (a replica group's driver calls the controller and other groups
    /// without TLS or token), so a standalone node of one refuses the three.
    fn standalone_extras(&self) -> bool {
        false
    }
}

/// The KV service: a [`KvStateMachine`] (or its LMDB kind: [`KvState`]) served by a
/// [`KvServer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KvHost;

impl Host for KvHost {
    type Machine = KvState;

    fn state_machine(&self, _id: NodeId, data_bytes_max: u64) -> KvState {
        KvState::Memory(
            KvStateMachine::new(SessionConfig::default()).with_data_bytes_max(data_bytes_max),
        )
    }

    async fn open_state_machine<R: Runtime>(
        &self,
        runtime: &R,
        _id: NodeId,
        data_bytes_max: u64,
        state: StateKind,
        data_dir: Option<&std::path::Path>,
    ) -> Result<KvState, ClusterError> {
        KvState::open(runtime, state, data_bytes_max, data_dir).await
    }

    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, KvState>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        server: ServerConfig,
        metrics: Option<NodeMetrics>,
    ) -> io::Result<Serving> {
        let service = KvService::new(node, runtime.clone(), service).with_peer_addrs(peer_addrs);
        let server = match metrics {
            Some(m) => KvServer::start(listener, MeteredHandler::new(service, m), runtime, server)?,
            None => KvServer::start(listener, service, runtime, server)?,
        };
        Ok(Box::new(server))
    }

    fn standalone_extras(&self) -> bool {
        true
    }
}
