//! Counters, updated by every task and thread of a transport with relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Raft frames written to peers (counted once the batch holding them is flushed).
    pub frames_sent: u64,
    /// Raft frames received and handed to [`recv`](crate::TcpTransport).
    pub frames_received: u64,
    /// Messages dropped because a peer's outbound queue (or the delay queue) was full.
    pub dropped_queue_full: u64,
    /// Messages dropped by the [`FaultFilter`](crate::FaultFilter).
    pub dropped_filter: u64,
    /// Messages dropped because the peer could not be reached (connect or write failed), or
    /// were addressed to an unknown node.
    pub dropped_unreachable: u64,
    /// Messages that encode to more than `frame_bytes_max` bytes, dropped.
    pub dropped_oversized: u64,
    /// Inbound messages dropped: `from` is not the handshake's node, `to` is not this node, a
    /// number is out of range (`Message::is_well_formed`), or the inbound queue was full.
    pub dropped_inbound: u64,
    /// Inbound connections whose handshake succeeded.
    pub connections_accepted: u64,
    /// Inbound connections closed for bad input: a failed handshake, a timeout, a garbage,
    /// oversized or truncated frame, or too many connections.
    pub connections_refused: u64,
    /// Outbound connections established after a peer's first one.
    pub reconnects: u64,
    /// Outbound connection attempts that failed.
    pub connect_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_filter: AtomicU64,
    pub dropped_unreachable: AtomicU64,
    pub dropped_oversized: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_filter: get(&self.dropped_filter),
            dropped_unreachable: get(&self.dropped_unreachable),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_inbound: get(&self.dropped_inbound),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            reconnects: get(&self.reconnects),
            connect_failures: get(&self.connect_failures),
        }
    }
}
