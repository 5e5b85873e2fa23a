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
//! Issue 20: reading a large state (encoding a heap map of many MiB, scanning a durable store
//! of millions of keys) takes long enough to stall the loop's heartbeats. A state machine that
//! offers a [`SnapshotRead`] ([`StateMachine::snapshot_read`]) has it run off the loop, on
//! [`Runtime::spawn_blocking`] (inline under the simulator), at most one at a time per node;
//! its result comes back as one of the loop's events and is handed to the core then:
//! [`crate::Raft::snapshot_taken`] to compact, [`crate::Raft::snapshot_for_transfer`] for a
//! follower. The core checks it against where the node is by then (more applied, a compaction,
//! a snapshot installed, leadership lost): one it refuses is dropped, and the next compaction
//! or the core's next request reads again. A state machine without one is read on the loop
//! ([`StateMachine::try_snapshot`]).
//!
//! Issue 20: a snapshot larger than memory never passes through the loop whole. A follower's
//! chunks go to the state machine's spool as they arrive ([`crate::SnapshotReceiver`], in
//! `process_ready`), and a read for a follower has its CRC32C computed off the loop with it.
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
//! Issue 20, the trailing log ([`NodeConfig::trailing_log_entries`] and
//! [`NodeConfig::trailing_log_bytes`]; etcd keeps `SnapshotCatchUpEntries`, hashicorp/raft
//! `TrailingLogs`): a follower only a little behind when the log is compacted (a GC pause, a
//! slow disk, a restart a moment ago) would otherwise need a whole-state snapshot (1.2 GB at
//! 10M keys) where a few thousand entries do. The core's log starts right after its snapshot,
//! so the entries kept are kept by compacting less, in the only way each kind of state allows:
//! - A state kept durably is its own snapshot, at any entry up to where it is durable: the
//!   compaction stops that many entries (and bytes) short of it. Every node keeps the tail, so
//!   a leader elected later, and a follower restarted with a log that ends a little before the
//!   leader's compaction, are covered too. Keeping more log is always safe (above). The next
//!   compaction's entry threshold counts from where this one would have gone.
//! - An in-memory state is copied at the applied entry only: a leader waits to compact while
//!   a follower that does not hold the log through the applied entry yet is within that many
//!   entries of it, until the log since the snapshot is that many entries (or bytes) past the
//!   thresholds; then it compacts anyway (the bound). Under a steady load a follower is
//!   usually a few entries behind, so such a leader's log grows to the thresholds plus the
//!   trailing bounds between compactions.
//!
//! Either way the log in memory and in storage holds at most the thresholds plus the trailing
//! bounds (the trailing bytes capped at the byte threshold: at most twice it); both are bounded ([`crate::driver::TRAILING_LOG_ENTRIES_MAX`],
//! [`crate::driver::TRAILING_LOG_BYTES_MAX`]). A compaction that kept log tells the observer
//! ([`EventKind::Trailing`]).
//!
//! [`NodeConfig::trailing_log_entries`]: crate::NodeConfig::trailing_log_entries
//! [`NodeConfig::trailing_log_bytes`]: crate::NodeConfig::trailing_log_bytes
//!
//! The log is never compacted past what the state holds durably: then a crash would lose
//! entries that are neither in the log nor in the state. A state machine that said it was
//! durable at an entry never says less later (a restore moves it forward, durably). For the
//! same reason a durable state's committed position, which a read off the loop may be at, is
//! never before the log's compaction point (it is at or past the durable one).

use super::EventLoop;
use crate::driver::error::NodeError;
use crate::driver::observer::{EventKind, SnapshotHow};
use crate::driver::storage_task::Job;
use crate::io::{Runtime, SnapshotRead, StateMachine, StorageError, Transport, WriteOp};
use crate::ready::Ready;
use crate::types::{Index, Snapshot};
use crate::Error;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::FutureExt;
use std::task::{Context, Poll};

