//! [`Clerk`]: the KV client. Runtime-generic like the driver, and generic over how it reaches a
//! server ([`Connector`]: TCP in `raftkv_node::tcp_client`, a simulated network in tests).
//!
//! - **Leader finding:** it remembers the last leader; a `NotLeader` answer names the leader's
//!   client address, which the Clerk follows (and adds to its list when it did not know it), so
//!   a Clerk given any one node's address reaches the leader.
//! - **Exactly-once:** the Clerk registers a session on first use and numbers its writes; every
//!   retry of a write carries the same number, so the servers apply it at most once (thesis
//!   §6.3). Gets go through ReadIndex and need no session.
//! - **Retries:** with exponential backoff and jitter, until the deadline (`timeout`), then
//!   [`ClerkError::Timeout`] — the write may still be applied later; the history says so
//!   (`return: null`).
//! - **Expired sessions:** a write refused with `SessionExpired` was not applied and never will
//!   be (the state machine keeps each expired session's last applied sequence number to say
//!   so), so the Clerk opens a new session and sends it again. When the answer is that the
//!   outcome is forgotten (an earlier copy was applied before the session expired, or the
//!   session's record is gone), it can no longer be learned: [`ClerkError::MaybeApplied`],
//!   never a guess such as a false `Version` or a second apply.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{select, Either};
use futures::pin_mut;
use raftkv_backoff::Backoff;
use raftkv_raft::{Rng, Runtime};
use thiserror::Error;

use crate::history::{input_of, History};
use crate::protocol::{MemberList, MemberOp, RefusalKind, Reply, RequestBody, ServerStatus};
use crate::retry::{answer, Answer, Servers};
use crate::state::{KvError, Op, Outcome};
use raftkv_checker::models::{KvErr, KvOutput};

/// Why a call to a server failed before any answer came.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The request was certainly not delivered (no connection could be made, or it was
    /// refused before it was sent).
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The server's client address.
        addr: String,
        /// Why the request could not be sent.
        #[source]
        reason: UnreachableReason,
    },
    /// The request may have been delivered, but no answer came (connection lost).
    #[error("no answer from {addr} (the request may have been delivered): {reason}")]
    Lost {
        /// The server's client address.
        addr: String,
        /// Why the answer did not come.
        #[source]
        reason: LostReason,
    },
}

/// Why a request was certainly not delivered ([`CallError::Unreachable`]).
#[derive(Clone, Debug, Error)]
#[non_exhaustive]
pub enum UnreachableReason {
    /// A socket operation failed: connecting (refused, timed out, no such host), or setting
    /// the connection up. Shared so that the error stays `Clone`.
    #[error(transparent)]
    Io(Arc<io::Error>),
    /// The thread that connects ended without an answer.
    #[error("the connecting thread died")]
    ConnectThreadDied,
    /// This client is cut off from the server (a test's network partition).
    #[error("partitioned from this client")]
    Partitioned,
    /// Nothing serves the address (a simulated server that is down).
    #[error("the server is down")]
    Down,
    /// The connection already carries this many requests waiting for an answer.
    #[error("in_flight_per_connection_max ({max}) reached")]
    InFlightMax {
        /// The connector's `in_flight_per_connection_max`.
        max: usize,
    },
    /// The connection's outgoing queue is full: the server is not reading.
    #[error("queued_bytes_max ({max}) reached: the server is not reading")]
    QueuedBytesMax {
        /// The connector's `queued_bytes_max`.
        max: usize,
    },
    /// The connection closed before the request was queued on it.
    #[error("connection closed")]
    ConnectionClosed,
}

