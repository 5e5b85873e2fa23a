//! [`SimCluster`]: a KV cluster on the deterministic simulator (feature `sim`), with the fault
//! API of [`LocalCluster`](crate::cluster::LocalCluster) and Clerks, driven in virtual time.
//!
//! It runs the real code — the driver [`raftkv_raft::Node`], the KV state machine and service,
//! the KV [`Clerk`] and its retries — on [`SimRuntime`] (one thread, virtual time, seeded
//! scheduling), over [`SimNet`](raftkv_raft::runtime::sim::SimNet) (latency, loss, reordering,
//! partitions) and [`SimStorage`](raftkv_raft::runtime::sim::SimStorage) (a crash loses what
//! was not yet durable; what was stays). The cluster itself is the harness of the KV crate's
//! simulation tests, [`KvSimCluster`]; this module adds the trace, the fault API and a way to
//! drive it from outside the simulation, one blocking call at a time.
//!
//! Every call runs the simulation until it is done: [`SimCluster::run_for`] advances virtual
//! time; a Clerk's operation ([`SimCluster::run_clerk`]) runs until it is answered or its
//! (virtual) timeout passes; faults take effect at once, at the virtual time now. With the same
//! seed, the same calls in the same order give the same run: the same history, byte for byte,
//! and the same trace ([`crate::trace`]'s format, virtual µs).
//!
//! [`SimCluster::run_workload`] runs concurrent clients under a random fault schedule drawn
//! from the seed (`raftkv sim`).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raftkv_kv::clerk::{Clerk, ClerkConfig};
use raftkv_kv::history::History;
use raftkv_kv::state::KvStateMachine;
use raftkv_kv::testing::{
    leader_among, ClusterConfig as KvSimConfig, KvSimCluster, SimConnector, CLIENT_GROUP, NET_GROUP,
};
use raftkv_raft::driver::observer::{EventKind, ObserverHandle};
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::{NodeId, Runtime, Status};

use crate::cluster::partition_links;
use crate::error::ClusterError;
use crate::trace::{ClusterTrace, TraceRecorder, TRACE_EVENTS_MAX_DEFAULT, TRACE_EVENTS_MAX_LIMIT};

/// A simulated cluster has 1 to this many nodes.
pub const SIM_NODES_MAX: usize = 7;
/// [`SimCluster::run_workload`] runs at most this many clients.
pub const SIM_CLIENTS_MAX: usize = 64;
/// [`SimCluster::run_workload`] uses at most this many keys.
pub const SIM_KEYS_MAX: usize = 1_000;
/// One call advances virtual time by at most this much (a day).
pub const SIM_RUN_MAX: Duration = Duration::from_secs(86_400);

/// A Clerk of a [`SimCluster`]: the real KV Clerk over the simulated client network.
pub type SimClerk = Clerk<SimRuntime, SimConnector>;

/// A node of a [`SimCluster`].
type SimNode = raftkv_raft::Node<SimRuntime, KvStateMachine>;

/// How a simulated cluster is built.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// 1 to [`SIM_NODES_MAX`].
    pub nodes: usize,
    /// Seeds everything: scheduling, latencies, losses, elections, the workload's choices.
    pub seed: u64,
    /// Snapshot once about this many bytes of log were applied since the last snapshot
    /// (`None`: never).
    pub snapshot_bytes: Option<u64>,
    /// The trace keeps at most this many events (0: no trace), at most
    /// [`TRACE_EVENTS_MAX_LIMIT`].
    pub trace_events_max: usize,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            snapshot_bytes: Some(64 * 1024),
            trace_events_max: TRACE_EVENTS_MAX_DEFAULT,
        }
    }
}

/// A KV cluster on the deterministic simulator (see the module documentation). Nodes are
/// named by index `0..n`; index `i` has Raft id `i + 1` and the client address `n{i+1}`.
pub struct SimCluster {
    rt: SimRuntime,
    /// `None` only while a call runs it, or for good once the simulation deadlocked.
    kv: Option<KvSimCluster>,
    trace: Option<TraceRecorder>,
    /// Directed links (Raft ids) the partitions and blocks in force block.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Paused nodes (by index): they are asked nothing (they would not answer).
    paused: BTreeSet<usize>,
    n: usize,
}

