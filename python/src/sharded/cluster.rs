//! `ShardedCluster`, a sharded store in this process, and `ShardGroup`, the fault API of one
//! of its Raft groups.

use super::clerk::{shard_clerk_config, AnyShardClerk};
use super::*;

#[derive(Clone)]
enum AnyGroup {
    TokioGroup(Shared<GroupCluster<TokioRuntime>>),
    SmolGroup(Shared<GroupCluster<SmolRuntime>>),
    TokioController(Shared<ControllerCluster<TokioRuntime>>),
    SmolController(Shared<ControllerCluster<SmolRuntime>>),
}

macro_rules! with_group {
    ($g:expr, $x:ident => $body:expr) => {
        match $g {
            AnyGroup::TokioGroup(s) => {
                let mut guard = s.lock().await;
                let $x = &mut *guard;
                $body
            }
            AnyGroup::SmolGroup(s) => {
                let mut guard = s.lock().await;
                let $x = &mut *guard;
                $body
            }
            AnyGroup::TokioController(s) => {
                let mut guard = s.lock().await;
                let $x = &mut *guard;
                $body
            }
            AnyGroup::SmolController(s) => {
                let mut guard = s.lock().await;
                let $x = &mut *guard;
                $body
            }
        }
    };
}

/// One Raft group of a ShardedCluster — a replica group (`sc.group(gid)`) or the shard
/// controller (`sc.controller`) — with LocalCluster's fault API: crash, restart, partition,
/// isolate, heal, set_unreliable, set_reliable, pause, resume, status, wait_leader, leader.
/// Nodes are numbered 0..n-1 (index = position in `addrs`).
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct ShardGroup {
    group: AnyGroup,
    /// 0 for the controller.
    gid: Gid,
    addrs: Vec<String>,
}

impl ShardGroup {
    fn index(&self, i: i64) -> PyResult<usize> {
        let n = self.addrs.len();
        if i < 0 || i as usize >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "no node {i} (the group has {n}: 0..{})",
                n.saturating_sub(1)
            )));
        }
        Ok(i as usize)
    }
}

#[pymethods]
impl ShardGroup {
    /// The group's gid (>= 1), or 0 for the shard controller's group.
    #[getter]
    fn gid(&self) -> Gid {
        self.gid
    }

    /// Client addresses "127.0.0.1:PORT" of the group's nodes, index = node.
    #[getter]
    fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// Number of nodes in the group.
    fn __len__(&self) -> usize {
        self.addrs.len()
    }

    /// Stops node i abruptly; its durable state stays.
    fn crash(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(
            py,
            async move { ce(with_group!(&g, c => c.crash(i).await)) },
        )?
    }

    /// Starts node i again from its durable state, on the same addresses.
    fn restart(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(
            py,
            async move { ce(with_group!(&g, c => c.restart(i).await)) },
        )?
    }

    /// Whether node i is running (not crashed).
    fn is_running(&self, py: Python<'_>, i: i64) -> PyResult<bool> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(py, async move { with_group!(&g, c => c.is_running(i)) })
    }

    /// `partition([0, 1], [2])`: sets of nodes of this group that can talk only within
    /// themselves. Nodes in no set are cut off from everyone.
    #[pyo3(signature = (*parts))]
    fn partition(&self, py: Python<'_>, parts: Vec<Vec<i64>>) -> PyResult<()> {
        let parts = parts
            .into_iter()
            .map(|p| p.into_iter().map(|i| self.index(i)).collect())
            .collect::<PyResult<Vec<Vec<usize>>>>()?;
        let g = self.group.clone();
        block_on(
            py,
            async move { ce(with_group!(&g, c => c.partition(&parts))) },
        )?
    }

    /// Cuts node i off from the group's other nodes.
    fn isolate(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(py, async move { ce(with_group!(&g, c => c.isolate(i))) })?
    }

    /// Full connectivity within the group again.
    fn heal(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.group.clone();
        block_on(py, async move { with_group!(&g, c => c.heal()) })
    }

