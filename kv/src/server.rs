//! [`KvServer`]: serves a [`KvService`] to clients over TCP, on its own port, with the
//! transport's framing (`u32` big-endian length + postcard body, bounded).
//!
//! Threads, not a runtime: one accept thread, and per connection a reader and a writer, all on
//! blocking `std::net` sockets; each request becomes a task on the node's runtime, so the
//! server works with any [`Runtime`]. A connection has at most `in_flight_per_connection_max`
//! requests being served; past that its reader stops reading (TCP backpressure). Bad input —
//! garbage, an oversized length, a truncated frame — closes that one connection with one
//! `warn!` line; everyone else is served on.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use raftkv_raft::{Runtime, StateMachine};
use raftkv_transport_tcp::Codec;

use crate::protocol::{
    read_frame, ClientRequest, ClientResponse, FrameError, CLIENT_FRAME_BYTES_MAX,
};
use crate::service::KvService;
use crate::state::Outcome;

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
    threads: Mutex<Vec<JoinHandle<()>>>,
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
    pub fn start<R: Runtime, M: StateMachine<Response = Outcome>>(
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
            threads: Mutex::new(Vec::new()),
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

    /// Stops accepting, closes every connection and joins every thread. Requests being served
    /// finish on the runtime; their answers are dropped.
    pub fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for conn in lock(&self.shared.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
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

fn accept_loop<R: Runtime, M: StateMachine<Response = Outcome>>(
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

/// Starts the reader and writer threads of one connection.
fn serve<R: Runtime, M: StateMachine<Response = Outcome>>(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    service: &KvService<R, M>,
    runtime: &R,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
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
    let write_half = stream.try_clone()?;
    let (tx, rx) = mpsc::channel::<ClientResponse>();
    let slots = Arc::new(Slots::default());
    let codec = Codec::new(shared.config.frame_bytes_max);
    let writer = {
        let slots = slots.clone();
        thread::Builder::new()
            .name(format!("kv-write-{id}"))
            .spawn(move || write_loop(write_half, rx, slots, codec, addr))?
    };
    let reader = {
        let shared = shared.clone();
        let service = service.clone();
        let runtime = runtime.clone();
        thread::Builder::new()
            .name(format!("kv-read-{id}"))
            .spawn(move || {
                let max = shared.config.in_flight_per_connection_max.max(1);
                if let Err(e) = read_loop(&stream, tx, &slots, max, codec, &service, &runtime) {
                    if !shared.stopping.load(Ordering::SeqCst) {
                        tracing::warn!(%addr, "kv server: closing connection: {e}");
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
                slots.close();
                lock(&shared.conns).remove(&id);
            })?
    };
    let mut threads = lock(&shared.threads);
    threads.retain(|t| !t.is_finished());
    threads.push(reader);
    threads.push(writer);
    Ok(())
}

/// Requests in flight on one connection.
#[derive(Default)]
struct Slots {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Slots {
    /// Waits for a free slot; false once the connection is closed.
    fn acquire(&self, max: usize) -> bool {
        let mut s = lock(&self.state);
        while s.0 >= max && !s.1 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.1 {
            return false;
        }
        s.0 += 1;
        true
    }

    fn release(&self, n: usize) {
        let mut s = lock(&self.state);
        s.0 = s.0.saturating_sub(n);
        self.changed.notify_all();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).1
    }

    fn close(&self) {
        lock(&self.state).1 = true;
        self.changed.notify_all();
    }
}

fn read_loop<R: Runtime, M: StateMachine<Response = Outcome>>(
    stream: &TcpStream,
    tx: mpsc::Sender<ClientResponse>,
    slots: &Slots,
    in_flight_max: usize,
    codec: Codec,
    service: &KvService<R, M>,
    runtime: &R,
) -> Result<(), FrameError> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::new();
    while let Some(request) = read_frame::<ClientRequest>(&mut reader, codec, &mut body)? {
        if !slots.acquire(in_flight_max) {
            return Ok(());
        }
        let service = service.clone();
        let tx = tx.clone();
        runtime.spawn(async move {
            let reply = service.handle(request.body).await;
            // The writer is gone when the connection closed: the answer has nowhere to go.
            let _ = tx.send(ClientResponse {
                id: request.id,
                reply,
            });
        });
    }
    Ok(())
}

fn write_loop(
    mut stream: TcpStream,
    rx: mpsc::Receiver<ClientResponse>,
    slots: Arc<Slots>,
    codec: Codec,
    addr: SocketAddr,
) {
    let mut buf = Vec::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            // The reader closed the connection: answers still being served have nowhere to go.
            Err(mpsc::RecvTimeoutError::Timeout) if slots.is_closed() => return,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        buf.clear();
        let mut n = 0;
        let mut next = Some(first);
        while let Some(response) = next {
            n += 1;
            if let Err(e) = codec.encode(&response, &mut buf) {
                // Only a value read larger than the frame bound gets here.
                tracing::warn!(%addr, "kv server: cannot encode a response: {e}");
                let refusal = ClientResponse {
                    id: response.id,
                    reply: crate::protocol::Reply::TooLarge,
                };
                let _ = codec.encode(&refusal, &mut buf);
            }
            next = if buf.len() < 256 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = stream.write_all(&buf) {
            tracing::debug!(%addr, "kv server: write failed: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            slots.close();
            return;
        }
        slots.release(n);
    }
}
