//! Log compaction (Raft §7): by a snapshot the application took and handed over
//! ([`Raft::snapshot_taken`]), or — for a state machine that keeps its own state durably —
//! up to the entry its state is durable at, with no copy of the state
//! ([`Raft::compacted_to`]), the data then read on demand when a follower needs it
//! ([`Raft::snapshot_for_transfer`]).

use crate::progress::ReplicationState;
use crate::raft::{Error, Raft, RoleState};
use crate::types::{Index, LogId, Snapshot};
use bytes::Bytes;

impl Raft {
    /// The application took a snapshot of its state machine through `index` (which it has
    /// applied). Returns the [`Snapshot`] to store (with the configuration in effect at
    /// `index`); the driver must queue its durable write before handling the next `Ready`,
    /// whose `compact_to` drops the log it covers. It is what lagging followers will be
    /// sent (Raft §7).
    pub fn snapshot_taken(&mut self, index: Index, data: Bytes) -> Result<Snapshot, Error> {
        self.compact(index, data)
    }

    /// Issue 20: the state machine keeps its own state, and it is durable (it survives a
    /// crash, a power cut included) at `index`. The log up to `index` is compacted and what
    /// is returned, to store, is the snapshot's metadata only (its data empty): the state
    /// itself is the snapshot. A follower that needs it gets it through
    /// [`crate::Ready::snapshot_request`]. Call [`Raft::snapshots_on_demand`] first.
    ///
    /// `index` must be one the state is durable at, never only applied: the log dropped here
    /// holds the only other copy of the entries through `index`, so a crash after the
    /// compaction is stored would otherwise lose entries that are neither in the log nor in
    /// the state.
    pub fn compacted_to(&mut self, index: Index) -> Result<Snapshot, Error> {
        if !self.snapshot_on_demand {
            return Err(Error::SnapshotIndex {
                index,
                reason: "the state machine does not keep its own state (snapshots_on_demand)",
            });
        }
        self.compact(index, Bytes::new())
    }

    /// Raft §7: the log through `index` is replaced by a snapshot holding `data`.
    fn compact(&mut self, index: Index, data: Bytes) -> Result<Snapshot, Error> {
        if index <= self.log.snapshot().index {
            return Err(Error::SnapshotIndex {
                index,
                reason: "not past the current snapshot",
            });
        }
        if index > self.applied {
            return Err(Error::SnapshotIndex {
                index,
                reason: "not applied yet",
            });
        }
        let last = self.log_id_at(index)?;
        let membership = self.log.membership_at(index).clone();
        self.log.compact_to(last);
        // A node removed by a configuration now compacted away is no longer replicated to.
        self.sync_progress();
        let snapshot = Snapshot {
            last,
            data,
            membership,
        };
        self.snapshot = Some(snapshot.clone());
        self.out.compact_to = Some(last);
        if self.transfer.as_ref().is_some_and(|t| t.last.index < index) {
            self.transfer = None;
        }
        self.debug_check();
        Ok(snapshot)
    }

    fn log_id_at(&self, index: Index) -> Result<LogId, Error> {
        let term = self.log.term_at(index).ok_or(Error::SnapshotIndex {
            index,
            reason: "not in the log",
        })?;
        Ok(LogId::new(index, term))
    }

    /// Issue 20: the state machine keeps its own state durably (it says where it is after a
    /// restart), so this node holds no copy of it: its snapshot is metadata only, compacted
    /// with [`Raft::compacted_to`], and the data a follower needs is read from the state
    /// machine when one does ([`crate::Ready::snapshot_request`]). A snapshot received from a
    /// leader is kept as metadata too once the state machine has installed it. The driver
    /// calls this right after [`Raft::restore`]; any data the restored snapshot holds (stored
    /// by an older version) is dropped.
    pub fn snapshots_on_demand(&mut self) {
        self.snapshot_on_demand = true;
        if let Some(s) = &mut self.snapshot {
            s.data = Bytes::new();
        }
    }

    /// Issue 20: the driver filled in the data of the snapshot from the leader at `last`
    /// ([`crate::Ready::snapshot`], received in chunks the core did not keep). A node that
    /// sends lagging followers its own copy keeps this one (Raft §7); with
    /// [`Raft::snapshots_on_demand`] the state machine holds it and the node keeps none.
    pub fn snapshot_received(&mut self, last: LogId, data: Bytes) {
        if self.snapshot_on_demand {
            return;
        }
        if let Some(s) = self.snapshot.as_mut().filter(|s| s.last == last) {
            s.data = data;
        }
    }

