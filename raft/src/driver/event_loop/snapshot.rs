//! Snapshots in the event loop: compacting the log once enough was applied — by storing a
//! copy of an in-memory state machine's state, or, for one that keeps its own state durably
//! (issue 20), by making that state durable and storing only the snapshot's metadata — and
//! reading the state on demand when a follower needs it.
//!
//! The event loop never waits for the state's disk: it asks [`StateMachine::start_durable`],
//! which returns the entry the state is durable at already (committed, then synced) and starts
//! a commit and sync of the rest in the background; the log is compacted only up to that
//! entry, once it is past the stored snapshot. At start ([`StateMachine::make_durable`], in
//! `resume.rs` and `node.rs`) the driver waits for it instead.
//!
//! Why compacting to a durable state's position is safe at every crash point (the state
//! machine's commit and sync, then the storage's write of the metadata and of the compaction):
//! - While the commit and sync run in the background (the state machine says the state is
//!   durable at an older entry, or at the same one): nothing is compacted past that entry; a
//!   crash loses the batch in flight, and the log still holds every entry after what the state
//!   holds.
//! - Once the state machine says it is durable at an entry: nothing was compacted past it yet;
//!   the log still holds every entry after it.
//! - After that, before the storage's write is durable: the stored snapshot is the older one,
//!   the log still starts after it, and the state is at or past it: the restart resumes from
//!   the state (`resume.rs`) and applies the log after it.
//! - After the storage's write: the log starts after the entry the state was made durable at,
//!   and a state is never behind that entry afterwards — it only moves forward, a leader's
//!   snapshot installed included (made durable before its metadata is stored).
//!
//! The log is never compacted past what the state holds durably: then a crash would lose
//! entries that are neither in the log nor in the state. A state machine that said it was
//! durable at an entry never says less later (a restore moves it forward, durably).

use super::EventLoop;
use crate::driver::error::NodeError;
use crate::driver::observer::{EventKind, SnapshotHow};
use crate::driver::storage_task::Job;
use crate::io::{Runtime, StateMachine, StorageError, Transport, WriteOp};
use crate::ready::Ready;
use bytes::Bytes;

impl<R: Runtime, M: StateMachine, T: Transport> EventLoop<R, M, T> {
    /// Compacts the log once enough entries were applied since the last snapshot.
    pub(super) fn maybe_snapshot(&mut self) {
        let (applied, snapshot_index) = (self.raft.applied_index(), self.raft.snapshot_index());
        if applied <= snapshot_index
            || (applied < snapshot_index + self.snapshot_threshold
                && self.bytes_since_snapshot < self.snapshot_threshold_bytes)
        {
            return;
        }
        let taken = match self.sm.start_durable(snapshot_index) {
            // Issue 20: the state is its own snapshot; only its metadata is stored. Not
            // durable past the snapshot yet: its commit and sync run in the background, and
            // a later batch asks again.
            Ok(Some(at)) if at.index <= snapshot_index => return,
            Ok(Some(at)) => self.raft.compacted_to(at.index),
            Ok(None) => match self.sm.try_snapshot() {
                Ok(data) => self.raft.snapshot_taken(applied, data),
                Err(e) => return self.stop_unreadable(e),
            },
            Err(e) => return self.stop_unreadable(e),
        };
        match taken {
            Ok(snapshot) => {
                self.emit(|| EventKind::Snapshot {
                    index: snapshot.last.index,
                    term: snapshot.last.term,
                    how: SnapshotHow::Taken,
                });
                // The snapshot write is queued before the compaction the next `Ready` asks for.
                self.queue_write(Job {
                    ops: vec![WriteOp::SaveSnapshot(snapshot)],
                    token: None,
                    after: Vec::new(),
                });
                self.bytes_since_snapshot = 0;
            }
            Err(e) => tracing::warn!(node = self.raft.id(), error = %e, "snapshot not taken"),
        }
    }

    /// Issue 20: a follower needs a snapshot and the node holds none (its state machine keeps
    /// its own state): the state machine's state at the applied entry is read now, in one
    /// consistent read, handed to the core for this transfer, and dropped after it.
    pub(super) fn snapshot_for_transfer(&mut self) {
        let data = match self.sm.try_snapshot() {
            Ok(data) => data,
            Err(e) => return self.stop_unreadable(e),
        };
        let applied = self.raft.applied_index();
        match self.raft.snapshot_for_transfer(applied, data) {
            Ok(()) => {
                let term = self.raft.term_at(applied).unwrap_or(0);
                self.emit(|| EventKind::Snapshot {
                    index: applied,
                    term,
                    how: SnapshotHow::OnDemand,
                });
            }
            Err(e) => tracing::warn!(node = self.raft.id(), error = %e, "snapshot not sent"),
        }
    }

    /// Issue 20: the state machine has installed the leader's snapshot (and made it durable):
    /// a node whose state machine keeps its own state stores only the snapshot's metadata.
    pub(super) fn strip_installed(&self, ready: &mut Ready) {
        if self.raft.is_snapshot_on_demand() {
            if let Some(s) = &mut ready.snapshot {
                s.data = Bytes::new();
            }
        }
    }

    /// A read error stops the node instead of storing or sending a wrong snapshot.
    fn stop_unreadable(&mut self, e: StorageError) {
        tracing::error!(node = self.raft.id(), error = %e, "cannot read the state machine for a snapshot: stopping the node");
        self.stopped = Some(NodeError::Storage(e));
    }
}
