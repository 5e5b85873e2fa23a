//! `raftkv._raftkv`: the Rust core of the raftkv Python package.
//!
//! Every blocking call runs its future as a task on this module's tokio runtime (two worker
//! threads) and waits for the answer with the GIL released, checking for signals (Ctrl-C) every
//! 100 ms: a `KeyboardInterrupt` abandons the task. A panic in a task becomes `raftkv.Error`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use raftkv_checker::formats::json::read_json;
use raftkv_checker::history::History as RHistory;
use raftkv_checker::{AnyHistory, CheckOptions, CheckResult, Format, Verdict};
use raftkv_kv::clerk::{Clerk as RClerk, ClerkConfig, ClerkError};
use raftkv_node::cluster::{
    ClusterConfig, ClusterError as RClusterError, LocalCluster as RCluster, StorageKind,
};
use raftkv_node::standalone::{StandaloneConfig, StandaloneNode};
use raftkv_node::tcp_client::TcpConnector;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Status;

create_exception!(
    raftkv,
    Error,
    PyException,
    "Base class of every raftkv error."
);
create_exception!(raftkv, KeyNotFound, Error, "The key does not exist.");
create_exception!(
    raftkv,
    VersionMismatch,
    Error,
    "A conditional put found another version; nothing was written."
);
create_exception!(
    raftkv,
    MaybeApplied,
    Error,
    "A retried write's outcome cannot be learned: it may or may not have been applied."
);
create_exception!(
    raftkv,
    Timeout,
    Error,
    "No majority answered (or no leader was found) within the timeout."
);
create_exception!(
    raftkv,
    TooLarge,
    Error,
    "The request is larger than the servers accept."
);
create_exception!(
    raftkv,
    ProtocolError,
    Error,
    "A server answered something the client cannot use."
);
create_exception!(
    raftkv,
    ClusterError,
    Error,
    "A cluster or node operation failed (no such node, not running, I/O, storage...)."
);
create_exception!(
    raftkv,
    HistoryError,
    Error,
    "A history could not be read (malformed JSON or log line)."
);

// ------------------------------------------------------------------------------------------
// the runtime and blocking
// ------------------------------------------------------------------------------------------

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

fn rt() -> &'static tokio::runtime::Runtime {
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

fn tokio_runtime() -> TokioRuntime {
    TokioRuntime::new(rt().handle().clone())
}

/// Runs `fut` on the runtime; waits with the GIL released, raising KeyboardInterrupt (and
/// abandoning the task) on Ctrl-C.
fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
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

fn cluster_err(e: RClusterError) -> PyErr {
    match e {
        RClusterError::NoLeader(d) => Timeout::new_err(format!("no leader within {d:?}")),
        RClusterError::NoSuchNode(..) => pyo3::exceptions::PyIndexError::new_err(e.to_string()),
        e => ClusterError::new_err(e.to_string()),
    }
}

fn clerk_err(e: ClerkError) -> PyErr {
    match e {
        ClerkError::NoKey => KeyNotFound::new_err("no such key"),
        ClerkError::Version { current } => {
            VersionMismatch::new_err(format!("version mismatch (current version {current})"))
        }
        ClerkError::MaybeApplied => MaybeApplied::new_err(e.to_string()),
        ClerkError::Timeout(_) => Timeout::new_err(e.to_string()),
        ClerkError::TooLarge => TooLarge::new_err(e.to_string()),
        ClerkError::Protocol(_) => ProtocolError::new_err(e.to_string()),
    }
}

fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `bytes` as is, `str` as UTF-8; anything else is a TypeError.
fn to_bytes(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Bytes::from(s.to_str()?.to_owned()));
    }
    if let Ok(b) = obj.downcast::<pyo3::types::PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes or str, not {}",
        obj.get_type().name()?
    )))
}

fn status_dict<'py>(
    py: Python<'py>,
    s: &Status,
    index_base: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    // index_base Some(1): LocalCluster, ids and leaders as 0-based node indices.
    let d = PyDict::new(py);
    let conv = |id: u64| match index_base {
        Some(b) => id.saturating_sub(b),
        None => id,
    };
    d.set_item("id", conv(s.id))?;
    d.set_item("raft_id", s.id)?;
    d.set_item("role", s.role.to_string())?;
    d.set_item("term", s.term)?;
    d.set_item("leader", s.leader.map(conv))?;
    d.set_item("commit_index", s.commit_index)?;
    d.set_item("applied_index", s.applied_index)?;
    d.set_item("first_index", s.first_index)?;
    d.set_item("last_index", s.last_index)?;
    d.set_item("snapshot_index", s.snapshot_index)?;
    d.set_item("persisted_index", s.persisted_index)?;
    Ok(d)
}

// ------------------------------------------------------------------------------------------
// History
// ------------------------------------------------------------------------------------------

/// A thread-safe record of client operations (call and return on one monotonic clock), in the
/// form the linearizability checker reads. Pass it to `Clerk(history=...)` or
/// `LocalCluster.clerk(history=...)`: every operation of that Clerk is recorded, one client
/// lane per Clerk.
#[pyclass(module = "raftkv._raftkv", frozen)]
#[derive(Clone)]
pub struct History {
    inner: RHistory,
}

#[pymethods]
impl History {
    #[new]
    fn new() -> Self {
        Self {
            inner: RHistory::new(),
        }
    }

