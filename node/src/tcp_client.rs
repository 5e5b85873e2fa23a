//! [`TcpConnector`]: the Clerk's TCP [`Connector`] — kv's protocol by default, or any other
//! whose answers are `Reply<O>` ([`TcpConnector::for_protocol`]: the shard controller's, a
//! replica group's). One connection per server address, shared by
//! the connector's clones, with many requests in flight (matched to responses by id). Each
//! connection is one task on the runtime ([`NetRuntime`]) that writes queued requests, many to
//! one `write`, and reads answers; a connect runs on a short-lived thread (it may block for the
//! whole connect timeout).
//!
//! Nothing here blocks the caller's task, so a Clerk's deadline (a timer raced against each
//! call) always holds: sockets are non-blocking once registered with the runtime (smol's
//! `Async` and the tokio adapter both set it), a write to a server that stops reading waits
//! in the connection's own task, and what queues behind it is bounded (`queued_bytes_max`,
//! refused at once beyond). `tests/client_deadline.rs` holds this against a server that never
//! reads and one that never answers, under both runtimes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use raftkv_raft::NetRuntime;
use raftkv_transport_tcp::{ClientTls, Codec, MaybeTls};

use raftkv_kv::clerk::{CallError, Connector, LostReason, UnreachableReason};
use raftkv_kv::protocol::{ClientRequest, Reply, RequestBody, CLIENT_FRAME_BYTES_MAX};
use raftkv_kv::state::Outcome;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rpc::{RequestFrame, ResponseFrame};
use crate::wire::{reuse_write_buffer, FrameError, FrameReader, WRITE_BATCH_BYTES_MAX};

/// How a connector connects.
#[derive(Clone, Debug)]
pub struct TcpConnectorConfig {
    pub connect_timeout: Duration,
    /// The largest request or response frame body, in bytes.
    pub frame_bytes_max: usize,
    /// Requests waiting for an answer on one connection; beyond, calls fail at once (`Lost`
    /// is never claimed for them: they were not sent).
    pub in_flight_per_connection_max: usize,
    /// Encoded requests waiting to be written on one connection (a server that stops reading
    /// holds them there), in bytes; beyond, calls fail at once, unsent.
    pub queued_bytes_max: usize,
    /// TLS to the servers (`None`: plain TCP): which CA signs their certificates, and this
    /// client's certificate for servers that ask for one. The handshake is part of the
    /// connect, within `connect_timeout`.
    pub tls: Option<ClientTls>,
    /// The shared client token of servers started with one: sent as every connection's first
    /// request (`Auth`). `None`: none sent.
    pub token: Option<Arc<str>>,
}

impl Default for TcpConnectorConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            frame_bytes_max: CLIENT_FRAME_BYTES_MAX,
            in_flight_per_connection_max: 1024,
            queued_bytes_max: 4 * CLIENT_FRAME_BYTES_MAX,
            tls: None,
            token: None,
        }
    }
}

/// The TCP connector of a protocol whose answers are `Reply<O>` (kv's by default). Clones
/// share connections. Dropping the last clone closes them.
pub struct TcpConnector<R: NetRuntime, O = Outcome> {
    inner: Arc<Inner<R, O>>,
}

impl<R: NetRuntime, O> Clone for TcpConnector<R, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R, O> {
    runtime: R,
    config: TcpConnectorConfig,
    conns: Mutex<HashMap<String, Arc<Conn<O>>>>,
    /// A client-side partition: when set, only these addresses can be reached.
    reachable: Mutex<Option<Vec<String>>>,
}

type Pending<O> = Mutex<HashMap<u64, oneshot::Sender<Reply<O>>>>;

