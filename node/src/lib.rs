//! Assembling raftkv: KV nodes and in-process clusters out of the Raft driver
//! (`raftkv-raft`), LMDB or memory storage (`raftkv-storage-lmdb`), the TCP transport
//! (`raftkv-transport-tcp`) and the KV service (`raftkv-kv`).
//!
//! # A tour of the modules
//!
//! - [`server`]: [`server::KvServer`] — serves a [`raftkv_kv::service::KvService`] to clients
//!   over TCP, on its own port.
//! - [`tcp_client`]: [`tcp_client::TcpConnector`] — the Clerk's TCP connector.
//! - [`standalone`]: [`standalone::StandaloneNode`] — one KV node of a cluster spread over
//!   processes or machines (the Python `Node`, `raftkv serve`). Nodes are named by Raft id.
//! - [`cluster`]: [`cluster::LocalCluster`] — n KV nodes in this process over real TCP, with
//!   fault injection (the Python `LocalCluster`). Nodes are named by index `0..n`; index `i`
//!   has Raft id `i + 1`.
//! - [`trace`]: [`trace::ClusterTrace`] — a cluster's recorded events (JSON in
//!   `docs/trace-json.md`) and [`trace::TraceRecorder`], which records them.
//! - [`metrics`]: [`metrics::NodeMetrics`] — a node's Prometheus metrics, from its events.
//! - [`replay`]: [`replay::replay_html`] — a trace as an animated, self-contained HTML page.
//! - [`host`]: [`host::Host`] — what a local cluster's nodes run on Raft (KV by default).
//! - [`rpc`]: [`rpc::Handler`] — a protocol the server answers (KV, controller, group).
//! - [`sharded`]: [`sharded::ShardedCluster`] — a sharded store in this process: the shard
//!   controller's group and replica groups, each a local cluster, over real TCP.
//! - `sim` (feature `sim`): `SimCluster` — a KV cluster on the deterministic simulator, with
//!   the local cluster's faults and Clerks, in virtual time (the Python `SimCluster`, `raftkv
//!   sim`).
//! - [`storage`]: [`storage::AnyStorage`] — memory or LMDB, chosen at run time.
//! - [`load`]: [`load::Load`] — a closed-loop load generator (the Python `bench`, the
//!   `kvbench` example).
//! - `wire`: what the server and the connector share (frames, write batching).
//!
//! Examples: `counter` embeds a state machine of its own (a replicated counter) over Raft,
//! LMDB and TCP; `kvbench` loads an in-process KV cluster.
//!
//! # A local cluster
//!
//! ```
//! use std::time::Duration;
//!
//! use raftkv_kv::clerk::{ClerkConfig, ClerkError};
//! use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
//! use raftkv_raft::runtime::tokio::TokioRuntime;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cluster =
//!     LocalCluster::start(TokioRuntime::current(), ClusterConfig::new(3, StorageKind::Memory)).await?;
//! let leader = cluster.wait_leader(Duration::from_secs(5)).await?;
//! let mut clerk = cluster.clerk(ClerkConfig::default());
//! assert_eq!(clerk.put("k", "v", None).await?, 1);
//!
//! cluster.crash(leader).await?; // what was durable stays
//! assert_eq!(clerk.append("k", "w").await?, 2); // the Clerk finds the new leader
//! cluster.restart(leader).await?;
//! assert_eq!(clerk.get("k").await?, ("vw".into(), 2));
//! assert_eq!(clerk.delete("nope").await, Err(ClerkError::NoKey));
//! cluster.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # One node of a cluster spread over processes
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use raftkv_kv::clerk::{Clerk, ClerkConfig};
//! use raftkv_node::standalone::{StandaloneConfig, StandaloneNode};
//! use raftkv_node::tcp_client::TcpConnector;
//! use raftkv_raft::runtime::tokio::TokioRuntime;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A cluster of one: node 1, its peer and client addresses (port 0: the OS picks).
//! let peers = BTreeMap::from([(1, "127.0.0.1:0".parse()?)]);
//! let clients = BTreeMap::from([(1, "127.0.0.1:0".parse()?)]);
//! let runtime = TokioRuntime::current();
//! let node = StandaloneNode::start(runtime.clone(), StandaloneConfig::new(1, peers, clients, None)).await?;
//! let addr = node.client_addr().to_string();
//! let mut clerk = Clerk::new(runtime.clone(), TcpConnector::with_runtime(runtime.clone()), vec![addr], ClerkConfig::default());
//! assert_eq!(clerk.put("k", "v", None).await?, 1);
//! assert_eq!(node.status().await?.id, 1);
//! node.stop(&runtime).await;
//! # Ok(())
//! # }
//! ```

pub mod cluster;
mod error;
pub mod host;
pub mod kv_state;
pub mod load;
pub mod metrics;
pub mod replay;
pub mod rpc;
pub mod server;
pub mod sharded;
#[cfg(feature = "sim")]
pub mod sim;
pub mod standalone;
pub mod storage;
pub mod tcp_client;
pub mod trace;
mod wire;

pub use wire::FrameError;

/// The top-level README's Rust snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
