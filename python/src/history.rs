//! `History`, `CheckResult` (the Python class `CheckOutcome`), `check_linearizable` and
//! `check_file`: the linearizability checker, usable on its own.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use raftkv_checker::formats::json::read_json;
use raftkv_checker::history::History as RHistory;
use raftkv_checker::{AnyHistory, CheckOptions, CheckResult as RCheckResult, Format, Verdict};

use crate::convert::{duration, to_bytes};
use crate::errors::{Error, HistoryError};
use crate::runtime::block_on;

/// A thread-safe record of client operations (call and return on one monotonic clock), in the
/// form the linearizability checker reads. Pass it to `Clerk(history=...)` or
/// `LocalCluster.clerk(history=...)`: every operation of that Clerk is recorded, one client
/// lane per Clerk.
#[pyclass(module = "raftkv._raftkv", frozen)]
#[derive(Clone)]
pub struct History {
    pub(crate) inner: RHistory,
}

#[pymethods]
impl History {
    #[new]
    fn new() -> Self {
        Self {
            inner: RHistory::new(),
        }
    }

    /// The history as JSON, the format `raftkv check` and `from_json` read:
    /// {"model": "kv", "ops": [{"client": 0, "call": 1200, "return": 5300, "input": {"op":
    /// "put", "key": "k", "value": "v", "version": null}, "output": {"value": null,
    /// "version": 1, "err": null}}, ...]}. `call` and `return` are nanoseconds on one
    /// monotonic clock; `return` is null when the outcome is unknown (a timeout, MaybeApplied).
    /// `op` is "get", "put", "append" or "delete" (`version` only for a conditional put);
    /// `err` is null, "no_key", "version", "maybe", "timeout" or "store_full"; keys and
    /// values are strings.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// A history read from JSON text (as written by `to_json`). Raises raftkv.HistoryError
    /// (a raftkv.Error) when malformed. New operations are recorded after the ones read.
    #[staticmethod]
    fn from_json(s: &Bound<'_, PyAny>) -> PyResult<Self> {
        let text = to_bytes(s, "the JSON text")?;
        let ops = read_json(&text[..]).map_err(json_err)?;
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
///
/// One name in Rust, `CheckResult` (with its `Verdict`), as in `raftkv_checker`; the Python
/// class keeps its published name `CheckOutcome` (`raftkv.CheckResult` is an alias of it).
#[pyclass(module = "raftkv._raftkv", name = "CheckOutcome", frozen)]
pub struct CheckResult {
    history: Arc<AnyHistory>,
    result: Arc<RCheckResult>,
}

#[pymethods]
impl CheckResult {
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
) -> PyResult<CheckResult> {
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
    .map_err(|e| {
        Error::new_err(format!(
            "internal error in the checker: {e}; this is a bug to report, with the history"
        ))
    })?;
    Ok(CheckResult {
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
pub(crate) fn check_linearizable(
    py: Python<'_>,
    history: &Bound<'_, PyAny>,
    model: &str,
    timeout: Option<f64>,
    partition: bool,
) -> PyResult<CheckResult> {
    if model != "kv" {
        return Err(PyValueError::new_err(format!(
            "a History is checked under model \"kv\", not {model:?} (use check_file for other formats)"
        )));
    }
    let ops = if let Ok(h) = history.downcast::<History>() {
        h.get().inner.operations()
    } else if history.is_instance_of::<PyString>() || history.is_instance_of::<PyBytes>() {
        let text = to_bytes(history, "history")?;
        read_json(&text[..]).map_err(json_err)?
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
pub(crate) fn check_file(
    py: Python<'_>,
    path: PathBuf,
    format: &str,
    model: Option<&str>,
    timeout: Option<f64>,
    partition: bool,
) -> PyResult<CheckResult> {
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
            e => HistoryError::new_err(format!(
                "cannot read the history {}: {e}; check that format={format:?} is the file's \
                 format (json, porcupine-kv or jepsen-etcd)",
                path.display()
            )),
        })?;
    run_check(py, history, partition, timeout)
}

/// The exception for JSON text that is not a history.
fn json_err(e: raftkv_checker::ReadError) -> PyErr {
    HistoryError::new_err(format!(
        "cannot read the history: {e}; expected the JSON that History.to_json() writes \
         ({{\"model\": \"kv\", \"ops\": [...]}})"
    ))
}
