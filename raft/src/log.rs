//! The in-memory Raft log: every entry after the latest snapshot, and how far it is durable.
//!
//! The core keeps the log since the last snapshot in memory; snapshots bound its size. Storage
//! holds the same entries durably; the core tells the driver what to write through
//! [`crate::Ready`] and learns what is durable through [`crate::Raft::persisted`].

use crate::membership::Membership;
use crate::types::{Entry, Index, LogId, Payload, Term};
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Log {
    /// The last entry covered by the latest snapshot (0@0 when there is none).
    snapshot: LogId,
    /// Invariant: `entries[i].index == snapshot.index + 1 + i`, terms never decrease, and the
    /// first entry's term is `>= snapshot.term`.
    entries: VecDeque<Entry>,
    /// Entries at or after this index have not been handed to storage yet.
    /// Invariant: `first_index() <= unsent <= last_index() + 1`.
    unsent: Index,
    /// Entries up to here are durable in storage. Invariant: `persisted <= last_index()`.
    persisted: Index,
    /// thesis §4.1: the configuration in effect at the snapshot point.
    snapshot_membership: Membership,
    /// The indexes of the configuration entries after the snapshot, ascending: the history a
    /// truncation rolls back through. Invariant: exactly the `Payload::Membership` entries.
    config_indexes: Vec<Index>,
}

impl Log {
    /// A log restored from storage: everything in it is durable. `membership` is the
    /// configuration in effect at the snapshot point.
    pub fn restore(
        snapshot: LogId,
        membership: Membership,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Self {
        let entries: VecDeque<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snapshot.index)
            .collect();
        let last = snapshot.index + entries.len() as Index;
        let config_indexes = entries
            .iter()
            .filter(|e| matches!(e.payload, Payload::Membership(_)))
            .map(|e| e.index)
            .collect();
        Self {
            snapshot,
            entries,
            unsent: last + 1,
            persisted: last,
            snapshot_membership: membership,
            config_indexes,
        }
    }

    /// thesis §4.1: the configuration in effect, the latest one in the log.
    pub fn membership(&self) -> &Membership {
        self.membership_at(Index::MAX)
    }

    /// The configuration in effect at `index`: the latest one at or before it (the snapshot's
    /// for indexes at or before the snapshot point).
    pub fn membership_at(&self, index: Index) -> &Membership {
        let n = self.config_indexes.partition_point(|i| *i <= index);
        match n
            .checked_sub(1)
            .and_then(|k| self.get(self.config_indexes[k]))
        {
            Some(Entry {
                payload: Payload::Membership(m),
                ..
            }) => m,
            _ => &self.snapshot_membership,
        }
    }

    /// The index of the entry holding the configuration in effect (the snapshot point if the
    /// log after it holds none).
    pub fn config_index(&self) -> Index {
        self.config_indexes
            .last()
            .copied()
            .unwrap_or(self.snapshot.index)
    }

    pub fn snapshot(&self) -> LogId {
        self.snapshot
    }

    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    pub fn last_id(&self) -> LogId {
        self.entries.back().map_or(self.snapshot, Entry::id)
    }

    /// The first index not yet handed to storage.
    pub fn unsent(&self) -> Index {
        self.unsent
    }

    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// The term of the entry at `index`, if the log knows it (the snapshot's last entry counts).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// True if the log holds `id` (or `id` is its snapshot point).
    pub fn has(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// How many entries from `from` on [`Log::slice`] would return: at most `entries_max` of
    /// them and at most `bytes_max` payload bytes (but at least one, if there is one). Counting
    /// clones nothing: a leader decides from it whether an Append goes at all.
    pub fn slice_len(&self, from: Index, entries_max: usize, bytes_max: usize) -> usize {
        let Some(offset) = self.offset(from) else {
            return 0;
        };
        let end = self.entries.len().min(offset.saturating_add(entries_max));
        let mut bytes = 0usize;
        let mut n = 0;
        for entry in self.entries.range(offset..end) {
            bytes += entry.size_bytes();
            if n > 0 && bytes > bytes_max {
                break;
            }
            n += 1;
        }
        n
    }

    /// Entries from `from` on, at most `entries_max` of them and at most `bytes_max` payload bytes
    /// (but at least one, if there is one).
    pub fn slice(&self, from: Index, entries_max: usize, bytes_max: usize) -> Vec<Entry> {
        let n = self.slice_len(from, entries_max, bytes_max);
        self.offset(from).map_or_else(Vec::new, |o| {
            self.entries.range(o..o + n).cloned().collect()
        })
    }

    /// The position of `from` in `entries`, if the log holds it.
    fn offset(&self, from: Index) -> Option<usize> {
        from.checked_sub(self.first_index())
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| *o < self.entries.len())
    }

