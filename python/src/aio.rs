//! `_AioCore`: the Rust half of `raftkv.aio.Clerk`, the asyncio client.
//!
//! Each operation is one task on the extension's tokio runtime, run by a Rust Clerk taken from
//! a pool (a Rust Clerk runs one operation at a time; the pool holds the idle ones, each with
//! its session and its own lane in a history). All the pool's Clerks share one
//! [`TcpConnector`]: one connection per server, many requests in flight on it.
//!
//! A finished operation is pushed onto a completion queue, and the first push onto an empty
//! queue writes one byte to a socket pair whose read end the event loop watches
//! (`loop.add_reader(core.fileno(), ...)`); the Python side then calls [`AioCore::drain`],
//! which turns every queued completion into Python values with the GIL it already holds. So
//! the runtime's threads never take the GIL, and one wake-up delivers many answers.
//!
//! Cancelling an operation aborts its task: the Rust Clerk (and its session) is dropped, and
//! a history records the operation's outcome as unknown. [`AioCore::close`] aborts every task
//! and closes the connections.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use raftkv_checker::history::History as RHistory;
use raftkv_kv::clerk::{Clerk as RClerk, ClerkConfig, ClerkError};
use raftkv_kv::protocol::{MemberList, ServerStatus};
use raftkv_node::tcp_client::{TcpConnector, TcpConnectorConfig};
use raftkv_raft::runtime::tokio::TokioRuntime;
use tokio::task::AbortHandle;

use crate::clerk::{clerk_config, members_dict};
use crate::convert::{parse_addrs, to_bytes, version_arg};
use crate::errors::{clerk_err, Error};
use crate::history::History;
use crate::runtime::{rt, tokio_runtime};

type Clerk = RClerk<TokioRuntime, TcpConnector<TokioRuntime>>;

/// Operations of one `_AioCore` in flight at once at most (the Python side waits for a slot
/// beyond): the bound of its task table, completion queue and Clerk pool, and the default
/// in-flight bound of one connection.
const IN_FLIGHT_MAX: usize = 1024;

/// What a finished operation returns.
enum Answer {
    Value(Bytes, u64),
    Version(u64),
    Deleted,
    Status(ServerStatus),
    Members(MemberList),
}

/// A finished operation: its token and its answer, or its error and the key it was about.
type Completion = (u64, Result<Answer, (ClerkError, Option<Bytes>)>);

/// What the tasks and the Python side share.
struct Shared {
    addrs: Vec<String>,
    config: ClerkConfig,
    connector: TcpConnector<TokioRuntime>,
    history: Option<RHistory>,
    /// Idle Clerks, ready for the next operation.
    idle: Mutex<Vec<Clerk>>,
    /// Finished operations not yet drained.
    done: Mutex<VecDeque<Completion>>,
    /// Written (one byte) when `done` stops being empty.
    wake: UnixStream,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// An idle Clerk, or a new one (sharing the connector).
    fn take_clerk(&self) -> Clerk {
        if let Some(c) = lock(&self.idle).pop() {
            return c;
        }
        let _guard = rt().enter();
        let c = RClerk::new(
            tokio_runtime(),
            self.connector.clone(),
            self.addrs.clone(),
            self.config.clone(),
        );
        match &self.history {
            Some(h) => c.with_history(h.clone()),
            None => c,
        }
    }

    fn give_back(&self, c: Clerk) {
        let mut idle = lock(&self.idle);
        if idle.len() < IN_FLIGHT_MAX && !self.closed.load(Ordering::Acquire) {
            idle.push(c);
        }
    }

