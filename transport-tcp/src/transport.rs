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
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
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
#[derive(Debug)]
pub struct TcpTransport {
    node_id: NodeId,
    local_addr: SocketAddr,
    /// One bounded queue per peer, drained by that peer's writer.
    queues: Arc<BTreeMap<NodeId, Arc<PeerQueue>>>,
    delays: Arc<DelayQueue>,
    filter: FaultFilter,
    /// `None` once shut down.
    inbound: Option<mpsc::Receiver<Message>>,
    shared: Arc<Shared>,
    /// The accept thread, until shutdown joins it.
    acceptor: Option<JoinHandle<()>>,
}

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
        }));
        let queues: BTreeMap<NodeId, Arc<PeerQueue>> = config
            .peers
            .keys()
            .map(|&id| (id, Arc::new(PeerQueue::new(config.outbound_queue_len_max))))
            .collect();
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue_len_max);
        let filter = config
            .fault_filter
            .clone()
            .unwrap_or_else(|| FaultFilter::new(config.node_id));
        let mut transport = TcpTransport {
            node_id: config.node_id,
            local_addr,
            queues: Arc::new(queues),
            delays: Arc::new(DelayQueue::new(config.delayed_len_max)),
            filter,
            inbound: Some(inbound_rx),
            shared,
            acceptor: None,
        };
        let node = config.node_id;

        // The accept thread first: if it cannot start, no task has either.
        let (shared, accept_runtime) = (Arc::clone(&transport.shared), runtime.clone());
        let peers: Arc<BTreeSet<NodeId>> = Arc::new(config.peers.keys().copied().collect());
        let acceptor = thread::Builder::new()
            .name(format!("raftkv-tcp-n{node}-accept"))
            .spawn(move || accept_loop(listener, shared, peers, inbound_tx, accept_runtime))
            .map_err(TransportError::Spawn)?;
        transport.acceptor = Some(acceptor);

        for (&peer, &addr) in &config.peers {
            let writer = Writer {
                shared: Arc::clone(&transport.shared),
                runtime: runtime.clone(),
                peer,
                addr,
                queue: Arc::clone(&transport.queues[&peer]),
            };
            runtime.spawn(writer.run());
        }

        let (delays, queues) = (Arc::clone(&transport.delays), Arc::clone(&transport.queues));
        let shared = Arc::clone(&transport.shared);
        let delay_runtime = runtime.clone();
        runtime.spawn(async move {
            let deliver = |msg: Message| {
                if let Some(queue) = queues.get(&msg.to) {
                    enqueue(&shared.counters, queue, msg);
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
        for queue in self.queues.values() {
            queue.close();
        }
        self.delays.close();
        self.shared.stop();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        tracing::info!(node = self.node_id, "transport shut down");
    }
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
        let Some(queue) = self.queues.get(&msg.to) else {
            add(&counters.dropped_unreachable, 1);
            return;
        };
        match self.filter.decide(self.node_id, msg.to) {
            Verdict::Deliver => enqueue(counters, queue, msg),
            Verdict::Drop => add(&counters.dropped_filter, 1),
            Verdict::Delay(delay) => match self.delays.push(msg, delay) {
                Ok(()) => {}
                Err(PushError::Full) => add(&counters.dropped_queue_full, 1),
                Err(PushError::Closed) => add(&counters.dropped_unreachable, 1),
            },
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
