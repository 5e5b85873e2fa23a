//! [`GroupService`]: one group member's endpoint, independent of how requests arrive (the
//! simulator's client network in `testing`; a TCP host serves the same frames as kv's), and
//! [`run_driver`]: the member's background task that, while it leads, moves the group through
//! configs and shards between groups. Both talk to the state machine only through the node
//! (proposals and ReadIndex reads); the driver reaches the controller and other groups through
//! connectors, so it names no transport.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use raftkv_kv::clerk::{ClerkConfig, Connector};
use raftkv_kv::protocol::Reply;
use raftkv_kv::retry::{answer, Servers};
use raftkv_kv::service::ServiceConfig;
use raftkv_raft::{Node, Role, Runtime};

use crate::clerk::ControllerClerk;
use crate::config::{Gid, ShardId};
use crate::group::protocol::{GroupReply, GroupRequestBody};
use crate::group::state::{
    GroupCommand, GroupError, GroupOutcome, GroupQuery, GroupStateMachine, Progress, ShardStatus,
};
use crate::group::trust;
use crate::protocol::{CtrlReply, CtrlRequestBody};

/// One group member's service: client requests become proposals and ReadIndex reads.
pub struct GroupService<R: Runtime> {
    node: Node<R, GroupStateMachine>,
    runtime: R,
    config: Arc<ServiceConfig>,
}

impl<R: Runtime> Clone for GroupService<R> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            runtime: self.runtime.clone(),
            config: self.config.clone(),
        }
    }
}

impl<R: Runtime> GroupService<R> {
    /// `config` is the KV service's: the clock epoch for session timestamps and every member's
    /// client address (for `NotLeader` hints).
    pub fn new(node: Node<R, GroupStateMachine>, runtime: R, config: ServiceConfig) -> Self {
        Self {
            node,
            runtime,
            config: Arc::new(config),
        }
    }

    /// The node behind this service.
    pub fn node(&self) -> &Node<R, GroupStateMachine> {
        &self.node
    }

    fn now_ms(&self) -> u64 {
        self.config.now_ms(self.runtime.now())
    }

    /// Serves one request.
    pub async fn handle(&self, body: GroupRequestBody) -> GroupReply {
        let result = match body {
            GroupRequestBody::Write { session, seq, op } => {
                let command = GroupCommand::Request {
                    session,
                    seq,
                    now_ms: self.now_ms(),
                    op,
                };
                self.node.propose(command.encode()).await
            }
            GroupRequestBody::Read { key } => {
                self.node
                    .linearizable_read(GroupQuery::Get { key }.encode())
                    .await
            }
            GroupRequestBody::Pull { num, shards } => {
                self.node
                    .linearizable_read(GroupQuery::Pull { num, shards }.encode())
                    .await
            }
            GroupRequestBody::Delete { num, shards } => {
                self.node
                    .propose(GroupCommand::Delete { num, shards }.encode())
                    .await
            }
            GroupRequestBody::Progress => {
                self.node
                    .linearizable_read(GroupQuery::Progress.encode())
                    .await
            }
            GroupRequestBody::Status => return self.config.status_reply(self.node.status().await),
        };
        self.config.reply(result)
    }

    /// Serves one request that arrived from `peer` over a network: as [`GroupService::handle`],
    /// except that `Pull` and `Delete` are served only to members of the groups of the
    /// installed config or the one before ([`crate::group::trust`]), checked against the
    /// group's progress read through ReadIndex; others get
    /// [`GroupError::NotAGroupMember`], and nothing is read or changed.
    pub async fn handle_from(&self, peer: IpAddr, body: GroupRequestBody) -> GroupReply {
        if trust::is_group_to_group(&body) {
            let progress = match self.handle(GroupRequestBody::Progress).await {
                Reply::Done(GroupOutcome::Progress(p)) => p,
                // Not the leader, no answer in time...: the caller retries elsewhere.
                other => return other,
            };
            if !trust::peer_is_member(peer, &progress) {
                tracing::warn!(
                    %peer,
                    num = progress.config.num,
                    "shard group: refusing a Pull or Delete from outside the groups"
                );
                return Reply::Done(GroupOutcome::Err(GroupError::NotAGroupMember {
                    peer: peer.to_string(),
                    num: progress.config.num,
                }));
            }
        }
        self.handle(body).await
    }

