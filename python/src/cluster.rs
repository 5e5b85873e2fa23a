//! `LocalCluster`: n nodes in this process over real TCP on 127.0.0.1, with faults.
//!
//! Nodes are named by their index 0..n-1 (the position in `addrs`), everywhere in this class;
//! node index `i` has Raft id `i + 1`. `status(i)` reports both (`index`, and `id`/`raft_id`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use raftkv_node::cluster::{ClusterConfig, LocalCluster as RCluster, StorageKind};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;

use crate::clerk::{clerk_config, AnyClerk, Clerk};
use crate::convert::{duration, status_dict};
use crate::errors::{ce, cluster_err, ClusterError};
use crate::history::History;
use crate::runtime::{block_on, tokio_runtime};
use crate::trace::{spawn_leader_watch, Trace};
use raftkv_node::trace::{TRACE_EVENTS_MAX_DEFAULT, TRACE_EVENTS_MAX_LIMIT};

// The signature of `LocalCluster.__new__` (and the stub) spell the default out.
const _: () = assert!(TRACE_EVENTS_MAX_DEFAULT == 200_000);

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
/// snapshot_threshold=None, request_timeout=2.0, data_bytes_max=None, trace_events_max=200000,
/// state="memory", lease_reads=False, follower_reads=False, trailing_log=None)`: storage "memory" |
/// "lmdb" (lmdb with data_dir None: a temporary directory, removed on close); runtime "tokio" |
/// "smol". `data_bytes_max` bounds each node's data (512 MiB by default; 8 GiB with state
/// "lmdb"): a write that would take it past is refused with `StoreFull`. `state` "memory" (the
/// default) | "lmdb" (with storage "lmdb": each node's KV state in LMDB, see `Node`).
/// `lease_reads` and `follower_reads` turn on leader leases and reads served by followers on
/// every node (see `Node`); a Clerk from `clerk(read_from="any")` spreads its gets over the
/// nodes. `trailing_log`: log entries kept before where a compaction would go, so that a node
/// a little behind catches up from the log instead of a whole-state snapshot (see `Node`).
/// Use it as a context manager, or
/// call close(): it stops every node and releases every port, thread and temporary directory.
/// Nodes are numbered 0..n-1 (index = position in `addrs`).
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct LocalCluster {
    slot: ClusterSlot,
    /// Client addresses by index; grows with `add_node`.
    addrs: std::sync::Mutex<Vec<String>>,
    runtime: String,
    storage: String,
    data_dir: Option<PathBuf>,
}

/// Issue 20: `trailing_log` if it is at most [`raftkv_raft::TRAILING_LOG_ENTRIES_MAX`], else a
/// `ValueError` that says so.
pub(crate) fn trailing_log_checked(trailing_log: Option<u64>) -> PyResult<Option<u64>> {
    match trailing_log {
        Some(t) if t > raftkv_raft::TRAILING_LOG_ENTRIES_MAX => {
            Err(PyValueError::new_err(format!(
                "trailing_log must be at most {}, not {t}",
                raftkv_raft::TRAILING_LOG_ENTRIES_MAX
            )))
        }
        t => Ok(t),
    }
}

/// `data_bytes_max` if it is in range for a node whose KV state is kept as `state` (1 to
/// 512 MiB in memory, 1 to 8 GiB in LMDB), else a `ValueError` that says so; `None`: that
/// state's default (512 MiB, 8 GiB).
pub(crate) fn data_bytes_max_checked(
    bytes_max: Option<u64>,
    state: raftkv_node::kv_state::StateKind,
) -> PyResult<u64> {
    let Some(bytes_max) = bytes_max else {
        return Ok(raftkv_node::storage::data_bytes_max_default_for(state));
    };
    let limit = raftkv_node::storage::data_bytes_max_limit_for(state);
    if bytes_max == 0 || bytes_max > limit {
        return Err(PyValueError::new_err(format!(
            "data_bytes_max must be 1 to {limit} bytes with state \"{state}\", not {bytes_max}"
        )));
    }
    Ok(bytes_max)
}

