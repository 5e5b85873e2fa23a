//! The raftkv key/value service.
//!
//! - [`state`]: [`state::KvStateMachine`] — `Get`, `Put` with an optional version condition,
//!   `Append`, `Delete`, versioned keys, exactly-once client sessions that expire
//!   deterministically from the log (thesis §6.3); a `raftkv_raft::StateMachine`.
//! - [`protocol`]: the client protocol (requests, replies).
//! - [`service`]: [`service::KvService`] — one node's endpoint: writes through the log, gets
//!   through ReadIndex, `NotLeader` answers that name the leader's client address.
//! - [`server`]: the TCP server in front of a service (the transport's framing, its own port).
//! - [`clerk`]: [`clerk::Clerk`] — the client: leader finding, retries with backoff, deadlines,
//!   exactly-once writes, `MaybeApplied`; generic over runtime and [`clerk::Connector`].
//! - [`tcp_client`]: the TCP [`clerk::Connector`].
//! - [`history`]: [`history::History`] — records what Clerks did, for the checker.
//! - [`cluster`]: [`cluster::LocalCluster`] — n nodes in this process over real TCP, with fault
//!   injection (the Python package's `LocalCluster`).
//! - [`checker`]: a linearizability checker in the manner of Porcupine (Wing & Gong's search,
//!   Lowe's memoization, P-compositionality), with readers for our JSON histories and Porcupine's
//!   test-data formats, and a self-contained HTML visualization of a checked history.

pub mod checker;
pub mod clerk;
pub mod cluster;
pub mod history;
pub mod protocol;
pub mod server;
pub mod service;
pub mod standalone;
pub mod state;
pub mod tcp_client;
