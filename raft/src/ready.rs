//! [`Ready`]: everything the core asks its driver to do, returned as data, and how the core
//! assembles it ([`Raft::has_ready`], [`Raft::take_ready`]).

use crate::message::Message;
use crate::progress::ReplicationState;
use crate::raft::{Raft, RoleState};
use crate::types::{Entry, HardState, Index, LogId, ReadState, Snapshot};
use bytes::Bytes;

/// Issue 20: one chunk of a snapshot this node is receiving from its leader (Raft §7), handed
/// to the driver to write to a spool (the core keeps no snapshot data). The chunks of one
/// transfer come in order, the first at offset 0; a chunk at offset 0 starts a new transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedChunk {
    /// The last entry the snapshot covers.
    pub last: LogId,
    /// Where the chunk starts in the snapshot.
    pub offset: u64,
    pub data: Bytes,
}

/// The work the core hands to its driver after some inputs. Take it with
/// [`crate::Raft::take_ready`] after any call that changes the node.
///
/// # The contract
/// A driver handles each `Ready` in this order:
///
/// 1. **Send `send_now`** at once. A leader's Append, Heartbeat and InstallSnapshot: thesis
///    §10.2.1 lets the leader write its own log in parallel with replicating it, because it
///    counts itself toward commitment only once its own write is durable (reported by step 3).
///    And any node's HeartbeatResponse, which promises nothing durable (thesis §6.4).
/// 0. **Spool `snapshot_chunks`** (issue 20): append each to the spool of its transfer (a new
///    one at offset 0), before anything is sent; when `snapshot` is set, its data is what the
///    spool holds: fill it in and hand it back with [`crate::Raft::snapshot_received`] before
///    the steps below ([`crate::SnapshotReceiver`] does all of this).
/// 2. **Persist and fsync**, in one durable write: `snapshot` (a snapshot received from the
///    leader), then `entries` (first truncating any stored entries at or after the first one's
///    index), then `hard_state`, then drop stored entries up to `compact_to`. Writes of successive
///    `Ready`s must become durable in the order they were taken; several may be merged into one
///    fsync (group commit).
/// 3. When that write — and every earlier one — is durable: **send `send_after_persist`** (votes
///    and acknowledgements that promise durable state), then call [`crate::Raft::persisted`] with
///    `persist_token`, if any. A `Ready` with nothing to write still holds its messages until the
///    writes taken before it are durable (an acknowledgement may promise entries they carry).
/// 4. **Apply**: restore the state machine from `snapshot` if there is one, then apply
///    `committed_entries` in order. (These are already durable, so applying may overlap step 2.)
/// 5. **Serve reads**: each of `read_states` may be answered once step 4 is done; `aborted_reads`
///    failed (leadership was lost before they were confirmed) and should be retried elsewhere.
/// 6. **Read a snapshot on demand** if `snapshot_request` is set (issue 20; only after
///    [`crate::Raft::snapshots_on_demand`]): once step 4 is done, read the state machine's
///    state whole — now or later, off the loop — and hand it to
///    [`crate::Raft::snapshot_for_transfer`] with the index it is at (between the compaction
///    point and the applied entry when handed over). The core sends it to the followers that
///    need it and drops it when they have it.
///
/// A node that crashes between these steps loses only what step 2 had not made durable, and it
/// has told no one anything that depended on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages to send before persisting: a leader's replication (thesis §10.2.1) and
    /// heartbeat acknowledgements (thesis §6.4).
    pub send_now: Vec<Message>,
    /// Term, vote and commit index to persist: when term or vote changed since the last one
    /// written, or with `entries` or `snapshot` when only the commit index moved (it is
    /// volatile state and is never written alone).
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it, then restore the state machine from it.
    /// Its data is empty as taken: it is the chunks of `snapshot_chunks` (of this `Ready` and
    /// earlier ones), which the driver fills in (step 0).
    pub snapshot: Option<Snapshot>,
    /// Issue 20: chunks of a snapshot being received, in order, to spool (step 0).
    pub snapshot_chunks: Vec<ReceivedChunk>,
    /// Entries to append; stored entries at or after `entries[0].index` are replaced.
    pub entries: Vec<Entry>,
    /// Stored entries up to and including this one may be deleted (a snapshot covers them).
    pub compact_to: Option<LogId>,
    /// Report this to [`crate::Raft::persisted`] once the write is durable.
    pub persist_token: Option<LogId>,
    /// Messages to send only once this `Ready`'s write is durable.
    pub send_after_persist: Vec<Message>,
    /// Committed entries to apply to the state machine, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed linearizable reads (thesis §6.4), safe to serve after `committed_entries`.
    pub read_states: Vec<ReadState>,
    /// Read ids whose ReadIndex request failed because this node stopped being leader.
    pub aborted_reads: Vec<u64>,
    /// Issue 20: a follower needs a snapshot and this node holds only its metadata (its state
    /// machine keeps its own state): read the state machine's state (step 6).
    pub snapshot_request: bool,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }

    /// True if step 2 of the contract has anything to write.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.snapshot.is_some()
            || !self.entries.is_empty()
            || self.compact_to.is_some()
    }
}