    /// Where the group stands, read through ReadIndex at this member (`None` unless it leads
    /// and answers).
    pub async fn progress(&self) -> Option<Progress> {
        match self
            .node
            .linearizable_read(GroupQuery::Progress.encode())
            .await
        {
            Ok(GroupOutcome::Progress(p)) => Some(p),
            _ => None,
        }
    }
}

/// How the driver paces itself.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// One round (poll the controller, pull, delete) every this long.
    pub interval: Duration,
    /// Retries and deadlines of calls to the controller and to other groups (kept short: a
    /// round that cannot reach one group must not hold up the next).
    pub calls: ClerkConfig,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            calls: ClerkConfig {
                timeout: Duration::from_secs(1),
                attempt_timeout: Duration::from_millis(500),
                backoff_min: Duration::from_millis(5),
                backoff_max: Duration::from_millis(100),
                follow_hints: true,
                read_from: raftkv_kv::clerk::ReadFrom::Leader,
            },
        }
    }
}

/// The member's background task: every `interval`, if this member leads, one [`round`]. Runs
/// until the runtime drops it (a crash or a shutdown).
pub async fn run_driver<R, CC, GC>(
    service: GroupService<R>,
    mut controller: ControllerClerk<R, CC>,
    groups: GC,
    config: DriverConfig,
) where
    R: Runtime,
    CC: Connector<CtrlRequestBody, CtrlReply>,
    GC: Connector<GroupRequestBody, GroupReply>,
{
    loop {
        service.runtime.sleep(config.interval).await;
        let leads = matches!(service.node.status().await, Ok(s) if s.role == Role::Leader);
        if leads {
            round(&service, &mut controller, &groups, &config).await;
        }
    }
}

/// One step of the protocol (module doc of [`crate::group`]): with every shard settled, ask
/// the controller for the next config and propose it; otherwise pull the shards still
/// arriving, and ask the previous owners to delete the ones that arrived. Every step is
/// idempotent, so a step that a new leader repeats, or that two leaders race, changes nothing
/// twice.
pub async fn round<R, CC, GC>(
    service: &GroupService<R>,
    controller: &mut ControllerClerk<R, CC>,
    groups: &GC,
    config: &DriverConfig,
) where
    R: Runtime,
    CC: Connector<CtrlRequestBody, CtrlReply>,
    GC: Connector<GroupRequestBody, GroupReply>,
{
    let Some(progress) = service.progress().await else {
        return;
    };
    let num = progress.config.num;
    if progress.settled() {
        // 6.5840 lab 5B: configs one at a time: ask for exactly the next one.
        if let Ok(next) = controller.query(Some(num + 1)).await {
            if next.num == num + 1 {
                proposed(service, GroupCommand::Config(next)).await;
            }
        }
        return;
    }
    let pulls = progress
        .by_prev_owner(ShardStatus::Pulling)
        .into_iter()
        .map(|(from, shards)| pull(service, groups, config, &progress, from, shards));
    let deletes = progress
        .by_prev_owner(ShardStatus::GcPending)
        .into_iter()
        .map(|(from, shards)| delete(service, groups, config, &progress, from, shards));
    // Concurrently: a source group that is down holds up only its own shards (challenge 2).
    futures::future::join(join_all(pulls), join_all(deletes)).await;
}

