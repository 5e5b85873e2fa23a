//! What the driver simulation checks as it runs: a state machine that records what it applies
//! and checks it against every other node (State Machine Safety), and an observer that checks
//! the driver's trace as it grows (see `driver_sim.rs`).

use bytes::Bytes;
use raftkv_raft::driver::observer::{
    EventKind, MsgInfo, Observer, RoleName, SnapshotHow, TraceEvent,
};
use raftkv_raft::StateMachine;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Every command applied anywhere, by index: State Machine Safety is checked on insert.
pub type Applied = Arc<Mutex<BTreeMap<u64, Bytes>>>;

/// A state machine that records what it applies, and checks it against every other node.
pub struct RecordingSm {
    pub seed: u64,
    pub node: u64,
    pub log: Vec<(u64, Bytes)>,
    pub global: Applied,
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
        global.insert(index, cmd.clone());
        self.log.push((index, cmd));
        index
    }

    fn query(&self, _query: &[u8]) -> u64 {
        self.log.last().map_or(0, |(i, _)| *i)
    }

    fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        for (i, c) in &self.log {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        Bytes::from(out)
    }

    fn restore(&mut self, mut data: &[u8]) -> Result<(), String> {
        self.log.clear();
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
                assert!(
                    first == prev + 1 && last >= first,
                    "RAFTKV_SEED={seed}: trace: n{n} applied {first}..={last} after {prev}"
                );
            }
            EventKind::Snapshot {
                index,
                how: SnapshotHow::Installed,
                ..
            } => {
                s.applied.insert(n, index);
            }
            EventKind::Send { to, msg } => {
                s.sent.insert((n, to, msg));
            }
            EventKind::Recv { from, msg } => {
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
