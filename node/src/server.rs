//! [`KvServer`]: serves a [`KvService`] to clients over TCP, on its own port, with the
//! transport's framing (`u32` big-endian length + postcard body, bounded).
//!
//! One accept thread; each connection is then one task on the node's runtime ([`NetRuntime`]:
//! tokio or smol), which reads requests, serves up to `in_flight_per_connection_max` of them at
//! once and writes the answers as they come, many to one `write`. Past the in-flight bound it
//! stops reading (TCP backpressure). No thread per connection: a request is read, served and
//! answered without leaving the runtime. Bad input — garbage, an oversized length, a truncated
//! frame — closes that one connection with one `warn!` line; everyone else is served on.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures::io::AsyncWriteExt;
use futures::stream::{FuturesUnordered, StreamExt};
use raftkv_raft::{NetRuntime, StateMachine};
use raftkv_transport_tcp::Codec;

use raftkv_kv::protocol::{ClientRequest, ClientResponse, Reply, CLIENT_FRAME_BYTES_MAX};
use raftkv_kv::service::KvService;
use raftkv_kv::state::Outcome;

use crate::wire::{reuse_write_buffer, FrameError, FrameReader, WRITE_BATCH_BYTES_MAX};

/// How often the accept thread checks for shutdown when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Bounds of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The largest request or response frame body, in bytes.
    pub frame_bytes_max: usize,
    /// Requests of one connection being served at once; more wait in the socket.
    pub in_flight_per_connection_max: usize,
    /// Open client connections; more are refused (closed at once, with a log line).
    pub connections_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: CLIENT_FRAME_BYTES_MAX,
            in_flight_per_connection_max: 128,
            connections_max: 1024,
        }
    }
}

struct Shared {
    stopping: AtomicBool,
    /// Open connections (a clone of each socket, to close them at shutdown).
    conns: Mutex<BTreeMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    config: ServerConfig,
}

/// A running KV server. Dropping it shuts it down.
pub struct KvServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl KvServer {
    /// Serves `service` on `listener` (already bound, e.g. to port 0).
    pub fn start<R: NetRuntime, M: StateMachine<Response = Outcome>>(
        listener: TcpListener,
        service: KvService<R, M>,
        runtime: R,
        config: ServerConfig,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            config,
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("kv-accept-{}", local_addr.port()))
            .spawn(move || accept_loop(listener, s, service, runtime))?;
        Ok(Self {
            local_addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Stops accepting (the listening socket is closed when this returns) and shuts every
    /// connection down; their tasks end on the runtime, and requests being served there finish
    /// with their answers dropped.
    pub fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for conn in lock(&self.shared.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for KvServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop<R: NetRuntime, M: StateMachine<Response = Outcome>>(
    listener: TcpListener,
    shared: Arc<Shared>,
    service: KvService<R, M>,
    runtime: R,
) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let (stream, addr) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!("kv server: accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if let Err(e) = serve(&shared, stream, addr, &service, &runtime) {
            tracing::warn!(%addr, "kv server: refusing connection: {e}");
        }
    }
}

/// Registers a connection and spawns its task.
fn serve<R: NetRuntime, M: StateMachine<Response = Outcome>>(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    service: &KvService<R, M>,
    runtime: &R,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = lock(&shared.conns);
        if conns.len() >= shared.config.connections_max {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(io::Error::other(format!(
                "connections_max ({}) reached",
                shared.config.connections_max
            )));
        }
        conns.insert(id, stream.try_clone()?);
    }
    let socket = match runtime.register(stream) {
        Ok(s) => s,
        Err(e) => {
            lock(&shared.conns).remove(&id);
            return Err(e);
        }
    };
    let shared = shared.clone();
    let service = service.clone();
    runtime.spawn(async move {
        let in_flight_max = shared.config.in_flight_per_connection_max.max(1);
        let codec = Codec::new(shared.config.frame_bytes_max);
        if let Err(e) = connection(socket, &service, codec, in_flight_max).await {
            if !shared.stopping.load(Ordering::SeqCst) {
                tracing::warn!(%addr, "kv server: closing connection: {e}");
            }
        }
        if let Some(s) = lock(&shared.conns).remove(&id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    });
    Ok(())
}

/// What a connection's task waits for.
enum Wake {
    Answer(ClientResponse),
    Read(io::Result<usize>),
}

/// Serves one connection until the client closes it, it sends bad input, or the server shuts
/// it down.
async fn connection<R: NetRuntime, M: StateMachine<Response = Outcome>>(
    mut socket: R::TcpStream,
    service: &KvService<R, M>,
    codec: Codec,
    in_flight_max: usize,
) -> Result<(), FrameError> {
    let mut frames = FrameReader::new(codec);
    let mut in_flight = FuturesUnordered::new();
    let serve = |request: ClientRequest| async move {
        let reply = service.handle(request.body).await;
        ClientResponse {
            id: request.id,
            reply,
        }
    };
    let mut out = Vec::new();
    loop {
        while in_flight.len() < in_flight_max {
            match frames.next_frame::<ClientRequest>()? {
                Some(request) => in_flight.push(serve(request)),
                None => break,
            }
        }
        let wake = poll_fn(|cx| {
            if let Poll::Ready(Some(answer)) = in_flight.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Answer(answer));
            }
            if in_flight.len() < in_flight_max {
                if let Poll::Ready(r) = frames.poll_fill(&mut socket, cx) {
                    return Poll::Ready(Wake::Read(r));
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            // The client closed: answers still being served have nowhere to go.
            Wake::Read(Ok(0)) => return Ok(()),
            Wake::Read(Ok(_)) => {}
            Wake::Read(Err(e)) => return Err(e.into()),
            Wake::Answer(first) => {
                // Every answer ready now goes out in one write.
                encode_answer(&codec, first, &mut out);
                while out.len() < WRITE_BATCH_BYTES_MAX {
                    match futures::FutureExt::now_or_never(in_flight.next()) {
                        Some(Some(answer)) => encode_answer(&codec, answer, &mut out),
                        _ => break,
                    }
                }
                socket.write_all(&out).await?;
                reuse_write_buffer(&mut out);
            }
        }
    }
}

fn encode_answer(codec: &Codec, answer: ClientResponse, out: &mut Vec<u8>) {
    if let Err(e) = codec.encode(&answer, out) {
        // Only a value read larger than the frame bound gets here.
        tracing::warn!("kv server: cannot encode a response: {e}");
        let refusal = ClientResponse {
            id: answer.id,
            reply: Reply::TooLarge,
        };
        let _ = codec.encode(&refusal, out);
    }
}