    /// Entries in `from..=to` (clamped to what the log holds).
    pub fn range(&self, from: Index, to: Index) -> impl Iterator<Item = &Entry> {
        let start = (from
            .max(self.first_index())
            .saturating_sub(self.first_index()) as usize)
            .min(self.entries.len());
        let end = to
            .min(self.last_index())
            .saturating_add(1)
            .saturating_sub(self.first_index()) as usize;
        self.entries.range(start..end.max(start))
    }

    /// Appends one entry at the end (leader). The caller guarantees index and term order.
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        if let Payload::Membership(_) = entry.payload {
            self.config_indexes.push(entry.index);
        }
        self.entries.push_back(entry);
    }

    /// Drops every entry at or after `index`; storage is told through `unsent`.
    pub fn truncate_from(&mut self, index: Index) {
        if index > self.last_index() || index < self.first_index() {
            return;
        }
        self.entries.truncate((index - self.first_index()) as usize);
        /// thesis §4.1: a configuration entry that is truncated away no longer applies; the
        /// one before it does again.
        self.config_indexes.retain(|i| *i < index);
        self.unsent = self.unsent.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// The last index holding `term`, if any entry has it (for the leader's fast backup).
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let n = self.entries.partition_point(|e| e.term <= term);
        if n > 0 && self.entries[n - 1].term == term {
            return Some(self.entries[n - 1].index);
        }
        (n == 0 && self.snapshot.term == term && self.snapshot.index > 0)
            .then_some(self.snapshot.index)
    }

    /// The first index the log holds with `term` (no lower than the first index).
    pub fn first_index_of_term(&self, term: Term) -> Index {
        let n = self.entries.partition_point(|e| e.term < term);
        self.entries
            .get(n)
            .filter(|e| e.term == term)
            .map_or(self.first_index(), |e| e.index)
    }

    /// Hands the entries not yet given to storage, up to `limit`, to the caller.
    pub fn take_unsent_to(&mut self, limit: Index) -> Vec<Entry> {
        let from = self.unsent;
        let to = limit.min(self.last_index());
        if to < from {
            return Vec::new();
        }
        self.unsent = to + 1;
        self.range(from, to).cloned().collect()
    }

    /// Storage reports `id` durable. Ignored if the log no longer holds `id` (it was truncated
    /// and rewritten after that write was issued).
    pub fn mark_persisted(&mut self, id: LogId) {
        if self.has(id) && id.index < self.unsent {
            self.persisted = self.persisted.max(id.index);
        }
    }

    /// Raft §7: the application snapshotted the state machine through `id`: drop the prefix.
    pub fn compact_to(&mut self, id: LogId) {
        debug_assert!(self.has(id));
        self.snapshot_membership = self.membership_at(id.index).clone();
        self.config_indexes.retain(|i| *i > id.index);
        while self.entries.front().is_some_and(|e| e.index <= id.index) {
            self.entries.pop_front();
        }
        self.snapshot = id;
        self.unsent = self.unsent.max(self.first_index());
    }

    /// Raft §7: a snapshot from the leader replaces the log. "If existing log entry has same
    /// index and term as snapshot's last included entry, retain log entries following it";
    /// otherwise discard the entire log. `membership` is the snapshot's configuration.
    pub fn install_snapshot(&mut self, last: LogId, membership: Membership) {
        if self.has(last) {
            self.compact_to(last);
        } else {
            self.entries.clear();
            self.config_indexes.clear();
            self.snapshot = last;
            self.unsent = self.first_index();
            self.persisted = self.persisted.min(last.index);
        }
        self.snapshot_membership = membership;
    }

    /// Every structural invariant of the log; panics naming the broken one.
    pub fn check_invariants(&self) {
        let mut prev = self.snapshot;
        for e in &self.entries {
            assert_eq!(
                e.index,
                prev.index + 1,
                "log invariant: indexes are contiguous"
            );
            assert!(e.term >= prev.term, "log invariant: terms never decrease");
            prev = e.id();
        }
        assert!(
            self.first_index() <= self.unsent && self.unsent <= self.last_index() + 1,
            "log invariant: first_index <= unsent <= last_index + 1"
        );
        assert!(
            self.persisted <= self.last_index(),
            "log invariant: persisted <= last_index"
        );
        let configs = self
            .entries
            .iter()
            .filter(|e| matches!(e.payload, Payload::Membership(_)))
            .map(|e| e.index);
        assert!(
            configs.eq(self.config_indexes.iter().copied()),
            "log invariant: the configuration history is the log's configuration entries"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    fn log(terms: &[Term]) -> Log {
        Log::restore(
            LogId::default(),
            Membership::default(),
            terms
                .iter()
                .enumerate()
                .map(|(i, &t)| entry(i as Index + 1, t)),
        )
    }

    #[test]
    fn term_lookups_serve_fast_backup() {
        let l = log(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(l.last_index_of_term(2), Some(5));
        assert_eq!(l.last_index_of_term(3), None);
        assert_eq!(l.first_index_of_term(2), 3);
        assert_eq!(l.term_at(0), Some(0));
        assert_eq!(l.term_at(7), None);
    }

    #[test]
    fn truncation_rewinds_unsent_and_persisted() {
        let mut l = log(&[1, 1, 1]);
        l.truncate_from(2);
        assert_eq!(l.last_index(), 1);
        assert_eq!(l.persisted(), 1);
        l.push(entry(2, 2));
        assert_eq!(l.take_unsent_to(Index::MAX), vec![entry(2, 2)]);
        l.mark_persisted(LogId::new(3, 1)); // a stale ack for the truncated entry
        assert_eq!(l.persisted(), 1);
        l.mark_persisted(LogId::new(2, 2));
        assert_eq!(l.persisted(), 2);
        l.check_invariants();
    }

    #[test]
    fn snapshot_install_keeps_matching_suffix_and_drops_a_conflicting_log() {
        let mut l = log(&[1, 1, 2, 2]);
        l.install_snapshot(LogId::new(2, 1), Membership::default());
        assert_eq!((l.first_index(), l.last_index()), (3, 4));
        l.install_snapshot(LogId::new(6, 3), Membership::default());
        assert_eq!((l.first_index(), l.last_index()), (7, 6));
        assert_eq!(l.term_at(6), Some(3));
        l.check_invariants();
    }

    fn config(index: Index, term: Term, voters: &[u64]) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Membership(Box::new(Membership::from_voters(voters.iter().copied()))),
        }
    }

    #[test]
    fn a_truncated_configuration_rolls_back_to_the_one_before() {
        let mut l = Log::restore(LogId::default(), Membership::from_voters([1, 2, 3]), []);
        l.push(entry(1, 1));
        l.push(config(2, 1, &[1, 2, 3, 4]));
        l.push(config(3, 1, &[1, 2, 3, 4, 5]));
        assert_eq!(l.membership().voters().len(), 5);
        assert_eq!(l.membership_at(2).voters().len(), 4);
        assert_eq!(l.membership_at(1).voters().len(), 3);
        l.truncate_from(3);
        assert_eq!(l.membership().voters().len(), 4);
        l.truncate_from(2);
        assert_eq!(l.membership().voters().len(), 3);
        assert_eq!(l.config_index(), 0);
        l.check_invariants();
    }

    #[test]
    fn compaction_keeps_the_configuration_in_effect_at_the_snapshot() {
        let mut l = Log::restore(LogId::default(), Membership::from_voters([1]), []);
        l.push(config(1, 1, &[1, 2]));
        l.push(entry(2, 1));
        l.push(config(3, 1, &[1, 2, 3]));
        l.compact_to(LogId::new(2, 1));
        assert_eq!(l.membership_at(2).voters().len(), 2);
        assert_eq!(l.membership().voters().len(), 3);
        assert_eq!(l.config_index(), 3);
        l.compact_to(LogId::new(3, 1));
        assert_eq!(l.membership().voters().len(), 3);
        assert_eq!(l.config_index(), 3);
        l.check_invariants();
    }

    #[test]
    fn slice_respects_bounds_but_sends_one_entry() {
        let l = log(&[1, 1, 1, 1]);
        assert_eq!(l.slice(2, 2, usize::MAX).len(), 2);
        assert_eq!(l.slice(2, 10, 1).len(), 1);
        assert!(l.slice(9, 10, 100).is_empty());
        for (from, max, bytes) in [(2, 2, usize::MAX), (2, 10, 1), (9, 10, 100), (1, 0, 9)] {
            assert_eq!(
                l.slice_len(from, max, bytes),
                l.slice(from, max, bytes).len()
            );
        }
    }
}
