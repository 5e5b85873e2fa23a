//! Issue 20, the trailing log: a follower only a little behind when the leader compacts (cut
//! off for a few hundred entries under load, or restarted with a log that ends a little before
//! the leader's compaction point) catches up from the log, not from a whole-state snapshot;
//! beyond the bound ([`NodeConfig::trailing_log_entries`]) it still gets a snapshot. Each test
//! runs with a state machine that keeps its own state durably (the log is compacted short of
//! where the state is durable) and with an in-memory one (the leader waits to compact).

use bytes::Bytes;
use raftkv_raft::driver::observer::{EventKind, Observer, ObserverHandle, SnapshotHow, TraceEvent};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{
    Config, ConfigError, InvalidConfig, LogId, Membership, Node, NodeConfig, NodeError, Role,
    Runtime, Snapshot, StateMachine, StorageError, TRAILING_LOG_BYTES_MAX,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a durable [`Sm`] is: it survives the node's restarts.
type Position = Arc<Mutex<Option<(LogId, Membership)>>>;

/// A state machine that, with `durable`, keeps its state (its position) across restarts,
/// durable at every entry it applied. With `lazy` it says so only as LMDB does: it reports the
/// entry it was last made durable at ([`StateMachine::start_durable`]), and commits what it
/// applied (done by the next call) only when asked to pass an entry it is not past.
struct Sm {
    durable: Option<Position>,
    lazy: Option<LogId>,
}

impl Sm {
    fn at(&self) -> Option<LogId> {
        let p = self.durable.as_ref()?.lock().unwrap();
        Some(p.as_ref().map_or(LogId::default(), |(at, _)| *at))
    }
}

impl StateMachine for Sm {
    type Response = ();

    fn apply(&mut self, _index: u64, _command: &[u8]) {}

    fn query(&self, _query: &[u8]) {}

    fn snapshot(&self) -> Bytes {
        Bytes::from_static(b"state")
    }

    fn restore(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        if let Some(p) = &self.durable {
            *p.lock().unwrap() = Some((snapshot.last, snapshot.membership.clone()));
        }
        self.restore(&snapshot.data)
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self
            .durable
            .as_ref()
            .and_then(|p| p.lock().unwrap().clone()))
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        if let Some(p) = &self.durable {
            *p.lock().unwrap() = Some((last, membership.clone()));
        }
        Ok(())
    }

    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        let at = self.at();
        if let (Some(synced), Some(at)) = (&mut self.lazy, at) {
            *synced = at;
        }
        Ok(at)
    }

    fn start_durable(&mut self, past: u64) -> Result<Option<LogId>, StorageError> {
        let at = self.at();
        let (Some(synced), Some(at)) = (&mut self.lazy, at) else {
            return self.make_durable();
        };
        let was = *synced;
        if was.index <= past {
            *synced = at;
        }
        Ok(Some(was))
    }
}

/// Every node's [`EventKind::Trailing`] events, as (node, first, past), and the snapshots
/// each installed from a leader.
#[derive(Default)]
struct Trails {
    kept: Mutex<Vec<(u64, u64, u64)>>,
    installs: Mutex<BTreeMap<u64, u64>>,
}

impl Observer for Trails {
    fn observe(&self, e: TraceEvent) {
        match e.kind {
            EventKind::Trailing { first, past } => {
                self.kept.lock().unwrap().push((e.node, first, past))
            }
            EventKind::Snapshot {
                how: SnapshotHow::Installed,
                ..
            } => *self.installs.lock().unwrap().entry(e.node).or_default() += 1,
            _ => {}
        }
    }
}

/// Compactions every 50 entries; a trailing log of 400.
const THRESHOLD: u64 = 50;
const TRAILING: u64 = 400;

struct Harness {
    rt: SimRuntime,
    net: SimNet,
    storages: Vec<SimStorage>,
    positions: Vec<Option<Position>>,
    nodes: Vec<Option<Node<SimRuntime, Sm>>>,
    trails: Arc<Trails>,
    written: u64,
    lazy: bool,
}

impl Harness {
    async fn start(rt: &SimRuntime, durable: bool) -> Self {
        Self::start_lazy(rt, durable, false).await
    }

