//! The raftkv key/value service: what runs on top of Raft, and the client that talks to it.
//!
//! # A tour of the modules
//!
//! - [`state`]: [`state::KvStateMachine`] — `Get`, `Put` with an optional version condition,
//!   `Append`, `Delete`, versioned keys, exactly-once client sessions that expire
//!   deterministically from the log (thesis §6.3); a `raftkv_raft::StateMachine`.
//! - [`session`]: [`session::SessionTable`] — exactly-once client sessions (register, check a
//!   request: new, retry, expired, forgotten or stale; record its outcome; expiry and bounds),
//!   generic over the remembered outcome; kept by the KV state machine and the shard controller.
//! - [`protocol`]: the client protocol (requests, replies), plain serde types.
//! - [`service`]: [`service::KvService`] — one node's endpoint: writes through the log, gets
//!   through ReadIndex, `NotLeader` answers that name the leader's client address.
//! - [`clerk`]: [`clerk::Clerk`] — the client: leader finding, retries with backoff, deadlines,
//!   exactly-once writes, `MaybeApplied`; generic over runtime and [`clerk::Connector`].
//! - [`retry`]: [`retry::Servers`] — leader finding and the attempts loop (hints, backoff,
//!   deadlines), generic over a [`clerk::Connector`]'s request and reply types; the KV Clerk's
//!   and the shard controller's.
//! - [`history`]: records what Clerks did into the checker's [`history::History`].
//! - `testing` (feature `testing`): whole KV clusters on the deterministic simulator, for tests
//!   of this service and of services built on it.
//!
//! This crate names no storage, transport or async runtime. `raftkv-node` serves a
//! [`service::KvService`] over TCP, connects Clerks over TCP (`TcpConnector`), and assembles
//! nodes (`StandaloneNode`) and in-process clusters (`LocalCluster`) on LMDB or memory.
//!
//! # The state machine, as Raft applies it
//!
//! ```
//! use bytes::Bytes;
//! use raftkv_kv::state::{Command, KvStateMachine, Op, Outcome, SessionConfig};
//! use raftkv_raft::StateMachine;
//!
//! let mut kv = KvStateMachine::new(SessionConfig::default());
//! // A client opens a session: its id is the index of this entry.
//! kv.apply(1, &Command::Register { now_ms: 0 }.encode());
//! let put = |seq, version| Command::Request {
//!     session: 1,
//!     seq,
//!     now_ms: 0,
//!     op: Op::Put { key: Bytes::from("k"), value: Bytes::from("v"), version },
//! };
//! assert_eq!(kv.apply_command(2, put(1, None)), Outcome::Written { version: 1 });
//! // A retry of the same request is answered from the session, not applied again.
//! assert_eq!(kv.apply_command(3, put(1, None)), Outcome::Written { version: 1 });
//! // A conditional put at a stale version is refused.
//! assert!(matches!(kv.apply_command(4, put(2, Some(7))), Outcome::Err(_)));
//! assert_eq!(kv.get(b"k"), Outcome::Value { value: Bytes::from("v"), version: 1 });
//! ```
//!
//! # A Clerk over a connector of your own
//!
//! A [`clerk::Connector`] carries requests to servers: TCP in `raftkv-node`, a simulated
//! network in `testing`, or — here — one in-process state machine standing for a
//! one-node cluster.
//!
//! ```
//! use std::sync::Mutex;
//!
//! use raftkv_kv::clerk::{CallError, Clerk, ClerkConfig, ClerkError, Connector};
//! use raftkv_kv::protocol::{Reply, RequestBody};
//! use raftkv_kv::state::{Command, KvStateMachine, SessionConfig};
//! use raftkv_raft::runtime::smol::SmolRuntime;
//!
//! /// Applies every request at once, as a one-node cluster's leader would.
//! struct InProcess(Mutex<(KvStateMachine, u64)>);
//!
//! impl Connector for InProcess {
//!     async fn call(&self, addr: &str, body: RequestBody) -> Result<Reply, CallError> {
//!         let mut guard = self.0.lock().unwrap();
//!         let (kv, index) = &mut *guard;
//!         *index += 1;
//!         let outcome = match body {
//!             RequestBody::Register => kv.apply_command(*index, Command::Register { now_ms: 0 }),
//!             RequestBody::Write { session, seq, op } => {
//!                 kv.apply_command(*index, Command::Request { session, seq, now_ms: 0, op })
//!             }
//!             RequestBody::Read { key } => kv.get(&key),
//!             _ => {
//!                 let reason = std::io::Error::other("not served here").into();
//!                 return Err(CallError::Unreachable { addr: addr.into(), reason });
//!             }
//!         };
//!         Ok(Reply::Done(outcome))
//!     }
//! }
//!
//! let connector = InProcess(Mutex::new((KvStateMachine::new(SessionConfig::default()), 0)));
//! let mut clerk = Clerk::new(SmolRuntime::new(), connector, vec!["here".into()], ClerkConfig::default());
//! futures::executor::block_on(async {
//!     assert_eq!(clerk.put("k", "v", None).await?, 1);
//!     assert_eq!(clerk.append("k", "w").await?, 2);
//!     assert_eq!(clerk.get("k").await?, ("vw".into(), 2));
//!     assert_eq!(clerk.put("k", "x", Some(1)).await, Err(ClerkError::Version { current: 2 }));
//!     clerk.delete("k").await?;
//!     assert_eq!(clerk.get("k").await, Err(ClerkError::NoKey));
//!     Ok::<_, ClerkError>(())
//! })?;
//! # Ok::<_, ClerkError>(())
//! ```

pub mod clerk;
pub mod durable;
pub mod history;
pub mod protocol;
pub mod retry;
pub mod service;
pub mod session;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
