//! `bench`: the closed-loop load generator of `raftkv bench`, run on the extension's runtime.
//! The generator itself is `raftkv_node::load`, shared with the Rust `kvbench` example.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use raftkv_node::load::{Collect, Load, LoadConfig, LoadMode};

use crate::clerk::clerk_config;
use crate::convert::{duration, parse_addrs};
use crate::errors::Timeout;
use crate::runtime::{rt, tokio_runtime};

/// Sleeps until `until` with the GIL released, answering Ctrl-C every 100 ms at most.
fn wait_until(py: Python<'_>, until: Instant) -> PyResult<()> {
    while Instant::now() < until {
        let left = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        py.allow_threads(|| std::thread::sleep(left));
        py.check_signals()?;
    }
    Ok(())
}

/// Runs `clients` closed-loop Clerks against `addresses` for `warmup` + `seconds` seconds on
/// the Rust runtime. mode: "put" | "get" | "mixed" (half gets, half puts). Returns a dict:
/// ops, seconds, ops_per_s, errors, lat_us {p50, p99, p999} (measured after the warm-up).
/// `progress`: a callable called about every `interval` seconds with (elapsed_s, ops_so_far,
/// errors_so_far) while measuring, with the GIL held. `read_from`: "leader" (the default) or
/// "any": each get goes to a node at random (see `Clerk`).
#[pyfunction]
#[pyo3(signature = (addresses, clients=64, seconds=10.0, mode="put", value_size=100, warmup=1.0, timeout=10.0, progress=None, interval=1.0, keyspace=10_000, read_from="leader"))]
#[pyo3(name = "bench")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_bench<'py>(
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
    read_from: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let addrs = parse_addrs(addresses)?;
    if keyspace == 0 {
        return Err(PyValueError::new_err("keyspace must be positive"));
    }
    let clerk = raftkv_kv::clerk::ClerkConfig {
        read_from: crate::clerk::read_from(read_from)?,
        ..clerk_config(timeout)?
    };
    let seconds_d = duration(seconds, "seconds")?;
    let warmup_d = duration(warmup, "warmup")?;
    let interval_d = duration(interval, "interval")?.max(Duration::from_millis(100));
    let mode: LoadMode = mode
        .parse()
        .map_err(|e: raftkv_node::load::UnknownMode| PyValueError::new_err(e.to_string()))?;
    if clients == 0 {
        return Err(PyValueError::new_err("clients must be positive"));
    }
    let collect_wait = clerk.timeout + Duration::from_secs(2);
    let config = LoadConfig {
        clients,
        mode,
        value_size,
        keyspace,
        clerk,
        preload: true,
    };
    let mut load = {
        let _guard = rt().enter();
        Load::start(&tokio_runtime(), addrs, config)
    };
    // An interrupt (Ctrl-C) stops the clients: dropping `load` does.
    // The preload (get and mixed modes) is not part of the warm-up.
    while !load.ready() {
        wait_until(py, Instant::now() + Duration::from_millis(20))?;
    }
    wait_until(py, Instant::now() + warmup_d)?;
    load.measure();
    let measure_start = Instant::now();
    let end = measure_start + seconds_d;
    let mut next_report = measure_start + interval_d;
    while Instant::now() < end {
        wait_until(py, next_report.min(end))?;
        if let Some(p) = &progress {
            if Instant::now() >= next_report {
                p.call1((
                    measure_start.elapsed().as_secs_f64(),
                    load.ops(),
                    load.errors(),
                ))?;
            }
        }
        next_report += interval_d;
    }
    load.stop();
    let elapsed = measure_start.elapsed().as_secs_f64();
    // Collect the latencies (clients finish their current operation: at most `timeout`).
    let mut partial = load.partial_report();
    let deadline = Instant::now() + collect_wait;
    while Instant::now() < deadline {
        let (collected, back) = py.allow_threads(move || {
            let c = load.collect_one(Duration::from_millis(100), &mut partial);
            (c, (load, partial))
        });
        (load, partial) = back;
        if collected == Collect::Done {
            break;
        }
        py.check_signals()?;
    }
    let report = partial.finish();
    if report.failures.len() == load.clients() {
        return Err(Timeout::new_err(format!(
            "bench: {}; check that the cluster at the given addresses is running and has a \
             leader",
            report.failures[0]
        )));
    }
    let d = PyDict::new(py);
    d.set_item("ops", report.ops)?;
    d.set_item("seconds", elapsed)?;
    d.set_item(
        "ops_per_s",
        if elapsed > 0.0 {
            report.ops as f64 / elapsed
        } else {
            0.0
        },
    )?;
    d.set_item("errors", report.errors)?;
    let l = PyDict::new(py);
    l.set_item("p50", report.latency_us_at(0.50))?;
    l.set_item("p99", report.latency_us_at(0.99))?;
    l.set_item("p999", report.latency_us_at(0.999))?;
    d.set_item("lat_us", l)?;
    Ok(d)
}
