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
use raftkv_raft::{NetRuntime, Node, NodeId, StateMachine};

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

/// The KV service: a [`KvStateMachine`] served by a [`KvServer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KvHost;

impl Host for KvHost {
    type Machine = KvStateMachine;

    fn state_machine(&self, _id: NodeId, data_bytes_max: u64) -> KvStateMachine {
        KvStateMachine::new(SessionConfig::default()).with_data_bytes_max(data_bytes_max)
    }

    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, KvStateMachine>,
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
