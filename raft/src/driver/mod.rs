//! The async driver: [`Node`] runs one [`Raft`](crate::Raft) core over a
//! [`Runtime`](crate::Runtime), a [`Storage`](crate::Storage), a [`Transport`](crate::Transport)
//! and a [`StateMachine`](crate::StateMachine), following the [`Ready`](crate::Ready)
//! contract. It is the same code under tokio, smol and the deterministic simulation runtime.
//!
//! One task per node: the **event loop** owns the core, the state machine, the transport and
//! the storage **writer**, which performs one durable write at a time, merging every write
//! queued meanwhile into it (group commit). The loop polls the write in flight among its other
//! events, so a write that is durable at once (in memory) is acknowledged in the same turn,
//! with no hand-off to another task. The leader's replication messages leave before its own
//! write (thesis §10.2.1); everything that promises durable state waits for it.
//!
//! An optional [`Observer`] receives the node's events ([`observer`]): for traces and replays.

mod error;
mod event_loop;
mod node;
pub mod observer;
mod pending;
pub(crate) mod queue;
mod resume;
mod storage_task;

pub use error::{NodeError, ReconfigError};
pub use node::{Node, NodeConfig, NodeStatus, TRAILING_LOG_BYTES_MAX, TRAILING_LOG_ENTRIES_MAX};
pub use observer::{EventKind, MsgInfo, MsgKind, Observer, ObserverHandle, TraceEvent};
