//! # raftkv-raft: Raft as a deterministic state machine
//!
//! Raft keeps a replicated log consistent across a cluster of nodes so that a state machine
//! applied from it behaves like one reliable machine. This crate holds the protocol as pure,
//! deterministic code: no threads, no clock, no I/O, no thread-local randomness.
//!
//! ## Raft in prose
//! Every node is a **follower**, a **candidate** or the **leader** (Raft §5.1). Time is divided
//! into **terms**; each term has at most one leader. A follower that hears nothing from a leader
//! for a randomized **election timeout** first asks the others whether they *would* vote for it
//! (a **pre-vote**, thesis §9.6: no one changes state, so a partitioned node that rejoins cannot
//! force a needless election), then becomes a candidate: it increments its term, votes for itself
//! and requests votes (§5.2). A node votes once per term, and only for a candidate whose log is
//! at least as up to date as its own (§5.4.1). A candidate with a majority becomes leader and
//! appends a **no-op** entry, so that its term commits something quickly (§8).
//!
//! The leader accepts commands, appends them to its log and replicates them with
//! **AppendEntries**, each carrying the id of the entry before them (its *base*); a follower
//! accepts only if its log holds that base, truncating any conflicting suffix (§5.3). On refusal
//! it returns a **conflict hint** (its term at the base, that term's first index, its log
//! length) so that the leader skips a whole term per round trip. The leader batches entries
//! (bounded entries and bytes per message), **pipelines** several messages per follower (a
//! bounded in-flight window; only full messages, while a partial one waits for the answer to
//! gather more) once it knows where the follower's log matches, and otherwise
//! **probes** one message at a time. An entry is **committed** once a majority holds it durably,
//! but a leader counts replicas only for entries of its own term (§5.4.2); the leader counts its
//! own copy only once it is durable, which lets it write in parallel with sending (thesis
//! §10.2.1). Committed entries are applied in order.
//!
//! To bound the log, the application **snapshots** its state machine at an applied index and
//! the log before it is discarded (§7). A follower that needs discarded entries receives the
//! snapshot in bounded **chunks**, stop-and-wait, and replaces its log with it. The chunks of
//! one transfer come from one leader in one term (any other restarts it at offset 0), and the
//! assembled snapshot is installed only if its length and CRC32C match the leader's.
//!
//! A leader that has not heard from a majority within an election timeout steps down
//! (**CheckQuorum**, thesis §6.2), and followers that hear from a leader ignore vote requests
//! (thesis §4.2.3). Linearizable reads use **ReadIndex** (thesis §6.4): the leader notes its
//! commit index, confirms with a round of heartbeats that it is still leader (one round confirms
//! every read queued before it), and the read is served once that index is applied. With
//! `follower_reads`, a follower asked for a read sends `ReadIndex` to the leader, which confirms
//! its leadership the same way and answers its commit index; the follower serves the read once
//! it has applied that index (a leader change or no answer within an election timeout fails
//! the read, for the caller to retry). With `lease_reads` (thesis §6.4.1, off by default), a
//! leader whose heartbeat round started at tick `t` was acknowledged by a quorum serves reads
//! without a round until `t + Config::lease_ticks()`: the voters that acknowledged refuse votes
//! for a minimum election timeout on their own clocks, and the lease is shortened by the stated
//! clock-drift bound (`lease_clock_drift_percent`). Sending TimeoutNow forfeits the lease for
//! the term, a restarted voter keeps the promise for a minimum election timeout after it starts,
//! and the lease is recomputed from the configuration in effect at each read. The core never
//! reads a clock: the driver counts the ticks it missed (after a stall) before any input.
//!
//! **Membership** is data in the log (thesis §4). A configuration lists the **voters**, the
//! **learners** (thesis §4.2.1: they receive the log and snapshots but never vote, never count
//! toward a commit, a ReadIndex round or CheckQuorum, and never campaign) and each member's
//! addresses, which the core carries but never reads. A configuration entry takes effect on a
//! node as soon as it is in its log, committed or not (thesis §4.1); if it is truncated away,
//! the one before it applies again, and a snapshot carries the configuration at its last
//! entry. `Config::voters` only starts a fresh log; a node that joins a running cluster starts
//! with none and learns the configuration from the leader. A change (add a voter or a learner,
//! promote, remove; several at once) that alters the voters goes through **joint consensus**
//! (Raft §6, thesis §4.3): the leader appends C_old,new, in which every election and every
//! commit needs a majority of C_old *and* of C_new; once that commits, the leader appends C_new
//! by itself. A leader starts a change only once it has committed an entry of its own term and
//! no other change is pending (thesis §4.1: the single-server bug of 2015), and refuses one
//! whose new voters that are up to date and reachable would not be a quorum of it. A learner
//! added with `auto_promote` is promoted by the leader once its log is within
//! `promote_lag_entries_max` of the leader's, so that adding an empty node never stalls
//! commits. A leader outside C_new keeps leading, without counting itself, until C_new
//! commits, then steps down and hands over (thesis §4.2.2). A node outside its latest
//! configuration still campaigns while that configuration is uncommitted (it may hold the only
//! complete log), and stops once it knows its removal committed; the leader keeps replicating
//! to the nodes the latest change removed so that they learn it. **Leadership transfer**
//! (thesis §3.10): the leader brings the target's log up to date, refuses proposals, sends
//! `TimeoutNow`; the target campaigns at once, without a pre-vote, and voters answer it despite
//! the leader's lease; it resends its vote requests at each heartbeat interval to the voters
//! that have not answered (Raft §5.1's retried RPCs; only in a transfer's election, whose old
//! leader no longer leads); the leader gives up after an election timeout.
//!
//! ## Using the core
//! [`Raft`] takes inputs ([`Raft::tick`], [`Raft::step`], [`Raft::propose`],
//! [`Raft::read_index`], [`Raft::propose_change`], [`Raft::transfer_leader`],
//! [`Raft::snapshot_taken`], [`Raft::persisted`]) and returns work as [`Ready`] from
//! [`Raft::take_ready`]; the order in which a driver must do that work is written on [`Ready`].
//! [`Raft::status`] reports the membership, whether the node was removed and, on a leader,
//! every follower's progress. [`Node`] drives it over a runtime, storage and transport; [`sim`]
//! runs whole clusters of it under one seed, with faults and reconfiguration; [`mem`] and
//! [`storage::MemStorage`] run real nodes in one process (an in-memory network, a state
//! machine that keeps nothing).
//!
//! ## Modules
//! `types` (ids, entries, hard state) · `message` (wire messages and the trace notation) ·
//! `config` (bounds) · `log` (the in-memory log and its configuration history) · `membership`
//! (configurations and change requests) · `progress` (the leader's view of a follower) ·
//! `quorum` (simple and joint quorums) · `raft` (the node and its inputs) · `election` (roles
//! and votes) · `step` (term rules and dispatch) · `replication` (append, commit, snapshots,
//! reads) · `reconfig` (membership changes) · `transfer` (leadership transfer) · `ready` (the
//! driver contract) · `inspect` (status, invariants) · `driver` (the async [`Node`]) · `sim`
//! (the deterministic cluster simulator) · `storage` and `mem` (memory storage, an in-process
//! network, a no-op state machine).
//!
//! ## Deviations and what is not done
//! - Every change that alters the voters goes through a joint configuration, even a single
//!   server's (thesis §4.1's single-server changes are not used); learner-only changes and
//!   address updates take effect directly. One change at a time; no demotion of a voter to
//!   learner in one step (remove it, then add it as a learner).
//! - A configuration takes effect when appended (thesis §4.1), not when applied as in etcd.
//! - Nodes process requests from any sender, member or not (thesis §4.1); answers are used
//!   only from nodes the leader replicates to.
//! - A leader keeps replicating to the nodes the latest change removed until the next change
//!   (so that they learn their removal committed), which costs a heartbeat per interval to a
//!   node that may be gone.
//! - A leader that won alone (one voter, with learners) holds its messages until its term is
//!   durable; every other leader sends in parallel with its own write (thesis §10.2.1).
//! - Lease reads (thesis §6.4.1) are opt-in and rest on the stated clock-drift bound. With
//!   leases on, an operator's forced election (`Raft::campaign`) on a voter that hears its
//!   leader is ignored, as that voter's promise covers its vote for itself; a leadership
//!   transfer (which ends the lease) moves leadership at once.
//! - A leader always answers a Vote of a higher term by stepping down unless it is within its
//!   CheckQuorum lease (or the vote is for a transfer it asked for).
//! - The core keeps every entry since the last snapshot in memory; snapshots bound it.
//! - A follower replies to an Append whose base is below its commit index with its commit index
//!   as the match (those entries are known to match), as etcd does, instead of checking it.
//!
//! Citations use one greppable form next to the enforcing code: `/// Raft §5.4.2: ...`,
//! `/// thesis §9.6: ...` (Ongaro, *Consensus: Bridging Theory and Practice*, 2014).