impl SimCluster {
    /// Starts the nodes (at virtual time 0); they have not run yet.
    pub fn start(config: SimConfig) -> Result<Self, ClusterError> {
        if config.nodes == 0 || config.nodes > SIM_NODES_MAX {
            return Err(ClusterError::Size {
                nodes: config.nodes,
            });
        }
        if config.trace_events_max > TRACE_EVENTS_MAX_LIMIT {
            return Err(ClusterError::Setting(format!(
                "trace_events_max must be at most {TRACE_EVENTS_MAX_LIMIT}, not {}",
                config.trace_events_max
            )));
        }
        // The nodes of other clusters in this process must not pay for checks after every
        // input: this runtime leaves them as the build has them.
        let rt = SimRuntime::without_invariant_checks(config.seed);
        let trace = (config.trace_events_max > 0)
            .then(|| TraceRecorder::new(Duration::ZERO, config.trace_events_max));
        let mut kv_config = KvSimConfig::new(config.nodes).maxraftstate(config.snapshot_bytes);
        if let Some(t) = &trace {
            for id in 1..=config.nodes as NodeId {
                t.add_node(id);
            }
            kv_config.observer = Some(ObserverHandle(Arc::new(t.clone())));
        }
        let (seed, r2) = (config.seed, rt.clone());
        let kv = rt
            .block_on(async move { KvSimCluster::new(seed, &r2, kv_config).await })
            .ok_or(ClusterError::Deadlock)?;
        Ok(Self {
            rt,
            kv: Some(kv),
            trace,
            blocked: BTreeSet::new(),
            paused: BTreeSet::new(),
            n: config.nodes,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.rt.now()
    }

    /// The simulation runtime (for tasks of your own: they run while calls run).
    pub fn runtime(&self) -> &SimRuntime {
        &self.rt
    }

    /// The client addresses the Clerks use, index = node (`n1`, `n2`, ...).
    pub fn addrs(&self) -> Vec<String> {
        KvSimCluster::<KvStateMachine>::addrs(&(0..self.n).collect::<Vec<_>>())
    }

    /// Runs the simulation until `future` is done; its tasks and every other keep running.
    pub fn drive<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ClusterError> {
        self.rt.block_on(future).ok_or(ClusterError::Deadlock)
    }

    /// Runs `f` on the cluster inside the simulation (it gets the cluster and gives it back).
    fn with_kv<T, Fut>(&mut self, f: impl FnOnce(KvSimCluster) -> Fut) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        Fut: Future<Output = (KvSimCluster, T)> + Send + 'static,
    {
        let kv = self.kv.take().ok_or(ClusterError::Deadlock)?;
        let (kv, out) = self.drive(f(kv))?;
        self.kv = Some(kv);
        Ok(out)
    }

    fn kv(&self) -> Result<&KvSimCluster, ClusterError> {
        self.kv.as_ref().ok_or(ClusterError::Deadlock)
    }

    fn kv_mut(&mut self) -> Result<&mut KvSimCluster, ClusterError> {
        self.kv.as_mut().ok_or(ClusterError::Deadlock)
    }

    fn check(&self, i: usize) -> Result<(), ClusterError> {
        match i < self.n {
            true => Ok(()),
            false => Err(ClusterError::NoSuchNode {
                index: i,
                nodes: self.n,
            }),
        }
    }

    /// Records a fault (node `i`'s, or the cluster's with `None`) in the trace.
    fn record(&self, i: Option<usize>, kind: EventKind) {
        if let Some(t) = &self.trace {
            t.record(self.rt.now(), i.map_or(0, |i| i as NodeId + 1), kind);
        }
    }

    /// Advances virtual time by `duration` (at most [`SIM_RUN_MAX`]).
    pub fn run_for(&self, duration: Duration) -> Result<(), ClusterError> {
        if duration > SIM_RUN_MAX {
            return Err(ClusterError::Setting(format!(
                "a run is at most {} s of virtual time, not {:.0} s",
                SIM_RUN_MAX.as_secs(),
                duration.as_secs_f64()
            )));
        }
        self.drive(self.rt.sleep(duration))
    }

    /// Whether node `i` is running (not crashed).
    pub fn is_running(&self, i: usize) -> bool {
        i < self.n && self.kv.as_ref().is_some_and(|kv| kv.is_up(i))
    }

    /// Stops node `i` at once: its tasks are dropped mid-flight, writes its disk had not made
    /// durable are lost, what was durable stays.
    pub fn crash(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if !self.is_running(i) {
            return Err(ClusterError::NotRunning { index: i });
        }
        self.kv_mut()?.crash(i);
        self.paused.remove(&i); // killing its tasks ended the pause
        self.record(Some(i), EventKind::Crash);
        Ok(())
    }

    /// Starts node `i` again from its durable state.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if self.is_running(i) {
            return Err(ClusterError::Running { index: i });
        }
        self.record(Some(i), EventKind::Restart);
        self.with_kv(move |mut kv| async move {
            kv.start(i).await;
            (kv, ())
        })
    }

