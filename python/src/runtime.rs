//! The extension's tokio runtime, and how a blocking Python call waits on it.
//!
//! Every blocking call runs its future as a task on this module's runtime (two worker threads
//! unless `RAFTKV_TOKIO_WORKERS` says otherwise) and waits for the answer with the GIL
//! released, checking for signals (Ctrl-C) every 100 ms: a `KeyboardInterrupt` abandons the
//! task. A panic in a task becomes `raftkv.Error`.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use raftkv_node::tcp_client::TcpConnector;
use raftkv_raft::runtime::tokio::TokioRuntime;

use crate::errors::Error;

/// The environment variable that sets the shared runtime's worker threads (`raftkv serve
/// --workers` sets it); read once, when the runtime starts.
const WORKERS_VAR: &str = "RAFTKV_TOKIO_WORKERS";
const WORKERS_DEFAULT: usize = 2;
const WORKERS_MAX: usize = 256;

/// Worker threads for the runtime: [`WORKERS_VAR`] if it holds 1..=[`WORKERS_MAX`], else
/// [`WORKERS_DEFAULT`] (with a warning if it was set to anything else).
fn runtime_workers() -> usize {
    let Ok(v) = std::env::var(WORKERS_VAR) else {
        return WORKERS_DEFAULT;
    };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=WORKERS_MAX).contains(&n) => n,
        _ => {
            eprintln!(
                "raftkv: {WORKERS_VAR}={v:?} is not 1..={WORKERS_MAX}; using {WORKERS_DEFAULT}"
            );
            WORKERS_DEFAULT
        }
    }
}

pub(crate) fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(runtime_workers())
            .thread_name("raftkv-tokio")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

pub(crate) fn tokio_runtime() -> TokioRuntime {
    TokioRuntime::new(rt().handle().clone())
}

/// The TCP connector every `raftkv.Clerk` made by `Clerk(addresses)` shares: one connection
/// per server for all of them, many requests in flight on it (their writes batched into one
/// syscall), instead of one connection per Clerk, which cost the servers a task and a read
/// per Clerk. Its connections close when a server closes them; reconnects are on demand.
pub(crate) fn shared_connector() -> TcpConnector<TokioRuntime> {
    static CONNECTOR: OnceLock<TcpConnector<TokioRuntime>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let _guard = rt().enter();
            TcpConnector::with_runtime(tokio_runtime())
        })
        .clone()
}

/// Runs `fut` on the runtime; waits with the GIL released, raising KeyboardInterrupt (and
/// abandoning the task) on Ctrl-C.
pub(crate) fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = rt().spawn(async move {
        let _ = tx.send(fut.await);
    });
    let mut rx = rx;
    loop {
        let (r, back) = py.allow_threads(move || {
            let r = rx.recv_timeout(Duration::from_millis(100));
            (r, rx)
        });
        rx = back;
        match r {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    handle.abort();
                    return Err(e);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::new_err("internal error: a raftkv task panicked"))
            }
        }
    }
}
