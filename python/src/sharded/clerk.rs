//! `ShardClerk`, a client of any sharded store, and `ShardController`, an administrator's
//! client of a shard controller.

use super::*;

pub(super) enum AnyShardClerk {
    Tokio(TcpShardClerk<TokioRuntime>),
    Smol(TcpShardClerk<SmolRuntime>),
}

macro_rules! with_shard_clerk {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            AnyShardClerk::Tokio($x) => $body,
            AnyShardClerk::Smol($x) => $body,
        }
    };
}

pub(super) fn shard_clerk_config(timeout: f64) -> PyResult<ShardClerkConfig> {
    let group = clerk_config(timeout)?;
    Ok(ShardClerkConfig {
        timeout: group.timeout,
        group: ClerkConfig {
            timeout: Duration::from_secs(2).min(group.timeout),
            ..group
        },
        ..ShardClerkConfig::default()
    })
}

/// A client of a sharded raftkv store: `ShardClerk(controller_addrs, timeout=10.0,
/// history=None)`, with get / put / append / delete as Clerk.
///
/// `controller_addrs`: client addresses "host:port" of the shard controller's nodes. The
/// ShardClerk asks the controller which group serves a key's shard, sends the request there
/// and asks again when the shard has moved; a write retried across a move is applied once.
/// One operation at a time: use one ShardClerk per concurrent client thread.
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct ShardClerk {
    pub(super) inner: Arc<tokio::sync::Mutex<AnyShardClerk>>,
    pub(super) controller_addrs: Vec<String>,
}

impl ShardClerk {
    fn run<T, F>(&self, py: Python<'_>, key: &[u8], f: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut AnyShardClerk,
            )
                -> Pin<Box<dyn Future<Output = Result<T, ShardClerkError>> + Send + 'a>>
            + Send
            + 'static,
    {
        let inner = self.inner.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            f(&mut c).await
        })?
        .map_err(|e| shard_clerk_err(e, key))
    }
}

#[pymethods]
impl ShardClerk {
    #[new]
    #[pyo3(signature = (controller_addrs, timeout=10.0, history=None))]
    fn new(
        controller_addrs: &Bound<'_, PyAny>,
        timeout: f64,
        history: Option<PyRef<'_, History>>,
    ) -> PyResult<Self> {
        let addrs = parse_addrs(controller_addrs)?;
        let config = shard_clerk_config(timeout)?;
        let _guard = rt().enter();
        let mut c = shard_clerk(&tokio_runtime(), addrs.clone(), config);
        if let Some(h) = history {
            c = c.with_history(h.inner.clone());
        }
        Ok(Self {
            inner: Arc::new(tokio::sync::Mutex::new(AnyShardClerk::Tokio(c))),
            controller_addrs: addrs,
        })
    }

    /// The shard controller's addresses this ShardClerk asks.
    #[getter]
    fn controller_addrs(&self) -> Vec<String> {
        self.controller_addrs.clone()
    }

    /// Reads `key`: returns (value: bytes, version: int). Raises raftkv.KeyNotFound.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<(Py<PyBytes>, u64)> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        let (value, version) = self.run(py, &key, move |c| {
            Box::pin(async move { with_shard_clerk!(c, c => c.get(k).await) })
        })?;
        Ok((PyBytes::new(py, &value).unbind(), version))
    }

    /// Writes `value` under `key`; returns the key's new version. With `version=N`, only if
    /// the key's version is N (0: the key must not exist): raises raftkv.VersionMismatch if
    /// not applied.
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
        self.run(py, &key, move |c| {
            Box::pin(async move { with_shard_clerk!(c, c => c.put(k, value, version).await) })
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
        self.run(py, &key, move |c| {
            Box::pin(async move { with_shard_clerk!(c, c => c.append(k, value).await) })
        })
    }

    /// Deletes `key`. Raises raftkv.KeyNotFound if it does not exist.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = to_bytes(key, "key")?;
        let k = key.clone();
        self.run(py, &key, move |c| {
            Box::pin(async move { with_shard_clerk!(c, c => c.delete(k).await) })
        })
    }

    fn __repr__(&self) -> String {
        format!("ShardClerk(controller_addrs={:?})", self.controller_addrs)
    }
}

// ---- ShardController: an admin client of any controller ----

/// An administrator's client of a shard controller (any deployment):
/// `ShardController(controller_addrs, timeout=10.0)` with config, join, leave, move — what
/// `raftkv shard` runs. Changes are exactly-once (one session per ShardController).
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct ShardController {
    inner: Arc<tokio::sync::Mutex<TcpControllerClerk<TokioRuntime>>>,
    controller_addrs: Vec<String>,
}

impl ShardController {
    fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut TcpControllerClerk<TokioRuntime>,
            )
                -> Pin<Box<dyn Future<Output = Result<T, CtrlClerkError>> + Send + 'a>>
            + Send
            + 'static,
    {
        let inner = self.inner.clone();
        block_on(py, async move {
            let mut c = inner.lock().await;
            f(&mut c).await
        })?
        .map_err(ctrl_err)
    }
}

#[pymethods]
impl ShardController {
    #[new]
    #[pyo3(signature = (controller_addrs, timeout=10.0))]
    fn new(controller_addrs: &Bound<'_, PyAny>, timeout: f64) -> PyResult<Self> {
        let addrs = parse_addrs(controller_addrs)?;
        let config = clerk_config(timeout)?;
        let _guard = rt().enter();
        let c = controller_clerk(&tokio_runtime(), addrs.clone(), config);
        Ok(Self {
            inner: Arc::new(tokio::sync::Mutex::new(c)),
            controller_addrs: addrs,
        })
    }

    /// The controller addresses this client asks.
    #[getter]
    fn controller_addrs(&self) -> Vec<String> {
        self.controller_addrs.clone()
    }

    /// Configuration `num` (None: the latest) as a dict, as ShardedCluster.config gives.
    #[pyo3(signature = (num=None))]
    fn config<'py>(&self, py: Python<'py>, num: Option<u64>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.run(py, move |c| Box::pin(async move { c.query(num).await }))?;
        config_dict(py, &c)
    }

    /// Joins groups `{gid: [client addrs of its members]}`; returns the config number made.
    /// Raises raftkv.ShardError if the controller refuses.
    fn join(&self, py: Python<'_>, groups: BTreeMap<i64, Vec<String>>) -> PyResult<u64> {
        let mut out = BTreeMap::new();
        for (gid, addrs) in groups {
            let gid = self::gids(vec![gid])?[0];
            for a in &addrs {
                crate::convert::validate_addr(a)?;
            }
            out.insert(gid, addrs);
        }
        self.run(py, move |c| Box::pin(async move { c.join(out).await }))
    }

    /// The groups `gids` leave; returns the config number made.
    fn leave(&self, py: Python<'_>, gids: Vec<i64>) -> PyResult<u64> {
        let gids = self::gids(gids)?;
        self.run(py, move |c| Box::pin(async move { c.leave(gids).await }))
    }

    /// Hands `shard` to group `gid`; returns the config number made.
    #[pyo3(name = "move")]
    fn move_shard(&self, py: Python<'_>, shard: i64, gid: i64) -> PyResult<u64> {
        let shard = u32::try_from(shard)
            .map_err(|_| PyValueError::new_err(format!("a shard is >= 0, not {shard}")))?;
        let gid = self::gids(vec![gid])?[0];
        self.run(py, move |c| {
            Box::pin(async move { c.move_shard(shard, gid).await })
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "ShardController(controller_addrs={:?})",
            self.controller_addrs
        )
    }
}
