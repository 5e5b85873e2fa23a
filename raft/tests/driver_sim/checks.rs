//! What the driver simulation checks as it runs: a state machine that records what it applies
//! and checks it against every other node (State Machine Safety), and an observer that checks
//! the driver's trace as it grows (see `driver_sim.rs`).

use crate::disk::Disk;
use bytes::Bytes;
use raftkv_raft::driver::observer::{
    EventKind, MsgInfo, MsgKind, Observer, RoleName, SnapshotHow, TraceEvent,
};
use raftkv_raft::{
    LogId, Membership, Snapshot, SnapshotRead, SnapshotSpool, StateMachine, StorageError,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// The first bytes of a [`RecordingSm`]'s snapshot.
const SNAPSHOT_MAGIC: &[u8] = b"rsm1";

/// Every command applied anywhere, by index: State Machine Safety is checked on insert.
pub type Applied = Arc<Mutex<BTreeMap<u64, Bytes>>>;

/// A durable [`RecordingSm`]'s committed commands and position.
pub type Committed = (Vec<(u64, Bytes)>, Option<(LogId, Membership)>);

/// What a durable [`RecordingSm`] committed: it outlives the node's crashes. Like LMDB with
/// `MDB_NOMETASYNC`, a power cut may lose the last commit unless it was synced since
/// ([`DurableRecord::power_cut`]).
#[derive(Default)]
pub struct DurableRecord {
    pub log: Vec<(u64, Bytes)>,
    pub position: Option<(LogId, Membership)>,
    /// The state before the last commit, and whether that commit was synced.
    pub previous: Committed,
    pub synced: bool,
    /// Power cuts that lost the last commit.
    pub lost_commits: u64,
    /// Issue 20: commits in flight (behind the state machine) lost at a crash, and reads
    /// (queries, snapshots) made while one was in flight.
    pub in_flight_lost: u64,
    pub in_flight_reads: u64,
}

impl DurableRecord {
    fn commit(&mut self, log: Vec<(u64, Bytes)>, position: Option<(LogId, Membership)>) {
        let old_log = std::mem::replace(&mut self.log, log);
        let old_position = std::mem::replace(&mut self.position, position);
        self.previous = (old_log, old_position);
        self.synced = false;
    }

    /// The power went: the last commit is lost if it was not synced and `lose` says so.
    pub fn power_cut(&mut self, lose: bool) {
        if !self.synced && lose {
            self.log = self.previous.0.clone();
            self.position = self.previous.1.clone();
            self.synced = true;
            self.lost_commits += 1;
        }
    }
}

/// Issue 20: the snapshot reads [`RecordingSm`]s ran off the loop, as (node, index): in-memory
/// ones' for a compaction, durable ones' (of their committed state) for a transfer.
#[derive(Default)]
pub struct OffLoopReads {
    pub compaction: Vec<(u64, u64)>,
    pub transfer: Vec<(u64, u64)>,
}

/// A state machine that records what it applies, and checks it against every other node. With
/// `durable`, it keeps its state across crashes (issue 20): it commits what it applied every
/// `every` entries (a crash loses what it applied since), and a restart resumes from there.
/// Its commits run behind it, as LMDB's do on their thread: one started completes at the next
/// batch or durability check ([`StateMachine::start_durable`]), and a crash before that loses
/// it. It checks that the driver hands it every command once: none again, none skipped.
pub struct RecordingSm {
    pub seed: u64,
    pub node: u64,
    pub log: Vec<(u64, Bytes)>,
    pub global: Applied,
    /// The last entry this state covers (applied, or by a snapshot), and the configuration.
    pub position: Option<(LogId, Membership)>,
    pub durable: Option<(Arc<Mutex<DurableRecord>>, u64)>,
    /// Issue 20: with this, snapshots are read off the loop ([`StateMachine::snapshot_read`])
    /// and recorded here; without, on it.
    pub reads: Option<Arc<Mutex<OffLoopReads>>>,
    /// The commit in flight (what it commits, and whether a sync follows).
    pending: Option<(Committed, bool)>,
    /// The last entry committed and synced: durable across a power cut.
    synced_at: LogId,
    /// Issue 20: where a snapshot received from a leader is spooled (the node's disk).
    pub spool: Option<Disk>,
}

/// A crash before the commit in flight completed loses it.
impl Drop for RecordingSm {
    fn drop(&mut self) {
        if let (Some((d, _)), Some(_)) = (&self.durable, &self.pending) {
            d.lock().unwrap().in_flight_lost += 1;
        }
    }
}

impl RecordingSm {
    /// The state `durable` holds (an empty one without).
    pub fn open(
        seed: u64,
        node: u64,
        global: Applied,
        durable: Option<(Arc<Mutex<DurableRecord>>, u64)>,
        reads: Option<Arc<Mutex<OffLoopReads>>>,
    ) -> Self {
        let (log, position) = match &durable {
            Some((d, _)) => {
                let d = d.lock().unwrap();
                (d.log.clone(), d.position.clone())
            }
            None => (Vec::new(), None),
        };
        Self {
            seed,
            node,
            log,
            global,
            position,
            durable,
            reads,
            pending: None,
            synced_at: LogId::default(),
            spool: None,
        }
    }

    fn at(&self) -> u64 {
        self.position.as_ref().map_or(0, |(at, _)| at.index)
    }

    /// Starts committing what it applied, with its position (after the commit in flight);
    /// `sync`: durable across a power cut too once it completes.
    fn start_commit(&mut self, sync: bool) {
        if self.durable.is_some() {
            self.poll();
            self.pending = Some(((self.log.clone(), self.position.clone()), sync));
        }
    }

    /// The commit in flight, if any, completes.
    fn poll(&mut self) {
        let (Some((d, _)), Some(((log, position), sync))) = (&self.durable, self.pending.take())
        else {
            return;
        };
        if sync {
            self.synced_at = position.as_ref().map_or(LogId::default(), |(at, _)| *at);
        }
        let mut d = d.lock().unwrap();
        d.commit(log, position);
        d.synced = sync;
    }

    /// A read while a commit is in flight, counted.
    fn read(&self) {
        if let (Some((d, _)), Some(_)) = (&self.durable, &self.pending) {
            d.lock().unwrap().in_flight_reads += 1;
        }
    }
}

/// A [`RecordingSm`]'s snapshot of `log`: [`SNAPSHOT_MAGIC`], then each (index, command).
fn encode(log: &[(u64, Bytes)]) -> Bytes {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for (i, c) in log {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

impl StateMachine for RecordingSm {
    type Response = u64;

    fn apply(&mut self, index: u64, command: &[u8]) -> u64 {
        let cmd = Bytes::copy_from_slice(command);
        let mut global = self.global.lock().unwrap();
        if let Some(prev) = global.get(&index) {
            assert_eq!(
                prev, &cmd,
                "RAFTKV_SEED={}: State Machine Safety: n{} applied a different command at {index}",
                self.seed, self.node
            );
        }
        let at = self.at().max(self.log.last().map_or(0, |(i, _)| *i));
        assert!(
            index > at,
            "RAFTKV_SEED={}: n{} was handed entry {index} again (its state is at {at})",
            self.seed,
            self.node
        );
        if let Some((skipped, _)) = global.range(at + 1..index).next() {
            panic!(
                "RAFTKV_SEED={}: n{} skipped the command at {skipped} (its state was at {at}, \
                 then it was handed {index})",
                self.seed, self.node
            );
        }
        global.insert(index, cmd.clone());
        drop(global);
        self.log.push((index, cmd));
        index
    }

    fn query(&self, _query: &[u8]) -> u64 {
        self.read();
        self.log.last().map_or(0, |(i, _)| *i)
    }

    /// Starts with [`SNAPSHOT_MAGIC`]: a snapshot's data is never empty, so that restoring
    /// the metadata-only snapshot a durable node stores (issue 20) fails loudly.
    fn snapshot(&self) -> Bytes {
        self.read();
        encode(&self.log)
    }

    /// Issue 20: an in-memory one reads a copy of its log at `applied`; a durable one what it
    /// committed, at its committed position (as LMDB's reads do), as it was when built.
    fn snapshot_read(&self, applied: u64) -> Option<SnapshotRead> {
        let reads = self.reads.clone()?;
        let (log, at) = match &self.durable {
            Some((d, _)) => {
                let d = d.lock().unwrap();
                (
                    d.log.clone(),
                    d.position.as_ref().map_or(0, |(at, _)| at.index),
                )
            }
            None => (self.log.clone(), applied),
        };
        let (node, durable) = (self.node, self.durable.is_some());
        Some(Box::new(move || {
            let mut r = reads.lock().unwrap();
            match durable {
                true => r.transfer.push((node, at)),
                false => r.compaction.push((node, at)),
            }
            Ok((at, encode(&log)))
        }))
    }

    /// Issue 20: on the node's disk, whose faults it shares.
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(match &self.spool {
            Some(disk) => Box::new(disk.spool()),
            None => Box::new(Vec::new()),
        })
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self.durable.as_ref().and(self.position.clone()))
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.poll();
        let committed = self.durable.as_ref().map(|(d, every)| {
            let d = d.lock().unwrap();
            (d.position.as_ref().map_or(0, |(at, _)| at.index), *every)
        });
        self.position = Some((last, membership.clone()));
        if let Some((committed, every)) = committed {
            if last.index >= committed + every {
                self.start_commit(false);
            }
        }
        Ok(())
    }

    /// Issue 20: a durable one commits all it applied and syncs, before it returns (the log
    /// is then compacted to it).
    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        if self.durable.is_none() {
            return Ok(None);
        }
        self.start_commit(true);
        self.poll();
        Ok(Some(self.synced_at))
    }

    /// Issue 20: where it is durable now; if not past `past`, a commit and sync of the rest
    /// started, completed at the next batch or call.
    fn start_durable(&mut self, past: u64) -> Result<Option<LogId>, StorageError> {
        if self.durable.is_none() {
            return Ok(None);
        }
        self.poll();
        let at = self.position.as_ref().map(|(at, _)| *at);
        if self.synced_at.index <= past && at.is_some_and(|at| at != self.synced_at) {
            self.start_commit(true);
        }
        Ok(Some(self.synced_at))
    }

    /// Made durable before it returns (the commit in flight lands first).
    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.poll();
        self.restore(&snapshot.data)?;
        self.position = Some((snapshot.last, snapshot.membership.clone()));
        self.start_commit(true);
        self.poll();
        Ok(())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let mut data = data
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| format!("not a snapshot: {} bytes without the header", data.len()))?;
        self.log.clear();
        self.position = None;
        while !data.is_empty() {
            if data.len() < 12 {
                return Err("truncated snapshot".into());
            }
            let index = u64::from_le_bytes(data[..8].try_into().unwrap());
            let len = u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
            let cmd = data.get(12..12 + len).ok_or("truncated snapshot")?;
            self.log.push((index, Bytes::copy_from_slice(cmd)));
            data = &data[12 + len..];
        }
        Ok(())
    }
}