    /// Groups of nodes that can talk only within themselves (Raft traffic; clients reach every
    /// node); nodes in no group are cut off from everyone.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), ClusterError> {
        for &i in groups.iter().flatten() {
            self.check(i)?;
        }
        self.blocked = partition_links(self.n, groups);
        let ids = groups
            .iter()
            .map(|g| g.iter().map(|&i| i as NodeId + 1).collect())
            .collect();
        self.record(None, EventKind::Partition { groups: ids });
        self.apply_blocked()
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        let others = (0..self.n).filter(|&j| j != i).collect();
        self.partition(&[vec![i], others])
    }

    /// Full connectivity again (the unreliability of `set_unreliable` stays).
    pub fn heal(&mut self) -> Result<(), ClusterError> {
        self.blocked.clear();
        self.record(None, EventKind::Heal);
        self.apply_blocked()
    }

    fn apply_blocked(&self) -> Result<(), ClusterError> {
        let net = &self.kv()?.net;
        net.heal();
        for &(from, to) in &self.blocked {
            net.block(from, to);
        }
        if let Some(t) = &self.trace {
            t.set_blocked(self.blocked.clone());
        }
        Ok(())
    }

    /// Raft messages are lost with probability `drop` and delayed by a uniform time in
    /// `delay_ms` (which reorders them; without `reorder`, by the range's maximum).
    pub fn set_unreliable(
        &mut self,
        drop: f64,
        delay_ms: (u64, u64),
        reorder: bool,
    ) -> Result<(), ClusterError> {
        if !(0.0..=1.0).contains(&drop) {
            return Err(ClusterError::Setting(format!(
                "drop must be a probability in [0, 1], not {drop}"
            )));
        }
        let (lo, hi) = (delay_ms.0.min(delay_ms.1), delay_ms.0.max(delay_ms.1));
        let (lo, hi) = if reorder { (lo, hi) } else { (hi, hi) };
        let net = &self.kv()?.net;
        net.set_drop_chance(drop);
        net.set_latency_ms(lo, hi);
        let kind = EventKind::Unreliable {
            drop,
            delay_ms_min: lo,
            delay_ms_max: hi,
        };
        self.record(None, kind);
        Ok(())
    }

    /// Reliable Raft traffic again (1 to 5 ms of latency, no loss).
    pub fn set_reliable(&mut self) -> Result<(), ClusterError> {
        let net = &self.kv()?.net;
        net.set_drop_chance(0.0);
        net.set_latency_ms(1, 5);
        self.record(None, EventKind::Reliable);
        Ok(())
    }

    /// Node `i`'s status.
    pub fn status(&self, i: usize) -> Result<Status, ClusterError> {
        self.check(i)?;
        if self.paused.contains(&i) {
            return Err(ClusterError::Paused { index: i });
        }
        let node = self
            .kv()?
            .service(i)
            .ok_or(ClusterError::NotRunning { index: i })?
            .node()
            .clone();
        Ok(self.drive(async move { node.status().await })??)
    }

    /// The nodes that are running and not paused (`None` for the others), by index.
    fn answering(&self) -> Result<Vec<Option<SimNode>>, ClusterError> {
        let kv = self.kv()?;
        Ok((0..self.n)
            .map(|i| match self.paused.contains(&i) {
                true => None,
                false => kv.service(i).map(|s| s.node().clone()),
            })
            .collect())
    }

    /// The leader of the highest term among running nodes, if any.
    pub fn leader(&self) -> Result<Option<usize>, ClusterError> {
        let nodes = self.answering()?;
        self.drive(async move {
            let nodes: Vec<_> = nodes.iter().map(Option::as_ref).collect();
            leader_among(&nodes).await
        })
    }

    /// Waits (in virtual time) until some node leads; its index.
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let rt = self.rt.clone();
        let nodes = self.answering()?;
        let found = self.drive(async move {
            let nodes: Vec<_> = nodes.iter().map(Option::as_ref).collect();
            let deadline = rt.now() + timeout;
            loop {
                if let Some(l) = leader_among(&nodes).await {
                    return Some(l);
                }
                if rt.now() >= deadline {
                    return None;
                }
                rt.sleep(Duration::from_millis(10)).await;
            }
        })?;
        found.ok_or(ClusterError::NoLeader { waited: timeout })
    }

    /// Pauses node `i`, as SIGSTOP does a process: it keeps its state but runs nothing
    /// (messages, client requests, timers) until [`SimCluster::resume`]; then it handles what
    /// arrived meanwhile, late. Its status is not asked meanwhile ([`ClusterError::Paused`]).
    pub fn pause(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if !self.is_running(i) {
            return Err(ClusterError::NotRunning { index: i });
        }
        self.rt.pause_group(i as u64 + 1);
        self.paused.insert(i);
        self.record(Some(i), EventKind::Pause);
        Ok(())
    }

    /// Resumes node `i` (paused or not).
    pub fn resume(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        self.rt.resume_group(i as u64 + 1);
        self.paused.remove(&i);
        self.record(Some(i), EventKind::Resume);
        Ok(())
    }

    /// Whether node `i` is running and paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.paused.contains(&i)
    }

    /// Drops every Raft message from node `from` to node `to`, one way, until
    /// [`SimCluster::unblock`], `heal` or `partition`.
    pub fn block(&mut self, from: usize, to: usize) -> Result<(), ClusterError> {
        self.check(from)?;
        self.check(to)?;
        if from != to {
            let to_id = to as NodeId + 1;
            self.blocked.insert((from as NodeId + 1, to_id));
            self.record(Some(from), EventKind::Block { to: to_id });
            self.apply_blocked()?;
        }
        Ok(())
    }

    /// Lets Raft messages from node `from` to node `to` through again.
    pub fn unblock(&mut self, from: usize, to: usize) -> Result<(), ClusterError> {
        self.check(from)?;
        self.check(to)?;
        let to_id = to as NodeId + 1;
        self.blocked.remove(&(from as NodeId + 1, to_id));
        self.record(Some(from), EventKind::Unblock { to: to_id });
        self.apply_blocked()
    }

    /// A Clerk that knows every node, with `config`; recording into `history` (in virtual
    /// time) if given. Run its operations with [`SimCluster::run_clerk`].
    pub fn clerk(
        &self,
        config: ClerkConfig,
        history: Option<&History>,
    ) -> Result<SimClerk, ClusterError> {
        let addrs = self.addrs();
        let connector = self.kv()?.clients.connector(&addrs);
        let clerk = Clerk::new(self.rt.clone(), connector, addrs, config);
        Ok(match history {
            Some(h) => clerk.with_history(self.virtual_history(h)),
            None => clerk,
        })
    }

    /// `history`, recording in this simulation's virtual time (ns).
    fn virtual_history(&self, history: &History) -> History {
        let rt = self.rt.clone();
        history.on_clock(move || u64::try_from(rt.now().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Runs `op` on `clerk` until it is answered (or the Clerk's timeout passes in virtual
    /// time); the rest of the cluster runs meanwhile. `op` gets the Clerk and gives it back.
    pub fn run_clerk<T, Fut>(
        &self,
        clerk: SimClerk,
        op: impl FnOnce(SimClerk) -> Fut,
    ) -> Result<(SimClerk, T), ClusterError>
    where
        T: Send + 'static,
        Fut: Future<Output = (SimClerk, T)> + Send + 'static,
    {
        self.drive(op(clerk))
    }

    /// Everything recorded so far: every node's events and the faults (empty when the cluster
    /// keeps no trace).
    pub fn trace(&self) -> ClusterTrace {
        match &self.trace {
            Some(t) => t.snapshot(),
            None => TraceRecorder::new(Duration::ZERO, 1).snapshot(),
        }
    }

    /// Stops every node and task; later calls fail. Dropping the cluster does the same.
    pub fn close(&mut self) {
        self.kv = None;
        for group in (0..=self.n as u64).chain([CLIENT_GROUP, NET_GROUP, u64::MAX]) {
            self.rt.kill_group(group);
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        // The tasks hold the runtime that holds them: killed, they let it go.
        self.close();
    }
}

mod workload;

pub use workload::{Workload, WorkloadReport};

#[cfg(test)]
mod tests;
