//! `Clerk`: a client of any raftkv cluster, over TCP.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use raftkv_kv::clerk::{Clerk as RClerk, ClerkConfig, ReadFrom};
use raftkv_kv::protocol::MemberList;
use raftkv_node::tcp_client::{TcpConnector, TcpConnectorConfig};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;

use crate::convert::{duration, parse_addrs, to_bytes, version_arg};
use crate::errors::clerk_err;
use crate::history::History;
use crate::runtime::{block_on, rt, shared_connector, tokio_runtime};

pub(crate) enum AnyClerk {
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

/// A client of a raftkv cluster: `Clerk(addresses, timeout=10.0, history=None, tls=None,
/// token=None, read_from="leader")`.
///
/// `addresses`: client addresses "host:port" of any non-empty subset of the cluster (a node
/// that is not the leader names the leader, and the Clerk follows). Keys and values are bytes;
/// str is encoded as UTF-8; values are returned as bytes. Every failure to reach a majority
/// within `timeout` seconds raises raftkv.Timeout. A Clerk runs one operation at a time
/// (calls from several threads queue up): use one Clerk per concurrent client thread.
///
/// `tls={"ca": path, "cert": path, "key": path}` speaks TLS to servers started with TLS:
/// their certificates must be signed by the CA file "ca" and name the host dialled; "cert"
/// and "key" (optional, together) are this client's, for servers that require one.
/// `token` is the shared client token of servers started with one (raftkv.Unauthorized
/// without it).
///
/// `read_from="any"` sends each get to a node drawn at random, so that reads spread over the
/// replicas: a node started with `follower_reads` serves it with a read index from the leader
/// (still linearizable); one without sends the Clerk on to the leader. Writes always go to
/// the leader. The default, "leader", sends gets to the leader.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct Clerk {
    pub(crate) inner: Arc<tokio::sync::Mutex<AnyClerk>>,
    addrs: Vec<String>,
    timeout: f64,
}

/// `read_from` as Python spells it: "leader" (the default) or "any".
pub(crate) fn read_from(s: &str) -> PyResult<ReadFrom> {
    match s {
        "leader" => Ok(ReadFrom::Leader),
        "any" => Ok(ReadFrom::Any),
        other => Err(PyValueError::new_err(format!(
            "read_from must be \"leader\" or \"any\", not {other:?}"
        ))),
    }
}

pub(crate) fn clerk_config(timeout: f64) -> PyResult<ClerkConfig> {
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

impl Clerk {
    pub(crate) fn wrap(c: AnyClerk, addrs: Vec<String>, timeout: f64) -> Self {
        Self {
            inner: Arc::new(tokio::sync::Mutex::new(c)),
            addrs,
            timeout,
        }
    }
}

/// A member list as a dict: {"leader": id | None, "members": [{...}, ...]}.
pub(crate) fn members_dict<'py>(
    py: Python<'py>,
    list: &MemberList,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("leader", list.leader)?;
    let members = PyList::empty(py);
    for m in &list.members {
        let e = PyDict::new(py);
        e.set_item("id", m.id)?;
        e.set_item("peer_addr", &m.peer_addr)?;
        e.set_item("client_addr", &m.client_addr)?;
        e.set_item("learner", m.learner)?;
        members.append(e)?;
    }
    d.set_item("members", members)?;
    Ok(d)
}

#[pymethods]
impl Clerk {
    #[new]
    #[pyo3(signature = (addresses, timeout=10.0, history=None, tls=None, token=None, read_from="leader"))]
    fn new(
        addresses: &Bound<'_, PyAny>,
        timeout: f64,
        history: Option<PyRef<'_, History>>,
        tls: Option<&Bound<'_, PyAny>>,
        token: Option<String>,
        read_from: &str,
    ) -> PyResult<Self> {
        let addrs = parse_addrs(addresses)?;
        let config = ClerkConfig {
            read_from: self::read_from(read_from)?,
            ..clerk_config(timeout)?
        };
        let tls = tls.map(crate::convert::parse_client_tls).transpose()?;
        let token = token.map(crate::convert::client_token).transpose()?;
        let _guard = rt().enter();
        // A Clerk with TLS or a token has connections of its own; the others share the
        // process's.
        let connector = match (tls, token) {
            (None, None) => shared_connector(),
            (tls, token) => TcpConnector::new(
                tokio_runtime(),
                TcpConnectorConfig {
                    tls,
                    token,
                    ..TcpConnectorConfig::default()
                },
            ),
        };
        let mut c = RClerk::new(tokio_runtime(), connector, addrs.clone(), config);
        if let Some(h) = history {
            c = c.with_history(h.inner.clone());
        }
        Ok(Self::wrap(AnyClerk::Tokio(c), addrs, timeout))
    }

