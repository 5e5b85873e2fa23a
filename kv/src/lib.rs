//! The raftkv key/value service.
//!
//! - [`state`]: [`state::KvStateMachine`] — `Get`, `Put` with an optional version condition,
//!   `Append`, `Delete`, versioned keys, exactly-once client sessions that expire
//!   deterministically from the log (thesis §6.3); a `raftkv_raft::StateMachine`.
//! - [`protocol`]: the client protocol (requests, replies).
//! - [`service`]: [`service::KvService`] — one node's endpoint: writes through the log, gets
//!   through ReadIndex, `NotLeader` answers that name the leader's client address.
//! - [`clerk`]: [`clerk::Clerk`] — the client: leader finding, retries with backoff, deadlines,
//!   exactly-once writes, `MaybeApplied`; generic over runtime and [`clerk::Connector`].
//! - [`history`]: records what Clerks did into the checker's [`history::History`].
//! - `testing` (feature `testing`): whole KV clusters on the deterministic simulator, for tests
//!   of this service and of services built on it.
//!
//! This crate names no storage, transport or async runtime: `raftkv-node` serves a
//! [`service::KvService`] over TCP, connects Clerks over TCP, and assembles nodes and
//! in-process clusters on LMDB or memory storage.

pub mod clerk;
pub mod history;
pub mod protocol;
pub mod service;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