    /// Peer messages within the group are dropped with probability `drop` and delayed by a
    /// uniform time in `delay_ms` = (min, max) milliseconds (reordering them when `reorder`).
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
        let g = self.group.clone();
        block_on(py, async move {
            with_group!(&g, c => c.set_unreliable(drop, delay_ms, reorder))
        })
    }

    /// Reliable peer traffic within the group again.
    fn set_reliable(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.group.clone();
        block_on(py, async move { with_group!(&g, c => c.set_reliable()) })
    }

    /// Pauses node i as SIGSTOP does a process (sockets and state kept) until resume(i).
    fn pause(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(py, async move { ce(with_group!(&g, c => c.pause(i))) })?
    }

    /// Resumes node i: it handles what arrived while it was paused.
    fn resume(&self, py: Python<'_>, i: i64) -> PyResult<()> {
        let i = self.index(i)?;
        let g = self.group.clone();
        block_on(py, async move { ce(with_group!(&g, c => c.resume(i))) })?
    }

    /// Waits until some node of the group leads and serves; returns its index. Raises
    /// raftkv.Timeout.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_leader(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let t = duration(timeout, "timeout")?;
        let g = self.group.clone();
        block_on(py, async move {
            ce(with_group!(&g, c => c.wait_leader(t).await))
        })?
    }

    /// The index of the group's leader of the highest term among running nodes, or None.
    fn leader(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        let g = self.group.clone();
        block_on(py, async move { with_group!(&g, c => c.leader().await) })
    }

    /// Node i's Raft status: a dict (index, id, raft_id, role, term, leader, commit_index,
    /// applied_index, ...) as LocalCluster.status gives. Raises raftkv.ClusterError if node i
    /// is not running.
    fn status<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyDict>> {
        let i = self.index(i)?;
        let g = self.group.clone();
        let s = block_on(
            py,
            async move { ce(with_group!(&g, c => c.status(i).await)) },
        )??;
        status_dict(py, &s, Some(1))
    }

    fn __repr__(&self) -> String {
        match self.gid {
            0 => format!("ShardGroup(controller, addrs={:?})", self.addrs),
            g => format!("ShardGroup(gid={g}, addrs={:?})", self.addrs),
        }
    }
}

// ---- ShardedCluster ----

enum AnySharded {
    Tokio(RSharded<TokioRuntime>),
    Smol(RSharded<SmolRuntime>),
}

macro_rules! with_sharded {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            AnySharded::Tokio($x) => $body,
            AnySharded::Smol($x) => $body,
        }
    };
}

type ShardedSlot = Arc<tokio::sync::Mutex<Option<AnySharded>>>;

/// A sharded raftkv store in this process over real TCP on 127.0.0.1: the shard
/// controller's Raft group and `groups` replica groups (gids 1..groups), joined so that every
/// shard is assigned.
///
/// `ShardedCluster(groups=3, nodes_per_group=3, controllers=3, shards=16, storage="memory",
/// data_dir=None, runtime="tokio", seed=None)`: storage "memory" | "lmdb"; runtime "tokio" |
/// "smol". The number of shards is fixed for the cluster's life. Use it as a context manager,
/// or call close().
#[pyclass(module = "raftkv._raftkv", frozen)]
pub struct ShardedCluster {
    slot: ShardedSlot,
    controller_addrs: Vec<String>,
    shards: u32,
    runtime: String,
}

fn not_open() -> PyErr {
    ClusterError::new_err("the sharded cluster is closed; start a new ShardedCluster")
}

impl ShardedCluster {
    fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut AnySharded,
            ) -> Pin<Box<dyn Future<Output = PyResult<T>> + Send + 'a>>
            + Send
            + 'static,
    {
        let slot = self.slot.clone();
        block_on(py, async move {
            let mut g = slot.lock().await;
            match g.as_mut() {
                None => Err(not_open()),
                Some(c) => f(c).await,
            }
        })?
    }
}

