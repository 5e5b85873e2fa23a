//! The TCP connector against a server that accepts and never reads: calls must end at their
//! deadline (not block a runtime thread in a write), and what waits to be written is bounded.

use std::future::Future;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures::{pin_mut, select_biased, FutureExt};
use raftkv_kv::clerk::{CallError, Connector};
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
    Refused(String),
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
                    Err(CallError::Unreachable(why)) => End::Refused(why),
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
        .filter(|e| matches!(e, End::Refused(why) if why.contains("queued_bytes_max")))
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