    /// The last entry of the snapshot this node is receiving from its leader, if it is
    /// receiving one (chunks handed out in [`crate::Ready::snapshot_chunks`], not done yet).
    pub fn snapshot_being_received(&self) -> Option<LogId> {
        self.incoming_snapshot.as_ref().map(|inc| inc.last)
    }

    /// True after [`Raft::snapshots_on_demand`].
    pub fn is_snapshot_on_demand(&self) -> bool {
        self.snapshot_on_demand
    }

    /// The snapshot lagging followers are sent: the stored one, or with
    /// [`Raft::snapshots_on_demand`] the one read for them (`None` until it is).
    pub(crate) fn snapshot_to_send(&self) -> Option<&Snapshot> {
        match self.snapshot_on_demand {
            /// Raft §7: a snapshot older than the log's start is of no use: the log no longer
            /// holds the entries after it (regression: one read before a compaction was sent
            /// again and again to the follower that had installed it).
            true => self
                .transfer
                .as_ref()
                .filter(|t| t.last.index >= self.log.snapshot().index),
            false => self.snapshot.as_ref(),
        }
    }

    /// The driver answers a [`crate::Ready::snapshot_request`]: `data` is the state machine's
    /// state at `index`, the last entry applied to it (at or past the compaction point, so
    /// the log after it is here to follow). Raft §7: it is sent to every follower waiting for
    /// a snapshot, and dropped once none is. A node that no longer leads drops it at once.
    pub fn snapshot_for_transfer(&mut self, index: Index, data: Bytes) -> Result<(), Error> {
        self.for_transfer(index, data, None)
    }

    /// [`Raft::snapshot_for_transfer`] with the data's CRC32C, which every chunk carries
    /// (Raft §7, issue 21 #7): the driver computes it off the event loop, since it is a full
    /// read of a snapshot that may be larger than memory (issue 20).
    pub fn snapshot_for_transfer_with_crc32c(
        &mut self,
        index: Index,
        data: Bytes,
        crc32c: u32,
    ) -> Result<(), Error> {
        self.for_transfer(index, data, Some(crc32c))
    }

    fn for_transfer(
        &mut self,
        index: Index,
        data: Bytes,
        crc32c: Option<u32>,
    ) -> Result<(), Error> {
        if index < self.log.snapshot().index || index > self.applied {
            return Err(Error::SnapshotIndex {
                index,
                reason: "not between the compaction point and the applied entry",
            });
        }
        let last = self.log_id_at(index)?;
        let RoleState::Leader(l) = &self.role else {
            return Ok(());
        };
        let waiting: Vec<_> = l
            .progress
            .iter()
            .filter(|(_, p)| matches!(p.state, ReplicationState::Snapshot { .. }))
            .map(|(id, _)| *id)
            .collect();
        if let Some(crc) = crc32c {
            self.snapshot_crc32c = Some((last, data.len() as u64, crc));
        }
        self.transfer = Some(Snapshot {
            last,
            data,
            membership: self.log.membership_at(index).clone(),
        });
        for to in waiting {
            self.send_snapshot_chunk(to);
        }
        self.release_transfer();
        self.debug_check();
        Ok(())
    }

    /// The last entry of the snapshot a follower is being sent now, if this node leads and one
    /// is (the stored snapshot, or with [`Raft::snapshots_on_demand`] the one read for it).
    /// Raft §7: the follower goes on from that entry with the log after it, so a compaction
    /// past it while it is on its way makes the transfer useless: the follower then needs a
    /// newer snapshot, from the start. The driver holds compactions back to it (within a
    /// bound) so that a follower that fell behind a busy leader catches up at all.
    pub fn snapshot_being_sent(&self) -> Option<Index> {
        let last = self.snapshot_to_send()?.last;
        self.is_sending(last).then_some(last.index)
    }

    /// Issue 20: a snapshot read on demand is held only while a follower is being sent it
    /// (a leader's progress in snapshot state for it), never for the node's lifetime.
    pub(crate) fn release_transfer(&mut self) {
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| !self.is_sending(t.last))
        {
            self.transfer = None;
        }
    }

    /// Whether this node leads and a follower's progress is in snapshot state for `last`.
    fn is_sending(&self, last: LogId) -> bool {
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        l.progress.values().any(
            |p| matches!(p.state, ReplicationState::Snapshot { last: sending, .. } if sending == last),
        )
    }
}
