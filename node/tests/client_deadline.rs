//! The TCP connector against a server that accepts and never reads: calls must end at their
//! deadline (not block a runtime thread in a write), and what waits to be written is bounded.
//! And whole Clerk operations (issue 21 #14: one once outlived its deadline), eight Clerks at
//! once as tasks on the runtime, against a server that never reads and one that reads and
//! never answers, under tokio and smol: each ends with `Timeout` within its deadline plus
//! scheduling slack.

use std::future::Future;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures::{pin_mut, select_biased, FutureExt};
use raftkv_kv::clerk::{CallError, Connector, UnreachableReason};
use raftkv_kv::protocol::RequestBody;
use raftkv_kv::state::Op;
use raftkv_node::tcp_client::TcpConnector;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::NetRuntime;

const CALLS: usize = 16;
const VALUE_BYTES: usize = 3 << 20;

/// How each call ended.
#[derive(Debug, PartialEq)]
enum End {
    TimedOut,
    Refused(UnreachableReason),
    Other(String),
}

/// Sends `CALLS` 3 MiB writes at once to a listener that never reads, each abandoned after
/// 300 ms, and reports how they ended.
async fn calls_to_a_silent_server<R: NetRuntime>(runtime: R, addr: String) -> Vec<End> {
    let connector = TcpConnector::with_runtime(runtime.clone());
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for seq in 0..CALLS as u64 {
        let (connector, runtime, addr, tx) =
            (connector.clone(), runtime.clone(), addr.clone(), tx.clone());
        runtime.clone().spawn(async move {
            let body = RequestBody::Write {
                session: 1,
                seq,
                op: Op::Put {
                    key: Bytes::from("k"),
                    value: Bytes::from(vec![b'x'; VALUE_BYTES]),
                    version: None,
                },
            };
            let call = connector.call(&addr, body).fuse();
            let deadline = runtime.sleep(Duration::from_millis(300)).fuse();
            pin_mut!(call, deadline);
            let end = select_biased! {
                r = call => match r {
                    Err(CallError::Unreachable { reason, .. }) => End::Refused(reason),
                    other => End::Other(format!("{other:?}")),
                },
                _ = deadline => End::TimedOut,
            };
            let _ = tx.unbounded_send(end);
        });
    }
    drop(tx);
    futures::StreamExt::collect(rx).await
}

/// Runs `body` on a thread and fails (instead of hanging the suite) if it takes over 10 s.
fn within_10s<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(body());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("calls to a server that does not read outlived their deadlines")
}

fn check(ends: Vec<End>) {
    assert_eq!(ends.len(), CALLS);
    let timed_out = ends.iter().filter(|e| **e == End::TimedOut).count();
    let refused = ends
        .iter()
        .filter(|e| matches!(e, End::Refused(UnreachableReason::QueuedBytesMax { .. })))
        .count();
    assert!(timed_out >= 1, "{ends:?}");
    // 48 MiB offered, at most 16 MiB may wait in the connector (plus what the kernel holds).
    assert!(
        refused >= 1,
        "nothing refused: the queue is unbounded: {ends:?}"
    );
    assert_eq!(timed_out + refused, CALLS, "{ends:?}");
}

fn silent_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

fn run_tokio<F: Future<Output = Vec<End>> + Send + 'static>(
    make: impl FnOnce(TokioRuntime) -> F + Send + 'static,
) -> Vec<End> {
    within_10s(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let runtime = TokioRuntime::new(rt.handle().clone());
        let ends = rt.block_on(make(runtime));
        rt.shutdown_background();
        ends
    })
}

#[test]
fn regression_calls_to_a_server_that_does_not_read_end_at_their_deadline_tokio() {
    let (listener, addr) = silent_listener();
    let ends = run_tokio(move |rt| calls_to_a_silent_server(rt, addr));
    drop(listener);
    check(ends);
}

#[test]
fn regression_calls_to_a_server_that_does_not_read_end_at_their_deadline_smol() {
    let (listener, addr) = silent_listener();
    let ends =
        within_10s(move || smol::block_on(calls_to_a_silent_server(SmolRuntime::new(), addr)));
    drop(listener);
    check(ends);
}

// ---- issue 21 #14: a whole Clerk operation ends at its deadline ----

/// A Clerk operation's deadline, and how late it may end (scheduling, a loaded machine).
const CLERK_TIMEOUT: Duration = Duration::from_millis(400);
const LATE_MAX: Duration = Duration::from_millis(600);

