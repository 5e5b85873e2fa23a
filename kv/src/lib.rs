//! The raftkv key/value service.
//!
//! This crate holds the KV state machine and will hold its server and the `Clerk` client:
//!
//! - [`state`]: [`state::KvStateMachine`] — `Get`, `Put` with an optional version condition,
//!   `Append`, `Delete`, versioned keys, exactly-once client sessions that expire
//!   deterministically from the log (thesis §6.3); a `raftkv_raft::StateMachine`.
//! - [`checker`]: a linearizability checker in the manner of Porcupine (Wing & Gong's search,
//!   Lowe's memoization, P-compositionality), with readers for our JSON histories and Porcupine's
//!   test-data formats, and a self-contained HTML visualization of a checked history.

pub mod checker;
pub mod state;
