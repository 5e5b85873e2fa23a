//! [`ControllerClerk`]: the controller's client, generic over runtime and [`CtrlConnector`]
//! like `raftkv_kv::clerk::Clerk`, with the same behaviour:
//!
//! - **Leader finding:** it remembers the last leader and follows `NotLeader` hints (adding a
//!   hinted address it did not know, unless `follow_hints` is off).
//! - **Exactly-once:** it registers a session on first change and numbers its changes; every
//!   retry carries the same number, so a Join, Leave or Move is applied at most once and a
//!   retry answers the first result. Queries go through ReadIndex and need no session.
//! - **Retries and deadlines:** exponential backoff with jitter ([`raftkv_backoff::Backoff`])
//!   until `timeout`, then [`CtrlClerkError::Timeout`] (a change may still be applied later).
//! - **Expired sessions:** a change refused with `SessionExpired` was not applied and never will
//!   be, so the Clerk opens a new session and sends it again; one answered `Forgotten` (or
//!   `Stale`) may have been applied — even if this Clerk sent it once, the network may
//!   duplicate — and gives [`CtrlClerkError::MaybeApplied`].
//!
//! Unification note: the retry loop (`ControllerClerk::attempts`) is kv's `Clerk::attempts`
//! over other request and reply types. Made generic in kv — a `Connector<Req, Reply>` and an
//! `attempts` taking a "is this final?" classifier — it would serve both Clerks.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::{select, Either};
use futures::pin_mut;
use raftkv_backoff::Backoff;
use raftkv_kv::clerk::{CallError, ClerkConfig};
use raftkv_raft::{Rng, Runtime};
use thiserror::Error;

use crate::config::{CtrlError, Gid, ShardConfig, ShardId};
use crate::protocol::{CtrlReply, CtrlRequestBody};
use crate::state::{CtrlOp, Outcome};

/// How a [`ControllerClerk`] reaches a controller's client address.
///
/// Contract (as kv's `Connector`): each `call` delivers its request at most once.
pub trait CtrlConnector: Send + Sync + 'static {
    /// Sends `body` to the server at `addr` and waits for its reply. Dropping the future
    /// abandons the call (the request may still be served).
    fn call(
        &self,
        addr: &str,
        body: CtrlRequestBody,
    ) -> impl std::future::Future<Output = Result<CtrlReply, CallError>> + Send;
}

/// Why a controller operation failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CtrlClerkError {
    /// The controller refused the change (unknown gid, shard out of range...); nothing changed.
    #[error("refused: {0}")]
    Refused(CtrlError),
    /// A retried change's outcome can no longer be learned: it may or may not have been applied.
    #[error("the change may or may not have been applied")]
    MaybeApplied,
    /// No majority answered before the deadline; a change may still be applied later.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The request is larger than the servers accept.
    #[error("request too large")]
    TooLarge,
    /// A server answered something this Clerk cannot use.
    #[error("protocol error: unexpected answer {reply:?}")]
    UnexpectedReply { reply: Box<CtrlReply> },
}

/// A controller client: one operation at a time (one Clerk per concurrent client).
pub struct ControllerClerk<R: Runtime, C: CtrlConnector> {
    runtime: R,
    connector: C,
    addrs: Vec<String>,
    /// Index in `addrs` of the server to try first.
    leader: usize,
    session: Option<u64>,
    seq: u64,
    config: ClerkConfig,
    /// Backoff jitter.
    rng: Rng,
}

impl<R: Runtime, C: CtrlConnector> ControllerClerk<R, C> {
    /// A Clerk for the controllers at `addrs` (client addresses; any non-empty subset).
    /// Panics if `addrs` is empty: callers validate addresses first.
    pub fn new(runtime: R, connector: C, addrs: Vec<String>, config: ClerkConfig) -> Self {
        assert!(
            !addrs.is_empty(),
            "a ControllerClerk needs at least one address"
        );
        let seed = addrs.iter().map(|a| a.len() as u64).sum::<u64>()
            ^ u64::try_from(runtime.now().as_nanos()).unwrap_or(0);
        Self {
            runtime,
            connector,
            addrs,
            leader: 0,
            session: None,
            seq: 0,
            config,
            rng: Rng::new(seed),
        }
    }

    /// The addresses this Clerk knows, the first-tried one first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Joins `groups` (gid → member client addresses); returns the config it made.
    pub async fn join(
        &mut self,
        groups: BTreeMap<Gid, Vec<String>>,
    ) -> Result<u64, CtrlClerkError> {
        self.change(CtrlOp::Join { groups }).await
    }

    /// `gids` leave; returns the config it made.
    pub async fn leave(&mut self, gids: Vec<Gid>) -> Result<u64, CtrlClerkError> {
        self.change(CtrlOp::Leave { gids }).await
    }

    /// Hands `shard` to `gid`; returns the config it made.
    pub async fn move_shard(&mut self, shard: ShardId, gid: Gid) -> Result<u64, CtrlClerkError> {
        self.change(CtrlOp::Move { shard, gid }).await
    }

    /// Config `num` (`None`, or a number beyond the latest: the latest), linearizably.
    pub async fn query(&mut self, num: Option<u64>) -> Result<ShardConfig, CtrlClerkError> {
        let deadline = self.runtime.now() + self.config.timeout;
        let (reply, _) = self
            .attempts(deadline, || CtrlRequestBody::Query { num })
            .await;
        match self.final_answer(reply)? {
            Outcome::Config(config) => Ok(config),
            other => Err(unexpected(other)),
        }
    }

