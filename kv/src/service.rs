//! [`KvService`]: one node's KV endpoint, independent of how requests arrive. The TCP server
//! (`raftkv_node::server`) and the simulator's client network both call [`KvService::handle`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use raftkv_raft::{
    MemberAddrs, MemberChange, Membership, MembershipError, Node, NodeError, NodeId, ReconfigError,
    Runtime, StateMachine, Status,
};

use crate::protocol::{
    MemberInfo, MemberList, MemberOp, RefusalKind, Reply, RequestBody, ServerStatus,
    MEMBER_ADDR_BYTES_MAX,
};
use crate::state::{Command, KvStateMachine, Op, Outcome};

/// How a service stamps and answers requests.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    /// Added to the runtime's clock (which starts at 0) to give the leader timestamps written
    /// into the log for session expiry (thesis §6.3). A deployment sets it from the wall clock at
    /// start, so that timestamps of successive leaders are comparable; the simulator leaves 0.
    pub clock_epoch_ms: u64,
    /// Every node's client address, so that a `NotLeader` answer can name the leader's.
    pub client_addrs: BTreeMap<NodeId, String>,
}

impl ServiceConfig {
    /// The leader timestamp for a command proposed at the runtime's time `now`.
    pub fn now_ms(&self, now: std::time::Duration) -> u64 {
        let since_start = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        self.clock_epoch_ms.saturating_add(since_start)
    }

    /// The reply to a request that ended with `result`, whatever the state machine's answer
    /// `O`: its answer, or why there is none (a `NotLeader` names the leader's client address).
    pub fn reply<O>(&self, result: Result<O, NodeError>) -> Reply<O> {
        match result {
            Ok(outcome) => Reply::Done(outcome),
            Err(NodeError::NotLeader { leader_hint }) => Reply::NotLeader {
                leader_hint: leader_hint.and_then(|id| self.client_addrs.get(&id).cloned()),
            },
            Err(NodeError::Timeout) => Reply::Timeout,
            Err(NodeError::OutcomeUnknown) => Reply::OutcomeUnknown,
            Err(NodeError::Busy(_)) => Reply::Busy,
            Err(NodeError::TooLarge(_)) => Reply::TooLarge,
            Err(e @ (NodeError::Shutdown | NodeError::Storage(_) | NodeError::Config(_))) => {
                Reply::Unavailable(e.to_string())
            }
        }
    }

    /// The reply to a `Status` request.
    pub fn status_reply<O>(&self, status: Result<Status, NodeError>) -> Reply<O> {
        match status {
            Ok(s) => Reply::Status(ServerStatus::from(s)),
            Err(e) => self.reply(Err(e)),
        }
    }
}

impl From<Status> for ServerStatus {
    fn from(s: Status) -> Self {
        ServerStatus {
            id: s.id,
            role: s.role.to_string(),
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            first_index: s.first_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            removed: s.removed,
        }
    }
}

/// One node's KV service: it turns client requests into proposals and ReadIndex reads.
///
/// Group commit comes from the node: proposals from every connection queue into one event
/// loop, which takes up to 256 of them per `Ready`, so they share one log write and one
/// `Append` per follower.
///
/// `M` is [`KvStateMachine`] except in tests that check the checker catches a broken one.
pub struct KvService<R: Runtime, M: StateMachine<Response = Outcome> = KvStateMachine> {
    node: Node<R, M>,
    runtime: R,
    config: Arc<ServiceConfig>,
    /// Every node's peer address as this server was started knowing it (for `MemberList`).
    peer_addrs: Arc<BTreeMap<NodeId, String>>,
}

impl<R: Runtime, M: StateMachine<Response = Outcome>> Clone for KvService<R, M> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            runtime: self.runtime.clone(),
            config: self.config.clone(),
            peer_addrs: self.peer_addrs.clone(),
        }
    }
}

impl<R: Runtime, M: StateMachine<Response = Outcome>> KvService<R, M> {
    pub fn new(node: Node<R, M>, runtime: R, config: ServiceConfig) -> Self {
        Self {
            node,
            runtime,
            config: Arc::new(config),
            peer_addrs: Arc::default(),
        }
    }