    /// The history as JSON (see shared/API.md: {"model": "kv", "ops": [...]}).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// A history read from JSON text (as written by `to_json`). Raises raftkv.HistoryError
    /// (a raftkv.Error) when malformed. New operations are recorded after the ones read.
    #[staticmethod]
    fn from_json(s: &Bound<'_, PyAny>) -> PyResult<Self> {
        let text = to_bytes(s, "the JSON text")?;
        let ops = read_json(&text[..]).map_err(|e| HistoryError::new_err(e.to_string()))?;
        Ok(Self {
            inner: RHistory::from_ops(ops),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("History({} ops)", self.inner.len())
    }
}

// ------------------------------------------------------------------------------------------
// Checking
// ------------------------------------------------------------------------------------------

/// The outcome of a linearizability check: `ok` is True (linearizable), False (not) or None
/// (unknown: timed out). `visualize(path)` writes a self-contained HTML page of the history.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct CheckOutcome {
    history: Arc<AnyHistory>,
    result: Arc<CheckResult>,
}

#[pymethods]
impl CheckOutcome {
    /// True: linearizable; False: not; None: unknown (the check timed out or gave up).
    #[getter]
    fn ok(&self) -> Option<bool> {
        match self.result.verdict {
            Verdict::Ok => Some(true),
            Verdict::Illegal => Some(false),
            Verdict::Unknown => None,
        }
    }

    /// "Ok", "Illegal" or "Unknown".
    #[getter]
    fn verdict(&self) -> String {
        self.result.verdict.to_string()
    }

    /// The model the history was checked under ("kv", "porcupine-kv", "register").
    #[getter]
    fn model(&self) -> &'static str {
        self.history.model_name()
    }

    /// Number of operations checked.
    #[getter]
    fn ops(&self) -> usize {
        self.history.len()
    }

    /// Number of partitions (keys) checked separately.
    #[getter]
    fn partitions(&self) -> usize {
        self.result.partitions.len()
    }

    /// Why the verdict is unknown, if it is (e.g. "timed out").
    #[getter]
    fn reason(&self) -> Option<String> {
        self.result
            .partitions
            .iter()
            .find_map(|p| p.undecided.map(|u| u.describe().to_string()))
    }

    /// Writes the HTML visualization (self-contained, opens offline) to `path`; returns `path`.
    fn visualize(&self, py: Python<'_>, path: PathBuf) -> PyResult<PathBuf> {
        let h = self.history.clone();
        let r = self.result.clone();
        let p = path.clone();
        py.allow_threads(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&p)?);
            h.visualize(&r, &mut out)?;
            std::io::Write::flush(&mut out)
        })?;
        Ok(path)
    }

    fn __bool__(&self) -> bool {
        self.result.verdict == Verdict::Ok
    }

    fn __repr__(&self) -> String {
        format!(
            "CheckResult(ok={}, ops={}, partitions={})",
            match self.ok() {
                Some(true) => "True",
                Some(false) => "False",
                None => "None",
            },
            self.history.len(),
            self.result.partitions.len()
        )
    }
}

/// The most memory one partition's search may take (its visited set), in bytes.
const CHECK_MEMORY_BYTES: u64 = 6 << 30;

fn run_check(
    py: Python<'_>,
    history: AnyHistory,
    partition: bool,
    timeout: Option<f64>,
) -> PyResult<CheckOutcome> {
    // Bound each partition's visited set (past it the verdict is unknown, never an
    // out-of-memory kill); at most one partition per core is searched at once.
    let options = CheckOptions {
        partition,
        timeout: timeout.map(|t| duration(t, "timeout")).transpose()?,
        cache_bytes_max: Some(CHECK_MEMORY_BYTES as usize),
        ..CheckOptions::default()
    };
    let history = Arc::new(history);
    let h = history.clone();
    let result = block_on(py, async move {
        // The search is CPU-bound: keep it off the runtime's workers.
        tokio::task::spawn_blocking(move || h.check(&options)).await
    })?
    .map_err(|e| Error::new_err(format!("internal error in the checker: {e}")))?;
    Ok(CheckOutcome {
        history,
        result: Arc::new(result),
    })
}

/// Checks a History (or a history's JSON text) for linearizability under `model` ("kv").
/// `timeout` (seconds, None: no limit) bounds the search: the result's `ok` is then None; so
/// it is when one key's search would need more than 6 GiB of memory.
/// `partition=False` checks the history as a whole instead of key by key.
#[pyfunction]
#[pyo3(signature = (history, model="kv", timeout=None, partition=true))]
fn check_linearizable(
    py: Python<'_>,
    history: &Bound<'_, PyAny>,
    model: &str,
    timeout: Option<f64>,
    partition: bool,
) -> PyResult<CheckOutcome> {
    if model != "kv" {
        return Err(PyValueError::new_err(format!(
            "a History is checked under model \"kv\", not {model:?} (use check_file for other formats)"
        )));
    }
    let ops = if let Ok(h) = history.downcast::<History>() {
        h.get().inner.operations()
    } else if history.is_instance_of::<PyString>() || history.is_instance_of::<PyBytes>() {
        let text = to_bytes(history, "history")?;
        read_json(&text[..]).map_err(|e| HistoryError::new_err(e.to_string()))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "history must be a raftkv.History or JSON text, not {}",
            history.get_type().name()?
        )));
    };
    run_check(py, AnyHistory::Kv(ops), partition, timeout)
}