impl From<io::Error> for UnreachableReason {
    fn from(e: io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// Socket errors compare by kind and message (`io::Error` is not `PartialEq`).
impl PartialEq for UnreachableReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Io(a), Self::Io(b)) => a.kind() == b.kind() && a.to_string() == b.to_string(),
            (Self::InFlightMax { max: a }, Self::InFlightMax { max: b })
            | (Self::QueuedBytesMax { max: a }, Self::QueuedBytesMax { max: b }) => a == b,
            (a, b) => {
                !matches!(
                    a,
                    Self::Io(_) | Self::InFlightMax { .. } | Self::QueuedBytesMax { .. }
                ) && std::mem::discriminant(a) == std::mem::discriminant(b)
            }
        }
    }
}

impl Eq for UnreachableReason {}

/// Why no answer came to a request that may have been delivered ([`CallError::Lost`]).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The connection closed while the request waited for its answer.
    #[error("connection closed")]
    ConnectionClosed,
    /// The network dropped the request or its reply (a test's unreliable network).
    #[error("dropped by the network")]
    Dropped,
    /// The server crashed while serving the request (a simulated crash).
    #[error("the server crashed while serving it")]
    Crashed,
}

/// How a client reaches a server's client address: requests `Req`, replies `Rep` (the KV
/// protocol's by default; the shard controller's Clerk uses its own).
///
/// A `call` may deliver its request more than once (a network that duplicates, a connector
/// that resends after a reconnect): the Clerk does not infer "not applied" from how many
/// copies it sent, only from the state machine's answer (the test
/// `duplicated_request_meets_expired_session` runs it over a network that duplicates).
pub trait Connector<Req = RequestBody, Rep = Reply>: Send + Sync + 'static {
    /// Sends `body` to the server at `addr` and waits for its reply. Dropping the future
    /// abandons the call (the request may still be served).
    fn call(
        &self,
        addr: &str,
        body: Req,
    ) -> impl std::future::Future<Output = Result<Rep, CallError>> + Send;
}

/// Why a Clerk operation failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClerkError {
    /// The key does not exist.
    #[error("no such key")]
    NoKey,
    /// A conditional put found another version; nothing was written.
    #[error("version mismatch (current version {current})")]
    Version { current: u64 },
    /// A retried write's outcome can no longer be learned: it may or may not have been applied.
    #[error("the write may or may not have been applied")]
    MaybeApplied,
    /// No majority answered before the deadline; a write may still be applied later.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The request is larger than the servers accept.
    #[error("request too large")]
    TooLarge,
    /// The store is full: the write would take its data past the servers' bound
    /// (`data_bytes_max`); nothing was written. Deletes, and writes that do not grow the
    /// data, still work.
    #[error("the store is full; nothing was written")]
    StoreFull,
    /// A server answered something this Clerk cannot use (a bug, or client and server of
    /// different versions).
    #[error("protocol error: unexpected answer {reply:?}")]
    UnexpectedReply { reply: Box<Reply> },
    /// A server refused the request with an error the Clerk does not expect for it (such as
    /// `Malformed`).
    #[error("protocol error: the server refused the request: {error}")]
    Refused { error: KvError },
    /// The leader refused a membership change or a leadership transfer (thesis §4):
    /// `InProgress` when another change or transfer is in progress (retry once it has
    /// completed), `Invalid` when the request cannot succeed as it is; the message says why.
    #[error("membership change refused: {message}")]
    Membership { kind: RefusalKind, message: String },
    /// The server wants a client token, and this Clerk gave none or another one.
    #[error("unauthorized: the server refused this client's token (none, or not its own)")]
    Unauthorized,
    /// The one server asked (by [`Clerk::server_status`]) could not be reached.
    #[error("cannot reach the server: {error}")]
    Call { error: CallError },
}

/// How a Clerk retries.
#[derive(Clone, Debug)]
pub struct ClerkConfig {
    /// Give up an operation after this long.
    pub timeout: Duration,
    /// Abandon one attempt at one server after this long and try again (same sequence
    /// number), possibly elsewhere.
    pub attempt_timeout: Duration,
    /// First backoff after a failed attempt; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Follow `NotLeader` hints to addresses not in the list (default true). Off, the Clerk
    /// talks only to the addresses it was given — as a client inside a network partition.
    pub follow_hints: bool,
    /// Where gets go first (default [`ReadFrom::Leader`]).
    pub read_from: ReadFrom,
}

