//! [`TcpTransport`]: the [`Transport`] over TCP, and the lifecycle of its tasks and thread.

use crate::codec::Codec;
use crate::config::{ConfigError, TcpConfig};
use crate::filter::{FaultFilter, Verdict};
use crate::inbound::accept_loop;
use crate::outbound::Writer;
use crate::queue::{DelayQueue, PeerQueue, PushError};
use crate::shared::{Settings, Shared};
use crate::stats::{add, Counters, TransportStats};
use futures::channel::mpsc;
use futures::StreamExt;
use raftkv_raft::{Message, NetRuntime, NodeId, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle};
use thiserror::Error;

/// Why a transport could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The configuration failed [`TcpConfig::validate`].
    #[error("invalid transport config: {0}")]
    Config(#[from] ConfigError),
    /// The listener could not be bound (or configured).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The OS refused to start the accept thread.
    #[error("cannot start the transport's accept thread: {0}")]
    Spawn(#[source] io::Error),
}

/// A node's TCP transport: listens for its peers and keeps one connection to each.
///
/// Threads and tasks: one accept thread; on the node's runtime ([`NetRuntime`]: tokio, smol),
/// one reader task per inbound connection, one writer task per peer and one task for filter
/// delays; a writer connects on a short-lived thread (`std` has no non-blocking connect).
/// [`send`](Transport::send) only filters and queues (it never blocks on the network) and wakes
/// the peer's writer; [`recv`](Transport::recv) is fed by the readers through a bounded
/// `futures` channel.
pub struct TcpTransport {
    node_id: NodeId,
    local_addr: SocketAddr,
    /// Each peer's address and bounded queue, drained by that peer's writer.
    links: BTreeMap<NodeId, Link>,
    /// The queues again, for the delay task (which outlives any one set of peers).
    routes: Arc<Mutex<BTreeMap<NodeId, Arc<PeerQueue>>>>,
    /// The nodes whose inbound connections the accept side takes.
    allowed: Arc<RwLock<BTreeSet<NodeId>>>,
    /// The addresses the transport was started with: `set_peers` falls back to them.
    configured: BTreeMap<NodeId, String>,
    outbound_queue_len_max: usize,
    /// Starts a writer task for a new peer on the node's runtime.
    spawn_writer: WriterSpawner,
    delays: Arc<DelayQueue>,
    filter: FaultFilter,
    /// `None` once shut down.
    inbound: Option<mpsc::Receiver<Message>>,
    shared: Arc<Shared>,
    /// The accept thread, until shutdown joins it.
    acceptor: Option<JoinHandle<()>>,
}

/// One peer: where its writer connects, and its queue.
#[derive(Debug)]
struct Link {
    addr: String,
    queue: Arc<PeerQueue>,
}

/// A closure that spawns a peer's writer task (it holds the runtime, which the transport's
/// type does not name).
struct WriterSpawner(Box<dyn Fn(NodeId, String, Arc<PeerQueue>) + Send>);

impl fmt::Debug for WriterSpawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriterSpawner")
    }
}

/// `set_peers` takes at most this many peers (the rest are ignored, with a warning): a bound
/// on writer tasks and queues whatever the configuration says.
pub const PEERS_MAX: usize = 1024;

/// `set_peers` ignores a peer address longer than this (with a warning).
pub const PEER_ADDR_BYTES_MAX: usize = 255;

