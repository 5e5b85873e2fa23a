//! [`LogShape`]: the index and term of every stored entry, kept beside the WAL so that a write
//! is checked when it is made, as LMDB's transaction checks it, and not only later at a
//! checkpoint (by then the WAL would hold a write that cannot be applied).

use crate::codec;
use crate::writer::check_append;
use raftkv_raft::{Entry, Index, LogId, Payload, StorageError, Term, WriteOp};
use std::collections::VecDeque;

/// An encoded entry is its payload plus at most this many bytes (CRC, index, term, tag,
/// length), so only an entry close to the bound needs encoding to check it.
const ENTRY_OVERHEAD_BYTES_MAX: usize = 40;

/// The ids of the stored entries: `first` and the terms from there on, contiguous.
#[derive(Debug, Default)]
pub(crate) struct LogShape {
    first: Index,
    terms: VecDeque<Term>,
}

impl LogShape {
    /// The shape of a stored log, given its ids in order.
    pub(crate) fn from_ids(ids: &[LogId]) -> Result<Self, StorageError> {
        let mut shape = LogShape {
            first: ids.first().map_or(0, |id| id.index),
            terms: VecDeque::with_capacity(ids.len()),
        };
        for id in ids {
            if id.index != shape.first + shape.terms.len() as u64 {
                return Err(StorageError::Corrupt {
                    index: Some(id.index),
                    detail: format!("entry {}: gap in the stored log", id.index),
                });
            }
            shape.terms.push_back(id.term);
        }
        Ok(shape)
    }

    fn last(&self) -> Option<LogId> {
        let term = *self.terms.back()?;
        Some(LogId::new(self.first + self.terms.len() as u64 - 1, term))
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        let offset = index.checked_sub(self.first)?;
        self.terms.get(usize::try_from(offset).ok()?).copied()
    }

    /// Forgets the entries up to and including `index`.
    fn drop_through(&mut self, index: Index) {
        let count = (index + 1)
            .saturating_sub(self.first)
            .min(self.terms.len() as u64);
        self.terms.drain(..count as usize);
        self.first += count;
    }

    /// Checks `ops` as one write would be checked by LMDB's transaction, and applies them.
    /// An error means the write must be refused (the shape is then stale: the store stops).
    pub(crate) fn apply(&mut self, ops: &[WriteOp], entry_bytes_max: usize) -> Result<(), String> {
        for op in ops {
            match op {
                WriteOp::Append(entries) => self.append(entries, entry_bytes_max)?,
                WriteOp::InstallSnapshot(s) => {
                    if self.term_at(s.last.index) == Some(s.last.term) {
                        self.drop_through(s.last.index);
                    } else {
                        self.terms.clear();
                        self.first = 0;
                    }
                }
                WriteOp::CompactTo(c) => self.drop_through(c.index),
                WriteOp::HardState(_) | WriteOp::SaveSnapshot(_) => {}
            }
        }
        Ok(())
    }

    fn append(&mut self, entries: &[Entry], entry_bytes_max: usize) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        check_append(entries)?;
        for entry in entries {
            let Payload::Command(data) = &entry.payload else {
                continue;
            };
            if data.len() + ENTRY_OVERHEAD_BYTES_MAX > entry_bytes_max {
                codec::encode_entry(entry, entry_bytes_max)?;
            }
        }
        // Stored entries from the first one's index on are replaced.
        let keep = first
            .index
            .saturating_sub(self.first)
            .min(self.terms.len() as u64);
        self.terms.truncate(keep as usize);
        match self.last() {
            Some(last) if last.index + 1 != first.index => {
                return Err(format!(
                    "append at {} leaves a gap after stored entry {}",
                    first.id(),
                    last.index
                ))
            }
            Some(last) if last.term > first.term => {
                return Err(format!(
                    "append at {} has a term below {} of the entry before",
                    first.id(),
                    last.term
                ))
            }
            Some(_) => {}
            None => self.first = first.index,
        }
        self.terms.extend(entries.iter().map(|e| e.term));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_raft::Snapshot;

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term,
                payload: Payload::Command(bytes::Bytes::from_static(b"x")),
            })
            .collect()
    }

    fn ids(shape: &LogShape) -> Vec<(u64, u64)> {
        (0..shape.terms.len())
            .map(|i| (shape.first + i as u64, shape.terms[i]))
            .collect()
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn appends_replace_the_suffix_and_refuse_gaps_and_falling_terms() {
        let mut s = LogShape::default();
        s.apply(&[WriteOp::Append(entries(1, 5, 1))], MAX).unwrap();
        s.apply(&[WriteOp::Append(entries(4, 6, 2))], MAX).unwrap();
        assert_eq!(
            ids(&s),
            vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
        );
        let gap = s
            .apply(&[WriteOp::Append(entries(8, 8, 2))], MAX)
            .unwrap_err();
        assert!(gap.contains("gap"), "{gap}");
        let mut s = LogShape::from_ids(&[LogId::new(1, 3)]).unwrap();
        let lower = s
            .apply(&[WriteOp::Append(entries(2, 2, 2))], MAX)
            .unwrap_err();
        assert!(lower.contains("term below"), "{lower}");
    }

    #[test]
    fn compaction_and_snapshots_drop_a_prefix_or_everything() {
        let mut s = LogShape::default();
        s.apply(&[WriteOp::Append(entries(1, 10, 1))], MAX).unwrap();
        s.apply(&[WriteOp::CompactTo(LogId::new(4, 1))], MAX)
            .unwrap();
        assert_eq!(s.first, 5);
        let snapshot = |index, term| Snapshot {
            last: LogId::new(index, term),
            data: bytes::Bytes::new(),
            membership: Default::default(),
        };
        s.apply(&[WriteOp::InstallSnapshot(snapshot(7, 1))], MAX)
            .unwrap();
        assert_eq!(ids(&s), vec![(8, 1), (9, 1), (10, 1)]);
        s.apply(&[WriteOp::InstallSnapshot(snapshot(20, 3))], MAX)
            .unwrap();
        assert!(s.terms.is_empty());
        // After everything was dropped, any index may come next (as in LMDB).
        s.apply(&[WriteOp::Append(entries(21, 22, 3))], MAX)
            .unwrap();
        assert_eq!(s.last(), Some(LogId::new(22, 3)));
    }

    #[test]
    fn an_entry_over_the_bound_is_refused() {
        let mut s = LogShape::default();
        let big = Entry {
            index: 1,
            term: 1,
            payload: Payload::Command(vec![0; 100].into()),
        };
        assert!(s.apply(&[WriteOp::Append(vec![big.clone()])], 104).is_err());
        assert!(s.apply(&[WriteOp::Append(vec![big])], 200).is_ok());
    }

    #[test]
    fn a_stored_log_with_a_gap_is_corrupt() {
        let err = LogShape::from_ids(&[LogId::new(1, 1), LogId::new(3, 1)]).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { index: Some(3), .. }));
    }
}
