//! Where the Rust side's log (`tracing` events of every raftkv crate) goes.
//!
//! When the module is imported, one global `tracing` subscriber is installed whose only layer
//! can be swapped once:
//!
//! - **Python `logging`** (the default, for programs using the library): each event becomes a
//!   record of the logger `raftkv` or a child of it named after the crate and module
//!   (`raftkv.raft.driver.node`, `raftkv.transport_tcp.outbound`...), so pytest shows them on
//!   failure and `caplog` sees them. Runtime threads never take the GIL: an event is formatted
//!   into a bounded queue ([`QUEUE_RECORDS_MAX`]; when it is full, records are dropped and
//!   counted) and one forwarding thread hands the queue to `logging` with the GIL held. Events
//!   at info and above are always queued (they are rare: leader changes, connection losses,
//!   failures) and `logging` filters them; debug and trace events are dropped at once, with
//!   one atomic load, unless the `raftkv` logger's effective level (re-read every
//!   [`LEVEL_REFRESH`] by the forwarding thread) lets them through.
//! - **stderr** (`raftkv serve`, through [`_log_to_stderr`]): `tracing-subscriber`'s text or
//!   JSON format, filtered by an `EnvFilter` from `RAFTKV_LOG` (default `info`).
//!
//! Forwarding ends when the interpreter exits (an `atexit` hook, which waits for the
//! forwarding thread to leave the GIL), so that the thread never asks for the GIL of an
//! interpreter being finalized.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::{reload, EnvFilter};

/// Records waiting for the forwarding thread; beyond this, records are dropped (and counted).
pub(crate) const QUEUE_RECORDS_MAX: usize = 4096;
/// How often the forwarding thread re-reads the `raftkv` logger's effective level.
pub(crate) const LEVEL_REFRESH: Duration = Duration::from_millis(250);
/// Records handed to `logging` per GIL acquisition, at most.
const BATCH_RECORDS_MAX: usize = 256;
/// The environment variable with `raftkv serve`'s log filter (`EnvFilter` syntax).
const FILTER_VAR: &str = "RAFTKV_LOG";

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The `raftkv` logger's effective level, in Python's numbers (DEBUG 10, INFO 20...).
static PY_LEVEL: AtomicU8 = AtomicU8::new(30);
/// Set once forwarding to Python ended (interpreter exit, or logging went to stderr).
static FORWARDING_OFF: AtomicBool = AtomicBool::new(false);
/// Held by the forwarding thread while it holds (or waits for) the GIL.
static FORWARDER_BUSY: Mutex<()> = Mutex::new(());
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUE: OnceLock<SyncSender<Record>> = OnceLock::new();
static RELOAD: OnceLock<reload::Handle<BoxedLayer, Registry>> = OnceLock::new();

/// One event, formatted, for Python.
struct Record {
    level: u8,
    logger: String,
    message: String,
}

fn py_level(level: &Level) -> u8 {
    match *level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    }
}

/// `raftkv_raft::driver::node` → `raftkv.raft.driver.node`; other targets go under `raftkv.`.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("raftkv_") {
        Some(rest) => format!("raftkv.{rest}"),
        None if dotted == "raftkv" || dotted.starts_with("raftkv.") => dotted,
        None => format!("raftkv.{dotted}"),
    }
}

/// The layer that queues events for Python.
struct PythonLayer;

impl PythonLayer {
    fn wanted(metadata: &Metadata<'_>) -> bool {
        let level = py_level(metadata.level());
        !FORWARDING_OFF.load(Ordering::Relaxed)
            && (level >= 20 || level >= PY_LEVEL.load(Ordering::Relaxed))
    }
}