    /// With `lazy`, durable state machines say what is durable as LMDB does ([`Sm`]).
    async fn start_lazy(rt: &SimRuntime, durable: bool, lazy: bool) -> Self {
        let mut h = Self {
            rt: rt.clone(),
            net: SimNet::new(rt),
            storages: (0..3).map(|_| SimStorage::new(rt, (0, 1))).collect(),
            positions: (0..3).map(|_| durable.then(Position::default)).collect(),
            nodes: (0..3).map(|_| None).collect(),
            trails: Arc::default(),
            written: 0,
            lazy,
        };
        for i in 0..3 {
            h.start_node(i).await;
        }
        h
    }

    async fn start_node(&mut self, i: usize) {
        let id = i as u64 + 1;
        let mut raft = Config::new(id, 1..=3);
        raft.seed = 5 + id;
        let mut config = NodeConfig::new(raft);
        config.snapshot_threshold_entries = THRESHOLD;
        config.trailing_log_entries = TRAILING;
        config.observer = Some(ObserverHandle(self.trails.clone()));
        let sm = Sm {
            durable: self.positions[i].clone(),
            lazy: self.lazy.then(LogId::default),
        };
        let node = Node::start(
            self.rt.with_group(id),
            config,
            self.storages[i].clone(),
            self.net.endpoint(id),
            sm,
        )
        .await
        .expect("starts");
        self.nodes[i] = Some(node);
    }

    fn crash(&mut self, i: usize) {
        self.rt.kill_group(i as u64 + 1);
        self.nodes[i] = None;
    }

    fn node(&self, i: usize) -> Node<SimRuntime, Sm> {
        self.nodes[i].clone().expect("the node runs")
    }

    /// The leader among nodes 1 and 2 (node 3 is the one that falls behind).
    async fn leader(&self) -> usize {
        loop {
            self.rt.sleep(Duration::from_millis(20)).await;
            for i in 0..2 {
                if self
                    .node(i)
                    .status()
                    .await
                    .is_ok_and(|s| s.role == Role::Leader)
                {
                    return i;
                }
            }
        }
    }

    /// Writes `n` commands through the leader among nodes 1 and 2.
    async fn write(&mut self, n: u64) {
        let mut leader = self.leader().await;
        for _ in 0..n {
            let cmd = Bytes::from(self.written.to_le_bytes().to_vec());
            loop {
                match self.node(leader).propose(cmd.clone()).await {
                    Ok(()) => break,
                    Err(NodeError::NotLeader { .. } | NodeError::Timeout) => {
                        leader = self.leader().await
                    }
                    Err(e) => panic!("write {}: {e}", self.written),
                }
            }
            self.written += 1;
        }
    }

    /// Waits (virtual time, at most 20 s) until node `i` has applied what node `from` has.
    async fn caught_up(&self, i: usize, from: usize) {
        let target = self.node(from).status().await.unwrap().applied_index;
        let deadline = self.rt.now() + Duration::from_secs(20);
        loop {
            let s = self.node(i).status().await.unwrap();
            if s.applied_index >= target {
                return;
            }
            assert!(self.rt.now() < deadline, "n{} caught up: {s:?}", i + 1);
            self.rt.sleep(Duration::from_millis(10)).await;
        }
    }