/// Reads a history file in `format` ("json", "porcupine-kv", "jepsen-etcd") and checks it.
/// `model`: None (the format's own: kv for json and porcupine-kv, register for jepsen-etcd)
/// or that name. Raises raftkv.HistoryError for a malformed file, ValueError for a bad format
/// or model, OSError when the file cannot be read.
#[pyfunction]
#[pyo3(signature = (path, format="json", model=None, timeout=None, partition=true))]
fn check_file(
    py: Python<'_>,
    path: PathBuf,
    format: &str,
    model: Option<&str>,
    timeout: Option<f64>,
    partition: bool,
) -> PyResult<CheckOutcome> {
    let fmt: Format = format
        .parse()
        .map_err(|e: raftkv_checker::formats::UnknownFormat| {
            PyValueError::new_err(e.to_string())
        })?;
    let expected = match fmt {
        Format::Json | Format::PorcupineKv => "kv",
        Format::JepsenEtcd => "register",
    };
    if let Some(m) = model {
        if m != "kv" && m != "register" {
            return Err(PyValueError::new_err(format!(
                "unknown model {m:?} (expected kv or register)"
            )));
        }
        if m != expected {
            return Err(PyValueError::new_err(format!(
                "format {format} is checked under model {expected}, not {m}"
            )));
        }
    }
    let p = path.clone();
    let history = py
        .allow_threads(move || AnyHistory::read_file(fmt, &p))
        .map_err(|e| match e {
            raftkv_checker::ReadError::Io(io) => PyErr::from(io),
            e => HistoryError::new_err(format!("{}: {e}", path.display())),
        })?;
    run_check(py, history, partition, timeout)
}

// ------------------------------------------------------------------------------------------
// Clerk
// ------------------------------------------------------------------------------------------

enum AnyClerk {
    Tokio(RClerk<TokioRuntime, TcpConnector<TokioRuntime>>),
    Smol(RClerk<SmolRuntime, TcpConnector<SmolRuntime>>),
}

macro_rules! with_clerk {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            AnyClerk::Tokio($x) => $body,
            AnyClerk::Smol($x) => $body,
        }
    };
}

/// A client of a raftkv cluster: `Clerk(addresses, timeout=10.0, history=None)`.
///
/// `addresses`: client addresses "host:port" of any non-empty subset of the cluster (a node
/// that is not the leader names the leader, and the Clerk follows). Keys and values are bytes;
/// str is encoded as UTF-8; values are returned as bytes. Every failure to reach a majority
/// within `timeout` seconds raises raftkv.Timeout. A Clerk runs one operation at a time
/// (calls from several threads queue up): use one Clerk per concurrent client thread.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct Clerk {
    inner: Arc<tokio::sync::Mutex<AnyClerk>>,
    addrs: Vec<String>,
    timeout: f64,
}

fn clerk_config(timeout: f64) -> PyResult<ClerkConfig> {
    let t = duration(timeout, "timeout")?;
    if t.is_zero() {
        return Err(PyValueError::new_err("timeout must be positive"));
    }
    Ok(ClerkConfig {
        timeout: t,
        attempt_timeout: Duration::from_secs(1).min(t),
        ..ClerkConfig::default()
    })
}

fn validate_addr(a: &str) -> PyResult<()> {
    let bad = || PyValueError::new_err(format!("bad address {a:?}: expected \"host:port\""));
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn parse_addrs(addresses: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if addresses.is_instance_of::<PyString>() {
        // "a:1,b:2" is accepted too.
        let s: String = addresses.extract()?;
        let v: Vec<String> = s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
        if v.is_empty() {
            return Err(PyValueError::new_err("a Clerk needs at least one address"));
        }
        for a in &v {
            validate_addr(a)?;
        }
        return Ok(v);
    }
    let mut v = Vec::new();
    for item in addresses
        .try_iter()
        .map_err(|_| PyTypeError::new_err("addresses must be a list of \"host:port\" strings"))?
    {
        let item = item?;
        let s: String = item.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "an address must be a \"host:port\" str, not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        validate_addr(&s)?;
        v.push(s);
    }
    if v.is_empty() {
        return Err(PyValueError::new_err("a Clerk needs at least one address"));
    }
    Ok(v)
}

impl Clerk {
    fn wrap(c: AnyClerk, addrs: Vec<String>, timeout: f64) -> Self {
        Self {
            inner: Arc::new(tokio::sync::Mutex::new(c)),
            addrs,
            timeout,
        }
    }
}

#[pymethods]
impl Clerk {
    #[new]
    #[pyo3(signature = (addresses, timeout=10.0, history=None))]
    fn new(
        addresses: &Bound<'_, PyAny>,
        timeout: f64,
        history: Option<PyRef<'_, History>>,
    ) -> PyResult<Self> {
        let addrs = parse_addrs(addresses)?;
        let config = clerk_config(timeout)?;
        let _guard = rt().enter();
        let mut c = RClerk::new(
            tokio_runtime(),
            TcpConnector::with_runtime(tokio_runtime()),
            addrs.clone(),
            config,
        );
        if let Some(h) = history {
            c = c.with_history(h.inner.clone());
        }
        Ok(Self::wrap(AnyClerk::Tokio(c), addrs, timeout))
    }

    /// Reads `key`: returns (value: bytes, version: int). Raises raftkv.KeyNotFound.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<(Py<PyBytes>, u64)> {
        let key = to_bytes(key, "key")?;
        let inner = self.inner.clone();
        let (value, version) = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.get(key).await)
        })?
        .map_err(clerk_err)?;
        Ok((PyBytes::new(py, &value).unbind(), version))
    }

    /// Writes `value` under `key`; returns the key's new version. With `version=N`, only if
    /// the key's current version is N (0: the key must not exist): raises
    /// raftkv.VersionMismatch if not applied, raftkv.KeyNotFound for a missing key with N > 0,
    /// raftkv.MaybeApplied when a retry cannot tell whether it was applied.
    #[pyo3(signature = (key, value, version=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let value = to_bytes(value, "value")?;
        let version =
            match version {
                None => None,
                Some(v) if v.is_none() => None,
                Some(v) => {
                    if v.is_instance_of::<pyo3::types::PyBool>() {
                        return Err(PyTypeError::new_err("version must be an int, not bool"));
                    }
                    let n: i128 = v.extract().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "version must be an int, not {}",
                            v.get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        ))
                    })?;
                    Some(u64::try_from(n).map_err(|_| {
                        PyValueError::new_err(format!("version must be >= 0, not {n}"))
                    })?)
                }
            };
        let inner = self.inner.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.put(key, value, version).await)
        })?
        .map_err(clerk_err)
    }

    /// Appends `value` to `key`'s value (creating the key); returns the new version.
    fn append(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let key = to_bytes(key, "key")?;
        let value = to_bytes(value, "value")?;
        let inner = self.inner.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.append(key, value).await)
        })?
        .map_err(clerk_err)
    }

    /// Deletes `key`. Raises raftkv.KeyNotFound if it does not exist.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = to_bytes(key, "key")?;
        let inner = self.inner.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.delete(key).await)
        })?
        .map_err(clerk_err)
    }

    /// The addresses this Clerk was given.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// The per-operation timeout, in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    /// The status of the server at `address` (one attempt), as it reports it: a dict with
    /// raft_id, role, term, leader (a Raft id or None), commit_index, applied_index,
    /// first_index, last_index, snapshot_index.
    fn server_status<'py>(&self, py: Python<'py>, address: String) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let s = block_on(py, async move {
            let c = inner.lock().await;
            with_clerk!(&*c, c => c.server_status(&address).await)
        })?
        .map_err(clerk_err)?;
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
        Ok(d)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }

    /// Does nothing (connections close when the Clerk is garbage-collected); for symmetry.
    fn close(&self) {}

    fn __repr__(&self) -> String {
        format!("Clerk({:?}, timeout={})", self.addrs, self.timeout)
    }
}

