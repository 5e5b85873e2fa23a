//! The receiving side: one accept thread, and one reader task per inbound connection on the
//! node's runtime.
//!
//! A reader first reads the peer's hello under a deadline (`handshake_timeout`) and a small
//! frame bound, checks it, then reads Raft frames until the connection closes. Bad input of
//! any kind closes that connection with one `warn!` line and a `connections_refused` count;
//! the node keeps serving everyone else.

use crate::codec::{Codec, CodecError};
use crate::frame::{Frame, Hello, MAGIC, PROTOCOL_VERSION};
use crate::frame_reader::FrameReader;
use crate::shared::{ConnGuard, Direction, RegisterError, Shared};
use crate::stats::add;
use crate::tls::MaybeTls;
use futures::channel::mpsc;
use raftkv_raft::{Message, NetRuntime, NodeId};
use std::collections::BTreeSet;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::thread;
use std::time::Duration;

/// How often the accept thread checks for shutdown when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The bound on the first frame: a hello is under 32 bytes, so before its hello a peer can
/// make a reader hold no more than its one read chunk (see `FrameReader`).
const HELLO_BYTES_MAX: usize = 64;

/// The accept thread's loop: registers each connection and spawns its reader on `runtime`.
/// The listener is non-blocking, so that the loop sees `stopping`.
pub(crate) fn accept_loop<R: NetRuntime>(
    listener: TcpListener,
    shared: Arc<Shared>,
    peers: Arc<RwLock<BTreeSet<NodeId>>>,
    inbound: mpsc::Sender<Message>,
    runtime: R,
) {
    let node = shared.settings.node_id;
    while !shared.is_stopping() {
        let (stream, addr) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) if is_transient_accept_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, for instance: wait and try again.
                tracing::warn!(node, "accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let refuse = |why: &dyn fmt::Display| {
            add(&shared.counters.connections_refused, 1);
            tracing::warn!(node, %addr, "refusing inbound connection: {why}");
        };
        let guard = match shared.register(&stream, Direction::Inbound) {
            Ok(guard) => guard,
            Err(RegisterError::Stopped) => break,
            Err(RegisterError::Io(e)) => {
                refuse(&e);
                continue;
            }
            Err(RegisterError::TooManyInbound) => {
                refuse(&format_args!(
                    "inbound_connections_max ({}) reached",
                    shared.settings.inbound_connections_max
                ));
                continue;
            }
        };
        // If the reactor refuses the socket, dropping the guard unregisters it.
        let socket = match runtime.register(stream) {
            Ok(socket) => socket,
            Err(e) => {
                refuse(&e);
                continue;
            }
        };
        let reader = Reader {
            shared: Arc::clone(&shared),
            runtime: runtime.clone(),
            peers: Arc::clone(&peers),
            inbound: inbound.clone(),
            addr,
            guard,
        };
        runtime.spawn(reader.run(socket));
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Why a reader stopped.
#[derive(Debug)]
enum Close {
    /// Bad input: logged with `warn!` and counted as refused.
    Refused(Refusal),
    /// The peer went away (clean close between frames, or a reset).
    Gone(Option<io::Error>),
    /// Shutdown, a newer connection from the same peer, or the receiver was dropped.
    Quiet(&'static str),
}

/// Every kind of bad input, for the one log line.
#[derive(Debug)]
enum Refusal {
    Codec(CodecError),
    Truncated {
        have: usize,
        want: usize,
    },
    HandshakeTimeout,
    ClosedBeforeHello,
    NotHello,
    BadMagic([u8; 4]),
    BadVersion(u16),
    WrongCluster(u64),
    UnknownNode(NodeId),
    SecondHello,
    /// The TLS handshake failed: no TLS (a plaintext peer), a certificate another CA signed,
    /// or no handshake in time.
    Tls(io::Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Codec(e) => write!(f, "{e}"),
            Refusal::Truncated { have, want } => {
                write!(f, "truncated frame: closed after {have} of {want} bytes")
            }
            Refusal::HandshakeTimeout => f.write_str("no hello within the handshake timeout"),
            Refusal::ClosedBeforeHello => f.write_str("closed before sending a hello"),
            Refusal::NotHello => f.write_str("first frame is not a hello"),
            Refusal::BadMagic(m) => write!(f, "bad magic {m:02x?} (expected {MAGIC:02x?})"),
            Refusal::BadVersion(v) => {
                write!(f, "protocol version {v} (expected {PROTOCOL_VERSION})")
            }
            Refusal::WrongCluster(c) => write!(f, "cluster id {c} is not ours"),
            Refusal::UnknownNode(n) => write!(f, "node id {n} is not a known peer"),
            Refusal::SecondHello => f.write_str("a second hello"),
            Refusal::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// One inbound connection's reader task.
struct Reader<R> {
    shared: Arc<Shared>,
    runtime: R,
    peers: Arc<RwLock<BTreeSet<NodeId>>>,
    inbound: mpsc::Sender<Message>,
    addr: SocketAddr,
    guard: ConnGuard,
}

impl<R: NetRuntime> Reader<R> {
    async fn run(mut self, socket: R::TcpStream) {
        let node = self.shared.settings.node_id;
        let addr = self.addr;
        let (peer, close) = match self.shared.settings.tls.clone() {
            None => self.serve(MaybeTls::Plain(socket)).await,
            Some(tls) => {
                let timeout = self.shared.settings.handshake_timeout;
                match tls.accept(&self.runtime, socket, timeout).await {
                    Ok(socket) => self.serve(socket).await,
                    Err(e) => (None, Close::Refused(Refusal::Tls(e))),
                }
            }
        };
        let peer = peer.map_or_else(|| "?".to_string(), |p| format!("n{p}"));
        match close {
            _ if self.shared.is_stopping() => {}
            Close::Refused(refusal) => {
                add(&self.shared.counters.connections_refused, 1);
                tracing::warn!(node, %addr, peer, "closing inbound connection: {refusal}");
            }
            Close::Gone(None) => tracing::info!(node, %addr, peer, "inbound connection closed"),
            Close::Gone(Some(e)) => {
                tracing::info!(node, %addr, peer, "inbound connection lost: {e}")
            }
            Close::Quiet(why) => tracing::debug!(node, %addr, peer, "inbound connection: {why}"),
        }
        // The socket was closed by `serve`; the guard unregisters it here.
    }

    /// Reads the hello, then frames until the connection ends. Returns the peer (once known)
    /// and why it ended.
    async fn serve(&mut self, mut socket: MaybeTls<R::TcpStream>) -> (Option<NodeId>, Close) {
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        let mut frames = FrameReader::new(Codec::new(HELLO_BYTES_MAX));
        let hello = match self.read_hello(&mut socket, &mut frames).await {
            Ok(Frame::Hello(hello)) => hello,
            Ok(Frame::Raft(_)) => return (None, Close::Refused(Refusal::NotHello)),
            Err(close) => return (None, close),
        };
        let peer = match self.check_hello(&hello) {
            Ok(peer) => peer,
            Err(refusal) => return (None, Close::Refused(refusal)),
        };
        // Established: no deadline from now on (`stop` ends the read by shutting the socket).
        frames.set_codec(settings.codec);
        self.shared.claim_inbound(&self.guard, peer);
        add(&self.shared.counters.connections_accepted, 1);
        tracing::debug!(node = settings.node_id, addr = %self.addr, peer, "inbound connection established");
        let close = loop {
            // Every frame already read, then one more read.
            match frames.next_frame::<Frame>() {
                Ok(Some(Frame::Raft(msg))) => match self.deliver(peer, msg) {
                    Ok(()) => continue,
                    Err(close) => break close,
                },
                Ok(Some(Frame::Hello(_))) => break Close::Refused(Refusal::SecondHello),
                Ok(None) => {}
                Err(e) => break Close::Refused(Refusal::Codec(e)),
            }
            match poll_fn(|cx| frames.poll_fill(&mut socket, cx)).await {
                Ok(0) => break Close::Gone(None),
                Ok(_) => {}
                Err(e) => break read_error(e, &frames),
            }
        };
        if !self.shared.is_current_inbound(&self.guard, peer) {
            return (Some(peer), Close::Quiet("replaced by a newer connection"));
        }
        (Some(peer), close)
    }

    /// The first frame, within `handshake_timeout` and `HELLO_BYTES_MAX`.
    async fn read_hello(
        &self,
        socket: &mut MaybeTls<R::TcpStream>,
        frames: &mut FrameReader,
    ) -> Result<Frame, Close> {
        let mut deadline = Box::pin(self.runtime.sleep(self.shared.settings.handshake_timeout));
        loop {
            match frames.next_frame::<Frame>() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(Close::Refused(Refusal::Codec(e))),
            }
            let read = poll_fn(|cx| {
                if let Poll::Ready(read) = frames.poll_fill(socket, cx) {
                    return Poll::Ready(Some(read));
                }
                deadline.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match read {
                None => return Err(Close::Refused(Refusal::HandshakeTimeout)),
                Some(Ok(0)) => return Err(Close::Refused(Refusal::ClosedBeforeHello)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(read_error(e, frames)),
            }
        }
    }

    fn check_hello(&self, hello: &Hello) -> Result<NodeId, Refusal> {
        let settings = &self.shared.settings;
        if hello.magic != MAGIC {
            return Err(Refusal::BadMagic(hello.magic));
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Refusal::BadVersion(hello.protocol_version));
        }
        if hello.cluster_id != settings.cluster_id {
            return Err(Refusal::WrongCluster(hello.cluster_id));
        }
        let known = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&hello.node_id);
        if !known {
            return Err(Refusal::UnknownNode(hello.node_id));
        }
        Ok(hello.node_id)
    }

    /// Hands a message to `recv`, or drops it (counted) if it does not belong here.
    fn deliver(&mut self, peer: NodeId, msg: Message) -> Result<(), Close> {
        let counters = &self.shared.counters;
        if msg.from != peer || msg.to != self.shared.settings.node_id || !msg.is_well_formed() {
            add(&counters.dropped_inbound, 1);
            return Ok(());
        }
        match self.inbound.try_send(msg) {
            Ok(()) => {
                add(&counters.frames_received, 1);
                Ok(())
            }
            Err(e) if e.is_full() => {
                add(&counters.dropped_inbound, 1);
                Ok(())
            }
            Err(_) => Err(Close::Quiet("receiver closed")),
        }
    }
}

/// A failed read: the end of the stream inside a frame is bad input, anything else is the
/// connection failing.
fn read_error(e: io::Error, frames: &FrameReader) -> Close {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        let (have, want) = frames.partial();
        return Close::Refused(Refusal::Truncated { have, want });
    }
    Close::Gone(Some(e))
}