/// Issue 20: how far past the snapshot's byte threshold the log may grow while compactions are
/// held back for a snapshot on its way to a follower.
const TRANSFER_HOLD_FACTOR: u64 = 4;
/// The same bound in entries: entries are small (100-byte values: ~150 bytes held per entry),
/// so more of them fit in the bytes bound than the entry threshold times 4.
const TRANSFER_HOLD_ENTRIES_FACTOR: u64 = 64;

/// What a snapshot read off the loop is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadFor {
    /// Compacting the log ([`crate::Raft::snapshot_taken`]).
    Compaction,
    /// A follower that needs a snapshot ([`crate::Raft::snapshot_for_transfer`]).
    Transfer,
}

/// A snapshot read in flight off the loop.
pub(super) struct Reading {
    purpose: ReadFor,
    /// Command bytes applied since the last snapshot when the read was built: what a
    /// compaction to it covers.
    bytes_since_snapshot: u64,
    rx: oneshot::Receiver<Result<ReadResult, StorageError>>,
}

/// What a snapshot read off the loop returns: the entry the state it read is at, its bytes,
/// and for a transfer their CRC32C (computed off the loop too: a full read of the snapshot).
type ReadResult = (Index, Bytes, Option<u32>);

/// A finished snapshot read.
pub(super) struct ReadDone {
    purpose: ReadFor,
    bytes_since_snapshot: u64,
    result: Result<ReadResult, StorageError>,
}

/// The read in flight once it has finished (pending while there is none).
pub(super) fn poll_reading(reading: &mut Option<Reading>, cx: &mut Context<'_>) -> Poll<ReadDone> {
    let Some(r) = reading else {
        return Poll::Pending;
    };
    let result = std::task::ready!(r.rx.poll_unpin(cx)).unwrap_or_else(|_| {
        // The read ended without a result (it panicked): fail-stop, as on a read error.
        Err(StorageError::io(
            "snapshot read",
            "",
            std::io::Error::other("the snapshot read ended without a result"),
        ))
    });
    let done = ReadDone {
        purpose: r.purpose,
        bytes_since_snapshot: r.bytes_since_snapshot,
        result,
    };
    *reading = None;
    Poll::Ready(done)
}

/// The read in flight if it has finished already (never waits).
pub(super) fn reading_now(reading: &mut Option<Reading>) -> Option<ReadDone> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match poll_reading(reading, &mut cx) {
        Poll::Ready(done) => Some(done),
        Poll::Pending => None,
    }
}

impl<R: Runtime, M: StateMachine, T: Transport> EventLoop<R, M, T> {
    /// Compacts the log once enough entries were applied since the last snapshot.
    pub(super) fn maybe_snapshot(&mut self) {
        let (applied, snapshot_index) = (self.raft.applied_index(), self.raft.snapshot_index());
        // The entry threshold counts from where the last compaction would have gone without
        // the trailing log.
        let since = snapshot_index.max(self.compacted_past);
        if applied <= snapshot_index
            || (applied < since + self.snapshot_threshold
                && self.bytes_since_snapshot < self.snapshot_threshold_bytes)
        {
            return;
        }
        let hold = self.transfer_hold(applied, snapshot_index);
        if hold == Some(snapshot_index) {
            return;
        }
        // A state kept durably: a compaction keeps the trailing log before where the state is
        // durable, so it is of use once that is past them; the state machine is asked to make
        // what it applied durable until it is (regression: asked to pass only the stored
        // snapshot, a state durable a little past it never went further, and the log was never
        // compacted).
        let keep = match self.raft.is_snapshot_on_demand() {
            true => applied - self.trail_cut(applied, snapshot_index),
            false => 0,
        };
        if applied <= snapshot_index + keep {
            return;
        }
        let taken = match self.sm.start_durable(snapshot_index + keep) {
            // Issue 20: the state is its own snapshot; only its metadata is stored. Not
            // durable past the snapshot yet: its commit and sync run in the background, and
            // a later batch asks again. A snapshot on its way to a follower is not passed,
            // and the trailing log is kept before where the compaction would go.
            Ok(Some(at)) => {
                let to = hold.map_or(at.index, |h| h.min(at.index));
                match self.trail_cut(to, snapshot_index) {
                    cut if cut <= snapshot_index => return,
                    cut => {
                        if cut < to {
                            self.emit(|| EventKind::Trailing {
                                first: cut + 1,
                                past: to,
                            });
                        }
                        self.compacted_past = to;
                        self.raft.compacted_to(cut)
                    }
                }
            }
            // One read at a time: this one compacts when it is done.
            Ok(None) if self.reading.is_some() => return,
            Ok(None) if self.trailing_hold(applied, snapshot_index) => return,
            Ok(None) => match self.sm.snapshot_read(applied) {
                Some(read) => return self.start_read(ReadFor::Compaction, read),
                None => match self.sm.try_snapshot() {
                    Ok(data) => self.raft.snapshot_taken(applied, data),
                    Err(e) => return self.stop_unreadable(e),
                },
            },
            Err(e) => return self.stop_unreadable(e),
        };
        self.taken(taken, self.bytes_since_snapshot);
    }

