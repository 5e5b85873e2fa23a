//! The sending side: one writer task per peer, on the node's runtime. It connects (and
//! reconnects, with exponential backoff and jitter: raftkv's one [`Backoff`], between
//! `reconnect_backoff_min` and `reconnect_backoff_max`), sends the hello, then drains its peer's
//! queue: everything queued is encoded into one buffer and written with one `write_all`, so
//! that a burst of messages costs one system call, not one each. Each write must finish within
//! `write_timeout`, or the connection is dropped: a peer that stops reading holds up only its
//! own queue (which fills, then drops). While it waits for messages, a writer also watches its
//! socket: the peer never writes on it, so a read that completes means the peer closed the
//! connection, and the writer redials at once instead of losing its next batch.
//!
//! `std` has no non-blocking connect, so each attempt runs `connect_timeout` on a short-lived
//! thread (at most one per writer at a time; a writer stopped meanwhile leaves it to finish
//! within `connect_timeout` and drop its socket).

use crate::frame::{Frame, Hello};
use crate::queue::{BoxedSleep, PeerQueue};
use crate::shared::{ConnGuard, Direction, RegisterError, Shared};
use crate::stats::add;
use crate::tls::MaybeTls;
use futures::channel::oneshot;
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::FutureExt;
use raftkv_backoff::Backoff;
use raftkv_raft::{Message, NetRuntime, NodeId, Rng, Runtime};
use std::future::{poll_fn, Future};
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A writer keeps at most this much batch buffer between batches.
const BATCH_BUFFER_KEEP_BYTES: usize = 1 << 20;

/// One peer's writer task.
pub(crate) struct Writer<R> {
    pub shared: Arc<Shared>,
    pub runtime: R,
    pub peer: NodeId,
    /// `host:port`, resolved at each connection attempt (on the connect thread).
    pub addr: String,
    pub queue: Arc<PeerQueue>,
}

/// Why a connection attempt gave no socket.
enum ConnectError {
    /// The queue closed meanwhile: the writer stops.
    Closed,
    Io(io::Error),
}