// Rule citations are `///` comments on the statements that enforce them, so that
// `grep -rn '§'` finds every rule in one form; rustc would warn that they document nothing.
#![allow(unused_doc_comments)]

mod compaction;
mod config;
pub mod driver;
mod election;
mod inspect;
pub mod io;
mod lease;
mod log;
pub mod mem;
mod membership;
mod message;
mod progress;
mod quorum;
mod raft;
mod read;
mod ready;
mod reconfig;
mod replication;
mod resume;
mod rng;
pub mod runtime;
pub mod sim;
pub mod spool;
mod step;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod transfer;
mod types;

pub use config::{Config, ConfigError, InvalidConfig, PersistedError};
pub use driver::{
    Node, NodeConfig, NodeError, NodeStatus, ReconfigError, TRAILING_LOG_BYTES_MAX,
    TRAILING_LOG_ENTRIES_MAX,
};
pub use io::{
    NetRuntime, Runtime, SnapshotRead, StateMachine, Storage, StorageError, Transport, WriteOp,
};
pub use membership::{MemberAddrs, MemberChange, Membership, MembershipError};
pub use message::{AppendResult, Body, ConflictHint, Message, WIRE_VALUE_MAX};
pub use raft::{BusyReason, Error, Raft, Stats};
pub use ready::{Ready, ReceivedChunk};
pub use rng::Rng;
pub use spool::{SnapshotReceiver, SnapshotSpool};
pub use types::{
    Entry, FollowerStatus, HardState, Index, LogId, NodeId, Payload, Persisted, ReadState, Role,
    Snapshot, Status, Term, ENTRY_OVERHEAD_BYTES,
};