impl<S: Subscriber> Layer<S> for PythonLayer {
    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Decided per event: the Python level changes at run time.
        if metadata.is_event() {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        Self::wanted(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !Self::wanted(metadata) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let record = Record {
            level: py_level(metadata.level()),
            logger: logger_name(metadata.target()),
            message: text.finish(),
        };
        if let Some(queue) = QUEUE.get() {
            if let Err(TrySendError::Full(_)) = queue.try_send(record) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An event's message followed by its other fields as `name=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(mut self) -> String {
        if !self.fields.is_empty() {
            if !self.message.is_empty() {
                self.message.push(' ');
            }
            self.message.push_str(&self.fields);
        }
        self.message
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Installs the global subscriber (forwarding to Python), starts the forwarding thread and
/// registers the `atexit` hook that ends it. Called once, by the module's init.
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    if RELOAD.get().is_some() {
        return Ok(());
    }
    let (layer, handle) = reload::Layer::new(Box::new(PythonLayer) as BoxedLayer);
    if tracing::subscriber::set_global_default(Registry::default().with(layer)).is_err() {
        // Another subscriber (the embedding program's) keeps the events.
        return Ok(());
    }
    let _ = RELOAD.set(handle);
    let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS_MAX);
    let _ = QUEUE.set(tx);
    refresh_level(py);
    std::thread::Builder::new()
        .name("raftkv-log".into())
        .spawn(move || forward(rx))
        .map_err(|e| PyValueError::new_err(format!("cannot start the log thread: {e}")))?;
    let stop = PyCFunction::new_closure(
        py,
        Some(c"_raftkv_stop_log_forwarding"),
        None,
        |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| {
            args.py().allow_threads(stop_forwarding);
        },
    )?;
    py.import("atexit")?.call_method1("register", (stop,))?;
    Ok(())
}

/// Ends forwarding; waits (GIL released by the caller) for the thread to leave the GIL.
fn stop_forwarding() {
    let _busy = FORWARDER_BUSY.lock().unwrap_or_else(|e| e.into_inner());
    FORWARDING_OFF.store(true, Ordering::SeqCst);
}

fn refresh_level(py: Python<'_>) {
    let level = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", ("raftkv",)))
        .and_then(|l| l.call_method0("getEffectiveLevel"))
        .and_then(|l| l.extract::<i64>());
    if let Ok(l) = level {
        PY_LEVEL.store(l.clamp(0, 255) as u8, Ordering::Relaxed);
    }
}

/// The forwarding thread: hands queued records to `logging` in batches, re-reads the level.
fn forward(rx: mpsc::Receiver<Record>) {
    loop {
        let mut batch = Vec::new();
        match rx.recv_timeout(LEVEL_REFRESH) {
            Ok(r) => batch.push(r),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH_RECORDS_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let _busy = FORWARDER_BUSY.lock().unwrap_or_else(|e| e.into_inner());
        if FORWARDING_OFF.load(Ordering::SeqCst) {
            return;
        }
        Python::with_gil(|py| {
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                batch.push(Record {
                    level: 30,
                    logger: "raftkv".into(),
                    message: format!("{dropped} log records dropped: the log queue was full"),
                });
            }
            if !batch.is_empty() {
                emit(py, batch);
            }
            refresh_level(py);
        });
    }
}

fn emit(py: Python<'_>, batch: Vec<Record>) {
    let Ok(logging) = py.import("logging") else {
        return;
    };
    for r in batch {
        let logged = logging
            .call_method1("getLogger", (r.logger.as_str(),))
            .and_then(|l| l.call_method1("log", (r.level, r.message)));
        if let Err(e) = logged {
            // A broken handler must not stop the log: Python prints it, as logging does.
            e.print(py);
        }
    }
}

/// Sends the log to stderr from now on (text or JSON), filtered by `RAFTKV_LOG` (default
/// `info`); forwarding to Python ends. For `raftkv serve`.
#[pyfunction]
#[pyo3(signature = (format="text"))]
pub(crate) fn _log_to_stderr(py: Python<'_>, format: &str) -> PyResult<()> {
    let filter = match std::env::var(FILTER_VAR) {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v.trim()).map_err(|e| {
            PyValueError::new_err(format!("{FILTER_VAR}={v:?} is not a log filter: {e}"))
        })?,
        _ => EnvFilter::new("info"),
    };
    let base = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let layer: BoxedLayer = match format {
        "text" => Box::new(filter.and_then(base.with_ansi(std::io::stderr().is_terminal()))),
        "json" => Box::new(filter.and_then(base.json().with_ansi(false))),
        f => {
            return Err(PyValueError::new_err(format!(
                "log format must be \"text\" or \"json\", not {f:?}"
            )))
        }
    };
    let handle = RELOAD.get().ok_or_else(|| {
        PyValueError::new_err("another tracing subscriber was installed before raftkv's")
    })?;
    py.allow_threads(stop_forwarding);
    handle
        .reload(layer)
        .map_err(|e| PyValueError::new_err(format!("cannot switch the log to stderr: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_targets_become_children_of_the_raftkv_logger() {
        assert_eq!(
            logger_name("raftkv_raft::driver::node"),
            "raftkv.raft.driver.node"
        );
        assert_eq!(
            logger_name("raftkv_transport_tcp::outbound"),
            "raftkv.transport_tcp.outbound"
        );
        assert_eq!(logger_name("raftkv"), "raftkv");
        assert_eq!(logger_name("lmdb"), "raftkv.lmdb");
    }
}