/// Where a Clerk sends its gets first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The leader it knows (every get is a ReadIndex read there).
    #[default]
    Leader,
    /// A node drawn at random for each get, so that reads spread over the replicas (thesis
    /// §6.4): a node started with follower reads serves it with a read index from the leader;
    /// one without answers `NotLeader` and the get goes on to the leader. Writes still go to
    /// the leader.
    Any,
}

impl Default for ClerkConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
            follow_hints: true,
            read_from: ReadFrom::Leader,
        }
    }
}

/// A KV client: one operation at a time (use one Clerk per concurrent client).
pub struct Clerk<R: Runtime, C: Connector> {
    runtime: R,
    connector: C,
    servers: Servers,
    session: Option<u64>,
    seq: u64,
    history: Option<(History, u64)>,
}

impl<R: Runtime, C: Connector> Clerk<R, C> {
    /// A Clerk for the servers at `addrs` (client addresses; any non-empty subset of the
    /// cluster). Panics if `addrs` is empty: callers validate addresses first.
    pub fn new(runtime: R, connector: C, addrs: Vec<String>, config: ClerkConfig) -> Self {
        let servers = Servers::new(addrs, config, runtime.now());
        Self {
            runtime,
            connector,
            servers,
            session: None,
            seq: 0,
            history: None,
        }
    }

    /// Records every operation of this Clerk into `history` (as one client).
    pub fn with_history(mut self, history: History) -> Self {
        let client = history.new_client();
        self.history = Some((history, client));
        self
    }

    /// The addresses this Clerk knows, the first-tried one first.
    pub fn addrs(&self) -> &[String] {
        self.servers.addrs()
    }

    pub fn config(&self) -> &ClerkConfig {
        self.servers.config()
    }