/// Checks the driver's events as they come (see the module documentation).
pub struct TraceCheck {
    pub seed: u64,
    /// The nodes whose state machine is durable.
    pub durable: HashSet<u64>,
    pub state: Mutex<TraceState>,
}

#[derive(Default)]
pub struct TraceState {
    /// Election Safety: the node that became leader of each term.
    pub leaders: BTreeMap<u64, u64>,
    /// Per node, in its current run: the last index applied, and the commit index.
    pub applied: BTreeMap<u64, u64>,
    pub commit: BTreeMap<u64, u64>,
    /// Every message sent: (from, to, what the trace shows of it).
    pub sent: HashSet<(u64, u64, MsgInfo)>,
    pub events: u64,
    /// Durable nodes started, not applied since.
    pub resumed: HashSet<u64>,
    /// Issue 20: snapshots read on demand for a follower (by a durable leader), and
    /// snapshots installed by a durable node.
    pub on_demand: u64,
    pub durable_installs: u64,
    /// Issue 20: every snapshot taken and read on demand, as (node, index); and how many were
    /// taken behind the node's applied entry (it applied more while the state was read).
    pub taken: HashSet<(u64, u64)>,
    pub on_demand_at: HashSet<(u64, u64)>,
    pub taken_behind: u64,
    /// Issue 20, the trailing log: per node, where its last compaction would have gone
    /// without it ([`EventKind::Trailing`]); and every time a follower behind that point
    /// accepted entries from the kept log, as (leader, follower, that point).
    pub kept_past: BTreeMap<u64, u64>,
    pub from_tail: HashSet<(u64, u64, u64)>,
}