impl Raft {
    /// True if `take_ready` would return work.
    pub fn has_ready(&self) -> bool {
        let leader_pending = match &self.role {
            RoleState::Leader(l) => l.replicate_pending || l.read_round_pending,
            _ => false,
        };
        leader_pending
            || !self.out.send_now.is_empty()
            || !self.out.send_after_persist.is_empty()
            || self.out.snapshot.is_some()
            || self.out.compact_to.is_some()
            || self.out.snapshot_request
            || !self.out.snapshot_chunks.is_empty()
            || !self.out.aborted_reads.is_empty()
            || self.write_limit() >= self.log.unsent()
            || self.must_persist_hard_state()
            || self.apply_limit() > self.applied
            || self
                .confirmed_reads
                .front()
                .is_some_and(|r| r.index <= self.apply_limit())
    }

    /// Raft §5 (Figure 2): term and vote are persistent state; `commitIndex` is volatile, so a
    /// change of the commit index alone is not written (and fsynced) by itself: it goes out with
    /// the next write made anyway, and a restart that loads an older one only applies less at
    /// first (etcd-raft's `MustSync` makes the same choice).
    pub(crate) fn must_persist_hard_state(&self) -> bool {
        let hs = self.hard_state();
        hs.term != self.hard_state_out.term || hs.voted_for != self.hard_state_out.voted_for
    }

    /// Entries up to here may be applied: committed and durable locally.
    fn apply_limit(&self) -> Index {
        self.commit.min(self.log.persisted()).max(self.applied)
    }

    /// The last entry to hand to storage now. thesis §10.2.1: a leader writes an entry in
    /// parallel with its first Append, not before it: entries that wait for a follower's
    /// answer to gather into a full Append also gather into one write. With no follower
    /// replicated to (none yet, or all probing), everything is written at once.
    fn write_limit(&self) -> Index {
        let last = self.log.last_index();
        let RoleState::Leader(l) = &self.role else {
            return last;
        };
        l.progress
            .values()
            .filter(|p| matches!(p.state, ReplicationState::Replicate))
            .map(|p| p.next_index - 1)
            .max()
            .map_or(last, |sent| sent.min(last))
    }

    /// Collects everything the driver must do now. See [`Ready`] for the order.
    pub fn take_ready(&mut self) -> Ready {
        self.flush_leader_sends();
        self.release_transfer();
        let entries = self.log.take_unsent_to(self.write_limit());
        let snapshot = self.out.snapshot.take();
        let persist_token = entries
            .last()
            .map(Entry::id)
            .or(snapshot.as_ref().map(|s| s.last));
        let hs = self.hard_state();
        let writing = !entries.is_empty() || snapshot.is_some();
        let hard_state = (self.must_persist_hard_state() || (writing && hs != self.hard_state_out))
            .then_some(hs);
        if hard_state.is_some() {
            self.hard_state_out = hs;
        }
        let limit = self.apply_limit();
        let committed_entries: Vec<Entry> =
            self.log.range(self.applied + 1, limit).cloned().collect();
        self.applied = limit;
        let mut read_states = Vec::new();
        while let Some(r) = self.confirmed_reads.front() {
            if r.index > self.applied {
                break;
            }
            read_states.extend(self.confirmed_reads.pop_front());
        }
        let ready = Ready {
            send_now: std::mem::take(&mut self.out.send_now),
            hard_state,
            snapshot,
            snapshot_chunks: std::mem::take(&mut self.out.snapshot_chunks),
            entries,
            compact_to: self.out.compact_to.take(),
            persist_token,
            send_after_persist: std::mem::take(&mut self.out.send_after_persist),
            committed_entries,
            read_states,
            aborted_reads: std::mem::take(&mut self.out.aborted_reads),
            snapshot_request: std::mem::take(&mut self.out.snapshot_request),
        };
        self.debug_check();
        ready
    }
}
