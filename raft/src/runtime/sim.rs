//! The deterministic simulation runtime: one thread, virtual time, seeded scheduling. The real
//! driver ([`crate::Node`]) runs on it unchanged, over [`SimNet`] (a network that drops, delays,
//! reorders and partitions) and [`SimStorage`] (memory that becomes durable after a simulated
//! disk latency). Tasks belong to groups; killing a group drops its tasks mid-flight, which is a
//! crash: writes not yet durable are lost.

use crate::io::{Runtime, Storage, StorageError, Transport, WriteOp};
use crate::message::Message;
use crate::rng::Rng;
use crate::sim::MemStore;
use crate::types::{NodeId, Persisted};
use futures::channel::mpsc;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Task {
    future: Option<BoxFuture>,
    group: u64,
    queued: bool,
}

struct Inner {
    now: Duration,
    tasks: BTreeMap<u64, Task>,
    ready: Vec<u64>,
    timers: BTreeMap<(Duration, u64), Waker>,
    next_id: u64,
    rng: Rng,
    /// The group of the task being polled; tasks it spawns inherit it.
    current_group: u64,
    /// Paused groups (stopped processes): their tasks are not polled.
    paused: BTreeSet<u64>,
    /// Woken tasks of paused groups, polled once their group resumes.
    parked: Vec<u64>,
    /// Per group, how much longer its sleeps last, in thousandths (1,000: none): a clock that
    /// runs slow (above 1,000) or fast (below). Absent: 1,000.
    clock_per_mille: BTreeMap<u64, u64>,
    /// Issue 20: work handed to `spawn_blocking` finishes after a random delay in this range
    /// of virtual milliseconds ([`SimRuntime::set_blocking_delay_ms`]); `None`: at once.
    blocking_delay_ms: Option<(u64, u64)>,
}

/// The simulation runtime. Clones share one executor.
#[derive(Clone)]
pub struct SimRuntime {
    inner: Arc<Mutex<Inner>>,
    /// Tasks spawned through this handle go to this group (else the spawning task's group).
    group: Option<u64>,
}