impl Observer for TraceCheck {
    fn observe(&self, e: TraceEvent) {
        let seed = self.seed;
        let mut s = self.state.lock().unwrap();
        s.events += 1;
        let n = e.node;
        match e.kind {
            EventKind::Start {
                commit,
                snapshot_index,
                ..
            } => {
                s.applied.insert(n, snapshot_index);
                s.commit.insert(n, commit);
                if self.durable.contains(&n) {
                    s.resumed.insert(n);
                }
            }
            EventKind::Role {
                role: RoleName::Leader,
                term,
                ..
            } => {
                let prev = *s.leaders.entry(term).or_insert(n);
                assert_eq!(
                    prev, n,
                    "RAFTKV_SEED={seed}: trace: Election Safety: n{prev} and n{n} lead term {term}"
                );
            }
            EventKind::Commit { index } => {
                let prev = s.commit.insert(n, index).unwrap_or(0);
                assert!(
                    index >= prev,
                    "RAFTKV_SEED={seed}: trace: n{n}'s commit index fell from {prev} to {index}"
                );
            }
            EventKind::Apply { first, last } => {
                let prev = s.applied.insert(n, last).unwrap_or(0);
                // Issue 20: a durable state machine resumes past its snapshot; that it skips
                // nothing is checked by the state machine itself.
                let resumed = s.resumed.remove(&n);
                assert!(
                    (first == prev + 1 || (resumed && first > prev + 1)) && last >= first,
                    "RAFTKV_SEED={seed}: trace: n{n} applied {first}..={last} after {prev}"
                );
            }
            EventKind::Snapshot {
                index,
                how: SnapshotHow::Installed,
                ..
            } => {
                s.applied.insert(n, index);
                if self.durable.contains(&n) {
                    s.durable_installs += 1;
                }
            }
            EventKind::Snapshot {
                index,
                how: SnapshotHow::Taken,
                ..
            } => {
                // A durable node's state may be past what its trace applied (it resumes from
                // the state after a restart).
                if !self.durable.contains(&n) {
                    let applied = s.applied.get(&n).copied().unwrap_or(0);
                    assert!(
                        index <= applied,
                        "RAFTKV_SEED={seed}: trace: n{n} took a snapshot at {index}, past its \
                         applied {applied}"
                    );
                    s.taken_behind += u64::from(index < applied);
                }
                s.taken.insert((n, index));
            }
            EventKind::Snapshot {
                index,
                how: SnapshotHow::OnDemand,
                ..
            } => {
                s.on_demand_at.insert((n, index));
                assert!(
                    self.durable.contains(&n),
                    "RAFTKV_SEED={seed}: trace: n{n}, not durable, read a snapshot on demand"
                );
                s.on_demand += 1;
            }
            EventKind::Send { to, msg } => {
                s.sent.insert((n, to, msg));
            }
            EventKind::Trailing { past, .. } => {
                s.kept_past.insert(n, past);
            }
            EventKind::Recv { from, msg } => {
                if let (MsgKind::AppendResponse, Some(true), Some(base), Some(matched)) =
                    (msg.kind, msg.ok, msg.index, msg.match_index)
                {
                    let past = s.kept_past.get(&n).copied().unwrap_or(0);
                    if base < past && matched > base {
                        s.from_tail.insert((n, from, past));
                    }
                }
                let key = (from, n, msg);
                assert!(
                    s.sent.contains(&key),
                    "RAFTKV_SEED={seed}: trace: n{n} received {key:?}, which nobody sent"
                );
            }
            _ => {}
        }
    }
}
