//! # raftkv-shard: the sharding layer
//!
//! One Raft group holds all data and all writes go through one leader, so a single group cannot
//! grow past one disk and one leader's throughput. Sharding splits the key space so that
//! several Raft groups — **replica groups** — each serve part of it (the repository's
//! `docs/design.md`, "The shard controller" and "Sharding"). This crate holds that layer: the
//! stable key → shard map, the **shard controller**, and the replica groups.
//!
//! ## Shards, configurations, the controller
//! - A **shard** is a slice of the key space: key `k` belongs to shard
//!   [`key_to_shard`]`(k, shards)` — FNV-1a over the key's bytes, modulo the number of shards.
//!   The hash is part of the format and never changes. The number of shards is fixed when the
//!   controller is created ([`SHARDS_DEFAULT`] = 256).
//! - A **configuration** ([`ShardConfig`]) is numbered; it says which replica group (by
//!   **gid**, a number ≥ 1) serves each shard, and the client addresses of each group's
//!   members. Config 0 is empty: no groups, every shard unassigned (gid 0).
//! - The **controller** is a replicated state machine ([`ControllerStateMachine`]) on a Raft
//!   group of its own. `Join(groups)` adds groups, `Leave(gids)` removes them, `Move(shard,
//!   gid)` hands one shard to one group; each applied change makes the next configuration, and
//!   every past one stays answerable by `Query(num)` (`None`: the latest). Changes are
//!   exactly-once like KV writes: a client session numbers them and a retry answers the first
//!   result. Bad changes get a typed [`CtrlError`] and make no configuration.
//!
//! ## The rebalancing rule
//! After a Join or a Leave, with `n` shards and `g` groups, every group gets `n / g` shards and
//! the `n % g` groups that already hold the most get one more (ties go to the lower gid); so
//! shard counts differ by at most one, and with more groups than shards the extra groups get
//! none. Each group keeps as many of its shards as its new count allows (giving up its
//! highest-numbered first); the shards of departed groups, unassigned shards and those given up
//! go, lowest-numbered first, to the groups below their count, in gid order. No shard moves
//! unless it must, so the number of moved shards is the least any even assignment needs (the
//! property tests check it against a brute-force search). Only ordered maps are iterated, so
//! every replica computes the same configuration. A `Move` is applied as asked, and stays until
//! the next Join or Leave rebalances.
//!
//! ## Modules
//! - [`hash`]: [`key_to_shard`], the stable key → shard map, with fixed test vectors.
//! - [`config`]: [`ShardConfig`], gids and shard ids, [`ControllerConfig`] (shard count and
//!   the bounds: groups, addresses per group, address bytes, configs, sessions) and
//!   [`CtrlError`].
//! - [`rebalance`]: the pure rebalancing function.
//! - [`state`]: [`ControllerStateMachine`]: commands, queries, the stored configurations
//!   (changes plus checkpoints, with the memory bound), snapshot and restore.
//! - [`protocol`]: the controller's client protocol.
//! - [`service`]: [`service::ControllerService`]: changes through the Raft log, queries
//!   through ReadIndex.
//! - [`clerk`]: [`clerk::ControllerClerk`]: leader finding, retries, deadlines, exactly-once;
//!   generic over runtime and connector.
//! - [`group`]: replica groups — state machine, protocol, service and migration driver — and
//!   the [`group::ShardClerk`].
//! - `testing` (feature `testing`): whole controller clusters, and whole sharded stores
//!   (controller plus replica groups), on the deterministic simulator.
//!
//! ## Replica groups
//! [`group`]: the replica groups that serve shards and migrate them (pull, then delete, through
//! each group's Raft log; exactly-once across moves; both 6.5840 challenges), and the
//! [`group::ShardClerk`]. Its module doc explains the protocol.
//!
//! ## Hosting over TCP
//! `raftkv-node`'s `sharded` module hosts the controller group and replica groups over TCP (the
//! same server and connector as the KV service). The group protocol's `Pull` and `Delete` are for
//! other groups' drivers only: a client could otherwise make a group drop a handed-off shard
//! before its new owner pulled it. So a host serves requests through
//! [`group::GroupService::handle_from`], which answers them only to the members of the groups of
//! the installed config or the one before, by the connection's remote address
//! ([`group::trust`]).
//!
//! ## Not done yet
//! - Configurations are never discarded; a controller that reaches `configs_max` refuses
//!   changes. Once groups report the config they have installed, configs older than every
//!   group's could be dropped.
//! - The trust check is by IP address; with TLS, a group member's certificate would be the
//!   stronger proof.

pub mod clerk;
pub mod config;
pub mod group;
pub mod hash;
pub mod protocol;
pub mod rebalance;
pub mod service;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ControllerConfig, CtrlError, Gid, ShardConfig, ShardId, SHARDS_DEFAULT};
pub use hash::{key_hash, key_to_shard, ZeroShards};
pub use state::ControllerStateMachine;
