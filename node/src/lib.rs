//! Assembling raftkv: KV nodes and in-process clusters out of the Raft driver, LMDB (or memory)
//! storage, the TCP transport and the KV service.
//!
//! - [`server`]: [`server::KvServer`] — serves a [`raftkv_kv::service::KvService`] to clients
//!   over TCP, on its own port.
//! - [`tcp_client`]: [`tcp_client::TcpConnector`] — the Clerk's TCP connector.
//! - [`standalone`]: [`standalone::StandaloneNode`] — one KV node of a cluster spread over
//!   processes or machines (the Python `Node`, `raftkv serve`).
//! - [`cluster`]: [`cluster::LocalCluster`] — n KV nodes in this process over real TCP, with
//!   fault injection (the Python `LocalCluster`).
//! - [`load`]: [`load::Load`] — a closed-loop load generator (the Python `bench`, `kvbench`).
//! - `wire`: what the server and the connector share (frames, write batching).

pub mod cluster;
mod error;
pub mod load;
pub mod server;
pub mod standalone;
pub mod storage;
pub mod tcp_client;
mod wire;

pub use wire::FrameError;