/// Sends `body` to group `gid` of `progress.prev` until a final answer or the deadline.
async fn call_group<R: Runtime, GC: Connector<GroupRequestBody, GroupReply>>(
    runtime: &R,
    groups: &GC,
    config: &DriverConfig,
    addrs: &BTreeMap<Gid, Vec<String>>,
    gid: Gid,
    body: GroupRequestBody,
) -> Option<GroupOutcome> {
    let addrs = addrs.get(&gid).filter(|a| !a.is_empty())?.clone();
    let mut servers = Servers::new(addrs, config.calls.clone(), runtime.now());
    let deadline = runtime.now() + config.calls.timeout;
    match servers
        .attempts(runtime, groups, deadline, || body.clone(), answer)
        .await
    {
        Some(GroupReply::Done(outcome)) => Some(outcome),
        _ => None,
    }
}

/// A round pulls at most this many answers from one source group (each up to
/// `shard_bytes_max` bytes of pieces), one after the other, before it lets the next round come.
const PULLS_PER_ROUND_MAX: usize = 64;

/// Pulls `shards` from `from` (their owner in the previous config) and proposes the pieces;
/// again, from where they stand, while pieces arrive and shards of `from` are still `Pulling`
/// (a large shard moves in many pieces), up to [`PULLS_PER_ROUND_MAX`] answers.
async fn pull<R: Runtime, GC: Connector<GroupRequestBody, GroupReply>>(
    service: &GroupService<R>,
    groups: &GC,
    config: &DriverConfig,
    progress: &Progress,
    from: Gid,
    shards: Vec<ShardId>,
) {
    let num = progress.config.num;
    let mut at = progress.clone();
    for _ in 0..PULLS_PER_ROUND_MAX {
        let asks: Vec<(ShardId, Option<Bytes>)> = at
            .shards
            .iter()
            .filter(|s| s.status == ShardStatus::Pulling && shards.contains(&s.shard))
            .map(|s| (s.shard, s.after.clone()))
            .collect();
        if asks.is_empty() || at.config.num != num {
            return;
        }
        let body = GroupRequestBody::Pull { num, shards: asks };
        let reply = call_group(
            &service.runtime,
            groups,
            config,
            &progress.prev.groups,
            from,
            body,
        )
        .await;
        let Some(GroupOutcome::Shards {
            num: n,
            shards: pieces,
        }) = reply
        else {
            return;
        };
        if n != num || pieces.is_empty() {
            return;
        }
        let command = GroupCommand::Insert {
            num,
            shards: pieces,
        };
        if !proposed(service, command).await {
            return;
        }
        match service.progress().await {
            Some(p) => at = p,
            None => return,
        }
    }
}

/// Proposes `command`; whether it was applied. A refusal by the state machine (a shard that
/// cannot arrive: too large, past the group's `data_bytes_max`; a config of another shard
/// count) is logged at warn: the driver retries it each round, and nothing moves until the
/// cause is fixed.
async fn proposed<R: Runtime>(service: &GroupService<R>, command: GroupCommand) -> bool {
    match service.node.propose(command.encode()).await {
        Ok(GroupOutcome::Err(e)) => {
            tracing::warn!(error = %e, "the replica group refused its driver's proposal: {e}");
            false
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// 6.5840 challenge 1: asks `from` to delete `shards`, which arrived here; once it has,
/// proposes that they are settled.
async fn delete<R: Runtime, GC: Connector<GroupRequestBody, GroupReply>>(
    service: &GroupService<R>,
    groups: &GC,
    config: &DriverConfig,
    progress: &Progress,
    from: Gid,
    shards: Vec<ShardId>,
) {
    let num = progress.config.num;
    let body = GroupRequestBody::Delete {
        num,
        shards: shards.clone(),
    };
    let reply = call_group(
        &service.runtime,
        groups,
        config,
        &progress.prev.groups,
        from,
        body,
    )
    .await;
    if reply == Some(GroupOutcome::Done) {
        let _ = service
            .node
            .propose(GroupCommand::Confirmed { num, shards }.encode())
            .await;
    }
}
