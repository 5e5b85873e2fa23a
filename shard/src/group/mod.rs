//! Replica groups: Raft groups that each serve the shards the controller assigns them, and
//! hand shards to one another when the configuration changes (6.5840 lab 5B, both challenges).
//!
//! ## State
//! A group's state machine ([`GroupStateMachine`]) holds its installed config (and the one
//! before), and each shard it holds as a KV store **with its own session table**, in one of
//! four statuses: `Serving`; `Pulling` (owned, still at the previous owner: not served);
//! `BePulled` (handed off: not served, kept until the new owner has it); `GcPending` (arrived
//! and served; the previous owner not yet told to delete it).
//!
//! ## Protocol: pull, then delete, all through each group's log
//! ```text
//!   controller          new owner B (config n)                 old owner A (config n)
//!   query(n) ───────▶  Config(n): s → Pulling                   Config(n): s → BePulled
//!                      Pull{n,[(s,after)]} ─────────────────▶   (ReadIndex; answers only once
//!                                                                A installed n) pieces of s
//!                      Insert{n,pieces} (repeated from the new `after`) ◀──┘
//!                        last piece in: s → GcPending (served)
//!                      Delete{n,[s]} ───────────────────────▶   Delete{n,[s]} in A's log:
//!                                                                s removed
//!                      Confirmed{n,[s]}: s → Serving        ◀── Done
//! ```
//! - **Configs in order** (6.5840 lab 5B): the leader's driver ([`service::run_driver`]) asks
//!   the controller for config `n + 1` only when every shard is `Serving`, and the state
//!   machine refuses any other config; so config `n + 1` enters only after `n` is fully
//!   installed, identically on every replica.
//! - **Pull, not push**: the new owner asks for what it lacks. It knows from config `n - 1`
//!   who has each shard; the old owner answers only once it has installed config `n` (so it no
//!   longer serves the shard), through ReadIndex (so a deposed leader cannot answer with stale
//!   data). Pulling keeps the old owner passive: it needs no knowledge of who has what.
//! - **Exactly-once across migration**: the shard's session table travels with its keys, so a
//!   client's retry that reaches the new owner after the old one applied it is answered from
//!   the table. A request is checked against ownership **when it is applied** (in log order),
//!   so a write logged at A after A installed config `n` is answered `WrongGroup`, never
//!   applied; one logged before is in the data A hands over.
//! - **Challenge 1 (GC)**: once the shard is in B's log, B asks A to delete it; A deletes it
//!   through its own log (only a `BePulled` shard of that very config); B then marks the shard
//!   settled. A group cannot install the next config while it holds a handed-off shard, so data
//!   never piles up.
//! - **Challenge 2**: shards that do not move keep `Serving` through the change; an arriving
//!   shard is served as soon as its `Insert` is applied (`GcPending` serves), whatever else is
//!   in flight; pulls from different groups run concurrently.
//! - Every step is idempotent (commands carry the config number and are ignored when stale),
//!   so leader changes, retries and duplicated messages change nothing twice.
//!
//! ## Sessions
//! A [`ShardClerk`] gets its session id from the controller (a registration's log index,
//! unique in the deployment), so it can use one session at every group; each shard's table
//! opens the session on its first request there ([`raftkv_kv::session::SessionTable::check_or_open`]).
//! Limitation: a session whose expired-session record a shard's table has evicted (beyond
//! `sessions_max` expired records) would be opened again there by a very late duplicate.
//!
//! ## Not done
//! A shard whose every group left (the controller unassigns shards only when no group is
//! left) is kept `BePulled` by its last owner, and a group joining later starts it empty.
//! A single key larger than `shard_bytes_max` (a value grown by appends) cannot move: a piece
//! holds at least one key.
//!
//! ## Pieces and bounds
//! A shard moves in pieces ([`Piece`], `state/pieces.rs`): runs of its keys in order, each
//! within a quarter of `shard_bytes_max`, several to a pull answer (and to the `Insert` entry
//! it becomes) up to `shard_bytes_max`, the session table with the last piece. The new owner
//! adds a piece only if it starts right after the last key it holds, so repeats change
//! nothing; the shard is served once the last piece is in. A group's data (all its shards)
//! is bounded by `data_bytes_max`: writes past it answer `StoreFull`, a piece past it is
//! refused whole ([`GroupError::Full`]) and the shard stays `Pulling` until room is made.

pub mod clerk;
pub mod protocol;
pub mod service;
pub mod state;
pub mod trust;

pub use clerk::{ShardClerk, ShardClerkConfig, ShardClerkError};
pub use protocol::{GroupReply, GroupRequest, GroupRequestBody, GroupResponse};
pub use service::{run_driver, DriverConfig, GroupService};
pub use state::{
    GroupCommand, GroupConfig, GroupError, GroupOutcome, GroupQuery, GroupStateMachine, Piece,
    Progress, ShardInfo, ShardStatus, SHARD_SESSIONS_MAX_DEFAULT,
};
