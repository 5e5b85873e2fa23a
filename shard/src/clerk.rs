//! [`ControllerClerk`]: the controller's client, generic over runtime and a kv
//! [`Connector`] carrying the controller's protocol, with the KV Clerk's behaviour:
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
//! The attempts loop (leader finding, retries, backoff) is kv's [`Servers::attempts`].

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv_kv::clerk::{ClerkConfig, Connector};
use raftkv_kv::retry::{answer, Servers};
use raftkv_raft::Runtime;
use thiserror::Error;

use crate::config::{CtrlError, Gid, ShardConfig, ShardId};
use crate::protocol::{CtrlReply, CtrlRequestBody};
use crate::state::{CtrlOp, Outcome};

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
pub struct ControllerClerk<R: Runtime, C: Connector<CtrlRequestBody, CtrlReply>> {
    runtime: R,
    connector: C,
    servers: Servers,
    session: Option<u64>,
    seq: u64,
}

impl<R: Runtime, C: Connector<CtrlRequestBody, CtrlReply>> ControllerClerk<R, C> {
    /// A Clerk for the controllers at `addrs` (client addresses; any non-empty subset).
    /// Panics if `addrs` is empty: callers validate addresses first.
    pub fn new(runtime: R, connector: C, addrs: Vec<String>, config: ClerkConfig) -> Self {
        let servers = Servers::new(addrs, config, runtime.now());
        Self {
            runtime,
            connector,
            servers,
            session: None,
            seq: 0,
        }
    }

    /// The addresses this Clerk knows, the first-tried one first.
    pub fn addrs(&self) -> &[String] {
        self.servers.addrs()
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
        let deadline = self.runtime.now() + self.servers.config().timeout;
        let reply = self
            .attempts(deadline, || CtrlRequestBody::Query { num })
            .await;
        match self.final_answer(reply)? {
            Outcome::Config(config) => Ok(config),
            other => Err(unexpected(other)),
        }
    }

    /// Registers a fresh session and returns its id without using it here: a number no other
    /// session of the deployment has (the registration's controller log index), which a
    /// [`crate::group::ShardClerk`] uses as its session id at every replica group.
    pub async fn new_session_id(&mut self) -> Result<u64, CtrlClerkError> {
        let deadline = self.runtime.now() + self.servers.config().timeout;
        let reply = self.attempts(deadline, || CtrlRequestBody::Register).await;
        match self.final_answer(reply)? {
            Outcome::Registered { session } => Ok(session),
            other => Err(unexpected(other)),
        }
    }

    async fn change(&mut self, op: CtrlOp) -> Result<u64, CtrlClerkError> {
        let deadline = self.runtime.now() + self.servers.config().timeout;
        loop {
            let session = match self.session {
                Some(s) => s,
                None => self.register(deadline).await?,
            };
            self.seq += 1;
            let seq = self.seq;
            let reply = self
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
        let reply = self.attempts(deadline, || CtrlRequestBody::Register).await;
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
            None => Err(CtrlClerkError::Timeout(self.servers.config().timeout)),
            Some(CtrlReply::Done(Outcome::Err(error))) => Err(CtrlClerkError::Refused(error)),
            Some(CtrlReply::Done(outcome)) => Ok(outcome),
            Some(CtrlReply::TooLarge) => Err(CtrlClerkError::TooLarge),
            Some(other) => Err(CtrlClerkError::UnexpectedReply {
                reply: Box::new(other),
            }),
        }
    }

    /// Sends `body()` until a final answer or the deadline (`None`).
    async fn attempts(
        &mut self,
        deadline: Duration,
        body: impl Fn() -> CtrlRequestBody,
    ) -> Option<CtrlReply> {
        self.servers
            .attempts(&self.runtime, &self.connector, deadline, body, answer)
            .await
    }
}

fn unexpected(outcome: Outcome) -> CtrlClerkError {
    CtrlClerkError::UnexpectedReply {
        reply: Box::new(CtrlReply::Done(outcome)),
    }
}
