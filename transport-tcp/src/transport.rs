//! [`TcpTransport`]: the [`Transport`] over TCP, and its threads' lifecycle.

use crate::codec::Codec;
use crate::config::{ConfigError, TcpConfig};
use crate::filter::{FaultFilter, Verdict};
use crate::inbound::{accept_loop, Readers};
use crate::outbound::Writer;
use crate::queue::{DelayQueue, PeerQueue, PushError};
use crate::shared::{Settings, Shared};
use crate::stats::{add, Counters, TransportStats};
use futures::channel::mpsc;
use futures::StreamExt;
use raftkv_raft::{Message, NodeId, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use thiserror::Error;

/// Why a transport could not start.
#[derive(Debug, Error)]
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
    /// The OS refused to start a thread.
    #[error("cannot start a transport thread: {0}")]
    Spawn(#[source] io::Error),
}

/// A node's TCP transport: listens for its peers and keeps one connection to each.
///
/// Threads: one accept thread, one reader per inbound connection, one writer per peer, and
/// one timer for filter delays. [`send`](Transport::send) only filters and queues (it never
/// blocks on the network); [`recv`](Transport::recv) is fed by the readers through a bounded
/// `futures` channel, so it works under any async runtime.
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
    /// The accept thread, the writers and the timer.
    threads: Vec<JoinHandle<()>>,
    readers: Readers,
}

impl TcpTransport {
    /// Binds the listener and starts the threads. Peers need not be up: writers connect
    /// (and reconnect) in the background.
    pub fn start(config: TcpConfig) -> Result<TcpTransport, TransportError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen_addr).map_err(|source| TransportError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        Self::start_on(config, listener)
    }

    /// Like [`start`](Self::start), on a listener the caller already bound (`listen_addr` is
    /// then ignored). A local cluster binds every node's listener first, on port 0, and so
    /// knows every address before any node starts.
    pub fn start_on(
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
            codec: Codec::new(config.frame_bytes_max),
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
        // Built first, so that an error below shuts down what already runs (in `Drop`).
        let mut transport = TcpTransport {
            node_id: config.node_id,
            local_addr,
            queues: Arc::new(queues),
            delays: Arc::new(DelayQueue::new(config.delayed_len_max)),
            filter,
            inbound: Some(inbound_rx),
            shared,
            threads: Vec::new(),
            readers: Arc::new(Mutex::new(Vec::new())),
        };
        let node = config.node_id;

        let (shared, readers) = (
            Arc::clone(&transport.shared),
            Arc::clone(&transport.readers),
        );
        let peers: Arc<BTreeSet<NodeId>> = Arc::new(config.peers.keys().copied().collect());
        transport.spawn(format!("raftkv-tcp-n{node}-accept"), move || {
            accept_loop(listener, shared, peers, inbound_tx, readers)
        })?;

        for (&peer, &addr) in &config.peers {
            let writer = Writer {
                shared: Arc::clone(&transport.shared),
                peer,
                addr,
                queue: Arc::clone(&transport.queues[&peer]),
            };
            transport.spawn(format!("raftkv-tcp-n{node}-to-n{peer}"), move || {
                writer.run()
            })?;
        }

        let (delays, queues) = (Arc::clone(&transport.delays), Arc::clone(&transport.queues));
        let shared = Arc::clone(&transport.shared);
        transport.spawn(format!("raftkv-tcp-n{node}-delay"), move || {
            delays.run(|msg| {
                if let Some(queue) = queues.get(&msg.to) {
                    enqueue(&shared.counters, queue, msg);
                }
            })
        })?;
        tracing::info!(node, %local_addr, peers = config.peers.len(), "transport started");
        Ok(transport)
    }

    fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<(), TransportError> {
        let handle = thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(TransportError::Spawn)?;
        self.threads.push(handle);
        Ok(())
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

    /// Stops every thread and closes every socket, then returns. Queued and delayed messages
    /// are dropped; [`recv`](Transport::recv) returns `None` from now on. Idempotent; also
    /// run by `Drop`. May wait up to `connect_timeout` for a writer in the middle of a
    /// connection attempt.
    pub fn shutdown(&mut self) {
        if self.inbound.take().is_none() && self.threads.is_empty() {
            return;
        }
        // Wake the writers and the timer, then unblock every socket read and write.
        for queue in self.queues.values() {
            queue.close();
        }
        self.delays.close();
        self.shared.stop();
        // The accept thread first: once it is joined, no reader starts any more.
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in readers {
            let _ = handle.join();
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