    /// Tells the service every node's peer address as this server was started knowing it,
    /// for the members whose addresses the configuration does not record (the initial
    /// members of a cluster started from a static peer list).
    pub fn with_peer_addrs(mut self, peer_addrs: BTreeMap<NodeId, String>) -> Self {
        self.peer_addrs = Arc::new(peer_addrs);
        self
    }

    /// The node behind this service.
    pub fn node(&self) -> &Node<R, M> {
        &self.node
    }

    fn now_ms(&self) -> u64 {
        self.config.now_ms(self.runtime.now())
    }

    /// Serves one request.
    pub async fn handle(&self, body: RequestBody) -> Reply {
        let result = match body {
            RequestBody::Register => {
                let command = Command::Register {
                    now_ms: self.now_ms(),
                };
                self.node.propose(command.encode()).await
            }
            RequestBody::Write { session, seq, op } => {
                let command = Command::Request {
                    session,
                    seq,
                    now_ms: self.now_ms(),
                    op,
                };
                self.node.propose(command.encode()).await
            }
            RequestBody::Read { key } => {
                let query = postcard::to_allocvec(&Op::Get { key }).expect("ops always encode");
                self.node.linearizable_read(Bytes::from(query)).await
            }
            RequestBody::Status => return self.config.status_reply(self.node.status().await),
            RequestBody::MemberList => return self.list_members().await,
            RequestBody::Member(op) => return self.change(op).await,
            RequestBody::MoveLeader { id } => return self.move_leader(id).await,
            // The carrier checks tokens (the TCP server, before requests reach the service);
            // one that passes `Auth` on did not.
            RequestBody::Auth { .. } => return Reply::Unauthorized,
        };
        self.answer(result).await
    }

    /// The reply to `result`; a `NotLeader` names the leader's client address as the
    /// configuration records it (so that clients learn members added since they started),
    /// else as this server was started knowing it.
    async fn answer<O>(&self, result: Result<O, NodeError>) -> Reply<O> {
        if let Err(NodeError::NotLeader {
            leader_hint: Some(leader),
        }) = &result
        {
            if let Ok(status) = self.node.status().await {
                let recorded = status
                    .membership
                    .addrs()
                    .get(leader)
                    .map(|a| a.client_addr.clone())
                    .filter(|a| !a.is_empty());
                if let Some(addr) = recorded {
                    return Reply::NotLeader {
                        leader_hint: Some(addr),
                    };
                }
            }
        }
        self.config.reply(result)
    }

    /// The members of `membership`, voters first; an address the configuration does not
    /// record is filled in from what this server was started with (the initial members of a
    /// cluster started from a static peer list).
    pub fn members_of(&self, membership: &Membership, leader: Option<NodeId>) -> MemberList {
        let info = |id: NodeId, learner: bool| {
            let recorded = membership.addrs().get(&id);
            let pick = |recorded: Option<&String>, known: Option<&String>| {
                recorded
                    .filter(|a| !a.is_empty())
                    .or(known)
                    .cloned()
                    .unwrap_or_default()
            };
            MemberInfo {
                id,
                peer_addr: pick(
                    recorded.map(|a| &a.peer_addr),
                    self.config_peer_addr(id).as_ref(),
                ),
                client_addr: pick(
                    recorded.map(|a| &a.client_addr),
                    self.config.client_addrs.get(&id),
                ),
                learner,
            }
        };
        let mut members: Vec<MemberInfo> = membership
            .all_voters()
            .into_iter()
            .map(|id| info(id, false))
            .collect();
        members.extend(membership.learners().iter().map(|&id| info(id, true)));
        MemberList { leader, members }
    }

    /// The peer address this server was started knowing for `id` (none: a service knows
    /// client addresses only; the TCP server fills peer addresses in).
    fn config_peer_addr(&self, id: NodeId) -> Option<String> {
        self.peer_addrs.get(&id).cloned()
    }