impl TcpTransport {
    /// Binds the listener, starts the accept thread and spawns the writer and delay tasks on
    /// `runtime`. Peers need not be up: writers connect (and reconnect) in the background.
    pub fn start<R: NetRuntime>(
        runtime: R,
        config: TcpConfig,
    ) -> Result<TcpTransport, TransportError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen_addr).map_err(|source| TransportError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        Self::start_on(runtime, config, listener)
    }

    /// Like [`start`](Self::start), on a listener the caller already bound (`listen_addr` is
    /// then ignored). A local cluster binds every node's listener first, on port 0, and so
    /// knows every address before any node starts.
    pub fn start_on<R: NetRuntime>(
        runtime: R,
        config: TcpConfig,
        listener: TcpListener,
    ) -> Result<TcpTransport, TransportError> {
        config.validate()?;
        let bind_error = |source| TransportError::Bind {
            addr: config.listen_addr,
            source,
        };
        let local_addr = listener.local_addr().map_err(bind_error)?;
        // Non-blocking, so that the accept thread can notice shutdown between polls.
        listener.set_nonblocking(true).map_err(bind_error)?;

        let shared = Arc::new(Shared::new(Settings {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            codec: Codec::new(config.frame_bytes_max).with_items_max(config.frame_items_max),
            batch_bytes_max: config.batch_bytes_max,
            inbound_connections_max: config.inbound_connections_max,
            reconnect_backoff_min: config.reconnect_backoff_min,
            reconnect_backoff_max: config.reconnect_backoff_max,
            handshake_timeout: config.handshake_timeout,
            connect_timeout: config.connect_timeout,
            write_timeout: config.write_timeout,
            tls: config.tls.clone(),
        }));
        let configured: BTreeMap<NodeId, String> = config
            .peers
            .iter()
            .map(|(&id, addr)| (id, addr.to_string()))
            .collect();
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue_len_max);
        let writer_shared = Arc::clone(&shared);
        let writer_runtime = runtime.clone();
        let spawn_writer = WriterSpawner(Box::new(move |peer, addr, queue| {
            let writer = Writer {
                shared: Arc::clone(&writer_shared),
                runtime: writer_runtime.clone(),
                peer,
                addr,
                queue,
            };
            writer_runtime.spawn(writer.run());
        }));
        let filter = config
            .fault_filter
            .clone()
            .unwrap_or_else(|| FaultFilter::new(config.node_id));
        let mut transport = TcpTransport {
            node_id: config.node_id,
            local_addr,
            links: BTreeMap::new(),
            routes: Arc::new(Mutex::new(BTreeMap::new())),
            allowed: Arc::new(RwLock::new(configured.keys().copied().collect())),
            configured: configured.clone(),
            outbound_queue_len_max: config.outbound_queue_len_max,
            spawn_writer,
            delays: Arc::new(DelayQueue::new(config.delayed_len_max)),
            filter,
            inbound: Some(inbound_rx),
            shared,
            acceptor: None,
        };
        let node = config.node_id;

        // The accept thread first: if it cannot start, no task has either.
        let (shared, accept_runtime) = (Arc::clone(&transport.shared), runtime.clone());
        let peers = Arc::clone(&transport.allowed);
        let acceptor = thread::Builder::new()
            .name(format!("raftkv-tcp-n{node}-accept"))
            .spawn(move || accept_loop(listener, shared, peers, inbound_tx, accept_runtime))
            .map_err(TransportError::Spawn)?;
        transport.acceptor = Some(acceptor);

        for (peer, addr) in configured {
            transport.connect_peer(peer, addr);
        }

        let (delays, routes) = (Arc::clone(&transport.delays), Arc::clone(&transport.routes));
        let shared = Arc::clone(&transport.shared);
        let delay_runtime = runtime.clone();
        runtime.spawn(async move {
            let deliver = |msg: Message| {
                let queue = lock(&routes).get(&msg.to).cloned();
                if let Some(queue) = queue {
                    enqueue(&shared.counters, &queue, msg);
                }
            };
            delays.run(&delay_runtime, deliver).await;
        });
        tracing::info!(node, %local_addr, peers = config.peers.len(), "transport started");
        Ok(transport)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address the listener is bound to (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fault filter applied to this transport's outgoing messages.
    pub fn fault_filter(&self) -> &FaultFilter {
        &self.filter
    }

    /// The counters since start.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// The peers this transport sends to, with their addresses (after `set_peers`).
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.links
            .iter()
            .map(|(&id, link)| (id, link.addr.clone()))
            .collect()
    }

    fn read_allowed(&self) -> BTreeSet<NodeId> {
        self.allowed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True once [`shutdown`](Self::shutdown) has run.
    pub fn is_shut_down(&self) -> bool {
        self.inbound.is_none()
    }

    /// Stops accepting (the listener is closed when this returns), shuts down every socket
    /// and wakes every task, which then ends on the runtime, closing its socket. Never waits
    /// for a task, so it may run on the runtime itself (the node's event loop drops the
    /// transport there); it waits for the accept thread, up to 20 ms. Queued and delayed
    /// messages are dropped; [`recv`](Transport::recv) returns `None` from now on. Idempotent;
    /// also run by `Drop`. A connection attempt in progress is abandoned: its thread ends
    /// within `connect_timeout`.
    pub fn shutdown(&mut self) {
        if self.inbound.take().is_none() && self.acceptor.is_none() {
            return;
        }
        // Wake the writers and the delay task, then end every socket read and write.
        for link in self.links.values() {
            link.queue.close();
        }
        self.delays.close();
        self.shared.stop();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        tracing::info!(node = self.node_id, "transport shut down");
    }
}

impl TcpTransport {
    /// Starts a queue and a writer for `peer` at `addr`.
    fn connect_peer(&mut self, peer: NodeId, addr: String) {
        let queue = Arc::new(PeerQueue::new(self.outbound_queue_len_max));
        (self.spawn_writer.0)(peer, addr.clone(), Arc::clone(&queue));
        lock(&self.routes).insert(peer, Arc::clone(&queue));
        self.links.insert(peer, Link { addr, queue });
    }

    /// Stops `peer`'s writer (its queue closes and drops what it held) and, with `inbound`,
    /// also closes the connection it opened to us.
    fn disconnect_peer(&mut self, peer: NodeId, inbound: bool) {
        if let Some(link) = self.links.remove(&peer) {
            link.queue.close();
        }
        lock(&self.routes).remove(&peer);
        if inbound {
            self.shared.disconnect(peer);
        } else {
            self.shared.disconnect_outbound(peer);
        }
    }

