//! Memory storage: the durable state of one node as plain data, changed only by
//! [`WriteOp`]s. The simulator applies ops when a simulated disk write completes, so that a crash
//! loses exactly what was not yet durable; [`crate::storage::MemStorage`] wraps it as a
//! [`crate::Storage`].

use crate::io::WriteOp;
use crate::ready::Ready;
use crate::types::{Entry, HardState, Index, LogId, Persisted, Snapshot};
use std::collections::BTreeMap;

/// One node's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: BTreeMap<Index, Entry>,
}

impl Ready {
    /// The persistent part of this `Ready` as storage operations, in contract order (snapshot,
    /// entries, hard state, compaction). Takes them out of the `Ready`; the snapshot stays, for
    /// the state machine to restore from.
    pub fn take_write_ops(&mut self) -> Vec<WriteOp> {
        let mut ops = Vec::new();
        if let Some(s) = &self.snapshot {
            ops.push(WriteOp::InstallSnapshot(s.clone()));
        }
        if !self.entries.is_empty() {
            ops.push(WriteOp::Append(std::mem::take(&mut self.entries)));
        }
        if let Some(hs) = self.hard_state.take() {
            ops.push(WriteOp::HardState(hs));
        }
        if let Some(c) = self.compact_to.take() {
            ops.push(WriteOp::CompactTo(c));
        }
        ops
    }
}

impl MemStore {
    /// Applies one write, op by op.
    pub fn apply(&mut self, ops: impl IntoIterator<Item = WriteOp>) {
        for op in ops {
            self.apply_op(op);
        }
    }

    fn apply_op(&mut self, op: WriteOp) {
        match op {
            WriteOp::HardState(hs) => self.hard_state = hs,
            WriteOp::Append(entries) => {
                if let Some(first) = entries.first() {
                    self.entries.split_off(&first.index);
                    self.entries
                        .extend(entries.into_iter().map(|e| (e.index, e)));
                }
            }
            WriteOp::InstallSnapshot(s) => {
                let keep = self
                    .entries
                    .get(&s.last.index)
                    .is_some_and(|e| e.term == s.last.term);
                if keep {
                    self.entries = self.entries.split_off(&(s.last.index + 1));
                } else {
                    self.entries.clear();
                }
                self.snapshot = Some(s);
            }
            WriteOp::SaveSnapshot(s) => self.snapshot = Some(s),
            WriteOp::CompactTo(c) => self.entries = self.entries.split_off(&(c.index + 1)),
        }
    }

    /// True if the entry `id` is durable here: in the log, or covered by the snapshot (which
    /// holds only committed entries).
    pub fn holds(&self, id: LogId) -> bool {
        self.entries
            .get(&id.index)
            .is_some_and(|e| e.term == id.term)
            || self
                .snapshot
                .as_ref()
                .is_some_and(|s| s.last.index >= id.index)
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.values().cloned().collect(),
        }
    }
}