/// How a test server misbehaves.
#[derive(Clone, Copy)]
enum Misbehaving {
    /// Accepts connections and never reads from them.
    NeverReads,
    /// Reads (and discards) everything, never answers.
    NeverAnswers,
}

/// Serves `how` on a fresh port until the process ends; returns its address.
fn misbehaving_server(how: Misbehaving) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            match how {
                Misbehaving::NeverReads => held.push(stream),
                Misbehaving::NeverAnswers => {
                    thread::spawn(move || {
                        let mut sink = [0u8; 64 << 10];
                        while matches!(std::io::Read::read(&mut stream, &mut sink), Ok(n) if n > 0)
                        {
                        }
                    });
                }
            }
        }
    });
    addr
}

/// Eight Clerks at once, each a task on `runtime`, each running every kind of operation (the
/// writes 3 MiB, to fill the socket buffers of a server that does not read); returns, per
/// operation, its result and how long it took by the wall clock.
async fn clerk_ops<R: NetRuntime>(runtime: R, addr: String) -> Vec<(String, Duration)> {
    use raftkv_kv::clerk::{Clerk, ClerkConfig};
    let connector = TcpConnector::with_runtime(runtime.clone());
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for client in 0..8 {
        let (connector, runtime, addr, tx) =
            (connector.clone(), runtime.clone(), addr.clone(), tx.clone());
        runtime.clone().spawn(async move {
            let config = ClerkConfig {
                timeout: CLERK_TIMEOUT,
                attempt_timeout: Duration::from_millis(150),
                ..ClerkConfig::default()
            };
            let mut clerk = Clerk::new(runtime, connector, vec![addr], config);
            let big = vec![b'x'; VALUE_BYTES];
            for op in 0..4 {
                let started = std::time::Instant::now();
                let result = match op {
                    0 => clerk.put("k", big.clone(), None).await.map(drop),
                    1 => clerk.get("k").await.map(drop),
                    2 => clerk.append("k", big.clone()).await.map(drop),
                    _ => clerk.delete("k").await,
                };
                let _ = tx.unbounded_send((
                    format!("client {client} op {op}: {result:?}"),
                    started.elapsed(),
                ));
            }
        });
    }
    drop(tx);
    futures::StreamExt::collect(rx).await
}

fn check_deadlines(ends: Vec<(String, Duration)>) {
    assert_eq!(ends.len(), 32, "{ends:?}");
    for (what, took) in &ends {
        assert!(what.contains("Timeout"), "{what}");
        assert!(
            *took <= CLERK_TIMEOUT + LATE_MAX,
            "{what} took {took:?}, deadline {CLERK_TIMEOUT:?}"
        );
    }
}

fn clerk_ops_tokio(addr: String) -> Vec<(String, Duration)> {
    run_tokio_generic(move |rt| clerk_ops(rt, addr))
}

fn run_tokio_generic<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
    make: impl FnOnce(TokioRuntime) -> F + Send + 'static,
) -> T {
    within_10s(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let runtime = TokioRuntime::new(rt.handle().clone());
        let out = rt.block_on(make(runtime));
        rt.shutdown_background();
        out
    })
}

#[test]
fn regression_clerk_ops_against_a_server_that_never_reads_end_at_their_deadline_tokio() {
    let addr = misbehaving_server(Misbehaving::NeverReads);
    check_deadlines(clerk_ops_tokio(addr));
}

#[test]
fn regression_clerk_ops_against_a_server_that_never_reads_end_at_their_deadline_smol() {
    let addr = misbehaving_server(Misbehaving::NeverReads);
    check_deadlines(within_10s(move || {
        smol::block_on(clerk_ops(SmolRuntime::new(), addr))
    }));
}

#[test]
fn regression_clerk_ops_against_a_server_that_never_answers_end_at_their_deadline_tokio() {
    let addr = misbehaving_server(Misbehaving::NeverAnswers);
    check_deadlines(clerk_ops_tokio(addr));
}

#[test]
fn regression_clerk_ops_against_a_server_that_never_answers_end_at_their_deadline_smol() {
    let addr = misbehaving_server(Misbehaving::NeverAnswers);
    check_deadlines(within_10s(move || {
        smol::block_on(clerk_ops(SmolRuntime::new(), addr))
    }));
}