// ------------------------------------------------------------------------------------------
// LocalCluster
// ------------------------------------------------------------------------------------------

enum AnyCluster {
    Tokio(RCluster<TokioRuntime>),
    Smol(RCluster<SmolRuntime>),
}

macro_rules! with_cluster {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            AnyCluster::Tokio($x) => $body,
            AnyCluster::Smol($x) => $body,
        }
    };
}

type ClusterSlot = Arc<tokio::sync::Mutex<Option<AnyCluster>>>;

/// n raftkv nodes in this process over real TCP on 127.0.0.1, for scripts and tests.
///
/// `LocalCluster(n=3, storage="lmdb", data_dir=None, runtime="tokio", seed=None,
/// snapshot_threshold=None)`: storage "memory" | "lmdb" (lmdb with data_dir None: a temporary
/// directory, removed on close); runtime "tokio" | "smol". Use it as a context manager, or
/// call close(): it stops every node and releases every port, thread and temporary directory.
/// Nodes are numbered 0..n-1 (index = position in `addrs`).
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct LocalCluster {
    slot: ClusterSlot,
    addrs: Vec<String>,
    n: usize,
    runtime: String,
    storage: String,
    data_dir: Option<PathBuf>,
}

fn not_open() -> PyErr {
    ClusterError::new_err("the cluster is closed")
}

impl LocalCluster {
    /// Runs `f` on the open cluster.
    fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut AnyCluster,
            )
                -> std::pin::Pin<Box<dyn Future<Output = PyResult<T>> + Send + 'a>>
            + Send
            + 'static,
    {
        let slot = self.slot.clone();
        block_on(py, async move {
            let mut g = slot.lock().await;
            match g.as_mut() {
                None => Err(not_open()),
                Some(c) => f(c).await,
            }
        })?
    }
}

fn ce<T>(r: Result<T, RClusterError>) -> PyResult<T> {
    r.map_err(cluster_err)
}

fn node_index(i: i64, n: usize) -> PyResult<usize> {
    if i < 0 || i as usize >= n {
        return Err(pyo3::exceptions::PyIndexError::new_err(format!(
            "no node {i} (the cluster has {n}: 0..{})",
            n.saturating_sub(1)
        )));
    }
    Ok(i as usize)
}

