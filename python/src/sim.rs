//! `SimCluster` and its `SimClerk`: a KV cluster on the deterministic simulator
//! (`raftkv_node::sim`), in virtual time, with `LocalCluster`'s fault API.
//!
//! One lock guards the simulation: every call (a fault, `run_for`, a Clerk's operation) holds
//! it while the simulation runs, with the GIL released. Calls from one thread in the same
//! order replay exactly; calls from several threads interleave as the threads happen to.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use raftkv_kv::clerk::ClerkError;
use raftkv_kv::history::History as RHistory;
use raftkv_node::cluster::ClusterError as RClusterError;
use raftkv_node::sim::{
    SimClerk as RClerk, SimCluster as RSim, SimConfig, Workload, SIM_CLIENTS_MAX, SIM_KEYS_MAX,
    SIM_NODES_MAX, SIM_RUN_MAX,
};
use raftkv_node::trace::TRACE_EVENTS_MAX_LIMIT;

use crate::clerk::clerk_config;
use crate::convert::{duration, status_dict, to_bytes, version_arg};
use crate::errors::{clerk_err, cluster_err, ClusterError};
use crate::history::History;
use crate::trace::Trace;

type Shared = Arc<Mutex<Option<RSim>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed() -> PyErr {
    ClusterError::new_err(
        "the simulation is closed (close() was called, or the with block ended); start a new \
         SimCluster",
    )
}

/// Runs `f` on the open simulation with the GIL released.
fn with_sim<T: Send>(
    py: Python<'_>,
    sim: &Shared,
    f: impl FnOnce(&mut RSim) -> Result<T, RClusterError> + Send,
) -> PyResult<T> {
    let out = py.allow_threads(|| lock(sim).as_mut().map(f));
    match out {
        None => Err(closed()),
        Some(r) => r.map_err(cluster_err),
    }
}