    /// The snapshots node `i` installed from a leader.
    fn installs(&self, i: usize) -> u64 {
        let id = i as u64 + 1;
        self.trails
            .installs
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Whether node `i` kept the log from `from` on where it would have compacted past it.
    fn kept_for(&self, i: usize, from: u64) -> bool {
        let id = i as u64 + 1;
        self.trails
            .kept
            .lock()
            .unwrap()
            .iter()
            .any(|&(n, first, past)| n == id && first <= from && past >= from)
    }
}

/// Node 3 is cut off while `behind` commands are written after 600, then rejoins while more
/// are; returns whether it installed a snapshot, and whether the leader kept log for it.
fn partitioned_then_healed(durable: bool, behind: u64) -> (u64, bool) {
    let rt = SimRuntime::new(30 + behind);
    let r2 = rt.clone();
    rt.block_on(async move {
        let mut h = Harness::start(&r2, durable).await;
        h.write(600).await;
        let leader = h.leader().await;
        h.caught_up(2, leader).await;
        let n3_last = h.node(2).status().await.unwrap().last_index;
        h.net.partition(&[vec![1, 2], vec![3]]);
        h.write(behind).await;
        let leader = h.leader().await;
        let s = h.node(leader).status().await.unwrap();
        assert!(s.applied_index >= n3_last + behind, "{s:?}");
        h.net.heal();
        h.write(100).await;
        let leader = h.leader().await;
        h.caught_up(2, leader).await;
        (h.installs(2), h.kept_for(leader, n3_last + 1))
    })
    .expect("the test ran to its end")
}

/// A follower cut off for 300 entries (the leader compacting every 50) catches up from the
/// log the leader kept for it.
#[test]
fn a_follower_cut_off_for_a_few_hundred_entries_catches_up_from_the_log() {
    for durable in [true, false] {
        let (installs, kept) = partitioned_then_healed(durable, 300);
        assert_eq!(installs, 0, "durable {durable}: n3 installed a snapshot");
        assert!(kept, "durable {durable}: the leader kept no log for n3");
    }
}

/// Beyond the bound (1,500 entries behind, 400 kept) the leader compacts anyway and the
/// follower gets a snapshot.
#[test]
fn a_follower_behind_by_more_than_the_trailing_log_gets_a_snapshot() {
    for durable in [true, false] {
        let (installs, _) = partitioned_then_healed(durable, 1_500);
        assert!(installs >= 1, "durable {durable}: n3 installed no snapshot");
    }
}

/// A follower restarted after the leader compacted a little (200 entries) past the last entry
/// of its log catches up from the log.
#[test]
fn a_follower_restarted_after_the_leader_compacted_past_its_log_catches_up_from_the_log() {
    for durable in [true, false] {
        let rt = SimRuntime::new(41);
        let r2 = rt.clone();
        let (installs, kept) = rt
            .block_on(async move {
                let mut h = Harness::start(&r2, durable).await;
                h.write(600).await;
                let leader = h.leader().await;
                h.caught_up(2, leader).await;
                let n3_last = h.node(2).status().await.unwrap().last_index;
                h.crash(2);
                h.write(200).await;
                h.start_node(2).await;
                let s = h.node(2).status().await.unwrap();
                assert!(s.last_index <= n3_last, "n3 restarted with its log: {s:?}");
                h.write(100).await;
                let leader = h.leader().await;
                h.caught_up(2, leader).await;
                (h.installs(2), h.kept_for(leader, n3_last + 1))
            })
            .expect("the test ran to its end");
        assert_eq!(installs, 0, "durable {durable}: n3 installed a snapshot");
        assert!(kept, "durable {durable}: the leader kept no log for n3");
    }
}

/// Regression: a state machine that makes its state durable only when asked to pass an entry
/// (LMDB's `start_durable`) was asked to pass the stored snapshot only; durable a little past
/// it, it was never asked again, the compaction (which keeps the trailing log before that
/// entry) never came, and the log grew without bound (seen with `--state lmdb` in a
/// `LocalCluster`).
#[test]
fn regression_a_state_made_durable_on_request_is_compacted_with_a_trailing_log() {
    let rt = SimRuntime::new(43);
    let r2 = rt.clone();
    let s = rt
        .block_on(async move {
            let mut h = Harness::start_lazy(&r2, true, true).await;
            h.write(1_000).await;
            let leader = h.leader().await;
            h.node(leader).status().await.unwrap()
        })
        .expect("the test ran to its end");
    assert!(
        s.snapshot_index > 500 && s.applied_index - s.snapshot_index >= TRAILING,
        "the leader compacted, keeping {TRAILING} entries: {s:?}"
    );
}

/// The trailing log's bound is checked before the node starts: a clear error, no start.
#[test]
fn a_trailing_log_above_its_bound_is_refused() {
    let rt = SimRuntime::new(1);
    let r2 = rt.clone();
    let err = rt
        .block_on(async move {
            let net = SimNet::new(&r2);
            let mut config = NodeConfig::new(Config::new(1, 1..=3));
            config.trailing_log_bytes = TRAILING_LOG_BYTES_MAX + 1;
            let sm = Sm {
                durable: None,
                lazy: None,
            };
            let started = Node::start(
                r2.clone(),
                config,
                SimStorage::new(&r2, (0, 1)),
                net.endpoint(1),
                sm,
            )
            .await;
            started.err().map(|e| e.to_string())
        })
        .expect("ran");
    let expected = NodeError::Config(ConfigError::Invalid(InvalidConfig::TooLarge {
        field: "trailing_log_bytes",
        value: TRAILING_LOG_BYTES_MAX + 1,
        max: TRAILING_LOG_BYTES_MAX,
    }));
    assert_eq!(err, Some(expected.to_string()));
}
