//! The raftkv key/value service.
//!
//! This crate will hold the KV state machine (`Get`, `Put` with an optional version condition,
//! `Append`, `Delete`, exactly-once per client), its server and the `Clerk` client. For now it
//! exposes the piece every other part is checked with:
//!
//! - [`checker`]: a linearizability checker in the manner of Porcupine (Wing & Gong's search,
//!   Lowe's memoization, P-compositionality), with readers for our JSON histories and Porcupine's
//!   test-data formats, and a self-contained HTML visualization of a checked history.

pub mod checker;
