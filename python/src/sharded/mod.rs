//! Sharding: `ShardedCluster` (the shard controller's group and replica groups in this process
//! over real TCP), `ShardGroup` (the fault API of one of those Raft groups), `ShardClerk` (a
//! client of any sharded store), `key_to_shard`, and `ShardError`.
//!
//! Nodes of a group are named by index 0..n-1, as in `LocalCluster`; groups by gid (>= 1).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use raftkv_kv::clerk::ClerkConfig;
use raftkv_node::cluster::StorageKind;
use raftkv_node::sharded::{
    controller_clerk, shard_clerk, ControllerCluster, GroupCluster, ShardedCluster as RSharded,
    ShardedConfig, ShardedError, Shared, TcpControllerClerk, TcpShardClerk,
};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_shard::clerk::CtrlClerkError;
use raftkv_shard::config::SHARDS_MAX;
use raftkv_shard::group::{ShardClerkConfig, ShardClerkError};
use raftkv_shard::{Gid, ShardConfig};

use crate::clerk::clerk_config;
use crate::convert::{duration, parse_addrs, status_dict, to_bytes, version_arg};
use crate::errors::{
    ce, cluster_err, ClusterError, Error, KeyNotFound, MaybeApplied, ProtocolError, Timeout,
    TooLarge, VersionMismatch,
};
use crate::history::History;
use crate::runtime::{block_on, rt, tokio_runtime};

mod clerk;
mod cluster;

pub use clerk::{ShardClerk, ShardController};
pub use cluster::{ShardGroup, ShardedCluster};

create_exception!(
    raftkv,
    ShardError,
    Error,
    "The shard controller refused a change (a gid that is not joined or already is, a shard \
     out of range, no groups given...): nothing changed. The message says why."
);

/// Adds the sharding classes and functions to the module.
pub(crate) fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ShardError", m.py().get_type::<ShardError>())?;
    m.add_class::<ShardedCluster>()?;
    m.add_class::<ShardGroup>()?;
    m.add_class::<ShardClerk>()?;
    m.add_class::<ShardController>()?;
    m.add_function(wrap_pyfunction!(key_to_shard, m)?)?;
    Ok(())
}

/// The shard of `key` in a store of `shards` shards: FNV-1a of the key's bytes modulo
/// `shards`, fixed forever (str keys are encoded as UTF-8). Raises ValueError for
/// shards < 1.
#[pyfunction]
fn key_to_shard(key: &Bound<'_, PyAny>, shards: i64) -> PyResult<u32> {
    let key = to_bytes(key, "key")?;
    let shards = u32::try_from(shards)
        .ok()
        .filter(|&s| s >= 1)
        .ok_or_else(|| PyValueError::new_err(format!("shards must be >= 1, not {shards}")))?;
    raftkv_shard::key_to_shard(&key, shards).map_err(|e| PyValueError::new_err(e.to_string()))
}

// ---- errors ----

fn ctrl_err(e: CtrlClerkError) -> PyErr {
    match e {
        CtrlClerkError::Refused(e) => ShardError::new_err(format!("the controller refused: {e}")),
        CtrlClerkError::Timeout(d) => Timeout::new_err(format!(
            "the shard controller did not answer within {:.1} s: a majority of the controller \
             nodes must be running and reachable",
            d.as_secs_f64()
        )),
        CtrlClerkError::MaybeApplied => MaybeApplied::new_err(
            "the controller change may or may not have been applied; query the config to find out",
        ),
        CtrlClerkError::TooLarge => TooLarge::new_err("the controller request is too large"),
        e => ProtocolError::new_err(format!("controller: {e}")),
    }
}

fn sharded_err(e: ShardedError) -> PyErr {
    match e {
        ShardedError::Cluster(e) => cluster_err(e),
        ShardedError::Controller(e) => ctrl_err(e),
        ShardedError::Config(e) => PyValueError::new_err(e.to_string()),
        ShardedError::Shape(s) => PyValueError::new_err(s),
        e @ ShardedError::NoSuchGroup { .. } => ClusterError::new_err(e.to_string()),
        e @ ShardedError::WaitTimeout { .. } => Timeout::new_err(format!(
            "{e}: their leaders must be running and reach the controller and the groups they \
             pull shards from"
        )),
        e => Error::new_err(e.to_string()),
    }
}

fn shown(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(&key[..key.len().min(64)]);
    format!("{text:?}")
}

fn shard_clerk_err(e: ShardClerkError, key: &[u8]) -> PyErr {
    let key = shown(key);
    match e {
        ShardClerkError::NoKey => KeyNotFound::new_err(format!(
            "no such key: {key} does not exist (never written, or deleted)"
        )),
        ShardClerkError::Version { current } => PyErr::new::<VersionMismatch, _>((
            format!(
                "version mismatch: key {key} is at version {current}, so the conditional put \
                 was not applied"
            ),
            Some(current),
        )),
        ShardClerkError::MaybeApplied => MaybeApplied::new_err(format!(
            "the write to {key} may or may not have been applied; read the key to find out"
        )),
        ShardClerkError::Timeout(d) => Timeout::new_err(format!(
            "timed out after {:.1} s: no group serving key {key} answered (it may be moving, \
             or its group has no majority); the write may still be applied later",
            d.as_secs_f64()
        )),
        ShardClerkError::TooLarge => TooLarge::new_err(format!(
            "the request on {key} is larger than the servers accept"
        )),
        ShardClerkError::Controller(e) => ctrl_err(e),
        e => ProtocolError::new_err(format!("{e}; this is a bug, or mixed versions")),
    }
}

// ---- shared by the controller client and the cluster ----

fn config_dict<'py>(py: Python<'py>, c: &ShardConfig) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("num", c.num)?;
    d.set_item("shards", c.shards.clone())?;
    let groups = PyDict::new(py);
    for (gid, addrs) in &c.groups {
        groups.set_item(gid, addrs.clone())?;
    }
    d.set_item("groups", groups)?;
    Ok(d)
}

fn gids(gids: Vec<i64>) -> PyResult<Vec<Gid>> {
    gids.into_iter()
        .map(|g| {
            u64::try_from(g)
                .ok()
                .filter(|&g| g >= 1)
                .ok_or_else(|| PyValueError::new_err(format!("a gid is >= 1, not {g}")))
        })
        .collect()
}
