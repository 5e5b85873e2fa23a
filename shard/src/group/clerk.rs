//! [`ShardClerk`]: the sharded store's client — `get`, `put` (optionally conditional),
//! `append`, `delete` as kv's Clerk — generic over runtime and two connectors (one carrying the
//! controller's protocol, one the groups').
//!
//! - **Routing:** a key goes to the group that owns [`key_to_shard`]`(key)` in the cached
//!   config; on `WrongGroup`, on a group that does not answer within `group_timeout`, or with
//!   no config yet, it asks the controller for the latest config and tries again (6.5840 lab
//!   5B).
//! - **Exactly-once:** the session id is issued by the controller (a registration's log index,
//!   unique in the deployment), and every write carries the next sequence number of that one
//!   session whatever group it goes to; retries — at the same group or, after a migration, at
//!   another — carry the same number. Each shard's session table moves with the shard, so
//!   the group that holds the shard knows whether the write was applied. `SessionExpired`
//!   (never applied) gets a new session and is sent again; `Forgotten`/`Stale` (maybe
//!   applied) is [`ShardClerkError::MaybeApplied`].
//! - **Reads** go through ReadIndex at the owning group: no log entry, no session.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raftkv_checker::models::{KvErr, KvOutput};
use raftkv_kv::clerk::{ClerkConfig, Connector};
use raftkv_kv::history::{input_of, History};
use raftkv_kv::retry::{answer, Servers};
use raftkv_kv::state::{KvError, Op, Outcome};
use raftkv_raft::Runtime;
use thiserror::Error;

use crate::clerk::{ControllerClerk, CtrlClerkError};
use crate::config::{Gid, ShardConfig};
use crate::group::protocol::{GroupReply, GroupRequestBody};
use crate::group::state::GroupOutcome;
use crate::hash::key_to_shard;
use crate::protocol::{CtrlReply, CtrlRequestBody};

/// Why a [`ShardClerk`] operation failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardClerkError {
    #[error("no such key")]
    NoKey,
    /// A conditional put found another version; nothing was written.
    #[error("version mismatch (current version {current})")]
    Version { current: u64 },
    /// A retried write's outcome can no longer be learned: it may or may not have been applied.
    #[error("the write may or may not have been applied")]
    MaybeApplied,
    /// No group answered before the deadline; a write may still be applied later.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The request is larger than the servers accept.
    #[error("request too large")]
    TooLarge,
    /// The controller could not be asked for a session or a config.
    #[error("controller: {0}")]
    Controller(CtrlClerkError),
    /// A group refused the request with an error the Clerk does not expect for it.
    #[error("protocol error: the server refused the request: {0}")]
    Refused(KvError),
    /// A server answered something this Clerk cannot use.
    #[error("protocol error: unexpected answer {reply:?}")]
    UnexpectedReply { reply: Box<GroupReply> },
}

/// How a ShardClerk routes and retries.
#[derive(Clone, Debug)]
pub struct ShardClerkConfig {
    /// Give up an operation after this long.
    pub timeout: Duration,
    /// Retries within one group (attempt timeout, backoff, hints); its `timeout` is how long
    /// one group gets before the Clerk asks the controller again.
    pub group: ClerkConfig,
    /// Pause before asking the controller again when no group serves the key yet.
    pub refresh_pause: Duration,
}

impl Default for ShardClerkConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            group: ClerkConfig {
                timeout: Duration::from_secs(2),
                ..ClerkConfig::default()
            },
            refresh_pause: Duration::from_millis(100),
        }
    }
}

/// A client of the sharded store: one operation at a time (one Clerk per concurrent client).
pub struct ShardClerk<R, CC, GC>
where
    R: Runtime,
    CC: Connector<CtrlRequestBody, CtrlReply>,
    GC: Connector<GroupRequestBody, GroupReply>,
{
    runtime: R,
    controller: ControllerClerk<R, CC>,
    groups: GC,
    config: ShardClerkConfig,
    /// The cached config (config 0 until the first query).
    cached: ShardConfig,
    /// Leader finding per group, from the cached config's addresses.
    servers: BTreeMap<Gid, Servers>,
    session: Option<u64>,
    seq: u64,
    history: Option<(History, u64)>,
}