    /// Reads `key`: returns (value: bytes, version: int). Raises raftkv.KeyNotFound.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<(Py<PyBytes>, u64)> {
        let key = to_bytes(key, "key")?;
        let inner = self.inner.clone();
        let k = key.clone();
        let (value, version) = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.get(k).await)
        })?
        .map_err(|e| clerk_err(e, Some(&key)))?;
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
        let version = version_arg(version)?;
        let inner = self.inner.clone();
        let k = key.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.put(k, value, version).await)
        })?
        .map_err(|e| clerk_err(e, Some(&key)))
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
        let k = key.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.append(k, value).await)
        })?
        .map_err(|e| clerk_err(e, Some(&key)))
    }

    /// Deletes `key`. Raises raftkv.KeyNotFound if it does not exist.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = to_bytes(key, "key")?;
        let inner = self.inner.clone();
        let k = key.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.delete(k).await)
        })?
        .map_err(|e| clerk_err(e, Some(&key)))
    }

    /// The cluster's members as the leader's configuration has them: a dict
    /// {"leader": Raft id or None, "members": [{"id", "peer_addr", "client_addr", "learner"}]}
    /// (voters first). The members' client addresses are added to the ones this Clerk tries.
    fn member_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let list = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.member_list().await)
        })?
        .map_err(|e| clerk_err(e, None))?;
        members_dict(py, &list)
    }

    /// Adds node `id` (a Raft id >= 1) as a learner, reachable by the other nodes at
    /// `peer_addr` and by clients at `client_addr`; returns once it is in the configuration
    /// (the new member list). Unless `learner`, the cluster promotes it to voter by itself once
    /// it has caught up (member_list shows "learner": True until then). Raises
    /// raftkv.MembershipError if the cluster refuses (another change still in progress when
    /// the timeout ran out, after retrying meanwhile: its `in_progress` is True).
    #[pyo3(signature = (id, peer_addr, client_addr=None, learner=false))]
    fn member_add<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        peer_addr: String,
        client_addr: Option<String>,
        learner: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        if id == 0 {
            return Err(PyValueError::new_err("node ids start at 1"));
        }
        if peer_addr.is_empty() {
            return Err(PyValueError::new_err("peer_addr must not be empty"));
        }
        let client_addr = client_addr.unwrap_or_default();
        let inner = self.inner.clone();
        let list = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.member_add(id, &peer_addr, &client_addr, learner).await)
        })?
        .map_err(|e| clerk_err(e, None))?;
        members_dict(py, &list)
    }

    /// Learner `id` becomes a voter; returns the new member list. Raises
    /// raftkv.MembershipError if the cluster refuses.
    fn member_promote<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let list = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.member_promote(id).await)
        })?
        .map_err(|e| clerk_err(e, None))?;
        members_dict(py, &list)
    }

    /// Removes node `id` from the configuration (the leader too: it steps down once the
    /// change is committed); returns the new member list. Stop the node's process afterwards.
    /// Raises raftkv.MembershipError if the cluster refuses ("node N is not a member" if it
    /// never was). Idempotent across the call's own retries: when an answer was lost and a
    /// retry finds the node already gone, the removal is reported done.
    fn member_remove<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let list = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.member_remove(id).await)
        })?
        .map_err(|e| clerk_err(e, None))?;
        members_dict(py, &list)
    }

    /// Hands leadership to voter `id`; returns the member list once `id` leads. Raises
    /// raftkv.MembershipError if the cluster refuses, raftkv.Timeout if the transfer did not
    /// complete in time.
    fn move_leader<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let list = block_on(py, async move {
            let mut c = inner.lock().await;
            with_clerk!(&mut *c, c => c.move_leader(id).await)
        })?
        .map_err(|e| clerk_err(e, None))?;
        members_dict(py, &list)
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
    /// first_index, last_index, snapshot_index, and removed (True once the node learned it is
    /// no longer a member: stop its process).
    fn server_status<'py>(&self, py: Python<'py>, address: String) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let s = block_on(py, async move {
            let c = inner.lock().await;
            with_clerk!(&*c, c => c.server_status(&address).await)
        })?
        .map_err(|e| clerk_err(e, None))?;
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
        d.set_item("removed", s.removed)?;
        Ok(d)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }

    /// Does nothing, for symmetry: the Clerks of a process share one connection per server
    /// (the others may still use it), closed when the server closes it or the process exits.
    fn close(&self) {}

    fn __repr__(&self) -> String {
        format!("Clerk({:?}, timeout={})", self.addrs, self.timeout)
    }
}