struct TaskWaker {
    id: u64,
    inner: Weak<Mutex<Inner>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.inner.upgrade() {
            let mut inner = lock(&inner);
            let id = self.id;
            if let Some(task) = inner.tasks.get_mut(&id) {
                if !task.queued {
                    task.queued = true;
                    inner.ready.push(id);
                }
            }
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic inside a polled task never holds this lock, so poisoning cannot hide a bug.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimRuntime {
    /// A new simulation. Every Raft node in this process then checks its invariants after
    /// every input, in release builds too ([`crate::Raft::check_invariants`]).
    pub fn new(seed: u64) -> Self {
        crate::inspect::check_after_every_input();
        Self::without_invariant_checks(seed)
    }

    /// A new simulation that leaves the nodes' invariant checks as the build has them (debug
    /// builds only): for a simulation run in a process whose other nodes must not pay for
    /// checks after every input (the Python `SimCluster` beside `LocalCluster`s).
    pub fn without_invariant_checks(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                now: Duration::ZERO,
                tasks: BTreeMap::new(),
                ready: Vec::new(),
                timers: BTreeMap::new(),
                next_id: 1,
                rng: Rng::new(seed),
                current_group: 0,
                paused: BTreeSet::new(),
                parked: Vec::new(),
                clock_per_mille: BTreeMap::new(),
                blocking_delay_ms: None,
            })),
            group: None,
        }
    }

    /// Pauses `group`, as SIGSTOP does a process: its tasks keep their state but are not
    /// polled; what wakes them (messages, timers) waits, and runs late once it resumes.
    pub fn pause_group(&self, group: u64) {
        lock(&self.inner).paused.insert(group);
    }

    /// Resumes a paused `group`: its woken tasks run again.
    pub fn resume_group(&self, group: u64) {
        let mut inner = lock(&self.inner);
        if !inner.paused.remove(&group) {
            return;
        }
        let parked = std::mem::take(&mut inner.parked);
        let (back, still): (Vec<u64>, Vec<u64>) = parked
            .into_iter()
            .partition(|id| inner.tasks.get(id).is_some_and(|t| t.group == group));
        inner.parked = still;
        inner.ready.extend(back);
    }

    /// Whether `group` is paused.
    pub fn is_paused(&self, group: u64) -> bool {
        lock(&self.inner).paused.contains(&group)
    }

    /// Skews `group`'s clock: its sleeps last `per_mille / 1000` of what they ask (1,000: no
    /// skew; 1,050: its clock runs 5% slow, so its timers fire late). Sleeps already waiting
    /// keep their deadline.
    pub fn set_clock_per_mille(&self, group: u64, per_mille: u64) {
        let per_mille = per_mille.max(1);
        let mut inner = lock(&self.inner);
        if per_mille == 1_000 {
            inner.clock_per_mille.remove(&group);
        } else {
            inner.clock_per_mille.insert(group, per_mille);
        }
    }

    /// Issue 20: from now on, work handed to [`Runtime::spawn_blocking`] (a snapshot read off
    /// a node's loop) runs after a random virtual delay of `lo..hi` ms, in a task of the
    /// caller's group (killed with it), instead of at once: its result then arrives after other
    /// events, as from a thread of its own. `None`: at once (the default). Runs stay
    /// deterministic either way.
    pub fn set_blocking_delay_ms(&self, range: Option<(u64, u64)>) {
        lock(&self.inner).blocking_delay_ms = range;
    }

    /// A handle whose spawned tasks (and theirs) belong to `group`, to be killed together.
    pub fn with_group(&self, group: u64) -> Self {
        Self {
            inner: self.inner.clone(),
            group: Some(group),
        }
    }

    /// Drops every task of `group` at once: a crash. A paused group is killed too, and is no
    /// longer paused (a restart in the group runs).
    pub fn kill_group(&self, group: u64) {
        let dropped: Vec<Task> = {
            let mut inner = lock(&self.inner);
            inner.paused.remove(&group);
            let ids: Vec<u64> = inner
                .tasks
                .iter()
                .filter(|(_, t)| t.group == group)
                .map(|(id, _)| *id)
                .collect();
            inner.parked.retain(|id| !ids.contains(id));
            ids.iter().filter_map(|id| inner.tasks.remove(id)).collect()
        };
        drop(dropped); // outside the lock: dropping futures may wake others
    }

    /// A random number from the runtime's seeded generator.
    pub fn random(&self, lo: u64, hi: u64) -> u64 {
        lock(&self.inner).rng.range(lo, hi)
    }

    pub fn chance(&self, p: f64) -> bool {
        lock(&self.inner).rng.chance(p)
    }

    /// Runs tasks until `future` completes; virtual time jumps to the next timer whenever no
    /// task can run. Returns `None` if everything is blocked with no timer left (a deadlock).
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        self.with_group(u64::MAX).spawn(async move {
            let v = future.await;
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        });
        loop {
            if let Some(v) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Some(v);
            }
            if !self.step() {
                return None;
            }
        }
    }

    /// Polls one ready task, or advances time to the next timer. False if neither is possible.
    fn step(&self) -> bool {
        let (id, mut future, group) = {
            let mut inner = lock(&self.inner);
            if inner.ready.is_empty() {
                let Some((&(at, seq), _)) = inner.timers.iter().next() else {
                    return false;
                };
                let waker = inner.timers.remove(&(at, seq));
                inner.now = inner.now.max(at);
                drop(inner);
                if let Some(w) = waker {
                    w.wake();
                }
                return true;
            }
            let len = inner.ready.len() as u64;
            let pick = inner.rng.range(0, len) as usize;
            let id = inner.ready.swap_remove(pick);
            let paused = match inner.tasks.get(&id) {
                None => return true, // killed after being woken
                Some(task) => inner.paused.contains(&task.group),
            };
            if paused {
                // Stays queued: it runs when its group resumes.
                inner.parked.push(id);
                return true;
            }
            let Some(task) = inner.tasks.get_mut(&id) else {
                return true;
            };
            task.queued = false;
            let Some(future) = task.future.take() else {
                return true;
            };
            let group = task.group;
            inner.current_group = group;
            (id, future, group)
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            inner: Arc::downgrade(&self.inner),
        }));
        let done = future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        let mut inner = lock(&self.inner);
        inner.current_group = 0;
        if done {
            inner.tasks.remove(&id);
        } else if let Some(task) = inner.tasks.get_mut(&id) {
            debug_assert_eq!(task.group, group);
            task.future = Some(future);
        } else {
            drop(inner); // killed while running: drop it outside the lock
            drop(future);
        }
        true
    }
}