    /// Reads `key`: its value and version.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<(Bytes, u64), ClerkError> {
        match self.run(Op::Get { key: key.into() }).await? {
            Outcome::Value { value, version } => Ok((value, version)),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` under `key`; with `version`, only if the key's version is that (0: the
    /// key must not exist). Returns the new version.
    pub async fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        version: Option<u64>,
    ) -> Result<u64, ClerkError> {
        let op = Op::Put {
            key: key.into(),
            value: value.into(),
            version,
        };
        self.run(op).await.and_then(written)
    }

    /// Appends `value` to `key`'s value (creating the key). Returns the new version.
    pub async fn append(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClerkError> {
        let op = Op::Append {
            key: key.into(),
            value: value.into(),
        };
        self.run(op).await.and_then(written)
    }

    /// Deletes `key`; `NoKey` if it does not exist.
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), ClerkError> {
        match self.run(Op::Delete { key: key.into() }).await? {
            Outcome::Deleted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's members, as the leader's configuration has them. The members' client
    /// addresses are added to the ones this Clerk tries.
    pub async fn member_list(&mut self) -> Result<MemberList, ClerkError> {
        self.membership(RequestBody::MemberList).await
    }

    /// Adds node `id` as a learner (thesis §4.2.1) reachable at `peer_addr` (by the other
    /// nodes) and `client_addr` (by clients); unless `learner`, the cluster promotes it to
    /// voter by itself once it has caught up. Returns once `id` is in the configuration.
    pub async fn member_add(
        &mut self,
        id: u64,
        peer_addr: &str,
        client_addr: &str,
        learner: bool,
    ) -> Result<MemberList, ClerkError> {
        self.membership(RequestBody::Member(MemberOp::Add {
            id,
            peer_addr: peer_addr.to_string(),
            client_addr: client_addr.to_string(),
            learner,
        }))
        .await
    }

    /// Learner `id` becomes a voter.
    pub async fn member_promote(&mut self, id: u64) -> Result<MemberList, ClerkError> {
        self.membership(RequestBody::Member(MemberOp::Promote { id }))
            .await
    }

    /// Removes `id` from the configuration (the leader too: it steps down once the change
    /// is committed). Idempotent across this call's own retries: when an attempt's answer was
    /// lost and a later one is refused because `id` is not a member (the lost attempt removed
    /// it), the removal is reported done, with the member list. A first answer that `id` is
    /// not a member is [`ClerkError::Membership`] (`Invalid`: "node N is not a member").
    pub async fn member_remove(&mut self, id: u64) -> Result<MemberList, ClerkError> {
        let gone = move |list: &MemberList| list.members.iter().all(|m| m.id != id);
        self.membership_with(RequestBody::Member(MemberOp::Remove { id }), Some(&gone))
            .await
    }

    /// Hands leadership to voter `id` (thesis §3.10); returns once `id` leads.
    pub async fn move_leader(&mut self, id: u64) -> Result<MemberList, ClerkError> {
        self.membership(RequestBody::MoveLeader { id }).await
    }

    async fn membership(&mut self, body: RequestBody) -> Result<MemberList, ClerkError> {
        self.membership_with(body, None).await
    }

    /// Sends a membership request until a final answer or the deadline (`timeout`). `Retry`
    /// refusals are retried by the attempts loop. thesis §4.1: an `InProgress` refusal
    /// (another change or a transfer has not completed) is retried too, after a jittered
    /// exponential backoff, since the other change usually completes within moments; if the
    /// deadline passes meanwhile, that refusal is the answer (it says more than `Timeout`).
    /// `done_already`: for a request whose `Invalid` refusal may mean that an earlier attempt
    /// of this call, whose answer was lost, carried it out; the member list then decides.
    async fn membership_with(
        &mut self,
        body: RequestBody,
        done_already: Option<&(dyn Fn(&MemberList) -> bool + Send + Sync)>,
    ) -> Result<MemberList, ClerkError> {
        let timeout = self.config().timeout;
        let deadline = self.runtime.now() + timeout;
        let mut backoff = Backoff::new(self.config().backoff_min, self.config().backoff_max);
        let mut rng = Rng::new(u64::try_from(self.runtime.now().as_nanos()).unwrap_or(0));
        let mut in_progress: Option<ClerkError> = None;
        // Attempts sent, and answers that say the request was not acted on: any other attempt
        // (no answer, lost, timed out, outcome unknown) may have been carried out.
        let sent = AtomicU32::new(0);
        let not_acted = AtomicU32::new(0);
        loop {
            let reply = self
                .servers
                .attempts(
                    &self.runtime,
                    &self.connector,
                    deadline,
                    || {
                        sent.fetch_add(1, Ordering::Relaxed);
                        body.clone()
                    },
                    |reply| match reply {
                        Reply::MembershipRefused {
                            kind: RefusalKind::Retry,
                            ..
                        } => {
                            not_acted.fetch_add(1, Ordering::Relaxed);
                            Answer::Retry
                        }
                        reply => {
                            if matches!(
                                reply,
                                Reply::NotLeader { .. }
                                    | Reply::MembershipRefused { .. }
                                    | Reply::Busy
                            ) {
                                not_acted.fetch_add(1, Ordering::Relaxed);
                            }
                            answer(reply)
                        }
                    },
                )
                .await;
            match reply {
                None => return Err(in_progress.unwrap_or(ClerkError::Timeout(timeout))),
                Some(Reply::Members(list)) => {
                    for member in &list.members {
                        self.servers.learn(member.client_addr.clone());
                    }
                    return Ok(list);
                }
                Some(Reply::MembershipRefused {
                    kind: RefusalKind::InProgress,
                    message,
                }) => {
                    in_progress = Some(ClerkError::Membership {
                        kind: RefusalKind::InProgress,
                        message,
                    });
                    let left = deadline.saturating_sub(self.runtime.now());
                    let pause = backoff.next(rng.next_u64());
                    if pause >= left {
                        return Err(in_progress.expect("just set"));
                    }
                    self.runtime.sleep(pause).await;
                }
                Some(Reply::MembershipRefused { kind, message }) => {
                    let maybe_done =
                        sent.load(Ordering::Relaxed) > not_acted.load(Ordering::Relaxed);
                    if let (Some(done), true) = (done_already, maybe_done) {
                        // Boxed: this function calls itself (for the list).
                        let list = Box::pin(self.membership_with(RequestBody::MemberList, None));
                        if let Ok(list) = list.await {
                            if done(&list) {
                                return Ok(list);
                            }
                        }
                    }
                    return Err(ClerkError::Membership { kind, message });
                }
                Some(Reply::TooLarge) => return Err(ClerkError::TooLarge),
                Some(Reply::Unauthorized) => return Err(ClerkError::Unauthorized),
                Some(other) => {
                    return Err(ClerkError::UnexpectedReply {
                        reply: Box::new(other),
                    })
                }
            }
        }
    }

    /// The status of the server at `addr` (one attempt, no retries).
    pub async fn server_status(&self, addr: &str) -> Result<ServerStatus, ClerkError> {
        let call = self.connector.call(addr, RequestBody::Status);
        let timer = self.runtime.sleep(self.config().attempt_timeout);
        pin_mut!(call, timer);
        match select(call, timer).await {
            Either::Left((Ok(Reply::Status(s)), _)) => Ok(s),
            Either::Left((Ok(Reply::Unauthorized), _)) => Err(ClerkError::Unauthorized),
            Either::Left((Ok(other), _)) => Err(ClerkError::UnexpectedReply {
                reply: Box::new(other),
            }),
            Either::Left((Err(error), _)) => Err(ClerkError::Call { error }),
            Either::Right(_) => Err(ClerkError::Timeout(self.config().attempt_timeout)),
        }
    }

    /// Runs `op` to an answer, recording it in the history.
    async fn run(&mut self, op: Op) -> Result<Outcome, ClerkError> {
        let pending = self
            .history
            .as_ref()
            .map(|(h, c)| (h.clone(), h.call(*c, input_of(&op))));
        let deadline = self.runtime.now() + self.config().timeout;
        let result = match op {
            Op::Get { key } => self.read(key, deadline).await,
            op => self.write(op, deadline).await,
        };
        if let Some((history, pending)) = pending {
            history.finish(pending, output_of(&result));
        }
        result
    }

    async fn read(&mut self, key: Bytes, deadline: Duration) -> Result<Outcome, ClerkError> {
        let spread = self.config().read_from == ReadFrom::Any;
        let leader = self.servers.first_tried();
        if spread {
            self.servers.try_first_at_random();
        }
        let reply = self
            .attempts(deadline, || RequestBody::Read { key: key.clone() })
            .await;
        if spread {
            // Writes keep going first to the leader as known before the get.
            self.servers.restore_first_tried(leader);
        }
        self.final_answer(reply)
    }

    async fn write(&mut self, op: Op, deadline: Duration) -> Result<Outcome, ClerkError> {
        loop {
            let session = match self.session {
                Some(s) => s,
                None => self.register(deadline).await?,
            };
            self.seq += 1;
            let seq = self.seq;
            let reply = self
                .attempts(deadline, || RequestBody::Write {
                    session,
                    seq,
                    op: op.clone(),
                })
                .await;
            match reply {
                Some(Reply::Done(Outcome::Err(KvError::SessionExpired))) => {
                    // thesis §6.3: the state machine knows this sequence number was never
                    // applied under the expired session, and never will be, whatever copies
                    // of it are still in flight: a new session can safely send it again.
                    self.session = None;
                    continue;
                }
                Some(Reply::Done(Outcome::Err(KvError::Forgotten | KvError::Stale))) => {
                    // A copy may have been applied before the session expired, and its
                    // outcome is gone (6.5840's ErrMaybe). Sending it again could apply it
                    // twice — even if this Clerk sent it once: the network may duplicate.
                    self.session = None;
                    return Err(ClerkError::MaybeApplied);
                }
                _ => return self.final_answer(reply),
            }
        }
    }

    /// Opens a session (a retried registration may open two; the unused one expires).
    async fn register(&mut self, deadline: Duration) -> Result<u64, ClerkError> {
        let reply = self.attempts(deadline, || RequestBody::Register).await;
        match reply {
            Some(Reply::Done(Outcome::Registered { session })) => {
                self.session = Some(session);
                self.seq = 0;
                Ok(session)
            }
            Some(Reply::Unauthorized) => Err(ClerkError::Unauthorized),
            Some(other) => Err(ClerkError::UnexpectedReply {
                reply: Box::new(other),
            }),
            None => Err(ClerkError::Timeout(self.config().timeout)),
        }
    }

    fn final_answer(&self, reply: Option<Reply>) -> Result<Outcome, ClerkError> {
        match reply {
            None => Err(ClerkError::Timeout(self.config().timeout)),
            Some(Reply::Done(Outcome::Err(KvError::NoKey))) => Err(ClerkError::NoKey),
            Some(Reply::Done(Outcome::Err(KvError::Version { current }))) => {
                Err(ClerkError::Version { current })
            }
            Some(Reply::Done(Outcome::Err(KvError::StoreFull))) => Err(ClerkError::StoreFull),
            Some(Reply::Done(Outcome::Err(error))) => Err(ClerkError::Refused { error }),
            Some(Reply::Done(outcome)) => Ok(outcome),
            Some(Reply::TooLarge) => Err(ClerkError::TooLarge),
            Some(Reply::Unauthorized) => Err(ClerkError::Unauthorized),
            Some(other) => Err(ClerkError::UnexpectedReply {
                reply: Box::new(other),
            }),
        }
    }

    /// Sends `body()` until a final answer or the deadline (`None`).
    async fn attempts(
        &mut self,
        deadline: Duration,
        body: impl Fn() -> RequestBody,
    ) -> Option<Reply> {
        self.servers
            .attempts(&self.runtime, &self.connector, deadline, body, answer)
            .await
    }
}

fn written(outcome: Outcome) -> Result<u64, ClerkError> {
    match outcome {
        Outcome::Written { version } => Ok(version),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: Outcome) -> ClerkError {
    ClerkError::UnexpectedReply {
        reply: Box::new(Reply::Done(outcome)),
    }
}

/// The history's output for a result.
fn output_of(result: &Result<Outcome, ClerkError>) -> KvOutput {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (value, version, err) = match result {
        Ok(Outcome::Value { value, version }) => (Some(text(value)), Some(*version), None),
        Ok(Outcome::Written { version }) => (None, Some(*version), None),
        Ok(_) => (None, None, None),
        Err(ClerkError::NoKey) => (None, None, Some(KvErr::NoKey)),
        Err(ClerkError::Version { .. }) => (None, None, Some(KvErr::Version)),
        Err(ClerkError::MaybeApplied) => (None, None, Some(KvErr::Maybe)),
        // Refused and recorded in the session: never applied, a definite outcome. Recorded as
        // unknown, every refusal could take effect at any later time, and a run of them on
        // one key made the check's search explode (see kvraft_sim's
        // store_full_recorded_as_unknown_outcome_made_the_check_run_away).
        Err(ClerkError::StoreFull) => (None, None, Some(KvErr::StoreFull)),
        // Too large, protocol errors: nothing known, so recorded as unknown outcomes.
        Err(_) => (None, None, Some(KvErr::Timeout)),
    };
    KvOutput {
        value,
        version,
        err,
    }
}
