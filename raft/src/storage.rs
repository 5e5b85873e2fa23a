//! [`MemStorage`]: a [`Storage`] in memory, for tests, benchmarks and users who need no
//! durability across process restarts (a "crash" of a node in the same process keeps it).

use crate::io::{Storage, StorageError, WriteOp};
use crate::types::{Entry, HardState, Index, Persisted, Snapshot};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Memory storage. Clones share the same data, so a node "restarted" in the same process
/// (from a clone) finds everything that was written.
///
/// The entries are a `VecDeque` in index order: the driver appends at the tail and compacts
/// at the head, both O(1) per entry; only an append whose first index is not past the last
/// stored one truncates first (a follower overwriting a conflicting suffix).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    store: Arc<Mutex<MemLog>>,
}

/// What a [`MemStorage`] holds. Invariant: `entries` are contiguous, in index order.
#[derive(Debug, Default)]
struct MemLog {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: VecDeque<Entry>,
}

impl MemLog {
    fn first_index(&self) -> Option<Index> {
        self.entries.front().map(|e| e.index)
    }

    /// The stored entry at `index`, if any.
    fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index()?)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Drops the stored entries at or after `index`.
    fn truncate_from(&mut self, index: Index) {
        if let Some(first) = self.first_index() {
            let keep = index.saturating_sub(first);
            self.entries
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        }
    }

    /// Drops the stored entries up to and including `index`.
    fn compact_to(&mut self, index: Index) {
        let Some(first) = self.first_index() else {
            return;
        };
        let drop = index.saturating_add(1).saturating_sub(first);
        let drop = usize::try_from(drop).unwrap_or(usize::MAX);
        if drop >= self.entries.len() {
            self.entries.clear();
        } else {
            self.entries.drain(..drop);
        }
    }

    fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        match self.entries.back().map(|e| e.index) {
            // The common case: the next entries, at the tail.
            Some(last) if first == last + 1 => {}
            // An overwrite of a suffix (or of everything, if `first` is before the head).
            Some(last) if first <= last => self.truncate_from(first),
            // A gap after the stored entries: they could not be loaded as one log with the new
            // ones, and nothing before a gap is needed (the driver never writes one; a snapshot
            // always covers what lies before it).
            Some(_) => self.entries.clear(),
            None => {}
        }
        self.entries.extend(entries);
    }

    fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::HardState(hs) => self.hard_state = hs,
            WriteOp::Append(entries) => self.append(entries),
            WriteOp::InstallSnapshot(s) => {
                let keep = self
                    .get(s.last.index)
                    .is_some_and(|e| e.term == s.last.term);
                if keep {
                    self.compact_to(s.last.index);
                } else {
                    self.entries.clear();
                }
                self.snapshot = Some(s);
            }
            WriteOp::SaveSnapshot(s) => self.snapshot = Some(s),
            WriteOp::CompactTo(c) => self.compact_to(c.index),
        }
    }

    fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.iter().cloned().collect(),
        }
    }
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    async fn load(&self) -> Result<Persisted, StorageError> {
        let store = self.store.lock().map_err(|_| StorageError::Closed)?;
        Ok(store.persisted())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut store = self.store.lock().map_err(|_| StorageError::Closed)?;
        for op in ops {
            store.apply(op);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, Payload};
    use bytes::Bytes;
    use futures::executor::block_on;

    fn entry(index: Index, term: u64) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Command(Bytes::from(format!("{index}@{term}"))),
        }
    }

    fn ids(s: &MemStorage) -> Vec<(Index, u64)> {
        let p = block_on(s.load()).unwrap();
        p.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    fn write(s: &MemStorage, ops: Vec<WriteOp>) {
        block_on(s.write(ops)).unwrap();
    }

    #[test]
    fn appends_extend_the_tail_and_overwrite_only_a_conflicting_suffix() {
        let s = MemStorage::new();
        write(
            &s,
            vec![WriteOp::Append((1..=3).map(|i| entry(i, 1)).collect())],
        );
        write(
            &s,
            vec![WriteOp::Append((4..=5).map(|i| entry(i, 1)).collect())],
        );
        assert_eq!(ids(&s), vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        // An overwrite from index 4: 5 goes too.
        write(&s, vec![WriteOp::Append(vec![entry(4, 2)])]);
        assert_eq!(ids(&s), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
        // An overwrite of everything, from before the head.
        write(
            &s,
            vec![
                WriteOp::SaveSnapshot(Snapshot {
                    last: LogId::new(1, 1),
                    data: Bytes::new(),
                    membership: Default::default(),
                }),
                WriteOp::CompactTo(LogId::new(1, 1)),
            ],
        );
        assert_eq!(ids(&s), vec![(2, 1), (3, 1), (4, 2)]);
        write(&s, vec![WriteOp::Append(vec![entry(1, 3)])]);
        assert_eq!(ids(&s), vec![(1, 3)]);
        // A gap drops what came before it: the log stays contiguous.
        write(&s, vec![WriteOp::Append(vec![entry(9, 3)])]);
        assert_eq!(ids(&s), vec![(9, 3)]);
    }

    #[test]
    fn compaction_past_the_end_empties_the_log() {
        let s = MemStorage::new();
        write(
            &s,
            vec![WriteOp::Append((1..=3).map(|i| entry(i, 1)).collect())],
        );
        write(&s, vec![WriteOp::CompactTo(LogId::new(7, 1))]);
        assert!(ids(&s).is_empty());
        write(&s, vec![WriteOp::Append(vec![entry(8, 1)])]);
        assert_eq!(ids(&s), vec![(8, 1)]);
    }
}