#[pymethods]
impl LocalCluster {
    #[new]
    #[pyo3(signature = (n=3, storage="lmdb", data_dir=None, runtime="tokio", seed=None, snapshot_threshold=None, request_timeout=2.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        n: i64,
        storage: &str,
        data_dir: Option<PathBuf>,
        runtime: &str,
        seed: Option<u64>,
        snapshot_threshold: Option<u64>,
        request_timeout: f64,
    ) -> PyResult<Self> {
        if !(1..=7).contains(&n) {
            return Err(PyValueError::new_err(format!(
                "a cluster needs 1 to 7 nodes, not {n}"
            )));
        }
        let kind = match storage {
            "memory" => StorageKind::Memory,
            "lmdb" => StorageKind::Lmdb,
            s => {
                return Err(PyValueError::new_err(format!(
                    "storage must be \"memory\" or \"lmdb\", not {s:?}"
                )))
            }
        };
        if runtime != "tokio" && runtime != "smol" {
            return Err(PyValueError::new_err(format!(
                "runtime must be \"tokio\" or \"smol\", not {runtime:?}"
            )));
        }
        if snapshot_threshold == Some(0) {
            return Err(PyValueError::new_err("snapshot_threshold must be positive"));
        }
        let mut config = ClusterConfig::new(n as usize, kind);
        config.data_dir = data_dir.clone();
        config.seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        config.snapshot_threshold = snapshot_threshold;
        config.request_timeout = duration(request_timeout, "request_timeout")?;
        let smol = runtime == "smol";
        let cluster = block_on(py, async move {
            if smol {
                RCluster::start(SmolRuntime::new(), config)
                    .await
                    .map(AnyCluster::Smol)
            } else {
                RCluster::start(tokio_runtime(), config)
                    .await
                    .map(AnyCluster::Tokio)
            }
        })?
        .map_err(cluster_err)?;
        let addrs = with_cluster!(&cluster, c => c.addrs());
        Ok(Self {
            slot: Arc::new(tokio::sync::Mutex::new(Some(cluster))),
            addrs,
            n: n as usize,
            runtime: runtime.to_string(),
            storage: storage.to_string(),
            data_dir,
        })
    }

    /// Client addresses "127.0.0.1:PORT", index = node.
    #[getter]
    fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// Raft (peer) addresses, index = node.
    #[getter]
    fn peer_addrs(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.run(py, |c| {
            Box::pin(async move {
                Ok(with_cluster!(c, c => c.peer_addrs().iter().map(|a| a.to_string()).collect()))
            })
        })
    }

    /// Number of nodes.
    fn __len__(&self) -> usize {
        self.n
    }

    #[getter]
    fn n(&self) -> usize {
        self.n
    }

    #[getter]
    fn runtime(&self) -> String {
        self.runtime.clone()
    }

    #[getter]
    fn storage(&self) -> String {
        self.storage.clone()
    }

    /// The data directory given (None: a temporary one, or memory storage).
    #[getter]
    fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir.clone()
    }

    /// Node i's LMDB directory (None on memory storage).
    fn node_dir(&self, py: Python<'_>, i: i64) -> PyResult<Option<PathBuf>> {
        let i = node_index(i, self.n)?;
        self.run(py, move |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.node_dir(i))) })
        })
    }

    /// Whether node i is running (not crashed).
    fn is_running(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = node_index(i, self.n)?;
        self.run(py, move |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.is_running(i))) })
        })
    }

    /// Waits until some node leads and serves; returns its index. Raises raftkv.Timeout.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_leader(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let t = duration(timeout, "timeout")?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.wait_leader(t).await)) })
        })
    }

    /// The index of the leader of the highest term among running nodes, or None.
    fn leader(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        self.run(py, |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.leader().await)) })
        })
    }

    /// Node i's status: a dict with id (node index), raft_id, role ("leader", "follower",
    /// "candidate", "pre-candidate"), term, leader (node index or None), commit_index,
    /// applied_index, first_index, last_index, snapshot_index, persisted_index. Raises
    /// raftkv.ClusterError if node i is not running.
    fn status<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyDict>> {
        let i = node_index(i, self.n)?;
        let s = self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.status(i).await)) })
        })?;
        status_dict(py, &s, Some(1))
    }

    /// Stops node i abruptly; its durable state stays.
    fn crash(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.crash(i).await)) })
        })
    }

    /// Starts node i again from its durable state, on the same addresses.
    fn restart(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.restart(i).await)) })
        })
    }

    /// `partition([0, 1], [2])`: groups of nodes that can talk only within themselves (peer
    /// traffic; clients reach every node). Nodes in no group are cut off from everyone.
    #[pyo3(signature = (*groups))]
    fn partition(&self, py: Python<'_>, groups: Vec<Vec<i64>>) -> PyResult<()> {
        let mut gs = Vec::new();
        for g in groups {
            gs.push(
                g.into_iter()
                    .map(|i| node_index(i, self.n))
                    .collect::<PyResult<Vec<usize>>>()?,
            );
        }
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.partition(&gs))) })
        })
    }

    /// Cuts node i off from every other node.
    fn isolate(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.isolate(i))) })
        })
    }

    /// Full connectivity again (unreliability set by set_unreliable stays).
    fn heal(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |c| {
            Box::pin(async move {
                with_cluster!(c, c => c.heal());
                Ok(())
            })
        })
    }

    /// Peer messages are dropped with probability `drop` and delayed by a uniform time in
    /// `delay_ms` = (min, max) milliseconds (reordering them when `reorder`).
    #[pyo3(signature = (drop=0.1, delay_ms=(0, 27), reorder=true))]
    fn set_unreliable(
        &self,
        py: Python<'_>,
        drop: f64,
        delay_ms: (u64, u64),
        reorder: bool,
    ) -> PyResult<()> {
        if !(0.0..=1.0).contains(&drop) {
            return Err(PyValueError::new_err(format!(
                "drop must be a probability in [0, 1], not {drop}"
            )));
        }
        self.run(py, move |c| {
            Box::pin(async move {
                with_cluster!(c, c => c.set_unreliable(drop, delay_ms, reorder));
                Ok(())
            })
        })
    }

    /// Reliable peer traffic again.
    fn set_reliable(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |c| {
            Box::pin(async move {
                with_cluster!(c, c => c.set_reliable());
                Ok(())
            })
        })
    }

    /// A Clerk connected to every node, recording into `history` if given.
    #[pyo3(signature = (history=None, timeout=10.0))]
    fn clerk(
        &self,
        py: Python<'_>,
        history: Option<PyRef<'_, History>>,
        timeout: f64,
    ) -> PyResult<Clerk> {
        let config = clerk_config(timeout)?;
        let h = history.map(|h| h.inner.clone());
        let c = self.run(py, move |c| {
            Box::pin(async move {
                let mut k = match c {
                    AnyCluster::Tokio(c) => AnyClerk::Tokio(c.clerk(config)),
                    AnyCluster::Smol(c) => AnyClerk::Smol(c.clerk(config)),
                };
                if let Some(h) = h {
                    k = match k {
                        AnyClerk::Tokio(c) => AnyClerk::Tokio(c.with_history(h)),
                        AnyClerk::Smol(c) => AnyClerk::Smol(c.with_history(h)),
                    };
                }
                Ok(k)
            })
        })?;
        Ok(Clerk::wrap(c, self.addrs.clone(), timeout))
    }

    /// Stops every node and waits until their threads, ports and storage are released; removes
    /// a temporary data directory. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let slot = self.slot.clone();
        block_on(py, async move {
            let mut g = slot.lock().await;
            if let Some(mut c) = g.take() {
                with_cluster!(&mut c, c => c.close().await);
                drop(c);
            }
        })
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        let slot = self.slot.clone();
        block_on(py, async move { slot.lock().await.is_none() })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        // Close even when interrupted by Ctrl-C (a second one still interrupts the wait).
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "LocalCluster(n={}, storage={:?}, runtime={:?}, addrs={:?})",
            self.n, self.storage, self.runtime, self.addrs
        )
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Not closed: stop the nodes without waiting (LocalCluster's own Drop).
        if let Ok(mut g) = self.slot.try_lock() {
            g.take();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Node
// ------------------------------------------------------------------------------------------

enum AnyNode {
    Tokio(StandaloneNode<TokioRuntime>, TokioRuntime),
    Smol(StandaloneNode<SmolRuntime>, SmolRuntime),
}

/// One raftkv node, for clusters spread over processes or machines.
///
/// `Node(id, peers, data_dir=None, storage="lmdb", runtime="tokio", client_addrs=None,
/// client_port_offset=1000, snapshot_threshold=None)`: `peers` maps every node's Raft id
/// (int >= 1, this one's included) to its Raft (peer) address "host:port". The client
/// address of a node (the one Clerks use) is, unless `client_addrs` {id: "host:port"} is
/// given, the same host with port + 1000 (`client_port_offset`). storage "lmdb" needs
/// `data_dir`; "memory" keeps the log in memory only. start() binds and starts the node,
/// status() returns a dict (id, role, term, leader as Raft ids...), stop() stops it.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct Node {
    config: StandaloneConfig,
    runtime: String,
    running: Arc<tokio::sync::Mutex<Option<AnyNode>>>,
}

fn resolve(a: &str) -> PyResult<SocketAddr> {
    validate_addr(a)?;
    a.to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("bad address {a:?}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("address {a:?} resolves to nothing")))
}

#[pymethods]
impl Node {
    #[new]
    #[pyo3(signature = (id, peers, data_dir=None, storage="lmdb", runtime="tokio", client_addrs=None, client_port_offset=1000, snapshot_threshold=None, cluster_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        peers: BTreeMap<u64, String>,
        data_dir: Option<PathBuf>,
        storage: &str,
        runtime: &str,
        client_addrs: Option<BTreeMap<u64, String>>,
        client_port_offset: u16,
        snapshot_threshold: Option<u64>,
        cluster_id: Option<u64>,
    ) -> PyResult<Self> {
        if !peers.contains_key(&id) {
            return Err(PyValueError::new_err(format!(
                "node id {id} is not among the peers {:?}",
                peers.keys().collect::<Vec<_>>()
            )));
        }
        if peers.contains_key(&0) {
            return Err(PyValueError::new_err("node ids start at 1"));
        }
        if runtime != "tokio" && runtime != "smol" {
            return Err(PyValueError::new_err(format!(
                "runtime must be \"tokio\" or \"smol\", not {runtime:?}"
            )));
        }
        let data_dir = match storage {
            "lmdb" => Some(
                data_dir
                    .ok_or_else(|| PyValueError::new_err("storage \"lmdb\" needs a data_dir"))?,
            ),
            "memory" => None,
            s => {
                return Err(PyValueError::new_err(format!(
                    "storage must be \"memory\" or \"lmdb\", not {s:?}"
                )))
            }
        };
        let mut peer_map = BTreeMap::new();
        for (&j, a) in &peers {
            peer_map.insert(j, resolve(a)?);
        }
        let mut client_map = BTreeMap::new();
        match client_addrs {
            Some(m) => {
                for &j in peers.keys() {
                    let a = m.get(&j).ok_or_else(|| {
                        PyValueError::new_err(format!("client_addrs lacks node {j}"))
                    })?;
                    client_map.insert(j, resolve(a)?);
                }
            }
            None => {
                for (&j, a) in &peer_map {
                    let port = a.port().checked_add(client_port_offset).ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "peer port {} + {client_port_offset} is not a port",
                            a.port()
                        ))
                    })?;
                    client_map.insert(j, SocketAddr::new(a.ip(), port));
                }
            }
        }
        let mut config = StandaloneConfig::new(id, peer_map, client_map, data_dir);
        config.snapshot_threshold = snapshot_threshold;
        if let Some(c) = cluster_id {
            config.cluster_id = c;
        }
        Ok(Self {
            config,
            runtime: runtime.to_string(),
            running: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// This node's Raft id.
    #[getter]
    fn id(&self) -> u64 {
        self.config.id
    }

    /// This node's client address (for Clerks).
    #[getter]
    fn client_addr(&self) -> String {
        self.config.client_addrs[&self.config.id].to_string()
    }

    /// This node's Raft (peer) address.
    #[getter]
    fn peer_addr(&self) -> String {
        self.config.peers[&self.config.id].to_string()
    }

    /// Every node's client address, by Raft id.
    #[getter]
    fn client_addrs(&self) -> BTreeMap<u64, String> {
        self.config
            .client_addrs
            .iter()
            .map(|(&j, a)| (j, a.to_string()))
            .collect()
    }

    /// Binds the node's addresses, opens its storage and starts it. Raises raftkv.ClusterError.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let config = self.config.clone();
        let smol = self.runtime == "smol";
        let running = self.running.clone();
        block_on(py, async move {
            let mut g = running.lock().await;
            if g.is_some() {
                return Err(ClusterError::new_err("the node is already running"));
            }
            let n = if smol {
                let r = SmolRuntime::new();
                AnyNode::Smol(ce(StandaloneNode::start(r.clone(), config).await)?, r)
            } else {
                let r = tokio_runtime();
                AnyNode::Tokio(ce(StandaloneNode::start(r.clone(), config).await)?, r)
            };
            *g = Some(n);
            Ok(())
        })?
    }

    /// Whether the node is running.
    #[getter]
    fn running(&self, py: Python<'_>) -> PyResult<bool> {
        let running = self.running.clone();
        block_on(py, async move { running.lock().await.is_some() })
    }

    /// The node's status: id, role, term, leader (Raft id or None), commit_index,
    /// applied_index, first_index, last_index, snapshot_index, persisted_index.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let running = self.running.clone();
        let s = block_on(py, async move {
            let g = running.lock().await;
            match g.as_ref() {
                None => Err(ClusterError::new_err("the node is not running")),
                Some(AnyNode::Tokio(n, _)) => ce(n.status().await),
                Some(AnyNode::Smol(n, _)) => ce(n.status().await),
            }
        })??;
        status_dict(py, &s, None)
    }

    /// Stops the node and waits until its ports and storage are released. Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.running.clone();
        block_on(py, async move {
            let mut g = running.lock().await;
            match g.take() {
                None => {}
                Some(AnyNode::Tokio(n, r)) => n.stop(&r).await,
                Some(AnyNode::Smol(n, r)) => n.stop(&r).await,
            }
        })
    }

    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().start(py)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Node(id={}, peer_addr={:?}, client_addr={:?})",
            self.config.id,
            self.peer_addr(),
            self.client_addr()
        )
    }
}

