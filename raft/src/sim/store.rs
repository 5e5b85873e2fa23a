//! Memory storage for the simulator: the durable state of one node, written only when a
//! simulated disk write completes, so that a crash loses exactly what was not yet durable.

use crate::ready::Ready;
use crate::types::{Entry, HardState, Index, LogId, Persisted, Snapshot};
use std::collections::BTreeMap;

/// One node's durable state.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: BTreeMap<Index, Entry>,
}

/// The persistent part of a [`Ready`], as one atomic write.
#[derive(Clone, Debug, Default)]
pub struct Write {
    pub hard_state: Option<crate::types::HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub compact_to: Option<LogId>,
    /// A snapshot the application took of its own state machine (not from a leader).
    pub app_snapshot: Option<Snapshot>,
}

impl Write {
    pub fn from_ready(ready: &mut Ready) -> Self {
        Self {
            hard_state: ready.hard_state.take(),
            snapshot: ready.snapshot.clone(),
            entries: std::mem::take(&mut ready.entries),
            compact_to: ready.compact_to.take(),
            app_snapshot: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.compact_to.is_none()
            && self.app_snapshot.is_none()
    }
}

impl MemStore {
    /// Applies one write atomically, in the order the [`Ready`] contract gives.
    pub fn apply(&mut self, w: Write) {
        if let Some(s) = w.app_snapshot {
            self.snapshot = Some(s);
        }
        if let Some(s) = w.snapshot {
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
        if let Some(first) = w.entries.first() {
            self.entries.split_off(&first.index);
            for e in w.entries {
                self.entries.insert(e.index, e);
            }
        }
        if let Some(hs) = w.hard_state {
            self.hard_state = hs;
        }
        if let Some(c) = w.compact_to {
            self.entries = self.entries.split_off(&(c.index + 1));
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.values().cloned().collect(),
        }
    }
}