fn not_open() -> PyErr {
    ClusterError::new_err(
        "the cluster is closed (close() was called, or the with block ended); start a new \
         LocalCluster",
    )
}

impl LocalCluster {
    /// The number of node indexes handed out (added nodes and removed ones included).
    fn count(&self) -> usize {
        self.addrs_now().len()
    }

    fn addrs_now(&self) -> Vec<String> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

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
    #[pyo3(signature = (n=3, storage="lmdb", data_dir=None, runtime="tokio", seed=None, snapshot_threshold=None, request_timeout=2.0, data_bytes_max=None, trace_events_max=200000, state="memory", lease_reads=false, follower_reads=false, trailing_log=None))]
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
        data_bytes_max: Option<u64>,
        trace_events_max: usize,
        state: &str,
        lease_reads: bool,
        follower_reads: bool,
        trailing_log: Option<u64>,
    ) -> PyResult<Self> {
        let state: raftkv_node::kv_state::StateKind =
            state
                .parse()
                .map_err(|e: raftkv_node::cluster::ClusterError| {
                    PyValueError::new_err(e.to_string())
                })?;
        if state == raftkv_node::kv_state::StateKind::Lmdb && storage != "lmdb" {
            return Err(PyValueError::new_err(
                "state \"lmdb\" needs storage \"lmdb\"",
            ));
        }
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
        config.state = state;
        config.lease_reads = lease_reads;
        config.follower_reads = follower_reads;
        config.data_dir = data_dir.clone();
        config.seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        config.snapshot_threshold = snapshot_threshold;
        config.trailing_log = trailing_log_checked(trailing_log)?;
        config.request_timeout = duration(request_timeout, "request_timeout")?;
        config.data_bytes_max = data_bytes_max_checked(data_bytes_max, state)?;
        if trace_events_max > TRACE_EVENTS_MAX_LIMIT {
            return Err(PyValueError::new_err(format!(
                "trace_events_max must be at most {TRACE_EVENTS_MAX_LIMIT}, not {trace_events_max}"
            )));
        }
        config.trace_events_max = trace_events_max;
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
            addrs: std::sync::Mutex::new(addrs),
            runtime: runtime.to_string(),
            storage: storage.to_string(),
            data_dir,
        })
    }

    /// Client addresses "127.0.0.1:PORT", index = node.
    #[getter]
    fn addrs(&self) -> Vec<String> {
        self.addrs_now()
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

    /// Number of node indexes (crashed, added and removed nodes count too).
    fn __len__(&self) -> usize {
        self.count()
    }

    /// Number of node indexes: as given, plus the nodes added since (crashed and removed ones
    /// count too). Nodes are indexes 0..n-1; an index is never reused.
    #[getter]
    fn n(&self) -> usize {
        self.count()
    }

    /// The async runtime the nodes run on: "tokio" or "smol".
    #[getter]
    fn runtime(&self) -> String {
        self.runtime.clone()
    }

    /// The nodes' storage: "lmdb" (on disk, under data_dir) or "memory".
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
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.node_dir(i))) })
        })
    }

    /// Whether node i is running (not crashed).
    fn is_running(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = node_index(i, self.count())?;
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

    /// Node i's status: a dict with index and id (both the node index i), raft_id (i + 1),
    /// role ("leader", "follower", "candidate", "pre-candidate"), term, leader (node index or
    /// None), leader_raft_id (Raft id or None), commit_index, applied_index, first_index,
    /// last_index, snapshot_index, persisted_index; voters and learners (node indexes, as this
    /// node's configuration has them) and removed (True once the node learned it is no longer
    /// a member). Raises raftkv.ClusterError if node i is not running (or was removed: it is
    /// stopped).
    fn status<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyDict>> {
        let i = node_index(i, self.count())?;
        let s = self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.status(i).await)) })
        })?;
        let d = status_dict(py, &s, Some(1))?;
        let index = |id: &u64| (*id - 1) as usize;
        let voters: Vec<usize> = s.membership.all_voters().iter().map(index).collect();
        let learners: Vec<usize> = s.membership.learners().iter().map(index).collect();
        d.set_item("voters", voters)?;
        d.set_item("learners", learners)?;
        d.set_item("removed", s.removed)?;
        Ok(d)
    }

    /// The configuration in effect, by node index: {"voters": [...], "learners": [...]}, as
    /// the leader has it (else the running node with the newest log).
    fn members<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.run(py, |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.members().await)) })
        })?;
        let d = PyDict::new(py);
        d.set_item("voters", m.voters)?;
        d.set_item("learners", m.learners)?;
        Ok(d)
    }

    /// Starts a new node (the next index; indexes are never reused), adds it as a learner,
    /// waits until it has caught up and then, unless `learner`, until it is promoted to voter.
    /// Returns its index. Raises raftkv.Timeout if that takes longer than `timeout` seconds,
    /// raftkv.MembershipError if the cluster refuses.
    #[pyo3(signature = (learner=false, timeout=30.0))]
    fn add_node(&self, py: Python<'_>, learner: bool, timeout: f64) -> PyResult<usize> {
        let t = duration(timeout, "timeout")?;
        let (result, addrs) = self.run(py, move |c| {
            Box::pin(async move {
                with_cluster!(c, c => {
                    let result = c.add_node(learner, t).await;
                    // The node's index is taken even if it did not catch up in time.
                    Ok((result.map_err(cluster_err), c.addrs()))
                })
            })
        })?;
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
        result
    }

    /// Learner i becomes a voter. Raises raftkv.MembershipError if the cluster refuses,
    /// raftkv.Timeout after `timeout` seconds.
    #[pyo3(signature = (i, timeout=30.0))]
    fn promote(&self, py: Python<'_>, i: i64, timeout: f64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        let t = duration(timeout, "timeout")?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.promote(i, t).await)) })
        })
    }

    /// Takes node i out of the configuration (the leader too: it hands leadership over
    /// first), then stops it for good; its index is not reused. Raises
    /// raftkv.MembershipError if the cluster refuses (the last voter, say), raftkv.Timeout
    /// after `timeout` seconds.
    #[pyo3(signature = (i, timeout=30.0))]
    fn remove_node(&self, py: Python<'_>, i: i64, timeout: f64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        let t = duration(timeout, "timeout")?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.remove_node(i, t).await)) })
        })
    }

    /// Hands leadership to voter i; returns once i leads. Raises raftkv.MembershipError if i
    /// is not a voter, raftkv.Timeout after `timeout` seconds.
    #[pyo3(signature = (i, timeout=5.0))]
    fn transfer_leader(&self, py: Python<'_>, i: i64, timeout: f64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        let t = duration(timeout, "timeout")?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.transfer_leader(i, t).await)) })
        })
    }

    /// Stops node i abruptly; its durable state stays.
    fn crash(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.crash(i).await)) })
        })
    }

    /// Starts node i again from its durable state, on the same addresses.
    fn restart(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
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
                    .map(|i| node_index(i, self.count()))
                    .collect::<PyResult<Vec<usize>>>()?,
            );
        }
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.partition(&gs))) })
        })
    }

    /// Cuts node i off from every other node.
    fn isolate(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
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

    /// Peer messages are dropped with probability `drop`, delayed by a uniform time in
    /// `delay_ms` = (min, max) milliseconds (reordering them when `reorder`), and sent twice
    /// with probability `duplicate`.
    #[pyo3(signature = (drop=0.1, delay_ms=(0, 27), reorder=true, duplicate=0.0))]
    fn set_unreliable(
        &self,
        py: Python<'_>,
        drop: f64,
        delay_ms: (u64, u64),
        reorder: bool,
        duplicate: f64,
    ) -> PyResult<()> {
        for (name, p) in [("drop", drop), ("duplicate", duplicate)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(PyValueError::new_err(format!(
                    "{name} must be a probability in [0, 1], not {p}"
                )));
            }
        }
        self.run(py, move |c| {
            Box::pin(async move {
                with_cluster!(c, c => {
                    c.set_unreliable(drop, delay_ms, reorder);
                    c.set_duplicate_probability(duplicate);
                });
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

    /// A Clerk connected to every node, recording into `history` if given. `read_from`:
    /// "leader" (the default) or "any" (each get to a node drawn at random; with
    /// `follower_reads` on, a follower answers it linearizably).
    #[pyo3(signature = (history=None, timeout=10.0, read_from="leader"))]
    fn clerk(
        &self,
        py: Python<'_>,
        history: Option<PyRef<'_, History>>,
        timeout: f64,
        read_from: &str,
    ) -> PyResult<Clerk> {
        let mut config = clerk_config(timeout)?;
        config.read_from = crate::clerk::read_from(read_from)?;
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
        Ok(Clerk::wrap(c, self.addrs_now(), timeout))
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
            self.count(),
            self.storage,
            self.runtime,
            self.addrs_now()
        )
    }

    // ---- the trace (issue 18) ----

    /// Everything recorded since the cluster started: every node's events and the cluster's
    /// faults (empty when started with trace_events_max=0). A copy: it does not grow.
    fn trace(&self, py: Python<'_>) -> PyResult<Trace> {
        let t = self.run(py, |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.trace())) })
        })?;
        Ok(Trace { inner: Arc::new(t) })
    }

    /// Node i's metrics in the Prometheus (OpenMetrics) text format (see Node.metrics);
    /// counted across its restarts.
    fn metrics(&self, py: Python<'_>, i: i64) -> PyResult<String> {
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.metrics(i))) })
        })
    }

    /// Calls `callback(index, term)` from a background thread each time the cluster's leader
    /// changes (`index` None: no running node leads; `term`: the leader's, else the highest
    /// seen), first with the leader now. Driven by the nodes' trace events, not by polling;
    /// stops when the cluster is closed. An exception in the callback is reported through
    /// sys.unraisablehook. Needs the trace (not trace_events_max=0).
    fn on_leader_change(&self, py: Python<'_>, callback: PyObject) -> PyResult<()> {
        if !callback.bind(py).is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "on_leader_change needs a callable: callback(index, term)",
            ));
        }
        let changes = self.run(py, |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.leader_changes())) })
        })?;
        let changes = changes.ok_or_else(|| {
            ClusterError::new_err(
                "the cluster was started with trace_events_max=0: leader changes are followed \
                 through the trace",
            )
        })?;
        spawn_leader_watch(changes, callback)
    }

    // ---- process pauses and one-way partitions (issue 21) ----

    /// Pauses node i, as SIGSTOP does a process: it keeps its state, sockets and connections
    /// but handles nothing (peer messages, client requests, timers) until resume(i); then it
    /// handles what arrived meanwhile, late. status(i) of a paused node raises ClusterError;
    /// crash(i) works.
    fn pause(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.pause(i))) })
        })
    }

    /// Resumes node i (paused or not): it handles what arrived while it was paused.
    fn resume(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.resume(i))) })
        })
    }

    /// Whether node i is running and paused.
    fn is_paused(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = node_index(i, self.count())?;
        self.run(py, move |c| {
            Box::pin(async move { Ok(with_cluster!(c, c => c.is_paused(i))) })
        })
    }

    /// A one-way partition: peer messages from node `from_i` to node `to_i` are dropped,
    /// while `to_i`'s still reach `from_i`. Stays until unblock(from_i, to_i), heal() or
    /// partition().
    fn block(&self, py: Python<'_>, from_i: i64, to_i: i64) -> PyResult<()> {
        let (from, to) = (
            node_index(from_i, self.count())?,
            node_index(to_i, self.count())?,
        );
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.block(from, to))) })
        })
    }

    /// Lets peer messages from node `from_i` to node `to_i` through again.
    fn unblock(&self, py: Python<'_>, from_i: i64, to_i: i64) -> PyResult<()> {
        let (from, to) = (
            node_index(from_i, self.count())?,
            node_index(to_i, self.count())?,
        );
        self.run(py, move |c| {
            Box::pin(async move { ce(with_cluster!(c, c => c.unblock(from, to))) })
        })
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