    /// `MemberList`: the leader's configuration.
    async fn list_members(&self) -> Reply {
        match self.node.status().await {
            Ok(status) if status.leader == Some(status.id) => {
                Reply::Members(self.members_of(&status.membership, status.leader))
            }
            Ok(status) => {
                self.answer(Err::<Outcome, _>(NodeError::NotLeader {
                    leader_hint: status.leader,
                }))
                .await
            }
            Err(e) => self.config.reply(Err(e)),
        }
    }

    /// `Member(op)`: one change, through the leader's `change_membership`.
    async fn change(&self, op: MemberOp) -> Reply {
        let status = match self.node.status().await {
            Ok(status) => status,
            Err(e) => return self.config.reply(Err(e)),
        };
        let m = &status.membership;
        let change = match op {
            MemberOp::Add {
                id,
                peer_addr,
                client_addr,
                learner,
            } => {
                if peer_addr.is_empty()
                    || peer_addr.len() > MEMBER_ADDR_BYTES_MAX
                    || client_addr.len() > MEMBER_ADDR_BYTES_MAX
                {
                    return invalid(format!(
                        "node {id}: a peer address is required, and addresses may have at \
                         most {MEMBER_ADDR_BYTES_MAX} bytes"
                    ));
                }
                let addrs = MemberAddrs::new(peer_addr, client_addr);
                // A retried add (its first copy was applied): done.
                if m.contains(id) && m.addrs().get(&id) == Some(&addrs) {
                    return self.done(&status);
                }
                MemberChange::AddLearner {
                    id,
                    addrs,
                    auto_promote: !learner,
                }
            }
            MemberOp::Promote { id } => {
                if m.voters().contains(&id) && !m.is_joint() && status.leader == Some(status.id) {
                    return self.done(&status);
                }
                MemberChange::Promote { id }
            }
            MemberOp::Remove { id } => MemberChange::Remove { id },
        };
        match self.node.change_membership(vec![change]).await {
            Ok(membership) => {
                let leader = self.node.status().await.ok().and_then(|s| s.leader);
                Reply::Members(self.members_of(&membership, leader))
            }
            Err(e) => self.refused(e).await,
        }
    }

    /// `MoveLeader { id }`: thesis §3.10, through the leader's `transfer_leader`.
    async fn move_leader(&self, id: NodeId) -> Reply {
        match self.node.transfer_leader(id).await {
            Ok(()) => match self.node.status().await {
                Ok(status) => Reply::Members(self.members_of(&status.membership, Some(id))),
                Err(e) => self.config.reply(Err(e)),
            },
            Err(e) => self.refused(e).await,
        }
    }

    /// The configuration, answered for a request that was already carried out.
    fn done(&self, status: &Status) -> Reply {
        if status.leader != Some(status.id) {
            return self.config.reply(Err(NodeError::NotLeader {
                leader_hint: status.leader,
            }));
        }
        Reply::Members(self.members_of(&status.membership, status.leader))
    }

    /// The reply to a refused change or transfer.
    async fn refused(&self, e: ReconfigError) -> Reply {
        match e {
            ReconfigError::Node(e) => self.answer(Err(e)).await,
            ReconfigError::Refused(MembershipError::NotLeader { leader_hint }) => {
                self.answer(Err(NodeError::NotLeader { leader_hint })).await
            }
            ReconfigError::Refused(e) => {
                let kind = match e {
                    MembershipError::ChangeInProgress
                    | MembershipError::TransferInProgress { .. } => RefusalKind::InProgress,
                    MembershipError::NotCommittedInTerm => RefusalKind::Retry,
                    _ => RefusalKind::Invalid,
                };
                Reply::MembershipRefused {
                    kind,
                    message: e.to_string(),
                }
            }
            // `ReconfigError` may grow: whatever else is not retried.
            other => Reply::MembershipRefused {
                kind: RefusalKind::Invalid,
                message: other.to_string(),
            },
        }
    }
}

fn invalid(message: String) -> Reply {
    Reply::MembershipRefused {
        kind: RefusalKind::Invalid,
        message,
    }
}
