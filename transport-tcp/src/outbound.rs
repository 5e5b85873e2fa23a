//! The sending side: one writer thread per peer. It connects (and reconnects, with exponential
//! backoff and jitter), sends the hello, then drains its peer's queue: everything queued is
//! encoded into one buffer and written with one `write_all`, so that a burst of messages costs
//! one system call, not one each.

use crate::frame::{Frame, Hello};
use crate::queue::PeerQueue;
use crate::shared::{Direction, RegisterError, Shared};
use crate::stats::add;
use raftkv_raft::{Message, NodeId, Rng};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A writer keeps at most this much batch buffer between batches.
const BATCH_BUFFER_KEEP_BYTES: usize = 1 << 20;

/// One peer's writer thread.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub peer: NodeId,
    pub addr: SocketAddr,
    pub queue: Arc<PeerQueue>,
}

impl Writer {
    pub fn run(self) {
        let settings = &self.shared.settings;
        let node = settings.node_id;
        let (peer, addr) = (self.peer, self.addr);
        let mut rng = Rng::new(jitter_seed(node, peer));
        let mut backoff = settings.reconnect_backoff_min;
        let mut connected_before = false;
        // Log the first failure of an outage at `info`, the retries at `debug`.
        let mut outage_logged = false;
        let mut batch = Vec::new();
        let mut buf = Vec::new();
        while !self.queue.is_closed() {
            let stream = match self.connect() {
                Ok(stream) => stream,
                Err(e) => {
                    add(&self.shared.counters.connect_failures, 1);
                    // The peer is down: what was queued for it is stale (Raft retransmits).
                    let dropped = self.queue.clear();
                    add(&self.shared.counters.dropped_unreachable, dropped as u64);
                    if outage_logged {
                        tracing::debug!(node, peer, %addr, "cannot connect: {e}");
                    } else {
                        tracing::info!(node, peer, %addr, "cannot connect: {e}; retrying with backoff");
                        outage_logged = true;
                    }
                    if !self.queue.sleep(jittered(&mut rng, backoff)) {
                        return;
                    }
                    backoff = (backoff * 2).min(settings.reconnect_backoff_max);
                    continue;
                }
            };
            let _guard = match self.shared.register(&stream, Direction::Outbound) {
                Ok(guard) => guard,
                Err(RegisterError::Io(e)) => {
                    tracing::warn!(node, peer, %addr, "dropping a new connection: {e}");
                    if !self.queue.sleep(jittered(&mut rng, backoff)) {
                        return;
                    }
                    backoff = (backoff * 2).min(settings.reconnect_backoff_max);
                    continue;
                }
                Err(_) => return, // stopping
            };
            if connected_before {
                add(&self.shared.counters.reconnects, 1);
            }
            connected_before = true;
            outage_logged = false;
            tracing::debug!(node, peer, %addr, "connected");
            let since = Instant::now();
            let error = match self.serve(&stream, &mut batch, &mut buf) {
                Ok(()) => return, // the queue closed
                Err(e) => e,
            };
            if self.shared.is_stopping() {
                return;
            }
            tracing::info!(node, peer, %addr, "connection lost: {error}");
            // A connection that lived long was healthy: retry quickly. One that died at once
            // (the peer refuses our hello, say) backs off like a failed connect.
            if since.elapsed() >= settings.reconnect_backoff_max {
                backoff = settings.reconnect_backoff_min;
            }
            if !self.queue.sleep(jittered(&mut rng, backoff)) {
                return;
            }
            backoff = (backoff * 2).min(settings.reconnect_backoff_max);
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let settings = &self.shared.settings;
        let stream = TcpStream::connect_timeout(&self.addr, settings.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(settings.write_timeout))?;
        Ok(stream)
    }

    /// Sends the hello, then batches until the queue closes (`Ok`) or a write fails.
    fn serve(
        &self,
        stream: &TcpStream,
        batch: &mut Vec<Message>,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        let settings = &self.shared.settings;
        let counters = &self.shared.counters;
        buf.clear();
        let hello = Frame::Hello(Hello::new(settings.cluster_id, settings.node_id));
        settings
            .codec
            .encode(&hello, buf)
            .map_err(io::Error::other)?;
        let mut writer = stream;
        writer.write_all(buf)?;
        loop {
            batch.clear();
            if !self.queue.wait_batch(batch) {
                return Ok(());
            }
            buf.clear();
            if buf.capacity() > BATCH_BUFFER_KEEP_BYTES {
                buf.shrink_to(BATCH_BUFFER_KEEP_BYTES);
            }
            let mut pending = 0u64;
            let mut messages = batch.drain(..);
            while let Some(msg) = messages.next() {
                match settings.codec.encode(&Frame::Raft(msg), buf) {
                    Ok(_) => pending += 1,
                    Err(e) => {
                        // Too large (or a failing `Serialize`): the peer would refuse it.
                        add(&counters.dropped_oversized, 1);
                        tracing::warn!(
                            node = settings.node_id,
                            peer = self.peer,
                            "dropping a message: {e}"
                        );
                    }
                }
                if buf.len() >= settings.batch_bytes_max {
                    if let Err(e) = writer.write_all(buf) {
                        let lost = pending + messages.len() as u64;
                        add(&counters.dropped_unreachable, lost);
                        return Err(e);
                    }
                    add(&counters.frames_sent, pending);
                    pending = 0;
                    buf.clear();
                }
            }
            if !buf.is_empty() {
                if let Err(e) = writer.write_all(buf).and_then(|()| writer.flush()) {
                    add(&counters.dropped_unreachable, pending);
                    return Err(e);
                }
                add(&counters.frames_sent, pending);
            }
        }
    }
}

/// A wait in `backoff / 2 ..= backoff`, so that nodes restarted together do not retry in step.
fn jittered(rng: &mut Rng, backoff: Duration) -> Duration {
    let nanos = backoff.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rng.range(nanos / 2, nanos.saturating_add(1)))
}

/// Jitter needs no reproducibility: mix the link with the clock.
fn jitter_seed(node: NodeId, peer: NodeId) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ node.rotate_left(32) ^ peer.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
