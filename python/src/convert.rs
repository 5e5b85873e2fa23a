//! Turning Python arguments into Rust values (with messages that say what was expected) and
//! Rust values into Python ones.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use raftkv_raft::Status;

pub(crate) fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `bytes` as is, `str` as UTF-8; anything else is a TypeError.
pub(crate) fn to_bytes(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
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

/// A node's status as a dict.
///
/// Naming: a `LocalCluster` names its nodes by index (0..n-1) everywhere, and node index `i`
/// has Raft id `i + 1` (`index_base` Some(1)); there `id` and `index` are the index (`id` is the
/// older name, kept), `raft_id` the Raft id, `leader` an index and `leader_raft_id`
/// a Raft id. A `Node` (`index_base` None) has only Raft ids: `id`, `raft_id` and `leader` are
/// Raft ids, and there is no `index`.
pub(crate) fn status_dict<'py>(
    py: Python<'py>,
    s: &Status,
    index_base: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let conv = |id: u64| match index_base {
        Some(b) => id.saturating_sub(b),
        None => id,
    };
    d.set_item("id", conv(s.id))?;
    d.set_item("raft_id", s.id)?;
    if index_base.is_some() {
        d.set_item("index", conv(s.id))?;
        d.set_item("leader_raft_id", s.leader)?;
    }
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

pub(crate) fn validate_addr(a: &str) -> PyResult<()> {
    let bad = || PyValueError::new_err(format!("bad address {a:?}: expected \"host:port\""));
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

pub(crate) fn parse_addrs(addresses: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
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

pub(crate) fn resolve(a: &str) -> PyResult<SocketAddr> {
    validate_addr(a)?;
    a.to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("bad address {a:?}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("address {a:?} resolves to nothing")))
}

/// A Clerk's `tls` argument: a mapping with "ca" (the CA file that signs the servers'
/// certificates) and optionally "cert" and "key" (this client's certificate and key, for
/// servers that ask for one), each a path. Unknown keys and a cert without a key (or a key
/// without a cert) are a `ValueError`, as is a file that cannot be read.
pub(crate) fn parse_client_tls(
    tls: &Bound<'_, PyAny>,
) -> PyResult<raftkv_transport_tcp::ClientTls> {
    let d = tls.downcast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(
            "tls must be a dict like {\"ca\": path, \"cert\": path, \"key\": path} \
             (cert and key are optional)",
        )
    })?;
    let mut ca = None;
    let mut cert = None;
    let mut key = None;
    for (k, v) in d.iter() {
        let name: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("tls keys must be str"))?;
        let path: std::path::PathBuf = v.extract().map_err(|_| {
            PyTypeError::new_err(format!("tls[{name:?}] must be a path (str or os.PathLike)"))
        })?;
        match name.as_str() {
            "ca" => ca = Some(path),
            "cert" => cert = Some(path),
            "key" => key = Some(path),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "tls has an unknown key {name:?}: it takes \"ca\", \"cert\" and \"key\""
                )))
            }
        }
    }
    let ca = ca.ok_or_else(|| {
        PyValueError::new_err("tls needs \"ca\": the CA file that signs the servers' certificates")
    })?;
    let identity = match (&cert, &key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "tls needs both \"cert\" and \"key\" (a client certificate and its key), or \
                 neither",
            ))
        }
    };
    raftkv_transport_tcp::ClientTls::from_files(&ca, identity)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A client token as given (`Clerk(token=...)`, a token file): 1 to
/// `CLIENT_TOKEN_BYTES_MAX` bytes, else a `ValueError`.
pub(crate) fn client_token(token: String) -> PyResult<std::sync::Arc<str>> {
    let max = raftkv_kv::protocol::CLIENT_TOKEN_BYTES_MAX;
    if token.is_empty() || token.len() > max {
        return Err(PyValueError::new_err(format!(
            "a client token has 1 to {max} bytes, not {}",
            token.len()
        )));
    }
    Ok(std::sync::Arc::from(token))
}

/// `version=` of a conditional put: None, or an int >= 0 (not a bool).
pub(crate) fn version_arg(version: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(v) = version.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
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
    u64::try_from(n)
        .map(Some)
        .map_err(|_| PyValueError::new_err(format!("version must be >= 0, not {n}")))
}
