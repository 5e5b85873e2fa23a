//! [`Host`]: what a [`crate::cluster::LocalCluster`] node runs on top of Raft — its state
//! machine and the server that answers its clients. [`KvHost`] serves the KV service; the
//! shard controller and the replica groups are hosts of [`crate::sharded`].

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;

use raftkv_kv::service::{KvService, ServiceConfig};
use raftkv_kv::state::{KvStateMachine, SessionConfig};
use raftkv_raft::{NetRuntime, Node, NodeId, StateMachine};

use crate::cluster::ClusterConfig;
use crate::metrics::{MeteredHandler, NodeMetrics};
use crate::server::{KvServer, ServerConfig};

/// What keeps a node's server (and any task of its host) running: dropping it stops them.
pub type Serving = Box<dyn Any + Send + Sync>;

/// A service hosted on every node of a local cluster.
pub trait Host: Send + Sync + 'static {
    type Machine: StateMachine;

    /// A fresh state machine for node `id`, bounded as `config` says (restored from storage by
    /// the node if it has a snapshot).
    fn state_machine(&self, id: NodeId, config: &ClusterConfig) -> Self::Machine;

    /// Starts serving `node`'s clients on `listener`. `service` carries the clock epoch and
    /// every member's client address (for `NotLeader` hints), `peer_addrs` their Raft
    /// addresses. Whatever runs for the node must run on `runtime` (a node's pause gate).
    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, Self::Machine>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
    ) -> io::Result<Serving>;

    /// As [`Host::serve`], also counting the client requests it answers into `metrics` where
    /// the protocol gives them a meaning (the KV service's `raftkv_client_requests_total`);
    /// by default the same as `serve`.
    fn serve_metered<R: NetRuntime>(
        &self,
        node: Node<R, Self::Machine>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        metrics: NodeMetrics,
    ) -> io::Result<Serving> {
        let _ = metrics;
        self.serve(node, runtime, service, peer_addrs, listener)
    }
}

/// The KV service: a [`KvStateMachine`] served by a [`KvServer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KvHost;

impl Host for KvHost {
    type Machine = KvStateMachine;

    fn state_machine(&self, _id: NodeId, config: &ClusterConfig) -> KvStateMachine {
        KvStateMachine::new(SessionConfig::default()).with_data_bytes_max(config.data_bytes_max)
    }

    fn serve<R: NetRuntime>(
        &self,
        node: Node<R, KvStateMachine>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
    ) -> io::Result<Serving> {
        let service = KvService::new(node, runtime.clone(), service).with_peer_addrs(peer_addrs);
        let server = KvServer::start(listener, service, runtime, ServerConfig::default())?;
        Ok(Box::new(server))
    }

    fn serve_metered<R: NetRuntime>(
        &self,
        node: Node<R, KvStateMachine>,
        runtime: R,
        service: ServiceConfig,
        peer_addrs: BTreeMap<NodeId, String>,
        listener: TcpListener,
        metrics: NodeMetrics,
    ) -> io::Result<Serving> {
        let service = KvService::new(node, runtime.clone(), service).with_peer_addrs(peer_addrs);
        let service = MeteredHandler::new(service, metrics);
        let server = KvServer::start(listener, service, runtime, ServerConfig::default())?;
        Ok(Box::new(server))
    }
}