impl<R: NetRuntime> Writer<R> {
    pub async fn run(self) {
        let settings = &self.shared.settings;
        let node = settings.node_id;
        let (peer, addr) = (self.peer, self.addr.as_str());
        let mut rng = Rng::new(jitter_seed(node, peer));
        let mut backoff = Backoff::new(
            settings.reconnect_backoff_min,
            settings.reconnect_backoff_max,
        );
        let mut connected_before = false;
        // Log the first failure of an outage at `info`, the retries at `debug`.
        let mut outage_logged = false;
        let mut batch = Vec::new();
        let mut buf = Vec::new();
        while !self.queue.is_closed() {
            let stream = match self.connect().await {
                Ok(stream) => stream,
                Err(ConnectError::Closed) => return,
                Err(ConnectError::Io(e)) => {
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
                    if !self.pause(&mut rng, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let (_guard, socket) = match self.register(stream) {
                Ok(registered) => registered,
                Err(Some(e)) => {
                    tracing::warn!(node, peer, %addr, "dropping a new connection: {e}");
                    if !self.pause(&mut rng, &mut backoff).await {
                        return;
                    }
                    continue;
                }
                Err(None) => return, // stopping
            };
            let mut socket = match &settings.tls {
                None => MaybeTls::Plain(socket),
                Some(tls) => {
                    let timeout = settings.connect_timeout;
                    match tls.connect(&self.runtime, addr, socket, timeout).await {
                        Ok(socket) => socket,
                        Err(e) => {
                            add(&self.shared.counters.connect_failures, 1);
                            tracing::warn!(node, peer, %addr, "TLS handshake failed: {e}");
                            if !self.pause(&mut rng, &mut backoff).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            if connected_before {
                add(&self.shared.counters.reconnects, 1);
            }
            connected_before = true;
            outage_logged = false;
            tracing::debug!(node, peer, %addr, "connected");
            let since = Instant::now();
            let error = match self.serve(&mut socket, &mut batch, &mut buf).await {
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
                backoff.reset();
            }
            if !self.pause(&mut rng, &mut backoff).await {
                return;
            }
        }
    }

    /// Registers a new connection with the transport (so that `shutdown` closes it) and with
    /// the runtime's reactor. `Err(None)`: the transport is stopping.
    fn register(&self, stream: TcpStream) -> Result<(ConnGuard, R::TcpStream), Option<io::Error>> {
        let guard = match self
            .shared
            .register(&stream, Direction::Outbound(self.peer))
        {
            Ok(guard) => guard,
            Err(RegisterError::Io(e)) => return Err(Some(e)),
            Err(RegisterError::Stopped | RegisterError::TooManyInbound) => return Err(None),
        };
        let socket = self.runtime.register(stream).map_err(Some)?;
        Ok((guard, socket))
    }

    /// Waits the backoff's next (jittered) wait before the next attempt, so that nodes
    /// restarted together do not retry in step; false if the queue closed meanwhile.
    async fn pause(&self, rng: &mut Rng, backoff: &mut Backoff) -> bool {
        let wait = backoff.next(rng.next_u64());
        self.queue.sleep(&self.runtime, wait).await
    }

    /// One connection attempt, on a thread of its own (a connect may block for the whole
    /// `connect_timeout`), given up if the queue closes first.
    async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let settings = &self.shared.settings;
        let (addr, timeout) = (self.addr.clone(), settings.connect_timeout);
        let (tx, rx) = oneshot::channel();
        thread::Builder::new()
            .name(format!(
                "raftkv-tcp-n{}-connect-n{}",
                settings.node_id, self.peer
            ))
            .spawn(move || {
                let _ = tx.send(connect(&addr, timeout));
            })
            .map_err(ConnectError::Io)?;
        match self.queue.unless_closed(rx).await {
            None => Err(ConnectError::Closed),
            Some(Ok(result)) => result.map_err(ConnectError::Io),
            Some(Err(oneshot::Canceled)) => Err(ConnectError::Io(io::Error::other(
                "the connect thread ended without an answer",
            ))),
        }
    }

    /// Sends the hello, then batches until the queue closes (`Ok`) or a write fails.
    async fn serve(
        &self,
        socket: &mut MaybeTls<R::TcpStream>,
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
        self.write(socket, buf).await?;
        loop {
            batch.clear();
            if !self.next_batch_while_open(socket, batch).await? {
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
                    if let Err(e) = self.write(socket, buf).await {
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
                if let Err(e) = self.write(socket, buf).await {
                    add(&counters.dropped_unreachable, pending);
                    return Err(e);
                }
                add(&counters.frames_sent, pending);
            }
        }
    }

    /// Waits for the next batch (false once the queue closes) while watching the socket: the
    /// peer never writes on a connection we opened, so a read that completes means it closed
    /// the connection (it refused our hello, say, because it does not know us yet: a joining
    /// node dials the members before they have its configuration). Without this, a writer
    /// learned of the close only when a write failed, and the first batch after it was lost.
    /// A batch already waiting is taken after the check, so nothing is taken for a connection
    /// known to be closed.
    async fn next_batch_while_open(
        &self,
        socket: &mut MaybeTls<R::TcpStream>,
        batch: &mut Vec<Message>,
    ) -> io::Result<bool> {
        let mut next = std::pin::pin!(self.queue.next_batch(batch));
        let mut probe = [0u8; 1];
        poll_fn(|cx| {
            match std::pin::Pin::new(&mut *socket).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer closed the connection",
                    )))
                }
                Poll::Ready(Ok(_)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer wrote on a one-way connection",
                    )))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            next.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// Writes all of `buf`, or fails with `TimedOut` once `write_timeout` has passed. The timer
    /// is armed only if the socket does not take everything at once.
    async fn write(&self, socket: &mut MaybeTls<R::TcpStream>, buf: &[u8]) -> io::Result<()> {
        let timeout = self.shared.settings.write_timeout;
        write_within(&self.runtime, socket, buf, timeout).await
    }
}

/// Writes all of `buf` to `socket`, failing with `TimedOut` if that takes longer than
/// `timeout` on `runtime`'s clock; the timer is armed only once the write would block.
pub(crate) async fn write_within<R: Runtime, S: AsyncWrite + Unpin>(
    runtime: &R,
    socket: &mut S,
    buf: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    // Flushed too: TLS may hold the end of the buffer until then.
    let mut write = Box::pin(async {
        socket.write_all(buf).await?;
        socket.flush().await
    });
    let mut timer: Option<BoxedSleep> = None;
    poll_fn(|cx| {
        if let Poll::Ready(result) = write.poll_unpin(cx) {
            return Poll::Ready(result);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(runtime.sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a write took longer than write_timeout ({timeout:?})"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A blocking connect with a timeout (to each address `addr` resolves to, in turn), then the
/// socket options of a peer connection.
fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Jitter needs no reproducibility: mix the link with the clock.
fn jitter_seed(node: NodeId, peer: NodeId) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ node.rotate_left(32) ^ peer.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
