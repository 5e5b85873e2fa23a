//! `raftkv._raftkv`: the Rust core of the raftkv Python package, one module per concept.
//!
//! - `errors`: `raftkv.Error` and its subclasses (`KeyNotFound` is also a `KeyError`,
//!   `Timeout` a `TimeoutError`, `VersionMismatch` carries `.current`).
//! - `clerk`: `Clerk`, a client of any cluster.
//! - `aio`: `_AioCore`, the Rust half of the asyncio client `raftkv.aio.Clerk`.
//! - `cluster`: `LocalCluster`, n nodes in this process with faults (nodes named by index).
//! - `node`: `Node`, one node of a cluster spread over processes (named by Raft id).
//! - `history`: `History`, `check_linearizable`, `check_file` and their result.
//! - `bench`: `bench`, the load generator of `raftkv bench`.
//! - `logging`: where the Rust side's log goes (Python's `logging`, or stderr for `raftkv serve`).
//! - `sharded`: `ShardedCluster`, `ShardGroup`, `ShardClerk`, `key_to_shard`, `ShardError`.
//! - `runtime`: the tokio runtime every blocking call waits on, with the GIL released.
//! - `trace`: `Trace` (`LocalCluster.trace()`), `visualize_trace`, the leader-change watch.
//! - `sim`: `SimCluster` and `SimClerk`, a cluster on the deterministic simulator.
//! - `convert`: Python arguments in, Python values out.

mod aio;
mod bench;
mod clerk;
mod cluster;
mod convert;
mod errors;
mod history;
mod logging;
mod node;
mod runtime;
mod sharded;
mod sim;
mod trace;

use pyo3::prelude::*;

#[pymodule]
fn _raftkv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::init(m.py())?;
    errors::add_to(m)?;
    m.add_class::<history::History>()?;
    m.add_class::<history::CheckResult>()?;
    m.add_class::<clerk::Clerk>()?;
    m.add_class::<aio::AioCore>()?;
    m.add_class::<cluster::LocalCluster>()?;
    m.add_class::<node::Node>()?;
    m.add_class::<trace::Trace>()?;
    m.add_function(wrap_pyfunction!(trace::visualize_trace, m)?)?;
    m.add_function(wrap_pyfunction!(history::check_linearizable, m)?)?;
    m.add_function(wrap_pyfunction!(history::check_file, m)?)?;
    m.add_function(wrap_pyfunction!(bench::run_bench, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_log_to_stderr, m)?)?;
    sharded::add_to(m)?;
    m.add_class::<sim::SimCluster>()?;
    m.add_class::<sim::SimClerk>()?;
    Ok(())
}