    /// The peers `set_peers` should keep, each with the address to use (`None`: no address
    /// known; inbound connections are still taken from it).
    fn wanted_peers(&self, peers: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, Option<String>> {
        let node = self.node_id;
        let mut wanted = BTreeMap::new();
        for (&id, addr) in peers {
            if id == node || id == 0 {
                continue;
            }
            if wanted.len() == PEERS_MAX {
                tracing::warn!(
                    node,
                    "set_peers: more than {PEERS_MAX} peers; ignoring the rest"
                );
                break;
            }
            if addr.len() > PEER_ADDR_BYTES_MAX {
                tracing::warn!(
                    node,
                    peer = id,
                    "set_peers: ignoring an address of {} bytes (at most {PEER_ADDR_BYTES_MAX})",
                    addr.len()
                );
                wanted.insert(id, self.configured.get(&id).cloned());
                continue;
            }
            let addr = if addr.is_empty() {
                self.configured.get(&id).cloned()
            } else {
                Some(addr.clone())
            };
            wanted.insert(id, addr);
        }
        wanted
    }
}

/// Locks, ignoring poisoning: every critical section here leaves the map consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues `msg` for its peer's writer, or drops it (counted) if the queue is full.
fn enqueue(counters: &Counters, queue: &PeerQueue, msg: Message) {
    match queue.push(msg) {
        Ok(()) => {}
        Err(PushError::Full) => add(&counters.dropped_queue_full, 1),
        Err(PushError::Closed) => add(&counters.dropped_unreachable, 1),
    }
}

impl Transport for TcpTransport {
    /// Filters and queues `msg` for its peer; never blocks. A message to an unknown node, or
    /// after shutdown, is dropped (counted as unreachable).
    fn send(&mut self, msg: Message) {
        let counters = &self.shared.counters;
        let Some(queue) = self.links.get(&msg.to).map(|link| &link.queue) else {
            add(&counters.dropped_unreachable, 1);
            return;
        };
        match self.filter.decide_message(&msg) {
            Verdict::Deliver => enqueue(counters, queue, msg),
            Verdict::Duplicate => {
                enqueue(counters, queue, msg.clone());
                enqueue(counters, queue, msg);
            }
            Verdict::Drop => add(&counters.dropped_filter, 1),
            Verdict::Delay(delay) => match self.delays.push(msg, delay) {
                Ok(()) => {}
                Err(PushError::Full) => add(&counters.dropped_queue_full, 1),
                Err(PushError::Closed) => add(&counters.dropped_unreachable, 1),
            },
        }
    }

    /// Follows the configuration: starts a writer for each new peer, restarts the writer of a
    /// peer whose address changed, and for each peer no longer listed stops its writer
    /// (dropping what was queued for it), closes its connections and refuses its new ones. An
    /// empty address keeps the one the transport was started with. An empty `peers` (a node
    /// that has no configuration yet, waiting to join) changes nothing. Bounded: at most
    /// [`PEERS_MAX`] peers, addresses of at most [`PEER_ADDR_BYTES_MAX`] bytes.
    fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        if self.is_shut_down() || peers.keys().all(|&id| id == self.node_id) {
            return;
        }
        let wanted = self.wanted_peers(peers);
        let gone: Vec<NodeId> = self
            .links
            .keys()
            .copied()
            .filter(|id| !wanted.contains_key(id))
            .collect();
        for peer in gone {
            tracing::info!(node = self.node_id, peer, "peer removed: disconnecting");
            self.disconnect_peer(peer, true);
        }
        let allowed_before: BTreeSet<NodeId> = self.read_allowed();
        for peer in allowed_before.iter().filter(|id| !wanted.contains_key(id)) {
            self.shared.disconnect(*peer);
        }
        *self.allowed.write().unwrap_or_else(|e| e.into_inner()) = wanted.keys().copied().collect();
        for (peer, addr) in wanted {
            let current = self.links.get(&peer).map(|link| link.addr.clone());
            match (current, addr) {
                (Some(old), Some(new)) if old == new => {}
                (Some(_), None) => {}
                (Some(old), Some(new)) => {
                    tracing::info!(node = self.node_id, peer, %old, %new, "peer address changed");
                    self.disconnect_peer(peer, false);
                    self.connect_peer(peer, new);
                }
                (None, Some(new)) => {
                    tracing::info!(node = self.node_id, peer, addr = %new, "peer added");
                    self.connect_peer(peer, new);
                }
                (None, None) => {}
            }
        }
    }

    /// The next inbound message, or `None` once shut down. Cancel-safe: a message stays in
    /// the channel until the future that takes it completes.
    async fn recv(&mut self) -> Option<Message> {
        match self.inbound.as_mut() {
            Some(inbound) => inbound.next().await,
            None => None,
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
