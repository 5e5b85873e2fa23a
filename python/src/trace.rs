//! `Trace` (a cluster's recorded events, `LocalCluster.trace()`), `visualize_trace` (its
//! animated replay page) and the thread behind `LocalCluster.on_leader_change`.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use raftkv_node::replay::replay_html;
use raftkv_node::trace::{ClusterTrace, LeaderChange, TraceError};

/// A cluster's trace: every node's events (roles, votes, appends, commits, applies, messages,
/// snapshots, membership) and the cluster's faults, oldest first (see docs/trace-json.md).
///
/// `events`: a list of dicts (`t_us`, `node` (a Raft id; node index + 1), `type`, ...);
/// `to_json()`, `save(path)`, `Trace.load(path)`, `Trace.from_json(text)`; `len(trace)`.
/// `dropped` counts the oldest events dropped to keep at most `events_max`.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct Trace {
    pub(crate) inner: Arc<ClusterTrace>,
}

fn trace_err(e: TraceError) -> PyErr {
    match e {
        TraceError::Io(io) => PyOSError::new_err(format!("trace file: {io}")),
        other => PyValueError::new_err(other.to_string()),
    }
}

#[pymethods]
impl Trace {
    /// The events, oldest first, as dicts (the JSON objects of docs/trace-json.md).
    #[getter]
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = serde_json::to_string(&self.inner.events)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (json,))
    }

    /// Raft ids of the cluster's nodes (node index i is nodes[i]).
    #[getter]
    fn nodes(&self) -> Vec<u64> {
        self.inner.nodes.clone()
    }

    /// How many of the oldest events were dropped to stay within `events_max`.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped
    }

    /// The recorder's bound on events.
    #[getter]
    fn events_max(&self) -> usize {
        self.inner.events_max
    }

    /// The trace as JSON text (docs/trace-json.md).
    fn to_json(&self, py: Python<'_>) -> String {
        let inner = self.inner.clone();
        py.allow_threads(move || inner.to_json())
    }

    /// Writes the JSON to `path`.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = self.inner.clone();
        py.allow_threads(move || inner.save(&path))
            .map_err(trace_err)
    }

    /// A trace read from a file written by `save`. Raises ValueError if it is not a raftkv
    /// trace (or of another format version), OSError if it cannot be read.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let trace = py
            .allow_threads(move || ClusterTrace::load(&path))
            .map_err(trace_err)?;
        Ok(Self {
            inner: Arc::new(trace),
        })
    }

    /// A trace read from JSON text (as `to_json` writes it). Raises ValueError if it is not a
    /// raftkv trace.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: String) -> PyResult<Self> {
        let trace = py
            .allow_threads(move || ClusterTrace::from_json(&text))
            .map_err(trace_err)?;
        Ok(Self {
            inner: Arc::new(trace),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.events.len()
    }

    fn __repr__(&self) -> String {
        let t = &self.inner;
        let seconds = match (t.events.first(), t.events.last()) {
            (Some(a), Some(b)) => (b.t_us - a.t_us.min(b.t_us)) as f64 / 1e6,
            _ => 0.0,
        };
        format!(
            "Trace(nodes={:?}, events={}, seconds={seconds:.1}, dropped={})",
            t.nodes,
            t.events.len(),
            t.dropped
        )
    }
}

/// Writes the animated replay of `trace` to `path`: one self-contained HTML file (no
/// network), with the servers, their messages, logs and a timeline; play, pause, step,
/// scrub and speed controls.
#[pyfunction]
pub fn visualize_trace(py: Python<'_>, trace: PyRef<'_, Trace>, path: PathBuf) -> PyResult<()> {
    let inner = trace.inner.clone();
    py.allow_threads(move || std::fs::write(&path, replay_html(&inner)))
        .map_err(|e| PyOSError::new_err(format!("cannot write the replay: {e}")))
}

/// Calls `callback(index | None, term)` on a thread of its own for each leader change that
/// `changes` reports, until the channel closes (the cluster was closed). An exception in the
/// callback is reported as unraisable and the thread goes on.
pub(crate) fn spawn_leader_watch(
    changes: mpsc::Receiver<LeaderChange>,
    callback: PyObject,
) -> PyResult<()> {
    std::thread::Builder::new()
        .name("raftkv-leader-watch".into())
        .spawn(move || {
            for change in changes {
                Python::with_gil(|py| {
                    let index = change.leader.map(|id| id.saturating_sub(1));
                    if let Err(e) = callback.call1(py, (index, change.term)) {
                        e.write_unraisable(py, Some(callback.bind(py)));
                    }
                });
            }
        })
        .map(|_| ())
        .map_err(|e| PyOSError::new_err(format!("cannot start the leader-watch thread: {e}")))
}