    /// Whether the trailing log is on (both of its bounds above 0).
    fn trailing_on(&self) -> bool {
        self.trailing_entries > 0 && self.trailing_bytes > 0
    }

    /// Issue 20, the trailing log of a state kept durably: where a compaction to `to` stops so
    /// that up to `trailing_log_entries` entries before `to`, of at most `trailing_log_bytes`,
    /// stay in the log (never before the stored snapshot: nothing compacted comes back).
    fn trail_cut(&self, to: Index, snapshot_index: Index) -> Index {
        if !self.trailing_on() {
            return to;
        }
        let floor = to.saturating_sub(self.trailing_entries).max(snapshot_index);
        let (mut cut, mut bytes) = (to, 0u64);
        while cut > floor {
            let Some(e) = self.raft.entry(cut) else { break };
            bytes += e.size_bytes() as u64;
            if bytes > self.trailing_bytes {
                break;
            }
            cut -= 1;
        }
        cut
    }

    /// Issue 20, the trailing log of an in-memory state (copied at the applied entry only):
    /// true while a compaction waits for a follower that does not hold the log through
    /// `applied` yet ([`crate::Raft::lowest_follower_match`]; entries in flight to it may be
    /// lost, and it would then need what the compaction drops) and that is within
    /// `trailing_log_entries` of it. Bounded: once the log since the snapshot is
    /// `trailing_log_entries` past the entry threshold or `trailing_log_bytes` past the byte
    /// one, the log is compacted anyway.
    fn trailing_hold(&mut self, applied: Index, snapshot_index: Index) -> bool {
        if !self.trailing_on() {
            return false;
        }
        let entries_max = self
            .snapshot_threshold
            .saturating_add(self.trailing_entries);
        let bytes_max = self
            .snapshot_threshold_bytes
            .saturating_add(self.trailing_bytes);
        let within = applied < snapshot_index.saturating_add(entries_max)
            && self.bytes_since_snapshot < bytes_max;
        let lagging = self
            .raft
            .lowest_follower_match()
            .is_some_and(|m| m < applied && m.saturating_add(self.trailing_entries) >= applied);
        if !(within && lagging) {
            return false;
        }
        if self.trail_held != Some(snapshot_index) {
            self.trail_held = Some(snapshot_index);
            self.emit(|| EventKind::Trailing {
                first: snapshot_index + 1,
                past: applied,
            });
        }
        true
    }

    /// Issue 20: the entry a compaction may not pass now, because a follower is being sent a
    /// snapshot at it (read, or its chunks on their way; [`crate::Raft::snapshot_being_sent`]).
    /// Without this a follower that fell behind a leader under a steady load never caught up:
    /// each compaction passed the snapshot being sent, which then started over (seen loading
    /// 10M keys). The hold is bounded: once the log since the last compaction reaches
    /// [`TRANSFER_HOLD_FACTOR`] times the byte threshold or [`TRANSFER_HOLD_ENTRIES_FACTOR`] times
    /// the entry threshold, the log is compacted anyway.
    fn transfer_hold(&self, applied: Index, snapshot_index: Index) -> Option<Index> {
        let within = applied
            < snapshot_index + TRANSFER_HOLD_ENTRIES_FACTOR * self.snapshot_threshold
            && self.bytes_since_snapshot < TRANSFER_HOLD_FACTOR * self.snapshot_threshold_bytes;
        if !within {
            return None;
        }
        match &self.reading {
            // The state is being read for a follower: its position is not known yet.
            Some(r) if matches!(r.purpose, ReadFor::Transfer) => Some(snapshot_index),
            _ => self.raft.snapshot_being_sent(),
        }
    }