#[pymethods]
impl ShardedCluster {
    #[new]
    #[pyo3(signature = (groups=3, nodes_per_group=3, controllers=3, shards=16, storage="memory", data_dir=None, runtime="tokio", seed=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        groups: i64,
        nodes_per_group: i64,
        controllers: i64,
        shards: i64,
        storage: &str,
        data_dir: Option<PathBuf>,
        runtime: &str,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let count = |v: i64, what: &str, lo: i64, hi: i64| {
            if (lo..=hi).contains(&v) {
                Ok(v as usize)
            } else {
                Err(PyValueError::new_err(format!(
                    "{what} must be {lo} to {hi}, not {v}"
                )))
            }
        };
        let groups = count(groups, "groups", 0, raftkv_node::sharded::GROUPS_MAX as i64)?;
        let nodes_per_group = count(nodes_per_group, "nodes_per_group", 1, 7)?;
        let controllers = count(controllers, "controllers", 1, 7)?;
        let shards = count(shards, "shards", 1, SHARDS_MAX as i64)? as u32;
        let kind = match storage {
            "memory" => StorageKind::Memory,
            "lmdb" => StorageKind::Lmdb,
            s => {
                return Err(PyValueError::new_err(format!(
                    "storage must be \"memory\" or \"lmdb\", not {s:?}"
                )))
            }
        };
        if runtime != "tokio" && runtime != "smol" {
            return Err(PyValueError::new_err(format!(
                "runtime must be \"tokio\" or \"smol\", not {runtime:?}"
            )));
        }
        let mut config = ShardedConfig::new(groups, nodes_per_group, controllers, shards);
        config.storage = kind;
        config.data_dir = data_dir;
        config.seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let smol = runtime == "smol";
        let cluster = block_on(py, async move {
            if smol {
                RSharded::start(SmolRuntime::new(), config)
                    .await
                    .map(AnySharded::Smol)
            } else {
                RSharded::start(tokio_runtime(), config)
                    .await
                    .map(AnySharded::Tokio)
            }
        })?
        .map_err(sharded_err)?;
        let controller_addrs = with_sharded!(&cluster, c => c.controller_addrs());
        Ok(Self {
            slot: Arc::new(tokio::sync::Mutex::new(Some(cluster))),
            controller_addrs,
            shards,
            runtime: runtime.to_string(),
        })
    }

    /// The shard controller's client addresses (for ShardClerk and `raftkv shard`).
    #[getter]
    fn controller_addrs(&self) -> Vec<String> {
        self.controller_addrs.clone()
    }

    /// The number of shards, fixed for the cluster's life.
    #[getter]
    fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard controller's Raft group, with the fault API of a LocalCluster.
    #[getter]
    fn controller(&self, py: Python<'_>) -> PyResult<ShardGroup> {
        self.run(py, |c| {
            Box::pin(async move {
                let group = match c {
                    AnySharded::Tokio(c) => AnyGroup::TokioController(c.controller()),
                    AnySharded::Smol(c) => AnyGroup::SmolController(c.controller()),
                };
                let addrs = with_sharded!(c, c => c.controller_addrs());
                Ok(ShardGroup {
                    group,
                    gid: 0,
                    addrs,
                })
            })
        })
    }

    /// Configuration `num` (None: the latest) as a dict: {"num": int, "shards": [gid, ...]
    /// (one per shard; 0 = unassigned), "groups": {gid: [client addrs]}}.
    #[pyo3(signature = (num=None))]
    fn config<'py>(&self, py: Python<'py>, num: Option<u64>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.run(py, move |c| {
            Box::pin(async move { with_sharded!(c, c => c.query(num).await.map_err(sharded_err)) })
        })?;
        config_dict(py, &c)
    }

    /// Starts a new replica group of `n` nodes and joins it; returns its gid (>= 1).
    #[pyo3(signature = (n=3))]
    fn add_group(&self, py: Python<'_>, n: i64) -> PyResult<Gid> {
        if !(1..=7).contains(&n) {
            return Err(PyValueError::new_err(format!(
                "a group has 1 to 7 nodes, not {n}"
            )));
        }
        self.run(py, move |c| {
            Box::pin(async move {
                with_sharded!(c, c => c.add_group(n as usize).await.map_err(sharded_err))
            })
        })
    }

    /// Joins the started groups `gids` (again, after a leave); returns the config number made.
    /// Raises raftkv.ShardError if the controller refuses (already joined...).
    fn join(&self, py: Python<'_>, gids: Vec<i64>) -> PyResult<u64> {
        let gids = self::gids(gids)?;
        self.run(py, move |c| {
            Box::pin(async move { with_sharded!(c, c => c.join(&gids).await.map_err(sharded_err)) })
        })
    }

    /// The groups `gids` leave; their shards move to the others. A group that left keeps
    /// running (it hands its shards off). Returns the config number made.
    fn leave(&self, py: Python<'_>, gids: Vec<i64>) -> PyResult<u64> {
        let gids = self::gids(gids)?;
        self.run(py, move |c| {
            Box::pin(
                async move { with_sharded!(c, c => c.leave(&gids).await.map_err(sharded_err)) },
            )
        })
    }

    /// Hands `shard` to group `gid`; returns the config number made. Raises
    /// raftkv.ShardError if the controller refuses (shard out of range, gid not joined).
    #[pyo3(name = "move")]
    fn move_shard(&self, py: Python<'_>, shard: i64, gid: i64) -> PyResult<u64> {
        let shard = u32::try_from(shard)
            .map_err(|_| PyValueError::new_err(format!("a shard is >= 0, not {shard}")))?;
        let gid = self::gids(vec![gid])?[0];
        self.run(py, move |c| {
            Box::pin(async move {
                with_sharded!(c, c => c.move_shard(shard, gid).await.map_err(sharded_err))
            })
        })
    }

    /// Waits until every started group has installed config `num` (None: the latest now),
    /// with its incoming shards arrived and its handed-off shards deleted; returns num.
    /// Raises raftkv.Timeout after `timeout` seconds.
    #[pyo3(signature = (num=None, timeout=30.0))]
    fn wait_config(&self, py: Python<'_>, num: Option<u64>, timeout: f64) -> PyResult<u64> {
        let t = duration(timeout, "timeout")?;
        self.run(py, move |c| {
            Box::pin(async move {
                with_sharded!(c, c => c.wait_config(num, t).await.map_err(sharded_err))
            })
        })
    }

    /// Gids of the started groups (running, crashed or left), in order.
    fn groups(&self, py: Python<'_>) -> PyResult<Vec<Gid>> {
        self.run(py, |c| {
            Box::pin(async move { Ok(with_sharded!(c, c => c.groups())) })
        })
    }

    /// Group `gid`, with the fault API of a LocalCluster. Raises raftkv.ClusterError if no
    /// group has that gid.
    fn group(&self, py: Python<'_>, gid: i64) -> PyResult<ShardGroup> {
        let gid = self::gids(vec![gid])?[0];
        self.run(py, move |c| {
            Box::pin(async move {
                let group = match c {
                    AnySharded::Tokio(c) => c.group(gid).map(AnyGroup::TokioGroup),
                    AnySharded::Smol(c) => c.group(gid).map(AnyGroup::SmolGroup),
                }
                .map_err(sharded_err)?;
                let addrs = with_sharded!(c, c => c.group_addrs(gid)).map_err(sharded_err)?;
                Ok(ShardGroup { group, gid, addrs })
            })
        })
    }

    /// Where group `gid` stands, read at its leader: {"num": installed config, "shards":
    /// {shard: {"status": "serving" | "pulling" | "be_pulled" | "gc_pending", "keys": int,
    /// "bytes": int}}, "bytes": int}, or None if no node of the group leads and answers.
    /// "bytes" count data as the group's data_bytes_max does (a shard that would not fit
    /// stays "pulling").
    fn progress<'py>(&self, py: Python<'py>, gid: i64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let gid = self::gids(vec![gid])?[0];
        let p = self.run(py, move |c| {
            Box::pin(
                async move { with_sharded!(c, c => c.progress(gid).await.map_err(sharded_err)) },
            )
        })?;
        let Some(p) = p else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("num", p.config.num)?;
        let shards = PyDict::new(py);
        for s in &p.shards {
            let e = PyDict::new(py);
            let status = match s.status {
                raftkv_shard::group::ShardStatus::Serving => "serving",
                raftkv_shard::group::ShardStatus::Pulling => "pulling",
                raftkv_shard::group::ShardStatus::BePulled => "be_pulled",
                raftkv_shard::group::ShardStatus::GcPending => "gc_pending",
            };
            e.set_item("status", status)?;
            e.set_item("keys", s.keys)?;
            e.set_item("bytes", s.bytes)?;
            shards.set_item(s.shard, e)?;
        }
        d.set_item("shards", shards)?;
        d.set_item("bytes", p.shards.iter().map(|s| s.bytes).sum::<u64>())?;
        Ok(Some(d))
    }

    /// A new ShardClerk of this store (its own session), recording into `history` if given.
    #[pyo3(signature = (history=None, timeout=10.0))]
    fn clerk(
        &self,
        py: Python<'_>,
        history: Option<PyRef<'_, History>>,
        timeout: f64,
    ) -> PyResult<ShardClerk> {
        let config = shard_clerk_config(timeout)?;
        let h = history.map(|h| h.inner.clone());
        let inner = self.run(py, move |c| {
            Box::pin(async move {
                Ok(match c {
                    AnySharded::Tokio(c) => AnyShardClerk::Tokio(c.clerk(config, h)),
                    AnySharded::Smol(c) => AnyShardClerk::Smol(c.clerk(config, h)),
                })
            })
        })?;
        Ok(ShardClerk {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            controller_addrs: self.controller_addrs.clone(),
        })
    }

    /// Stops every node of every group and the controller and waits until their ports,
    /// threads and storage are released. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let slot = self.slot.clone();
        block_on(py, async move {
            let mut g = slot.lock().await;
            if let Some(mut c) = g.take() {
                with_sharded!(&mut c, c => c.close().await);
            }
        })
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        let slot = self.slot.clone();
        block_on(py, async move { slot.lock().await.is_none() })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "ShardedCluster(shards={}, runtime={:?}, controller_addrs={:?})",
            self.shards, self.runtime, self.controller_addrs
        )
    }
}

impl Drop for ShardedCluster {
    fn drop(&mut self) {
        if let Ok(mut g) = self.slot.try_lock() {
            g.take();
        }
    }
}