    async fn change(&mut self, op: CtrlOp) -> Result<u64, CtrlClerkError> {
        let deadline = self.runtime.now() + self.config.timeout;
        loop {
            let session = match self.session {
                Some(s) => s,
                None => self.register(deadline).await?,
            };
            self.seq += 1;
            let seq = self.seq;
            let (reply, _) = self
                .attempts(deadline, || CtrlRequestBody::Change {
                    session,
                    seq,
                    op: op.clone(),
                })
                .await;
            match reply {
                Some(CtrlReply::Done(Outcome::Err(CtrlError::SessionExpired))) => {
                    // thesis §6.3: the state machine knows this sequence number was never
                    // applied under the expired session, and never will be, whatever copies
                    // of it are still in flight: a new session can safely send it again.
                    self.session = None;
                    continue;
                }
                Some(CtrlReply::Done(Outcome::Err(CtrlError::Forgotten | CtrlError::Stale))) => {
                    // A copy may have been applied before the session expired, and its
                    // outcome is gone. Sending it again could apply it twice — even if this
                    // Clerk sent it once: the network may duplicate (issue 21 #12).
                    self.session = None;
                    return Err(CtrlClerkError::MaybeApplied);
                }
                _ => {}
            }
            return match self.final_answer(reply)? {
                Outcome::Changed { num } => Ok(num),
                other => Err(unexpected(other)),
            };
        }
    }

    /// Opens a session (a retried registration may open two; the unused one expires).
    async fn register(&mut self, deadline: Duration) -> Result<u64, CtrlClerkError> {
        let (reply, _) = self.attempts(deadline, || CtrlRequestBody::Register).await;
        match self.final_answer(reply)? {
            Outcome::Registered { session } => {
                self.session = Some(session);
                self.seq = 0;
                Ok(session)
            }
            other => Err(unexpected(other)),
        }
    }

    fn final_answer(&self, reply: Option<CtrlReply>) -> Result<Outcome, CtrlClerkError> {
        match reply {
            None => Err(CtrlClerkError::Timeout(self.config.timeout)),
            Some(CtrlReply::Done(Outcome::Err(error))) => Err(CtrlClerkError::Refused(error)),
            Some(CtrlReply::Done(outcome)) => Ok(outcome),
            Some(CtrlReply::TooLarge) => Err(CtrlClerkError::TooLarge),
            Some(other) => Err(CtrlClerkError::UnexpectedReply {
                reply: Box::new(other),
            }),
        }
    }

    /// Sends `body()` until a final answer or the deadline (`None`): follows `NotLeader` hints,
    /// moves on from unreachable, slow or busy servers, backs off after each round. Also says
    /// whether an attempt other than the last may have been delivered and acted on.
    async fn attempts(
        &mut self,
        deadline: Duration,
        body: impl Fn() -> CtrlRequestBody,
    ) -> (Option<CtrlReply>, bool) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut tried_in_round = 0;
        let mut maybe_delivered = false;
        let mut followed_last = false;
        loop {
            let now = self.runtime.now();
            if now >= deadline {
                return (None, maybe_delivered);
            }
            let addr = self.addrs[self.leader].clone();
            let wait = self.config.attempt_timeout.min(deadline - now);
            let answer = {
                let call = self.connector.call(&addr, body());
                let timer = self.runtime.sleep(wait);
                pin_mut!(call, timer);
                match select(call, timer).await {
                    Either::Left((answer, _)) => Some(answer),
                    Either::Right(_) => None,
                }
            };
            let mut follow = false;
            match answer {
                Some(Ok(CtrlReply::NotLeader {
                    leader_hint: Some(hint),
                })) if hint != addr => {
                    if let Some(i) = self.addrs.iter().position(|a| *a == hint) {
                        self.leader = i;
                        follow = true;
                    } else if self.config.follow_hints {
                        self.addrs.push(hint);
                        self.leader = self.addrs.len() - 1;
                        follow = true;
                    }
                }
                // Certainly not acted on.
                Some(Ok(CtrlReply::NotLeader { .. } | CtrlReply::Busy))
                | Some(Err(CallError::Unreachable(_))) => {}
                // May have been proposed (and applied later).
                Some(Ok(
                    CtrlReply::Timeout | CtrlReply::OutcomeUnknown | CtrlReply::Unavailable(_),
                ))
                | Some(Err(_))
                | None => maybe_delivered = true,
                Some(Ok(reply)) => return (Some(reply), maybe_delivered),
            }
            if !follow {
                self.leader = (self.leader + 1) % self.addrs.len();
                tried_in_round += 1;
            }
            // A first hint is followed at once; back off once every server was tried, and when
            // hints keep sending the Clerk around (an election in progress).
            let ping_pong = follow && followed_last;
            followed_last = follow;
            if ping_pong || tried_in_round >= self.addrs.len() {
                tried_in_round = 0;
                let pause = backoff.next(self.rng.next_u64());
                let left = deadline.saturating_sub(self.runtime.now());
                self.runtime.sleep(pause.min(left)).await;
            }
        }
    }
}

fn unexpected(outcome: Outcome) -> CtrlClerkError {
    CtrlClerkError::UnexpectedReply {
        reply: Box::new(CtrlReply::Done(outcome)),
    }
}
