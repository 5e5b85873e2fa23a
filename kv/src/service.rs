//! [`KvService`]: one node's KV endpoint, independent of how requests arrive. The TCP server
//! (`raftkv_node::server`) and the simulator's client network both call [`KvService::handle`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use raftkv_raft::{Node, NodeError, NodeId, Runtime, StateMachine, Status};

use crate::protocol::{Reply, RequestBody, ServerStatus};
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
}

impl<R: Runtime, M: StateMachine<Response = Outcome>> Clone for KvService<R, M> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            runtime: self.runtime.clone(),
            config: self.config.clone(),
        }
    }
}

impl<R: Runtime, M: StateMachine<Response = Outcome>> KvService<R, M> {
    pub fn new(node: Node<R, M>, runtime: R, config: ServiceConfig) -> Self {
        Self {
            node,
            runtime,
            config: Arc::new(config),
        }
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
        };
        self.config.reply(result)
    }
}