impl<R, CC, GC> ShardClerk<R, CC, GC>
where
    R: Runtime,
    CC: Connector<CtrlRequestBody, CtrlReply>,
    GC: Connector<GroupRequestBody, GroupReply>,
{
    /// A Clerk that asks `controller` for configs and sessions and reaches groups through
    /// `groups`.
    pub fn new(
        runtime: R,
        controller: ControllerClerk<R, CC>,
        groups: GC,
        config: ShardClerkConfig,
    ) -> Self {
        Self {
            runtime,
            controller,
            groups,
            config,
            cached: ShardConfig::empty(0),
            servers: BTreeMap::new(),
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

    /// The runtime this Clerk sleeps and reads time on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// The config this Clerk routes by.
    pub fn cached_config(&self) -> &ShardConfig {
        &self.cached
    }

    /// Reads `key`: its value and version.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<(Bytes, u64), ShardClerkError> {
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
    ) -> Result<u64, ShardClerkError> {
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
    ) -> Result<u64, ShardClerkError> {
        let op = Op::Append {
            key: key.into(),
            value: value.into(),
        };
        self.run(op).await.and_then(written)
    }

    /// Deletes `key`; `NoKey` if it does not exist.
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), ShardClerkError> {
        match self.run(Op::Delete { key: key.into() }).await? {
            Outcome::Deleted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `op` to an answer, recording it in the history.
    async fn run(&mut self, op: Op) -> Result<Outcome, ShardClerkError> {
        let pending = self
            .history
            .as_ref()
            .map(|(h, c)| (h.clone(), h.call(*c, input_of(&op))));
        let result = self.route(op).await;
        if let Some((history, pending)) = pending {
            history.finish(pending, output_of(&result));
        }
        result
    }

    /// Asks the controller for the latest config.
    async fn refresh(&mut self) -> Result<(), ShardClerkError> {
        let latest = self
            .controller
            .query(None)
            .await
            .map_err(ShardClerkError::Controller)?;
        if latest.num >= self.cached.num {
            // A group's addresses may differ between configs: find leaders afresh.
            self.servers
                .retain(|gid, s| latest.groups.get(gid).is_some_and(|a| a == s.addrs()));
            self.cached = latest;
        }
        Ok(())
    }

    async fn route(&mut self, op: Op) -> Result<Outcome, ShardClerkError> {
        let deadline = self.runtime.now() + self.config.timeout;
        let is_read = matches!(op, Op::Get { .. });
        let key = match &op {
            Op::Get { key } | Op::Put { key, .. } | Op::Append { key, .. } | Op::Delete { key } => {
                key.clone()
            }
        };
        // One sequence number for every attempt of this write, at any group.
        let mut seq = None;
        let mut refreshed = false;
        loop {
            if self.runtime.now() >= deadline {
                return Err(ShardClerkError::Timeout(self.config.timeout));
            }
            if self.cached.shards.is_empty() {
                self.refresh().await?;
                refreshed = true;
                continue;
            }
            let shards =
                u32::try_from(self.cached.shards.len()).expect("shard counts fit in a u32");
            let shard = key_to_shard(&key, shards).expect("a config has shards") as usize;
            let gid = self.cached.shards[shard];
            let Some(addrs) = self
                .cached
                .groups
                .get(&gid)
                .filter(|a| !a.is_empty())
                .cloned()
            else {
                // Unassigned (no groups yet): wait for a config that assigns it.
                if refreshed {
                    self.runtime.sleep(self.config.refresh_pause).await;
                }
                self.refresh().await?;
                refreshed = true;
                continue;
            };
            let body = if is_read {
                GroupRequestBody::Read { key: key.clone() }
            } else {
                let session = match self.session {
                    Some(s) => s,
                    None => {
                        let s = self
                            .controller
                            .new_session_id()
                            .await
                            .map_err(ShardClerkError::Controller)?;
                        self.session = Some(s);
                        self.seq = 0;
                        seq = None;
                        s
                    }
                };
                let seq = *seq.get_or_insert_with(|| {
                    self.seq += 1;
                    self.seq
                });
                GroupRequestBody::Write {
                    session,
                    seq,
                    op: op.clone(),
                }
            };
            let group_deadline = deadline.min(self.runtime.now() + self.config.group.timeout);
            let now = self.runtime.now();
            let servers = self
                .servers
                .entry(gid)
                .or_insert_with(|| Servers::new(addrs, self.config.group.clone(), now));
            let reply = servers
                .attempts(
                    &self.runtime,
                    &self.groups,
                    group_deadline,
                    || body.clone(),
                    answer,
                )
                .await;
            match reply {
                Some(GroupReply::Done(GroupOutcome::Kv(outcome))) => match outcome {
                    Outcome::Err(KvError::SessionExpired) => {
                        // thesis §6.3: never applied under the expired session and never will
                        // be: a new session may send it again.
                        self.session = None;
                    }
                    Outcome::Err(KvError::Forgotten | KvError::Stale) => {
                        self.session = None;
                        return Err(ShardClerkError::MaybeApplied);
                    }
                    Outcome::Err(KvError::NoKey) => return Err(ShardClerkError::NoKey),
                    Outcome::Err(KvError::Version { current }) => {
                        return Err(ShardClerkError::Version { current })
                    }
                    Outcome::Err(e) => return Err(ShardClerkError::Refused(e)),
                    outcome => return Ok(outcome),
                },
                // 6.5840 lab 5B: not served there (now): ask the controller, same request.
                Some(GroupReply::Done(GroupOutcome::WrongGroup)) | None => {
                    if refreshed {
                        self.runtime.sleep(self.config.refresh_pause).await;
                    }
                    self.refresh().await?;
                    refreshed = true;
                }
                Some(GroupReply::TooLarge) => return Err(ShardClerkError::TooLarge),
                Some(other) => {
                    return Err(ShardClerkError::UnexpectedReply {
                        reply: Box::new(other),
                    })
                }
            }
        }
    }
}

fn written(outcome: Outcome) -> Result<u64, ShardClerkError> {
    match outcome {
        Outcome::Written { version } => Ok(version),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: Outcome) -> ShardClerkError {
    ShardClerkError::UnexpectedReply {
        reply: Box::new(GroupReply::Done(GroupOutcome::Kv(outcome))),
    }
}

/// The history's output for a result (as kv's Clerk records it).
fn output_of(result: &Result<Outcome, ShardClerkError>) -> KvOutput {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (value, version, err) = match result {
        Ok(Outcome::Value { value, version }) => (Some(text(value)), Some(*version), None),
        Ok(Outcome::Written { version }) => (None, Some(*version), None),
        Ok(_) => (None, None, None),
        Err(ShardClerkError::NoKey) => (None, None, Some(KvErr::NoKey)),
        Err(ShardClerkError::Version { .. }) => (None, None, Some(KvErr::Version)),
        Err(ShardClerkError::MaybeApplied) => (None, None, Some(KvErr::Maybe)),
        // Timeouts, protocol errors: nothing known, recorded as unknown outcomes.
        Err(_) => (None, None, Some(KvErr::Timeout)),
    };
    KvOutput {
        value,
        version,
        err,
    }
}