    /// Queues a completion and wakes the event loop if the queue was empty.
    fn complete(&self, c: Completion) {
        let was_empty = {
            let mut done = lock(&self.done);
            let was_empty = done.is_empty();
            done.push_back(c);
            was_empty
        };
        if was_empty {
            // WouldBlock: the socket is full of unread wake-ups, so the loop will drain anyway.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The Rust half of `raftkv.aio.Clerk` (private: use `raftkv.aio.Clerk`).
///
/// `start_get`, `start_put`, `start_append`, `start_delete` and `start_server_status` start
/// an operation and return its token; when `fileno()` is readable, `drain()` returns the
/// finished ones as (token, result, exception) tuples; `cancel(token)` abandons one;
/// `close()` abandons all and closes the connections.
#[pyclass(module = "raftkv._raftkv", name = "_AioCore", frozen)]
pub struct AioCore {
    shared: Arc<Shared>,
    /// The read end of the wake-up socket pair.
    readable: UnixStream,
    /// Abort handles of operations in flight, by token.
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    next_token: AtomicU64,
    timeout: f64,
}

impl AioCore {
    /// Starts `op` (run by a pooled Clerk) as a task; returns its token.
    fn start<F, Fut>(&self, key: Option<Bytes>, op: F) -> PyResult<u64>
    where
        F: FnOnce(Clerk) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (Clerk, Result<Answer, ClerkError>)> + Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed_err());
        }
        let mut tasks = lock(&self.tasks);
        if tasks.len() >= IN_FLIGHT_MAX {
            return Err(Error::new_err(format!(
                "internal error: more than {IN_FLIGHT_MAX} operations in flight on one aio Clerk"
            )));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let handle = rt().spawn(async move {
            let clerk = shared.take_clerk();
            let (clerk, result) = op(clerk).await;
            shared.give_back(clerk);
            shared.complete((token, result.map_err(|e| (e, key))));
        });
        tasks.insert(token, handle.abort_handle());
        Ok(token)
    }
}

fn closed_err() -> PyErr {
    Error::new_err("the aio Clerk is closed: make a new one")
}

#[pymethods]
impl AioCore {
    #[new]
    #[pyo3(signature = (addresses, timeout=10.0, history=None, tls=None, token=None, read_from="leader"))]
    fn new(
        addresses: &Bound<'_, PyAny>,
        timeout: f64,
        history: Option<PyRef<'_, History>>,
        tls: Option<&Bound<'_, PyAny>>,
        token: Option<String>,
        read_from: &str,
    ) -> PyResult<Self> {
        let addrs = parse_addrs(addresses)?;
        let config = ClerkConfig {
            read_from: crate::clerk::read_from(read_from)?,
            ..clerk_config(timeout)?
        };
        let tls = tls.map(crate::convert::parse_client_tls).transpose()?;
        let token = token.map(crate::convert::client_token).transpose()?;
        let (wake, readable) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        readable.set_nonblocking(true)?;
        let connector = {
            let _guard = rt().enter();
            TcpConnector::new(
                tokio_runtime(),
                TcpConnectorConfig {
                    tls,
                    token,
                    ..TcpConnectorConfig::default()
                },
            )
        };
        Ok(Self {
            shared: Arc::new(Shared {
                addrs,
                config,
                connector,
                history: history.map(|h| h.inner.clone()),
                idle: Mutex::default(),
                done: Mutex::default(),
                wake,
                closed: AtomicBool::new(false),
            }),
            readable,
            tasks: Mutex::default(),
            next_token: AtomicU64::new(1),
            timeout,
        })
    }

    /// Starts a get of `key`; its result is (value: bytes, version: int).
    fn start_get(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        self.start(Some(key), move |mut c| async move {
            let r = c.get(k).await.map(|(v, n)| Answer::Value(v, n));
            (c, r)
        })
    }

    /// Starts a put (conditional with `version`); its result is the new version.
    #[pyo3(signature = (key, value, version=None))]
    fn start_put(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let value = to_bytes(value, "value")?;
        let version = version_arg(version)?;
        let k = key.clone();
        self.start(Some(key), move |mut c| async move {
            let r = c.put(k, value, version).await.map(Answer::Version);
            (c, r)
        })
    }

    /// Starts an append; its result is the new version.
    fn start_append(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let value = to_bytes(value, "value")?;
        let k = key.clone();
        self.start(Some(key), move |mut c| async move {
            let r = c.append(k, value).await.map(Answer::Version);
            (c, r)
        })
    }

    /// Starts a delete; its result is None.
    fn start_delete(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        self.start(Some(key), move |mut c| async move {
            let r = c.delete(k).await.map(|()| Answer::Deleted);
            (c, r)
        })
    }

    /// Starts a status request to the server at `address` (one attempt); its result is a dict.
    fn start_server_status(&self, address: String) -> PyResult<u64> {
        self.start(None, move |c| async move {
            let r = c.server_status(&address).await.map(Answer::Status);
            (c, r)
        })
    }

    /// Starts a member list request; its result is a dict like `Clerk.member_list`'s.
    fn start_member_list(&self) -> PyResult<u64> {
        self.start(None, move |mut c| async move {
            let r = c.member_list().await.map(Answer::Members);
            (c, r)
        })
    }