// ------------------------------------------------------------------------------------------
// bench
// ------------------------------------------------------------------------------------------

struct BenchShared {
    ops: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Clients done with the preload.
    ready: AtomicU64,
}

/// Runs `clients` closed-loop Clerks against `addresses` for `warmup` + `seconds` seconds on
/// the Rust runtime. mode: "put" | "get" | "mixed" (half gets, half puts). Returns a dict:
/// ops, ops_per_s, errors, lat_us {p50, p99, p999} (measured after the warm-up).
/// `progress`: a callable called about every `interval` seconds with (elapsed_s, ops_so_far,
/// errors_so_far) while measuring, with the GIL held.
#[pyfunction]
#[pyo3(signature = (addresses, clients=64, seconds=10.0, mode="put", value_size=100, warmup=1.0, timeout=10.0, progress=None, interval=1.0, keyspace=10_000))]
#[pyo3(name = "bench")]
#[allow(clippy::too_many_arguments)]
fn run_bench<'py>(
    py: Python<'py>,
    addresses: &Bound<'py, PyAny>,
    clients: usize,
    seconds: f64,
    mode: &str,
    value_size: usize,
    warmup: f64,
    timeout: f64,
    progress: Option<Bound<'py, PyAny>>,
    interval: f64,
    keyspace: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let addrs = parse_addrs(addresses)?;
    if keyspace == 0 {
        return Err(PyValueError::new_err("keyspace must be positive"));
    }
    let config = clerk_config(timeout)?;
    let seconds_d = duration(seconds, "seconds")?;
    let warmup_d = duration(warmup, "warmup")?;
    let interval_d = duration(interval, "interval")?.max(Duration::from_millis(100));
    let mode_n: u8 = match mode {
        "put" => 0,
        "get" => 1,
        "mixed" => 2,
        m => {
            return Err(PyValueError::new_err(format!(
                "mode must be put, get or mixed, not {m:?}"
            )))
        }
    };
    if clients == 0 {
        return Err(PyValueError::new_err("clients must be positive"));
    }
    let shared = Arc::new(BenchShared {
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ready: AtomicU64::new(0),
    });
    // Keys `k000000..` uniform over `keyspace`; each client one random alphanumeric value.
    let key_of = |k: u64| Bytes::from(format!("k{k:06}"));
    let (tx, rx) = mpsc::channel::<Result<Vec<u32>, String>>();
    let _guard = rt().enter();
    let mut handles = Vec::new();
    for c in 0..clients {
        let mut clerk = RClerk::new(
            tokio_runtime(),
            TcpConnector::with_runtime(tokio_runtime()),
            addrs.clone(),
            config.clone(),
        );
        let shared = shared.clone();
        let tx = tx.clone();
        let mut rng =
            raftkv_raft::Rng::new(0x5eed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let value: Bytes = (0..value_size)
            .map(|_| ALNUM[rng.range(0, ALNUM.len() as u64) as usize])
            .collect::<Vec<u8>>()
            .into();
        handles.push(rt().spawn(async move {
            // Reads find every key: the clients write the keyspace between them first.
            if mode_n != 0 {
                for k in (c as u64..keyspace).step_by(clients) {
                    if let Err(e) = clerk.put(key_of(k), value.clone(), None).await {
                        shared.ready.fetch_add(1, Ordering::SeqCst);
                        let _ = tx.send(Err(format!("preload failed: {e}")));
                        return;
                    }
                }
            }
            shared.ready.fetch_add(1, Ordering::SeqCst);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
            while !shared.stop.load(Ordering::Relaxed) {
                let key = key_of(rng.range(0, keyspace));
                let is_get = match mode_n {
                    0 => false,
                    1 => true,
                    _ => rng.chance(0.5),
                };
                let start = Instant::now();
                let ok = if is_get {
                    clerk.get(key.clone()).await.is_ok()
                } else {
                    clerk.put(key.clone(), value.clone(), None).await.is_ok()
                };
                let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if shared.measuring.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed)
                {
                    if ok {
                        shared.ops.fetch_add(1, Ordering::Relaxed);
                        lat.push(us);
                    } else {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = tx.send(Ok(lat));
        }));
    }
    drop(tx);
    let abort_all = |hs: &Vec<tokio::task::JoinHandle<()>>| {
        for h in hs {
            h.abort();
        }
    };
    // Warm-up, then measure.
    let wait_until = |py: Python<'_>, until: Instant| -> PyResult<()> {
        while Instant::now() < until {
            let left = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            py.allow_threads(|| std::thread::sleep(left));
            py.check_signals()?;
        }
        Ok(())
    };
    // The preload (get and mixed modes) is not part of the warm-up.
    while shared.ready.load(Ordering::SeqCst) < clients as u64 {
        if let Err(e) = wait_until(py, Instant::now() + Duration::from_millis(20)) {
            shared.stop.store(true, Ordering::SeqCst);
            abort_all(&handles);
            return Err(e);
        }
    }
    let started = Instant::now();
    if let Err(e) = wait_until(py, started + warmup_d) {
        shared.stop.store(true, Ordering::SeqCst);
        abort_all(&handles);
        return Err(e);
    }
    shared.measuring.store(true, Ordering::SeqCst);
    let measure_start = Instant::now();
    let end = measure_start + seconds_d;
    let mut next_report = measure_start + interval_d;
    while Instant::now() < end {
        let until = next_report.min(end);
        if let Err(e) = wait_until(py, until) {
            shared.stop.store(true, Ordering::SeqCst);
            abort_all(&handles);
            return Err(e);
        }
        if let Some(p) = &progress {
            if Instant::now() >= next_report {
                p.call1((
                    measure_start.elapsed().as_secs_f64(),
                    shared.ops.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed),
                ))?;
            }
        }
        next_report += interval_d;
    }
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = measure_start.elapsed().as_secs_f64();
    let ops = shared.ops.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    // Collect the latencies (clients finish their current operation: at most `timeout`).
    let mut lat: Vec<u32> = Vec::new();
    let mut failures = Vec::new();
    let deadline = Instant::now() + config.timeout + Duration::from_secs(2);
    let mut got = 0;
    let mut rx = rx;
    while got < clients && Instant::now() < deadline {
        let (r, back) = py.allow_threads(move || {
            let r = rx.recv_timeout(Duration::from_millis(100));
            (r, rx)
        });
        rx = back;
        match r {
            Ok(Ok(v)) => {
                got += 1;
                lat.extend(v);
            }
            Ok(Err(e)) => {
                got += 1;
                failures.push(e);
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    abort_all(&handles);
                    return Err(e);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    abort_all(&handles);
    if failures.len() == clients {
        return Err(Timeout::new_err(format!("bench: {}", failures[0])));
    }
    lat.sort_unstable();
    let pct = |q: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as u64
    };
    let d = PyDict::new(py);
    d.set_item("ops", ops)?;
    d.set_item("seconds", elapsed)?;
    d.set_item(
        "ops_per_s",
        if elapsed > 0.0 {
            ops as f64 / elapsed
        } else {
            0.0
        },
    )?;
    d.set_item("errors", errors + failures.len() as u64)?;
    let l = PyDict::new(py);
    l.set_item("p50", pct(0.50))?;
    l.set_item("p99", pct(0.99))?;
    l.set_item("p999", pct(0.999))?;
    d.set_item("lat_us", l)?;
    Ok(d)
}

// ------------------------------------------------------------------------------------------
// the module
// ------------------------------------------------------------------------------------------

#[pymodule]
fn _raftkv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("KeyNotFound", py.get_type::<KeyNotFound>())?;
    m.add("VersionMismatch", py.get_type::<VersionMismatch>())?;
    m.add("MaybeApplied", py.get_type::<MaybeApplied>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("TooLarge", py.get_type::<TooLarge>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    m.add("HistoryError", py.get_type::<HistoryError>())?;
    m.add_class::<History>()?;
    m.add_class::<CheckOutcome>()?;
    m.add_class::<Clerk>()?;
    m.add_class::<LocalCluster>()?;
    m.add_class::<Node>()?;
    m.add_function(wrap_pyfunction!(check_linearizable, m)?)?;
    m.add_function(wrap_pyfunction!(check_file, m)?)?;
    m.add_function(wrap_pyfunction!(run_bench, m)?)?;
    Ok(())
}
