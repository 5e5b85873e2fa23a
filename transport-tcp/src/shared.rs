//! State shared by a transport's tasks and accept thread: the counters, the stop flag, and the
//! registry of open sockets that `shutdown` shuts down to end every pending read and write.

use crate::codec::Codec;
use crate::stats::Counters;
use crate::tls::PeerTls;
use raftkv_raft::NodeId;
use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What the tasks need from the configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub codec: Codec,
    pub batch_bytes_max: usize,
    pub inbound_connections_max: usize,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub tls: Option<PeerTls>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub counters: Counters,
    /// Set once by `shutdown`; tasks and the accept thread check it to exit and to log quietly.
    stopping: AtomicBool,
    conns: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Invariant: once true, nothing is registered any more.
    stopped: bool,
    next_id: u64,
    /// A clone of every open socket, by connection id.
    streams: HashMap<u64, (TcpStream, Direction)>,
    /// Invariant: `inbound` is the count of `Direction::Inbound` entries of `streams`.
    inbound: usize,
    /// The established inbound connection of each peer (a newer one replaces it).
    inbound_by_peer: HashMap<NodeId, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Inbound,
    /// A writer's connection to this peer.
    Outbound(NodeId),
}

/// Why a socket could not be registered.
#[derive(Debug)]
pub(crate) enum RegisterError {
    Stopped,
    TooManyInbound,
    /// The socket could not be cloned (out of descriptors, say).
    Io(std::io::Error),
}

/// A registered socket; unregisters it when dropped.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    shared: Arc<Shared>,
    pub id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut reg = self.shared.registry();
        if let Some((_, Direction::Inbound)) = reg.streams.remove(&self.id) {
            reg.inbound -= 1;
        }
        reg.inbound_by_peer.retain(|_, id| *id != self.id);
    }
}

impl Shared {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Registry::default()),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Registers a socket so that `stop` can shut it down; refused once stopping, or for an inbound
    /// socket past `inbound_connections_max`.
    pub fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        direction: Direction,
    ) -> Result<ConnGuard, RegisterError> {
        // Every open socket is in the registry, so that `stop` can wake its task.
        let clone = stream.try_clone().map_err(RegisterError::Io)?;
        let mut reg = self.registry();
        if reg.stopped {
            return Err(RegisterError::Stopped);
        }
        if direction == Direction::Inbound && reg.inbound >= self.settings.inbound_connections_max {
            return Err(RegisterError::TooManyInbound);
        }
        reg.next_id += 1;
        let id = reg.next_id;
        reg.streams.insert(id, (clone, direction));
        if direction == Direction::Inbound {
            reg.inbound += 1;
        }
        Ok(ConnGuard {
            shared: Arc::clone(self),
            id,
        })
    }

    /// Records `conn` as the inbound connection of `peer`, closing the one it replaces (a peer
    /// that restarted or lost its connection without us noticing).
    pub fn claim_inbound(&self, conn: &ConnGuard, peer: NodeId) {
        let mut reg = self.registry();
        if let Some(old) = reg.inbound_by_peer.insert(peer, conn.id) {
            if let Some((stream, _)) = reg.streams.get(&old) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Shuts down every connection to and from `peer` (a peer removed from the cluster):
    /// their tasks see the socket end and stop.
    pub fn disconnect(&self, peer: NodeId) {
        let mut reg = self.registry();
        let inbound = reg.inbound_by_peer.remove(&peer);
        for (id, (stream, direction)) in &reg.streams {
            if *direction == Direction::Outbound(peer) || Some(*id) == inbound {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Shuts down this node's connections to `peer` (its address changed).
    pub fn disconnect_outbound(&self, peer: NodeId) {
        let reg = self.registry();
        for (stream, direction) in reg.streams.values() {
            if *direction == Direction::Outbound(peer) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// True while `conn` is the newest inbound connection of its peer.
    pub fn is_current_inbound(&self, conn: &ConnGuard, peer: NodeId) -> bool {
        self.registry().inbound_by_peer.get(&peer) == Some(&conn.id)
    }

    /// Refuses new sockets and shuts down every registered one.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut reg = self.registry();
        reg.stopped = true;
        for (stream, _) in reg.streams.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