    /// Starts adding node `id` (see `Clerk.member_add`); its result is the member list.
    #[pyo3(signature = (id, peer_addr, client_addr=None, learner=false))]
    fn start_member_add(
        &self,
        id: u64,
        peer_addr: String,
        client_addr: Option<String>,
        learner: bool,
    ) -> PyResult<u64> {
        if id == 0 {
            return Err(PyValueError::new_err("node ids start at 1"));
        }
        if peer_addr.is_empty() {
            return Err(PyValueError::new_err("peer_addr must not be empty"));
        }
        let client_addr = client_addr.unwrap_or_default();
        self.start(None, move |mut c| async move {
            let r = c
                .member_add(id, &peer_addr, &client_addr, learner)
                .await
                .map(Answer::Members);
            (c, r)
        })
    }

    /// Starts promoting learner `id`; its result is the member list.
    fn start_member_promote(&self, id: u64) -> PyResult<u64> {
        self.start(None, move |mut c| async move {
            let r = c.member_promote(id).await.map(Answer::Members);
            (c, r)
        })
    }

    /// Starts removing node `id` (see `Clerk.member_remove`); its result is the member list.
    fn start_member_remove(&self, id: u64) -> PyResult<u64> {
        self.start(None, move |mut c| async move {
            let r = c.member_remove(id).await.map(Answer::Members);
            (c, r)
        })
    }

    /// Starts moving leadership to voter `id`; its result is the member list once `id` leads.
    fn start_move_leader(&self, id: u64) -> PyResult<u64> {
        self.start(None, move |mut c| async move {
            let r = c.move_leader(id).await.map(Answer::Members);
            (c, r)
        })
    }

    /// The finished operations since the last drain, as (token, result, exception) tuples
    /// (exactly one of result and exception is not None); empties the wake-up socket.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut buf = [0u8; 256];
        loop {
            match (&self.readable).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let done = std::mem::take(&mut *lock(&self.shared.done));
        let out = PyList::empty(py);
        let mut tasks = lock(&self.tasks);
        for (token, result) in done {
            if tasks.remove(&token).is_none() {
                continue; // cancelled after it finished: nobody waits for it
            }
            let (result, exception) = match result {
                Ok(answer) => (answer_to_py(py, answer)?, py.None()),
                Err((e, key)) => (
                    py.None(),
                    clerk_err(e, key.as_ref()).into_value(py).into_any(),
                ),
            };
            out.append((token, result, exception))?;
        }
        Ok(out)
    }

    /// Abandons the operation `token` (no effect if it has finished): its task is aborted.
    fn cancel(&self, token: u64) {
        if let Some(h) = lock(&self.tasks).remove(&token) {
            h.abort();
        }
    }

    /// Abandons every operation in flight and closes the connections; later starts raise
    /// raftkv.Error. Idempotent.
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for (_, h) in lock(&self.tasks).drain() {
            h.abort();
        }
        lock(&self.shared.idle).clear();
        lock(&self.shared.done).clear();
        self.shared.connector.close();
    }

    /// The file descriptor that becomes readable when operations have finished.
    fn fileno(&self) -> i32 {
        self.readable.as_raw_fd()
    }

    /// Operations in flight (started, not yet drained or cancelled).
    fn in_flight(&self) -> usize {
        lock(&self.tasks).len()
    }

    /// Operations one core runs at once at most.
    #[classattr]
    fn in_flight_max() -> usize {
        IN_FLIGHT_MAX
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The addresses this core was given.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.shared.addrs.clone()
    }

    /// The per-operation timeout, in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }
}

impl Drop for AioCore {
    fn drop(&mut self) {
        self.close();
    }
}

fn answer_to_py(py: Python<'_>, answer: Answer) -> PyResult<PyObject> {
    Ok(match answer {
        Answer::Value(v, n) => (PyBytes::new(py, &v), n)
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Answer::Version(n) => n.into_pyobject(py)?.into_any().unbind(),
        Answer::Deleted => py.None(),
        Answer::Status(s) => {
            let d = PyDict::new(py);
            d.set_item("role", s.role)?;
            d.set_item("leader", s.leader)?;
            let numbers = [
                ("raft_id", s.id),
                ("term", s.term),
                ("commit_index", s.commit_index),
                ("applied_index", s.applied_index),
                ("first_index", s.first_index),
                ("last_index", s.last_index),
                ("snapshot_index", s.snapshot_index),
            ];
            for (name, value) in numbers {
                d.set_item(name, value)?;
            }
            d.set_item("removed", s.removed)?;
            d.into_any().unbind()
        }
        Answer::Members(list) => members_dict(py, &list)?.into_any().unbind(),
    })
}