/// Virtual seconds as a duration, at most a day.
fn virtual_seconds(seconds: f64, what: &str) -> PyResult<std::time::Duration> {
    let d = duration(seconds, what)?;
    if d > SIM_RUN_MAX {
        return Err(PyValueError::new_err(format!(
            "{what} must be at most {} s of virtual time, not {seconds}",
            SIM_RUN_MAX.as_secs()
        )));
    }
    Ok(d)
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

/// A deterministic simulated cluster: the real node code (Raft driver, KV state machine and
/// service, the Clerk's retries) on the simulation runtime, in virtual time.
///
/// `SimCluster(n=3, seed=None, trace_events_max=200000)`: `seed` None picks one (read it back
/// from `seed` to replay the run). The same seed and the same calls in the same order give
/// the same run, byte for byte: history, trace and verdict. Nothing runs between calls:
/// `run_for(seconds)` advances virtual time, a Clerk's blocking get/put/append/delete runs
/// the cluster until it is answered (or its timeout passes, in virtual time), and faults
/// (`crash`, `restart`, `partition`, `isolate`, `heal`, `set_unreliable`, `set_reliable`,
/// `pause`, `resume`, `block`, `unblock`) take effect at once. Nodes are numbered 0..n-1 as in LocalCluster. Use it as a context
/// manager, or call close().
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct SimCluster {
    sim: Shared,
    n: usize,
    seed: u64,
}

#[pymethods]
impl SimCluster {
    #[new]
    #[pyo3(signature = (n=3, seed=None, trace_events_max=200000))]
    fn new(py: Python<'_>, n: i64, seed: Option<u64>, trace_events_max: usize) -> PyResult<Self> {
        if !(1..=SIM_NODES_MAX as i64).contains(&n) {
            return Err(PyValueError::new_err(format!(
                "a cluster needs 1 to {SIM_NODES_MAX} nodes, not {n}"
            )));
        }
        if trace_events_max > TRACE_EVENTS_MAX_LIMIT {
            return Err(PyValueError::new_err(format!(
                "trace_events_max must be at most {TRACE_EVENTS_MAX_LIMIT}, not {trace_events_max}"
            )));
        }
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let mut config = SimConfig::new(n as usize, seed);
        config.trace_events_max = trace_events_max;
        let sim = py
            .allow_threads(move || RSim::start(config))
            .map_err(cluster_err)?;
        Ok(Self {
            sim: Arc::new(Mutex::new(Some(sim))),
            n: n as usize,
            seed,
        })
    }

    /// The seed: the same seed and calls replay the same run.
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of nodes.
    #[getter]
    fn n(&self) -> usize {
        self.n
    }

    fn __len__(&self) -> usize {
        self.n
    }

    /// The nodes' simulated client addresses, index = node ("n1", "n2", ...).
    #[getter]
    fn addrs(&self) -> Vec<String> {
        (1..=self.n).map(|i| format!("n{i}")).collect()
    }

    /// Virtual time since the start, in seconds.
    #[getter]
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        with_sim(py, &self.sim, |s| Ok(s.now().as_secs_f64()))
    }

    /// Advances virtual time by `seconds` (at most a day); the cluster runs meanwhile.
    /// Ctrl-C interrupts it between virtual seconds.
    fn run_for(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let mut left = virtual_seconds(seconds, "seconds")?;
        // In steps of one virtual second, always the same (a run replays), to check signals.
        while !left.is_zero() {
            let step = left.min(std::time::Duration::from_secs(1));
            with_sim(py, &self.sim, move |s| s.run_for(step))?;
            left -= step;
            py.check_signals()?;
        }
        Ok(())
    }

    /// Whether node i is running (not crashed).
    fn is_running(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| Ok(s.is_running(i)))
    }

    /// Stops node i at once: what its disk had not made durable is lost, the rest stays.
    fn crash(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| s.crash(i))
    }

    /// Starts node i again from its durable state.
    fn restart(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| s.restart(i))
    }

    /// `partition([0, 1], [2])`: groups of nodes that can talk only within themselves (Raft
    /// traffic; clients reach every node). Nodes in no group are cut off from everyone.
    #[pyo3(signature = (*groups))]
    fn partition(&self, py: Python<'_>, groups: Vec<Vec<i64>>) -> PyResult<()> {
        let gs = groups
            .into_iter()
            .map(|g| g.into_iter().map(|i| node_index(i, self.n)).collect())
            .collect::<PyResult<Vec<Vec<usize>>>>()?;
        with_sim(py, &self.sim, move |s| s.partition(&gs))
    }

    /// Cuts node i off from every other node.
    fn isolate(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| s.isolate(i))
    }

    /// Full connectivity again (unreliability set by set_unreliable stays).
    fn heal(&self, py: Python<'_>) -> PyResult<()> {
        with_sim(py, &self.sim, |s| s.heal())
    }

    /// Raft messages are dropped with probability `drop` and delayed by a uniform time in
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
        if delay_ms.0.max(delay_ms.1) > 60_000 {
            return Err(PyValueError::new_err(format!(
                "delay_ms must be at most 60000 ms, not {delay_ms:?}"
            )));
        }
        with_sim(py, &self.sim, move |s| {
            s.set_unreliable(drop, delay_ms, reorder)
        })
    }

    /// Reliable Raft traffic again.
    fn set_reliable(&self, py: Python<'_>) -> PyResult<()> {
        with_sim(py, &self.sim, |s| s.set_reliable())
    }

    /// Pauses node i, as SIGSTOP does a process: it keeps its state but handles nothing
    /// (Raft messages, client requests, timers) until resume(i); then it handles what arrived
    /// meanwhile, late. status(i) of a paused node raises ClusterError; crash(i) works.
    fn pause(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| s.pause(i))
    }

    /// Resumes node i (paused or not).
    fn resume(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| s.resume(i))
    }

    /// Whether node i is running and paused.
    fn is_paused(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = node_index(i, self.n)?;
        with_sim(py, &self.sim, move |s| Ok(s.is_paused(i)))
    }

    /// A one-way partition: Raft messages from node `from_i` to node `to_i` are dropped, while
    /// `to_i`'s still reach `from_i`; until unblock(from_i, to_i), heal() or partition().
    fn block(&self, py: Python<'_>, from_i: i64, to_i: i64) -> PyResult<()> {
        let (from, to) = (node_index(from_i, self.n)?, node_index(to_i, self.n)?);
        with_sim(py, &self.sim, move |s| s.block(from, to))
    }

    /// Lets Raft messages from node `from_i` to node `to_i` through again.
    fn unblock(&self, py: Python<'_>, from_i: i64, to_i: i64) -> PyResult<()> {
        let (from, to) = (node_index(from_i, self.n)?, node_index(to_i, self.n)?);
        with_sim(py, &self.sim, move |s| s.unblock(from, to))
    }

    /// Node i's status: the dict of LocalCluster.status (index, id, raft_id, role, term,
    /// leader, leader_raft_id, commit_index, applied_index, first_index, last_index,
    /// snapshot_index, persisted_index, voters, learners, removed). Raises
    /// raftkv.ClusterError if node i is not running.
    fn status<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyDict>> {
        let i = node_index(i, self.n)?;
        let s = with_sim(py, &self.sim, move |sim| sim.status(i))?;
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
    /// the leader has it (else the first running node). Raises raftkv.ClusterError if no node
    /// runs.
    fn members<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = with_sim(py, &self.sim, |s| {
            let at = match s.leader()? {
                Some(l) => l,
                None => (0..s.len())
                    .find(|&i| s.is_running(i))
                    .ok_or(RClusterError::NotRunning { index: 0 })?,
            };
            Ok(s.status(at)?.membership)
        })?;
        let index = |id: &u64| (*id - 1) as usize;
        let d = PyDict::new(py);
        d.set_item(
            "voters",
            m.all_voters().iter().map(index).collect::<Vec<_>>(),
        )?;
        d.set_item(
            "learners",
            m.learners().iter().map(index).collect::<Vec<_>>(),
        )?;
        Ok(d)
    }

    /// The index of the leader of the highest term among running nodes, or None.
    fn leader(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        with_sim(py, &self.sim, |s| s.leader())
    }

    /// Runs the cluster until some node leads (at most `timeout` virtual seconds); returns its
    /// index. Raises raftkv.Timeout.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_leader(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let t = virtual_seconds(timeout, "timeout")?;
        with_sim(py, &self.sim, move |s| s.wait_leader(t))
    }

    /// A Clerk of this cluster, recording into `history` (in virtual nanoseconds) if given.
    /// Its blocking calls run the simulation; `timeout` is in virtual seconds.
    #[pyo3(signature = (history=None, timeout=10.0))]
    fn clerk(
        &self,
        py: Python<'_>,
        history: Option<PyRef<'_, History>>,
        timeout: f64,
    ) -> PyResult<SimClerk> {
        virtual_seconds(timeout, "timeout")?;
        let config = clerk_config(timeout)?;
        let h = history.map(|h| h.inner.clone());
        let clerk = with_sim(py, &self.sim, move |s| s.clerk(config, h.as_ref()))?;
        Ok(SimClerk {
            sim: self.sim.clone(),
            clerk: Arc::new(Mutex::new(Some(clerk))),
            timeout,
        })
    }

    /// Everything recorded since the start: every node's events and the faults, in virtual
    /// microseconds (the format of LocalCluster.trace(); visualize_trace replays it).
    fn trace(&self, py: Python<'_>) -> PyResult<Trace> {
        let t = with_sim(py, &self.sim, |s| Ok(s.trace()))?;
        Ok(Trace { inner: Arc::new(t) })
    }

    /// Runs `clients` concurrent Clerks (recording into `history`, a new one if None) doing
    /// random gets, puts, conditional puts, appends and deletes on `keys` keys for `seconds`
    /// of virtual time, with (unless `faults` is False) a fault every 0.5 to 2.5 s drawn from
    /// the seed: crashes (a majority stays up), restarts, partitions, the leader isolated, an
    /// unreliable network. Then heals everything, restarts crashed nodes and waits for each
    /// client's last operation (`timeout`: each operation's, virtual seconds). Returns a dict:
    /// ok, failed (operations), faults (a list of "12.345 s: crash node 1"), seconds (virtual
    /// time now) and history.
    #[pyo3(signature = (seconds=60.0, clients=4, keys=4, faults=true, history=None, timeout=5.0))]
    #[allow(clippy::too_many_arguments)]
    fn run_workload<'py>(
        &self,
        py: Python<'py>,
        seconds: f64,
        clients: usize,
        keys: usize,
        faults: bool,
        history: Option<Py<History>>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        if clients == 0 || clients > SIM_CLIENTS_MAX {
            return Err(PyValueError::new_err(format!(
                "clients must be 1 to {SIM_CLIENTS_MAX}, not {clients}"
            )));
        }
        if keys == 0 || keys > SIM_KEYS_MAX {
            return Err(PyValueError::new_err(format!(
                "keys must be 1 to {SIM_KEYS_MAX}, not {keys}"
            )));
        }
        let workload = Workload {
            duration: virtual_seconds(seconds, "seconds")?,
            clients,
            keys,
            faults,
            clerk_timeout: virtual_seconds(timeout, "timeout")?,
        };
        if workload.clerk_timeout.is_zero() {
            return Err(PyValueError::new_err("timeout must be positive"));
        }
        let history = match history {
            Some(h) => h,
            None => Py::new(
                py,
                History {
                    inner: RHistory::new(),
                },
            )?,
        };
        let h = history.get().inner.clone();
        let (report, now) = with_sim(py, &self.sim, move |s| {
            let report = s.run_workload(&workload, &h)?;
            Ok((report, s.now().as_secs_f64()))
        })?;
        let d = PyDict::new(py);
        d.set_item("ok", report.ok)?;
        d.set_item("failed", report.failed)?;
        d.set_item("faults", report.faults)?;
        d.set_item("seconds", now)?;
        d.set_item("history", history)?;
        Ok(d)
    }

    /// Stops every node and task of the simulation. Idempotent.
    fn close(&self, py: Python<'_>) {
        let sim = self.sim.clone();
        py.allow_threads(move || lock(&sim).take());
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.sim).is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("SimCluster(n={}, seed={})", self.n, self.seed)
    }
}