impl Runtime for SimRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut inner = lock(&self.inner);
        let id = inner.next_id;
        inner.next_id += 1;
        let group = self.group.unwrap_or(inner.current_group);
        inner.tasks.insert(
            id,
            Task {
                future: Some(Box::pin(future)),
                group,
                queued: true,
            },
        );
        inner.ready.push(id);
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let (now, per_mille) = {
            let inner = lock(&self.inner);
            let group = self.group.unwrap_or(inner.current_group);
            (inner.now, inner.clock_per_mille.get(&group).copied())
        };
        let duration = match per_mille {
            None => duration,
            Some(k) => {
                let nanos = duration.as_nanos().saturating_mul(u128::from(k)) / 1_000;
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        };
        let deadline = now + duration;
        Sleep {
            inner: self.inner.clone(),
            deadline,
            key: None,
        }
    }

    fn now(&self) -> Duration {
        lock(&self.inner).now
    }

    /// Inline: virtual time does not pass while it runs, and runs stay deterministic. With
    /// [`SimRuntime::set_blocking_delay_ms`], inline in a task, after the delay.
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let delay_ms = {
            let mut inner = lock(&self.inner);
            let range = inner.blocking_delay_ms;
            range.map(|(lo, hi)| inner.rng.range(lo, hi))
        };
        match delay_ms {
            Some(ms) if ms > 0 => {
                let sleep = self.sleep(Duration::from_millis(ms));
                self.spawn(async move {
                    sleep.await;
                    f();
                });
            }
            _ => f(),
        }
    }
}

struct Sleep {
    inner: Arc<Mutex<Inner>>,
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner_arc = self.inner.clone();
        let mut inner = lock(&inner_arc);
        if inner.now >= self.deadline {
            if let Some(k) = self.key.take() {
                inner.timers.remove(&k);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let seq = inner.next_id;
                inner.next_id += 1;
                (self.deadline, seq)
            }
        };
        inner.timers.insert(key, cx.waker().clone());
        drop(inner);
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            lock(&self.inner).timers.remove(&k);
        }
    }
}

// ---- the simulated network ----

struct NetInner {
    inboxes: BTreeMap<NodeId, mpsc::UnboundedSender<Message>>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    drop_chance: f64,
    /// Chance that a message is delivered twice (the copy with its own latency).
    duplicate_chance: f64,
    latency_ms: (u64, u64),
    /// What each node's transport was last told of its peers ([`Transport::set_peers`]).
    peers: BTreeMap<NodeId, BTreeMap<NodeId, String>>,
}

/// A simulated network: latency, loss, duplication, reordering (random latencies) and one-way
/// blocks.
#[derive(Clone)]
pub struct SimNet {
    runtime: SimRuntime,
    inner: Arc<Mutex<NetInner>>,
}

impl SimNet {
    /// Network tasks run in group 0, which is never killed.
    pub fn new(runtime: &SimRuntime) -> Self {
        Self {
            runtime: runtime.with_group(0),
            inner: Arc::new(Mutex::new(NetInner {
                inboxes: BTreeMap::new(),
                blocked: BTreeSet::new(),
                drop_chance: 0.0,
                duplicate_chance: 0.0,
                latency_ms: (1, 5),
                peers: BTreeMap::new(),
            })),
        }
    }

    fn net(&self) -> MutexGuard<'_, NetInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new endpoint for node `id`; it replaces any earlier one (messages to that are lost).
    pub fn endpoint(&self, id: NodeId) -> SimTransport {
        let (tx, rx) = mpsc::unbounded();
        self.net().inboxes.insert(id, tx);
        SimTransport {
            id,
            net: self.clone(),
            inbox: rx,
        }
    }

    pub fn set_drop_chance(&self, p: f64) {
        self.net().drop_chance = p;
    }

    pub fn set_latency_ms(&self, lo: u64, hi: u64) {
        self.net().latency_ms = (lo, hi.max(lo));
    }

    /// Delivers each message twice with chance `p` (each copy with its own latency).
    pub fn set_duplicate_chance(&self, p: f64) {
        self.net().duplicate_chance = p;
    }

    /// Drops messages from `from` to `to` (one way: `to` still reaches `from`).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.net().blocked.insert((from, to));
    }

    /// Lets messages from `from` to `to` through again (undoes [`SimNet::block`] and that
    /// direction of a partition).
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.net().blocked.remove(&(from, to));
    }

    /// Only nodes in the same group can talk.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut net = self.net();
        net.blocked.clear();
        let ids: Vec<NodeId> = groups.iter().flatten().copied().collect();
        let group_of = |id: &NodeId| groups.iter().position(|g| g.contains(id));
        for a in &ids {
            for b in &ids {
                if group_of(a) != group_of(b) {
                    net.blocked.insert((*a, *b));
                }
            }
        }
    }

    pub fn heal(&self) {
        self.net().blocked.clear();
    }

    /// The peers node `id`'s driver last gave its transport ([`Transport::set_peers`]).
    pub fn peers_of(&self, id: NodeId) -> Option<BTreeMap<NodeId, String>> {
        self.net().peers.get(&id).cloned()
    }

    fn send(&self, msg: Message) {
        let (drop_chance, duplicate_chance, (lo, hi)) = {
            let n = self.net();
            (n.drop_chance, n.duplicate_chance, n.latency_ms)
        };
        if self.net().blocked.contains(&(msg.from, msg.to)) || self.runtime.chance(drop_chance) {
            return;
        }
        // No draw when duplication is off: runs without it replay as before.
        if duplicate_chance > 0.0 && self.runtime.chance(duplicate_chance) {
            self.deliver_later(msg.clone(), lo, hi);
        }
        self.deliver_later(msg, lo, hi);
    }

    /// Delivers `msg` after a latency of `lo..=hi` ms, unless its link is blocked by then.
    fn deliver_later(&self, msg: Message, lo: u64, hi: u64) {
        let delay = Duration::from_millis(self.runtime.random(lo, hi + 1));
        let net = self.clone();
        let sleep = self.runtime.sleep(delay);
        self.runtime.spawn(async move {
            sleep.await;
            let n = net.net();
            if !n.blocked.contains(&(msg.from, msg.to)) {
                if let Some(tx) = n.inboxes.get(&msg.to) {
                    // A closed inbox (a crashed node) loses the message, as a real network does.
                    let _ = tx.unbounded_send(msg);
                }
            }
        });
    }
}

