//! The extension's tokio runtime, and how a blocking Python call waits on it.
//!
//! Every blocking call runs its future inside this module's runtime (two worker threads unless
//! `RAFTKV_TOKIO_WORKERS` says otherwise), polled by the calling thread with the GIL released,
//! checking for signals (Ctrl-C) every 100 ms: a `KeyboardInterrupt` abandons the future. A
//! panic in it becomes `raftkv.Error`.

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

/// How often a blocking call checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs `fut` to its end with the GIL released, raising KeyboardInterrupt (and abandoning the
/// future) on Ctrl-C.
///
/// The calling thread polls `fut` itself, inside the runtime (`Runtime::block_on`: its I/O and
/// timers are the runtime's, its spawned tasks run on the workers), so an answer wakes the
/// caller directly: no task is spawned and no channel crosses threads per call (with 64
/// threads of Clerks, that hop cost more CPU than the rest of the call). A caller that is
/// itself on a runtime thread (where `block_on` is not allowed) gets the spawning path.
pub(crate) fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return block_on_spawned(py, fut);
    }
    let mut fut = Box::pin(fut);
    loop {
        let step = py.allow_threads(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt().block_on(async { tokio::time::timeout(SIGNAL_CHECK, fut.as_mut()).await })
            }))
        });
        match step {
            Ok(Ok(v)) => return Ok(v),
            // Returning the error drops (abandons) the future.
            Ok(Err(_elapsed)) => py.check_signals()?,
            Err(_panic) => return Err(Error::new_err("internal error: a raftkv task panicked")),
        }
    }
}

/// [`block_on`] for a caller on a runtime thread: runs `fut` as a task and waits for its
/// answer on a channel.
fn block_on_spawned<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
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
            let r = rx.recv_timeout(SIGNAL_CHECK);
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
