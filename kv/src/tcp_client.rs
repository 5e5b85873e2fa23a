//! [`TcpConnector`]: the Clerk's TCP [`Connector`]. One connection per server address, shared by
//! the connector's clones, with many requests in flight (matched to responses by id). Blocking
//! `std::net` sockets on plain threads (a connect thread per attempt, a reader per connection),
//! so it works under any runtime and never blocks one.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures::channel::oneshot;
use raftkv_transport_tcp::Codec;

use crate::clerk::{CallError, Connector};
use crate::protocol::{
    read_frame, ClientRequest, ClientResponse, FrameError, Reply, RequestBody,
    CLIENT_FRAME_BYTES_MAX,
};

/// How a connector connects.
#[derive(Clone, Debug)]
pub struct TcpConnectorConfig {
    pub connect_timeout: Duration,
    /// The largest request or response frame body, in bytes.
    pub frame_bytes_max: usize,
    /// Requests waiting for an answer on one connection; beyond, calls fail at once (`Lost`
    /// is never claimed for them: they were not sent).
    pub in_flight_per_connection_max: usize,
}

impl Default for TcpConnectorConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            frame_bytes_max: CLIENT_FRAME_BYTES_MAX,
            in_flight_per_connection_max: 1024,
        }
    }
}

/// The TCP connector. Clones share connections. Dropping the last clone closes them.
#[derive(Clone, Default)]
pub struct TcpConnector {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    config: TcpConnectorConfig,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    /// A client-side partition: when set, only these addresses can be reached.
    reachable: Mutex<Option<Vec<String>>>,
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Reply>>>;

struct Conn {
    writer: Mutex<TcpStream>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TcpConnector {
    pub fn new(config: TcpConnectorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                conns: Mutex::default(),
                readers: Mutex::default(),
                reachable: Mutex::default(),
            }),
        }
    }

    /// A client in a network partition (the lab's `ConnectClient`): `Some(addrs)` lets this
    /// connector reach only `addrs` (others are `Unreachable`, and connections to them close);
    /// `None` reaches everyone again.
    pub fn set_reachable(&self, addrs: Option<Vec<String>>) {
        if let Some(allowed) = &addrs {
            let mut conns = lock(&self.inner.conns);
            conns.retain(|addr, conn| {
                let keep = allowed.contains(addr);
                if !keep {
                    conn.close();
                }
                keep
            });
        }
        *lock(&self.inner.reachable) = addrs;
    }

    /// Closes every connection (calls in flight fail with `Lost`).
    pub fn close(&self) {
        self.inner.close();
    }

    async fn connection(&self, addr: &str) -> Result<Arc<Conn>, CallError> {
        if let Some(allowed) = &*lock(&self.inner.reachable) {
            if !allowed.iter().any(|a| a == addr) {
                return Err(CallError::Unreachable(format!(
                    "{addr}: partitioned from this client"
                )));
            }
        }
        if let Some(c) = lock(&self.inner.conns).get(addr) {
            if !c.closed.load(Ordering::SeqCst) {
                return Ok(c.clone());
            }
        }
        // Connect on a plain thread: a connect can block for the whole timeout.
        let (tx, rx) = oneshot::channel();
        let target = addr.to_string();
        let timeout = self.inner.config.connect_timeout;
        thread::Builder::new()
            .name("kv-connect".into())
            .spawn(move || {
                let _ = tx.send(connect(&target, timeout));
            })
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let stream = rx
            .await
            .map_err(|_| CallError::Unreachable("connect thread died".into()))?
            .map_err(|e| CallError::Unreachable(format!("{addr}: {e}")))?;
        let read_half = stream
            .try_clone()
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let conn = Arc::new(Conn {
            writer: Mutex::new(stream),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            closed: Arc::default(),
        });
        let codec = Codec::new(self.inner.config.frame_bytes_max);
        let (pending, closed) = (conn.pending.clone(), conn.closed.clone());
        let reader = thread::Builder::new()
            .name("kv-client-read".into())
            .spawn(move || {
                if let Err(e) = read_loop(read_half, &pending, codec) {
                    tracing::debug!("kv client: connection closed: {e}");
                }
                closed.store(true, Ordering::SeqCst);
                // Dropping the senders fails every call still waiting: `Lost`.
                lock(&pending).clear();
            })
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        {
            let mut readers = lock(&self.inner.readers);
            readers.retain(|r| !r.is_finished());
            readers.push(reader);
        }
        let mut conns = lock(&self.inner.conns);
        if let Some(old) = conns.insert(addr.to_string(), conn.clone()) {
            old.close();
        }
        Ok(conn)
    }
}

fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }
}

impl Inner {
    fn close(&self) {
        for c in lock(&self.conns).drain().map(|(_, c)| c) {
            c.close();
        }
        let readers = std::mem::take(&mut *lock(&self.readers));
        for r in readers {
            let _ = r.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes a call's pending entry if its future is dropped (abandoned) first.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

impl Connector for TcpConnector {
    async fn call(&self, addr: &str, body: RequestBody) -> Result<Reply, CallError> {
        let conn = self.connection(addr).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let codec = Codec::new(self.inner.config.frame_bytes_max);
        let mut frame = Vec::new();
        match codec.encode(&ClientRequest { id, body }, &mut frame) {
            Ok(_) => {}
            // No server accepts a frame over the bound: no retry can succeed.
            Err(raftkv_transport_tcp::CodecError::FrameTooLarge { .. }) => {
                return Ok(Reply::TooLarge)
            }
            Err(e) => return Err(CallError::Unreachable(format!("cannot send: {e}"))),
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&conn.pending);
            if pending.len() >= self.inner.config.in_flight_per_connection_max {
                return Err(CallError::Unreachable(format!(
                    "{addr}: in_flight_per_connection_max ({}) reached",
                    self.inner.config.in_flight_per_connection_max
                )));
            }
            pending.insert(id, tx);
        }
        let _forget = Forget {
            pending: &conn.pending,
            id,
        };
        if let Err(e) = lock(&conn.writer).write_all(&frame) {
            conn.close();
            return Err(CallError::Lost(format!("{addr}: {e}")));
        }
        rx.await
            .map_err(|_| CallError::Lost(format!("{addr}: connection closed")))
    }
}

fn read_loop(stream: TcpStream, pending: &Pending, codec: Codec) -> Result<(), FrameError> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::new();
    while let Some(response) = read_frame::<ClientResponse>(&mut reader, codec, &mut body)? {
        if let Some(tx) = lock(pending).remove(&response.id) {
            let _ = tx.send(response.reply);
        }
    }
    Ok(())
}