struct Conn<O> {
    /// Encoded requests for the connection's task to write; at most
    /// `in_flight_per_connection_max` (each has a pending entry).
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    /// A clone of the socket, to shut it down from outside the task.
    socket: TcpStream,
    /// Bytes in `outgoing` not yet taken by the task.
    queued_bytes: AtomicUsize,
    pending: Pending<O>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<R: NetRuntime> TcpConnector<R> {
    /// A KV connector whose connections are tasks on `runtime`.
    pub fn new(runtime: R, config: TcpConnectorConfig) -> Self {
        Self::for_protocol(runtime, config)
    }

    /// A KV connector with the default configuration.
    pub fn with_runtime(runtime: R) -> Self {
        Self::new(runtime, TcpConnectorConfig::default())
    }
}

impl<R: NetRuntime, O: DeserializeOwned + Send + 'static> TcpConnector<R, O> {
    /// A connector for the protocol whose answers are `Reply<O>`, its connections tasks on
    /// `runtime`.
    pub fn for_protocol(runtime: R, config: TcpConnectorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                config,
                conns: Mutex::default(),
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

    async fn connection(&self, addr: &str) -> Result<Arc<Conn<O>>, CallError> {
        if let Some(allowed) = &*lock(&self.inner.reachable) {
            if !allowed.iter().any(|a| a == addr) {
                return Err(unreachable(addr, UnreachableReason::Partitioned));
            }
        }
        if let Some(c) = lock(&self.inner.conns).get(addr) {
            if !c.is_closed() {
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
            .map_err(|e| unreachable(addr, e.into()))?;
        let stream = rx
            .await
            .map_err(|_| unreachable(addr, UnreachableReason::ConnectThreadDied))?
            .map_err(|e| unreachable(addr, e.into()))?;
        let socket = stream
            .try_clone()
            .map_err(|e| unreachable(addr, e.into()))?;
        let registered = self
            .inner
            .runtime
            .register(stream)
            .map_err(|e| unreachable(addr, e.into()))?;
        let registered = match &self.inner.config.tls {
            None => MaybeTls::Plain(registered),
            Some(tls) => {
                let timeout = self.inner.config.connect_timeout;
                let connected = tls.connect(&self.inner.runtime, addr, registered, timeout);
                connected.await.map_err(|e| {
                    let _ = socket.shutdown(Shutdown::Both);
                    let e = io::Error::new(e.kind(), format!("TLS handshake failed: {e}"));
                    unreachable(addr, e.into())
                })?
            }
        };
        let (outgoing, queued) = mpsc::unbounded();
        let conn = Arc::new(Conn {
            outgoing,
            socket,
            queued_bytes: AtomicUsize::new(0),
            pending: Pending::default(),
            next_id: AtomicU64::new(AUTH_REQUEST_ID + 1),
        });
        let codec = Codec::new(self.inner.config.frame_bytes_max);
        if let Some(token) = &self.inner.config.token {
            // The first request of the connection; a server that refuses it answers this id.
            let auth = ClientRequest {
                id: AUTH_REQUEST_ID,
                body: RequestBody::Auth {
                    token: token.to_string(),
                },
            };
            let mut frame = Vec::new();
            codec
                .encode(&auth, &mut frame)
                .map_err(|e| unreachable(addr, io::Error::other(e).into()))?;
            conn.queued_bytes.fetch_add(frame.len(), Ordering::SeqCst);
            let _ = conn.outgoing.unbounded_send(frame);
        }
        let task_conn = conn.clone();
        self.inner.runtime.spawn(async move {
            if let Err(e) = run_connection(registered, queued, &task_conn, codec).await {
                tracing::debug!("kv client: connection closed: {e}");
            }
            task_conn.close();
            // Dropping the senders fails every call still waiting: `Lost`.
            lock(&task_conn.pending).clear();
        });
        let mut conns = lock(&self.inner.conns);
        // Calls that found no connection connect at once; the first to finish is kept, so
        // the others' requests are not lost with a connection closed under them.
        if let Some(open) = conns.get(addr).filter(|c| !c.is_closed()) {
            conn.close();
            return Ok(open.clone());
        }
        conns.insert(addr.to_string(), conn.clone());
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

impl<O> Conn<O> {
    /// Closed by the connector, or its task has ended.
    fn is_closed(&self) -> bool {
        self.outgoing.is_closed()
    }

    fn close(&self) {
        self.outgoing.close_channel();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl<R, O> Inner<R, O> {
    fn close(&self) {
        for c in lock(&self.conns).drain().map(|(_, c)| c) {
            c.close();
        }
    }
}

impl<R, O> Drop for Inner<R, O> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes a call's pending entry if its future is dropped (abandoned) first.
struct Forget<'a, O> {
    pending: &'a Pending<O>,
    id: u64,
}

impl<O> Drop for Forget<'_, O> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

impl<R, B, O> Connector<B, Reply<O>> for TcpConnector<R, O>
where
    R: NetRuntime,
    B: Serialize + Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    async fn call(&self, addr: &str, body: B) -> Result<Reply<O>, CallError> {
        let conn = self.connection(addr).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let codec = Codec::new(self.inner.config.frame_bytes_max);
        let mut frame = Vec::new();
        match codec.encode(&RequestFrame { id, body }, &mut frame) {
            Ok(_) => {}
            // No server accepts a frame over the bound: no retry can succeed.
            Err(raftkv_transport_tcp::CodecError::FrameTooLarge { .. }) => {
                return Ok(Reply::TooLarge)
            }
            Err(e) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, e);
                return Err(unreachable(addr, e.into()));
            }
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&conn.pending);
            if pending.len() >= self.inner.config.in_flight_per_connection_max {
                let max = self.inner.config.in_flight_per_connection_max;
                return Err(unreachable(addr, UnreachableReason::InFlightMax { max }));
            }
            pending.insert(id, tx);
        }
        let _forget = Forget {
            pending: &conn.pending,
            id,
        };
        let frame_bytes = frame.len();
        let queued = conn.queued_bytes.fetch_add(frame_bytes, Ordering::SeqCst);
        if queued + frame_bytes > self.inner.config.queued_bytes_max {
            conn.queued_bytes.fetch_sub(frame_bytes, Ordering::SeqCst);
            let max = self.inner.config.queued_bytes_max;
            return Err(unreachable(addr, UnreachableReason::QueuedBytesMax { max }));
        }
        if conn.outgoing.unbounded_send(frame).is_err() {
            return Err(unreachable(addr, UnreachableReason::ConnectionClosed));
        }
        rx.await.map_err(|_| CallError::Lost {
            addr: addr.to_string(),
            reason: LostReason::ConnectionClosed,
        })
    }
}

fn unreachable(addr: &str, reason: UnreachableReason) -> CallError {
    CallError::Unreachable {
        addr: addr.to_string(),
        reason,
    }
}

/// The id of a connection's `Auth` request (calls number theirs from 1).
const AUTH_REQUEST_ID: u64 = 0;

/// What a connection's task waits for.
enum Wake {
    Send(Option<Vec<u8>>),
    Read(io::Result<usize>),
}

/// Writes queued requests and delivers answers until the connection closes (either side) or
/// the server sends something that is not a frame.
async fn run_connection<S: AsyncRead + AsyncWrite + Unpin, O: DeserializeOwned>(
    mut socket: S,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
    conn: &Conn<O>,
    codec: Codec,
) -> Result<(), FrameError> {
    let mut frames = FrameReader::new(codec);
    let mut out = Vec::new();
    let taken = |frame: Vec<u8>| {
        conn.queued_bytes.fetch_sub(frame.len(), Ordering::SeqCst);
        frame
    };
    loop {
        let wake = poll_fn(|cx| {
            if let Poll::Ready(frame) = queued.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Send(frame.map(taken)));
            }
            frames.poll_fill(&mut socket, cx).map(Wake::Read)
        })
        .await;
        match wake {
            // The connector closed this connection.
            Wake::Send(None) => return Ok(()),
            Wake::Send(Some(first)) => {
                // Every request queued now goes out in one write.
                out.extend_from_slice(&first);
                while out.len() < WRITE_BATCH_BYTES_MAX {
                    match queued.try_recv().map(taken) {
                        Ok(f) => out.extend_from_slice(&f),
                        Err(_) => break,
                    }
                }
                socket.write_all(&out).await?;
                // TLS may hold the end of the requests until flushed.
                socket.flush().await?;
                reuse_write_buffer(&mut out);
            }
            Wake::Read(Ok(0)) => return Ok(()),
            Wake::Read(Ok(_)) => {
                while let Some(response) = frames.next_frame::<ResponseFrame<O>>()? {
                    if response.id == AUTH_REQUEST_ID
                        && matches!(response.reply, Reply::Unauthorized)
                    {
                        // The token was refused: every call on this connection is answered so
                        // (the server closes it).
                        for (_, tx) in lock(&conn.pending).drain() {
                            let _ = tx.send(Reply::Unauthorized);
                        }
                        return Ok(());
                    }
                    if let Some(tx) = lock(&conn.pending).remove(&response.id) {
                        let _ = tx.send(response.reply);
                    }
                }
            }
            Wake::Read(Err(e)) => return Err(e.into()),
        }
    }
}
