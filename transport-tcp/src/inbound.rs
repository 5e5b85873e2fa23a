//! The receiving side: one accept thread, and one reader thread per inbound connection.
//!
//! A reader first reads the peer's hello under a deadline (`handshake_timeout`) and a small
//! frame bound, checks it, then reads Raft frames until the connection closes. Bad input of
//! any kind closes that connection with one `warn!` line and a `connections_refused` count;
//! the node keeps serving everyone else.

use crate::codec::{Codec, CodecError, PREFIX_BYTES};
use crate::frame::{Frame, Hello, MAGIC, PROTOCOL_VERSION};
use crate::shared::{ConnGuard, Direction, RegisterError, Shared};
use crate::stats::add;
use futures::channel::mpsc;
use raftkv_raft::{Message, NodeId};
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the accept thread checks for shutdown when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The bound on the first frame: a hello is under 32 bytes, so an unauthenticated peer can
/// never make a reader buffer more than this.
const HELLO_BYTES_MAX: usize = 64;

/// Read buffer of each inbound connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A reader keeps at most this much frame buffer between frames.
const FRAME_BUFFER_KEEP_BYTES: usize = 1 << 20;

/// Reader threads, joined at shutdown (finished ones are reaped as new ones start).
pub(crate) type Readers = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// The accept thread's loop. The listener is non-blocking, so that the loop sees `stopping`.
pub(crate) fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    peers: Arc<BTreeSet<NodeId>>,
    inbound: mpsc::Sender<Message>,
    readers: Readers,
) {
    while !shared.is_stopping() {
        let (stream, addr) = match listener.accept() {
            Ok((stream, addr)) => match stream.set_nonblocking(false) {
                Ok(()) => (stream, addr),
                Err(e) => {
                    tracing::warn!(node = shared.settings.node_id, %addr, "accept failed: {e}");
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) if is_transient_accept_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, for instance: wait and try again.
                tracing::warn!(node = shared.settings.node_id, "accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let guard = match shared.register(&stream, Direction::Inbound) {
            Ok(guard) => guard,
            Err(RegisterError::Stopped) => break,
            Err(RegisterError::Io(e)) => {
                add(&shared.counters.connections_refused, 1);
                tracing::warn!(node = shared.settings.node_id, %addr, "refusing inbound connection: {e}");
                continue;
            }
            Err(RegisterError::TooManyInbound) => {
                add(&shared.counters.connections_refused, 1);
                tracing::warn!(
                    node = shared.settings.node_id,
                    %addr,
                    "refusing inbound connection: inbound_connections_max ({}) reached",
                    shared.settings.inbound_connections_max
                );
                continue;
            }
        };
        let reader = Reader {
            shared: Arc::clone(&shared),
            peers: Arc::clone(&peers),
            inbound: inbound.clone(),
            addr,
            guard,
        };
        let spawned = thread::Builder::new()
            .name(format!("raftkv-tcp-n{}-in", shared.settings.node_id))
            .spawn(move || reader.run(stream));
        let mut readers = readers.lock().unwrap_or_else(|e| e.into_inner());
        match spawned {
            Ok(handle) => readers.push(handle),
            Err(e) => {
                tracing::warn!(node = shared.settings.node_id, %addr, "cannot start a reader: {e}")
            }
        }
        reap_finished(&mut readers);
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

/// Joins the reader threads that have finished, so that the list stays bounded.
fn reap_finished(readers: &mut Vec<JoinHandle<()>>) {
    let mut i = 0;
    while i < readers.len() {
        if readers[i].is_finished() {
            let _ = readers.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
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
    Truncated { have: usize, want: usize },
    HandshakeTimeout,
    ClosedBeforeHello,
    NotHello,
    BadMagic([u8; 4]),
    BadVersion(u16),
    WrongCluster(u64),
    UnknownNode(NodeId),
    SecondHello,
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
        }
    }
}

/// The outcome of reading one frame.
#[derive(Debug)]
enum ReadError {
    /// Closed cleanly before a frame started.
    Eof,
    Refused(Refusal),
    Io(io::Error),
}

impl From<Refusal> for ReadError {
    fn from(r: Refusal) -> Self {
        ReadError::Refused(r)
    }
}

/// The socket under a reader, with an optional deadline for every read (the handshake).
struct DeadlineStream {
    stream: TcpStream,
    deadline: Option<Instant>,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// Reads one frame: the prefix, the bound check, then at most the announced body, buffered
/// as it arrives (a peer that announces 16 MiB and sends 10 bytes costs 10 bytes).
fn read_frame(
    reader: &mut impl Read,
    codec: &Codec,
    buf: &mut Vec<u8>,
) -> Result<Frame, ReadError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut have = 0;
    while have < PREFIX_BYTES {
        match reader.read(&mut prefix[have..]) {
            Ok(0) if have == 0 => return Err(ReadError::Eof),
            Ok(0) => {
                return Err(Refusal::Truncated {
                    have,
                    want: PREFIX_BYTES,
                }
                .into())
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    let len = codec.body_len(prefix).map_err(Refusal::Codec)?;
    buf.clear();
    if buf.capacity() > FRAME_BUFFER_KEEP_BYTES {
        buf.shrink_to(FRAME_BUFFER_KEEP_BYTES);
    }
    let got = reader.take(len as u64).read_to_end(buf).map_err(io_error)?;
    if got < len {
        return Err(Refusal::Truncated {
            have: PREFIX_BYTES + got,
            want: PREFIX_BYTES + len,
        }
        .into());
    }
    Ok(codec.decode_body(buf).map_err(Refusal::Codec)?)
}

fn io_error(e: io::Error) -> ReadError {
    match e.kind() {
        // A read timeout shows as either, depending on the platform.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ReadError::Refused(Refusal::HandshakeTimeout)
        }
        _ => ReadError::Io(e),
    }
}

/// One inbound connection's reader thread.
struct Reader {
    shared: Arc<Shared>,
    peers: Arc<BTreeSet<NodeId>>,
    inbound: mpsc::Sender<Message>,
    addr: SocketAddr,
    guard: ConnGuard,
}

impl Reader {
    fn run(mut self, stream: TcpStream) {
        let node = self.shared.settings.node_id;
        let addr = self.addr;
        let (peer, close) = self.serve(stream);
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
        // The socket closes here, the guard unregisters it.
    }

    /// Reads the hello, then frames until the connection ends. Returns the peer (once known)
    /// and why it ended.
    fn serve(&mut self, stream: TcpStream) -> (Option<NodeId>, Close) {
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        let deadline = Instant::now() + settings.handshake_timeout;
        let mut reader = BufReader::with_capacity(
            READ_BUFFER_BYTES,
            DeadlineStream {
                stream,
                deadline: Some(deadline),
            },
        );
        let mut buf = Vec::new();
        let hello = match read_frame(&mut reader, &Codec::new(HELLO_BYTES_MAX), &mut buf) {
            Ok(Frame::Hello(hello)) => hello,
            Ok(Frame::Raft(_)) => return (None, Close::Refused(Refusal::NotHello)),
            Err(ReadError::Eof) => return (None, Close::Refused(Refusal::ClosedBeforeHello)),
            Err(ReadError::Refused(r)) => return (None, Close::Refused(r)),
            Err(ReadError::Io(e)) => return (None, Close::Gone(Some(e))),
        };
        let peer = match self.check_hello(&hello) {
            Ok(peer) => peer,
            Err(refusal) => return (None, Close::Refused(refusal)),
        };
        // Established: no deadline from now on (`stop` unblocks the read by closing the socket).
        reader.get_mut().deadline = None;
        if let Err(e) = reader.get_ref().stream.set_read_timeout(None) {
            return (Some(peer), Close::Gone(Some(e)));
        }
        self.shared.claim_inbound(&self.guard, peer);
        add(&self.shared.counters.connections_accepted, 1);
        tracing::debug!(node = settings.node_id, addr = %self.addr, peer, "inbound connection established");
        let close = loop {
            match read_frame(&mut reader, &settings.codec, &mut buf) {
                Ok(Frame::Raft(msg)) => {
                    if let Err(close) = self.deliver(peer, msg) {
                        break close;
                    }
                }
                Ok(Frame::Hello(_)) => break Close::Refused(Refusal::SecondHello),
                Err(ReadError::Refused(r)) => break Close::Refused(r),
                Err(ReadError::Eof) => break Close::Gone(None),
                Err(ReadError::Io(e)) => break Close::Gone(Some(e)),
            }
        };
        if !self.shared.is_current_inbound(&self.guard, peer) {
            return (Some(peer), Close::Quiet("replaced by a newer connection"));
        }
        (Some(peer), close)
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
        if !self.peers.contains(&hello.node_id) {
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