/// One node's end of a [`SimNet`].
pub struct SimTransport {
    id: NodeId,
    net: SimNet,
    inbox: mpsc::UnboundedReceiver<Message>,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: Message) {
        debug_assert_eq!(msg.from, self.id);
        self.net.send(msg);
    }

    async fn recv(&mut self) -> Option<Message> {
        self.inbox.next().await
    }

    /// Every node is reachable by id in the simulation; the peers are recorded for tests.
    fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.net.net().peers.insert(self.id, peers.clone());
    }
}

// ---- the simulated disk ----

/// Memory storage whose writes become durable after a simulated latency. If the writing task
/// is killed first (a crash), the write never happens. Clones share the durable state.
///
/// Disk faults (issue 21, TigerBeetle's VOPR as the model): with
/// [`SimStorage::set_write_error_chance`], a write fails as an `fsync` error does — it may or
/// may not have become durable (either, at random) — and the storage then fails every later
/// write and load with the same error (fail-stop), until [`SimStorage::repair`] (the process
/// restarted on a disk that works again).
#[derive(Clone)]
pub struct SimStorage {
    runtime: SimRuntime,
    store: Arc<Mutex<MemStore>>,
    latency_ms: (u64, u64),
    faults: Arc<Mutex<DiskFaults>>,
}

/// A simulated disk's faults, shared by a storage's clones.
#[derive(Debug, Default)]
struct DiskFaults {
    /// The chance that a write fails.
    write_error_chance: f64,
    /// The first error, returned again by every later write and load.
    failed: Option<StorageError>,
    /// Writes failed so far.
    write_errors: u64,
}

impl SimStorage {
    pub fn new(runtime: &SimRuntime, latency_ms: (u64, u64)) -> Self {
        Self {
            runtime: runtime.clone(),
            store: Arc::default(),
            latency_ms,
            faults: Arc::default(),
        }
    }

    /// What is durable now.
    pub fn durable(&self) -> MemStore {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes each later write fail with chance `p` (0: never).
    pub fn set_write_error_chance(&self, p: f64) {
        self.faults().write_error_chance = p;
    }

    /// Whether a write failed and the storage has not been repaired since.
    pub fn has_failed(&self) -> bool {
        self.faults().failed.is_some()
    }

    /// Writes failed so far.
    pub fn write_errors(&self) -> u64 {
        self.faults().write_errors
    }

    /// Clears a failure: the next load and writes work (what became durable stays).
    pub fn repair(&self) {
        self.faults().failed = None;
    }

    fn faults(&self) -> MutexGuard<'_, DiskFaults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Storage for SimStorage {
    async fn load(&self) -> Result<Persisted, StorageError> {
        if let Some(e) = &self.faults().failed {
            return Err(e.clone());
        }
        Ok(self.durable().persisted())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let (lo, hi) = self.latency_ms;
        let delay = Duration::from_millis(self.runtime.random(lo, hi + 1));
        self.runtime.sleep(delay).await;
        let mut faults = self.faults();
        if let Some(e) = &faults.failed {
            return Err(e.clone());
        }
        let fails =
            faults.write_error_chance > 0.0 && self.runtime.chance(faults.write_error_chance);
        // A failed fsync leaves the write durable or not: the caller cannot know which.
        if !fails || self.runtime.chance(0.5) {
            self.store
                .lock()
                .map_err(|_| StorageError::Closed)?
                .apply(ops);
        }
        if fails {
            let e = StorageError::io(
                "fsync (simulated)",
                "",
                std::io::Error::other("injected disk fault"),
            );
            faults.write_errors += 1;
            faults.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }
}