    /// Stores the snapshot the core took (which covers `bytes` command bytes of those applied
    /// since the last one), or says why there is none.
    fn taken(&mut self, taken: Result<Snapshot, Error>, bytes: u64) {
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
                self.bytes_since_snapshot = self.bytes_since_snapshot.saturating_sub(bytes);
            }
            Err(e) => tracing::warn!(node = self.raft.id(), error = %e, "snapshot not taken"),
        }
    }

    /// Issue 20: a follower needs a snapshot and the node holds none (its state machine keeps
    /// its own state): the state machine's state is read — off the loop if it can be (a read
    /// in flight already answers this request too: the core asks again if it does not), else
    /// now at the applied entry — handed to the core for this transfer, and dropped after it.
    pub(super) fn snapshot_for_transfer(&mut self) {
        if self.reading.is_some() {
            return;
        }
        let applied = self.raft.applied_index();
        if let Some(read) = self.sm.snapshot_read(applied) {
            return self.start_read(ReadFor::Transfer, read);
        }
        let sent = match self.sm.try_snapshot() {
            Ok(data) => self.for_transfer(applied, data, None),
            Err(e) => return self.stop_unreadable(e),
        };
        if let Err(e) = sent {
            tracing::warn!(node = self.raft.id(), error = %e, "snapshot not sent");
        }
    }

    /// Hands the core the state at `index` for the followers that need a snapshot.
    fn for_transfer(
        &mut self,
        index: Index,
        data: Bytes,
        crc32c: Option<u32>,
    ) -> Result<(), Error> {
        match crc32c {
            Some(crc) => self
                .raft
                .snapshot_for_transfer_with_crc32c(index, data, crc)?,
            None => self.raft.snapshot_for_transfer(index, data)?,
        }
        let term = self.raft.term_at(index).unwrap_or(0);
        self.emit(|| EventKind::Snapshot {
            index,
            term,
            how: SnapshotHow::OnDemand,
        });
        Ok(())
    }

    /// Issue 20: runs `read` off the loop; its result comes back as an event.
    fn start_read(&mut self, purpose: ReadFor, read: SnapshotRead) {
        let (tx, rx) = oneshot::channel();
        self.reading = Some(Reading {
            purpose,
            bytes_since_snapshot: self.bytes_since_snapshot,
            rx,
        });
        self.runtime.spawn_blocking(move || {
            let result = read().map(|(index, data)| {
                let crc = (purpose == ReadFor::Transfer).then(|| crc32c::crc32c(&data));
                (index, data, crc)
            });
            let _ = tx.send(result);
        });
    }

    /// Issue 20: a snapshot read off the loop finished: the core takes it if it still fits
    /// where the node is now (it checks), else it is dropped.
    pub(super) fn snapshot_read_done(&mut self, done: ReadDone) {
        let (index, data, crc32c) = match done.result {
            Ok(read) => read,
            Err(e) => return self.stop_unreadable(e),
        };
        let refused = match done.purpose {
            // Raft §7: refused if the node compacted past it meanwhile (a snapshot installed
            // from the leader); the next compaction reads again.
            ReadFor::Compaction => match self.raft.snapshot_taken(index, data) {
                Ok(snapshot) => {
                    self.taken(Ok(snapshot), done.bytes_since_snapshot);
                    return;
                }
                Err(e) => e,
            },
            // Refused if the log was compacted past it meanwhile; the core asks again while a
            // follower still needs a snapshot.
            ReadFor::Transfer => match self.for_transfer(index, data, crc32c) {
                Ok(()) => return,
                Err(e) => e,
            },
        };
        tracing::debug!(node = self.raft.id(), error = %refused, purpose = ?done.purpose, "a snapshot read off the loop is out of date: dropped");
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
