//! [`KvServer`]: serves a [`KvService`] — or any other [`Handler`] (the shard controller, a
//! replica group) — to clients over TCP, on its own port, with the transport's framing (`u32`
//! big-endian length + postcard body, bounded).
//!
//! One accept thread; each connection is then one task on the node's runtime ([`NetRuntime`]:
//! tokio or smol), which reads requests, serves up to `in_flight_per_connection_max` of them at
//! once and writes the answers as they come, many to one `write`. Past the in-flight bound it
//! stops reading (TCP backpressure). No thread per connection: a request is read, served and
//! answered without leaving the runtime. Bad input — garbage, an oversized length, a truncated
//! frame — closes that one connection with one `warn!` line; everyone else is served on.
//!
//! Deadlines (issue 21 #4: ~1,000 idle connections locked new clients out): a connection must
//! send its first request within `handshake_timeout`, a frame once begun must arrive whole
//! within `request_read_timeout` (a slow drip is closed), and a connection with nothing in
//! flight is closed after `idle_timeout`. At `connections_max`, a new connection closes the
//! one idle the longest (nothing in flight) instead of being refused, so new clients keep
//! getting in; only when every connection is busy is it refused. Each of these logs a `warn!`
//! (evictions at most once a second, with a count).

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures::io::AsyncWriteExt;
use futures::stream::{FuturesUnordered, StreamExt};
use raftkv_raft::NetRuntime;
use raftkv_transport_tcp::{Codec, MaybeTls, ServerTls};

use raftkv_kv::protocol::{Reply, CLIENT_FRAME_BYTES_MAX};
#[cfg(doc)]
use raftkv_kv::service::KvService;

use crate::rpc::{Handler, RequestFrame, ResponseFrame};
use crate::wire::{reuse_write_buffer, FrameError, FrameReader, WRITE_BATCH_BYTES_MAX};

/// How often the accept thread checks for shutdown when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Connections the kernel completes and queues for the accept thread (capped by the system's
/// `somaxconn`). The standard library listens with 128: a burst of connects filled it, the
/// kernel dropped the next clients' SYNs and each waited a second to retry (issue 21 #4: 2,000
/// connects took 12 s, a new client's among them).
const LISTEN_BACKLOG: i32 = 4096;

/// Bounds of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The largest request or response frame body, in bytes.
    pub frame_bytes_max: usize,
    /// Requests of one connection being served at once; more wait in the socket.
    pub in_flight_per_connection_max: usize,
    /// Open client connections. A new one past it closes the connection idle the longest; if
    /// none is idle, the new one is refused (closed at once, with a log line).
    pub connections_max: usize,
    /// A new connection must send its first whole request within this.
    pub handshake_timeout: Duration,
    /// A request frame, once its first byte is in, must arrive whole within this.
    pub request_read_timeout: Duration,
    /// A connection with no request in flight and no byte received for this long is closed.
    pub idle_timeout: Duration,
    /// TLS on the client port (`None`: plain TCP). A connection must complete its handshake
    /// within `handshake_timeout`; one that does not speak TLS (a plaintext client) is closed
    /// at its first bytes with a `warn!` line.
    pub tls: Option<ServerTls>,
    /// The shared client token (`None`: none asked). The first request of every connection
    /// must then be an `Auth` with it, compared in constant time; anything else is answered
    /// `Unauthorized` and the connection closed with a `warn!` line.
    pub client_token: Option<Arc<str>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: CLIENT_FRAME_BYTES_MAX,
            in_flight_per_connection_max: 128,
            connections_max: 1024,
            handshake_timeout: Duration::from_secs(10),
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            tls: None,
            client_token: None,
        }
    }
}

/// One open connection, as the accept thread sees it.
struct Slot {
    /// A clone of the socket, to close it from outside its task.
    socket: TcpStream,
    activity: Arc<Activity>,
}

/// What a connection's task tells the accept thread, to pick one to close at the cap.
#[derive(Default)]
struct Activity {
    /// When the connection last received a byte or sent an answer (runtime clock, ms).
    last_active_ms: AtomicU64,
    /// Requests being served.
    in_flight: AtomicUsize,
}

/// Rate-limits the eviction log line.
#[derive(Default)]
struct EvictionLog {
    last_ms: Option<u64>,
    unlogged: u64,
}

struct Shared {
    stopping: AtomicBool,
    /// Open connections (a clone of each socket, to close them at shutdown or evict them).
    conns: Mutex<BTreeMap<u64, Slot>>,
    next_conn: AtomicU64,
    config: ServerConfig,
    evictions: Mutex<EvictionLog>,
}