/// A client of a SimCluster (`SimCluster.clerk()`): the methods, answers and exceptions of
/// Clerk; each blocking call runs the simulation until it is answered or its timeout passes
/// (virtual seconds).
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct SimClerk {
    sim: Shared,
    /// `None` while one of its operations runs.
    clerk: Arc<Mutex<Option<RClerk>>>,
    timeout: f64,
}

impl SimClerk {
    /// Runs `op` on the Clerk inside the simulation; `key` names the key in errors.
    fn run<T, Fut>(
        &self,
        py: Python<'_>,
        key: &Bytes,
        op: impl FnOnce(RClerk) -> Fut + Send,
    ) -> PyResult<T>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = (RClerk, Result<T, ClerkError>)> + Send + 'static,
    {
        let (sim, slot) = (self.sim.clone(), self.clerk.clone());
        let out = py.allow_threads(move || {
            let mut slot = lock(&slot);
            let clerk = slot.take()?;
            let mut sim = lock(&sim);
            let sim = sim.as_mut()?;
            Some(sim.run_clerk(clerk, op).map(|(clerk, r)| {
                *slot = Some(clerk);
                r
            }))
        });
        match out {
            None => Err(closed()),
            Some(Err(e)) => Err(cluster_err(e)),
            Some(Ok(r)) => r.map_err(|e| clerk_err(e, Some(key))),
        }
    }
}

