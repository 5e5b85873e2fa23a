//! Helpers shared by the socket tests: clusters on 127.0.0.1 with OS-chosen ports, fast
//! timeouts, and a polling `recv` with a deadline (which also exercises its cancel safety).
//! The transports' tasks run on smol's global executor (its own thread), or on a tokio
//! runtime kept for the whole test binary: the tests themselves stay synchronous.

#![allow(dead_code)]

use futures::FutureExt;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::{Body, Message, NetRuntime, NodeId, Transport};
use raftkv_transport_tcp::{FaultFilter, TcpConfig, TcpTransport};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const CLUSTER: u64 = 0xC1u64;

/// Binds a listener on 127.0.0.1 with a port chosen by the OS.
pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// An address on 127.0.0.1 where nothing listens (a port the OS handed out, then released).
pub fn free_addr() -> SocketAddr {
    bind().local_addr().unwrap()
}

/// A configuration with timeouts short enough for tests.
pub fn config(node: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> TcpConfig {
    let mut config = TcpConfig::new(node, CLUSTER, "127.0.0.1:0".parse().unwrap(), peers);
    config.reconnect_backoff_min = Duration::from_millis(10);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config.handshake_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config.write_timeout = Duration::from_secs(2);
    config
}

/// The runtime the tests' transports run on unless they choose: smol's global executor.
pub fn runtime() -> SmolRuntime {
    SmolRuntime::new()
}

/// A handle on a two-worker tokio runtime that lives as long as the test binary.
pub fn tokio() -> TokioRuntime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    TokioRuntime::new(runtime.handle().clone())
}

/// Starts one transport per id on smol, all knowing each other, optionally sharing a fault
/// filter.
pub fn cluster(ids: &[NodeId], filter: Option<FaultFilter>) -> BTreeMap<NodeId, TcpTransport> {
    cluster_on(runtime(), ids, filter)
}

/// Like [`cluster`], on `runtime`.
pub fn cluster_on<R: NetRuntime>(
    runtime: R,
    ids: &[NodeId],
    filter: Option<FaultFilter>,
) -> BTreeMap<NodeId, TcpTransport> {
    let listeners: BTreeMap<NodeId, TcpListener> = ids.iter().map(|&id| (id, bind())).collect();
    let addrs: BTreeMap<NodeId, SocketAddr> = listeners
        .iter()
        .map(|(&id, l)| (id, l.local_addr().unwrap()))
        .collect();
    listeners
        .into_iter()
        .map(|(id, listener)| {
            let peers = addrs
                .iter()
                .filter(|(&p, _)| p != id)
                .map(|(&p, &a)| (p, a))
                .collect();
            let mut config = config(id, peers);
            config.fault_filter = filter.clone();
            let transport = TcpTransport::start_on(runtime.clone(), config, listener);
            (id, transport.expect("start"))
        })
        .collect()
}

/// A heartbeat from `from` to `to`; `seq` tells messages apart.
pub fn msg(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: Body::Heartbeat {
            commit: 0,
            read_seq: seq,
        },
    }
}

/// The next message within `timeout`, polling `recv` (dropping its future each time).
pub fn recv_timeout(t: &mut TcpTransport, timeout: Duration) -> Option<Message> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(result) = t.recv().now_or_never() {
            return result;
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every message that arrives within `window`.
pub fn drain(t: &mut TcpTransport, window: Duration) -> Vec<Message> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match recv_timeout(t, left) {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

/// Sends `from → to` messages every few milliseconds until one arrives (peers may still be
/// connecting); returns how long it took. Panics after `timeout`.
pub fn send_until_received(
    transports: &mut BTreeMap<NodeId, TcpTransport>,
    from: NodeId,
    to: NodeId,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    let mut seq = 0;
    while start.elapsed() < timeout {
        seq += 1;
        transports.get_mut(&from).unwrap().send(msg(from, to, seq));
        let receiver = transports.get_mut(&to).unwrap();
        while let Some(m) = recv_timeout(receiver, Duration::from_millis(20)) {
            assert_eq!(m.to, to, "misdelivered {m}");
            // Stragglers of earlier calls (other senders) are skipped; whatever else is in
            // flight is discarded by the caller's next drain.
            if m.from == from {
                return start.elapsed();
            }
        }
    }
    panic!("n{from} → n{to}: nothing received within {timeout:?}");
}