/// A running KV server. Dropping it shuts it down.
pub struct KvServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl KvServer {
    /// Serves `service` on `listener` (already bound, e.g. to port 0).
    pub fn start<R: NetRuntime, H: Handler>(
        listener: TcpListener,
        service: H,
        runtime: R,
        config: ServerConfig,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        // Listening again on a listening socket sets its backlog.
        socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG)?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            config,
            evictions: Mutex::default(),
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
            let _ = conn.socket.shutdown(Shutdown::Both);
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

fn accept_loop<R: NetRuntime, H: Handler>(
    listener: TcpListener,
    shared: Arc<Shared>,
    service: H,
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
fn serve<R: NetRuntime, H: Handler>(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    service: &H,
    runtime: &R,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let now_ms = millis(runtime.now());
    let activity = Arc::new(Activity {
        last_active_ms: AtomicU64::new(now_ms),
        in_flight: AtomicUsize::new(0),
    });
    {
        let mut conns = lock(&shared.conns);
        if conns.len() >= shared.config.connections_max && !evict_idlest(shared, &mut conns, now_ms)
        {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(io::Error::other(format!(
                "connections_max ({}) reached and every connection is busy",
                shared.config.connections_max
            )));
        }
        conns.insert(
            id,
            Slot {
                socket: stream.try_clone()?,
                activity: activity.clone(),
            },
        );
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
    let task_runtime = runtime.clone();
    runtime.spawn(async move {
        let limits = Limits {
            token: shared.config.client_token.clone(),
            in_flight_max: shared.config.in_flight_per_connection_max.max(1),
            handshake: shared.config.handshake_timeout,
            read: shared.config.request_read_timeout,
            idle: shared.config.idle_timeout,
        };
        let codec = Codec::new(shared.config.frame_bytes_max);
        let socket = match &shared.config.tls {
            None => Ok(MaybeTls::Plain(socket)),
            Some(tls) => tls.accept(&task_runtime, socket, limits.handshake).await,
        };
        let result = match socket {
            Ok(socket) => {
                connection(
                    socket,
                    addr,
                    &service,
                    &task_runtime,
                    codec,
                    limits,
                    &activity,
                )
                .await
            }
            Err(e) => Err(FrameError::Io(io::Error::new(
                e.kind(),
                format!(
                    "TLS handshake failed (a client without TLS, or whose certificate the \
                     client CA did not sign?): {e}"
                ),
            ))),
        };
        if let Err(e) = result {
            if !shared.stopping.load(Ordering::SeqCst) {
                tracing::warn!(%addr, "kv server: closing connection: {e}");
            }
        }
        if let Some(s) = lock(&shared.conns).remove(&id) {
            let _ = s.socket.shutdown(Shutdown::Both);
        }
    });
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// At the connection cap: closes the connection idle the longest (nothing in flight), and
/// says so (at most one line a second). False if every connection is busy.
fn evict_idlest(shared: &Shared, conns: &mut BTreeMap<u64, Slot>, now_ms: u64) -> bool {
    let idlest = conns
        .iter()
        .filter(|(_, s)| s.activity.in_flight.load(Ordering::Relaxed) == 0)
        .min_by_key(|(_, s)| s.activity.last_active_ms.load(Ordering::Relaxed))
        .map(|(&id, _)| id);
    let Some(slot) = idlest.and_then(|id| conns.remove(&id)) else {
        return false;
    };
    let idle_ms = now_ms.saturating_sub(slot.activity.last_active_ms.load(Ordering::Relaxed));
    let _ = slot.socket.shutdown(Shutdown::Both);
    let mut log = lock(&shared.evictions);
    log.unlogged += 1;
    if log.last_ms.is_none_or(|last| now_ms >= last + 1_000) {
        tracing::warn!(
            connections_max = shared.config.connections_max,
            evicted = log.unlogged,
            idle_ms,
            "kv server: connections_max reached: closing the connections idle the longest to \
             let new clients in"
        );
        log.last_ms = Some(now_ms);
        log.unlogged = 0;
    }
    true
}

/// A connection's armed deadline.
type Timer = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection's bounds.
#[derive(Clone)]
struct Limits {
    /// The client token the connection must give first, if any.
    token: Option<Arc<str>>,
    in_flight_max: usize,
    handshake: Duration,
    read: Duration,
    idle: Duration,
}

/// Which deadline closed a connection.
fn deadline_error(what: &str, limit: Duration) -> FrameError {
    FrameError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} ({limit:?})"),
    ))
}

/// What a connection's task waits for.
enum Wake<O> {
    Answer(ResponseFrame<O>),
    Read(io::Result<usize>),
    Deadline,
}

/// Serves one connection until the client closes it, it sends bad input, or the server shuts
/// it down.
async fn connection<R: NetRuntime, H: Handler>(
    mut socket: MaybeTls<R::TcpStream>,
    peer: SocketAddr,
    service: &H,
    runtime: &R,
    codec: Codec,
    limits: Limits,
    activity: &Activity,
) -> Result<(), FrameError> {
    let mut frames = FrameReader::new(codec);
    let mut in_flight = FuturesUnordered::new();
    let serve = |request: RequestFrame<H::Body>| async move {
        let reply = service.handle(peer, request.body).await;
        ResponseFrame {
            id: request.id,
            reply,
        }
    };
    let mut out = Vec::new();
    let opened = runtime.now();
    let mut requests = 0u64;
    // When the frame being read began (its first byte), and when the last byte came or
    // answer went.
    let mut frame_started: Option<Duration> = None;
    let mut last_active = opened;
    // The deadline being waited for and its timer, kept while the deadline stays the same.
    let mut timer: Option<(Duration, Timer)> = None;
    let mut authenticated = limits.token.is_none();
    loop {
        while in_flight.len() < limits.in_flight_max {
            match frames.next_frame::<RequestFrame<H::Body>>()? {
                // Another `Auth` on an open connection (or one to a server without a token)
                // changes nothing and is not answered.
                Some(request) if authenticated && H::auth_token(&request.body).is_some() => {
                    requests += 1
                }
                Some(request) if !authenticated => {
                    requests += 1;
                    let given = H::auth_token(&request.body);
                    let expected = limits.token.as_deref().unwrap_or_default().as_bytes();
                    if given.is_some_and(|g| tokens_match(g, expected)) {
                        authenticated = true;
                        continue;
                    }
                    let refusal = ResponseFrame::<H::Outcome> {
                        id: request.id,
                        reply: Reply::Unauthorized,
                    };
                    encode_answer(&codec, refusal, &mut out);
                    socket.write_all(&out).await?;
                    socket.flush().await?;
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        match given {
                            Some(_) => "wrong client token",
                            None => "no client token (the server wants one)",
                        },
                    )));
                }
                Some(request) => {
                    requests += 1;
                    in_flight.push(serve(request));
                }
                None => break,
            }
        }
        activity.in_flight.store(in_flight.len(), Ordering::Relaxed);
        let (partial, _) = frames.partial();
        if partial == 0 {
            frame_started = None;
        }
        // Only a connection with nothing in flight has a deadline: a slow answer is the
        // service's to bound, not the client's fault.
        let deadline = if !in_flight.is_empty() {
            None
        } else if let Some(started) = frame_started {
            Some((
                started + limits.read,
                "a request frame arrived too slowly",
                limits.read,
            ))
        } else if requests == 0 {
            Some((
                opened + limits.handshake,
                "no request after connecting",
                limits.handshake,
            ))
        } else {
            Some((last_active + limits.idle, "idle", limits.idle))
        };
        match (deadline, &timer) {
            (None, _) => timer = None,
            (Some((at, ..)), Some((armed, _))) if *armed == at => {}
            (Some((at, ..)), _) => {
                let wait = at.saturating_sub(runtime.now());
                timer = Some((at, Box::pin(runtime.sleep(wait))));
            }
        }
        let wake = poll_fn(|cx| {
            if let Poll::Ready(Some(answer)) = in_flight.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Answer(answer));
            }
            if in_flight.len() < limits.in_flight_max {
                if let Poll::Ready(r) = frames.poll_fill(&mut socket, cx) {
                    return Poll::Ready(Wake::Read(r));
                }
            }
            if let Some((_, t)) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Deadline);
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Deadline => {
                let (_, what, limit) = deadline.expect("a timer is armed only with a deadline");
                if what == "idle" {
                    // An idle client is not misbehaving: closed without a warning.
                    tracing::debug!("kv server: closing a connection idle for {limit:?}");
                    return Ok(());
                }
                return Err(deadline_error(what, limit));
            }
            // The client closed: answers still being served have nowhere to go.
            Wake::Read(Ok(0)) => return Ok(()),
            Wake::Read(Ok(_)) => {
                let now = runtime.now();
                last_active = now;
                activity
                    .last_active_ms
                    .store(millis(now), Ordering::Relaxed);
                if frame_started.is_none() {
                    frame_started = Some(now);
                }
            }
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
                // TLS may hold the end of the answers until flushed.
                socket.flush().await?;
                reuse_write_buffer(&mut out);
                last_active = runtime.now();
                activity
                    .last_active_ms
                    .store(millis(last_active), Ordering::Relaxed);
            }
        }
    }
}

/// Whether `given` is the token `expected`, in time that depends on their lengths only (never
/// on where they differ).
fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(!e) ^ e;
    }
    std::hint::black_box(diff) == 0
}

fn encode_answer<O: serde::Serialize>(codec: &Codec, answer: ResponseFrame<O>, out: &mut Vec<u8>) {
    if let Err(e) = codec.encode(&answer, out) {
        // Only a value read larger than the frame bound gets here.
        tracing::warn!("kv server: cannot encode a response: {e}");
        let refusal = ResponseFrame::<O> {
            id: answer.id,
            reply: Reply::TooLarge,
        };
        let _ = codec.encode(&refusal, out);
    }
}