#[pymethods]
impl SimClerk {
    /// Reads `key`: returns (value: bytes, version: int). Raises raftkv.KeyNotFound.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<(Py<PyBytes>, u64)> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        let (value, version) = self.run(py, &key, move |mut c| async move {
            let r = c.get(k).await;
            (c, r)
        })?;
        Ok((PyBytes::new(py, &value).unbind(), version))
    }

    /// Writes `value` under `key`; returns the new version. With `version=N`, only if the
    /// key's current version is N (0: the key must not exist); raises raftkv.VersionMismatch
    /// if not applied, raftkv.MaybeApplied when a retry cannot tell.
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
        let version = version_arg(version)?;
        let k = key.clone();
        self.run(py, &key, move |mut c| async move {
            let r = c.put(k, value, version).await;
            (c, r)
        })
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
        let k = key.clone();
        self.run(py, &key, move |mut c| async move {
            let r = c.append(k, value).await;
            (c, r)
        })
    }

    /// Deletes `key`. Raises raftkv.KeyNotFound if it does not exist.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        self.run(py, &key, move |mut c| async move {
            let r = c.delete(k).await;
            (c, r)
        })
    }

    /// The per-operation timeout, in virtual seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }

    /// Does nothing, for symmetry with Clerk.
    fn close(&self) {}

    fn __repr__(&self) -> String {
        format!("SimClerk(timeout={})", self.timeout)
    }
}
