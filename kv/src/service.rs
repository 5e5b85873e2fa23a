//! [`KvService`]: one node's KV endpoint, independent of how requests arrive. The TCP server
//! (`raftkv_node::server`) and the simulator's client network both call [`KvService::handle`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use raftkv_raft::{Node, NodeError, NodeId, Runtime, StateMachine};

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
        let since_start = u64::try_from(self.runtime.now().as_millis()).unwrap_or(u64::MAX);
        self.config.clock_epoch_ms.saturating_add(since_start)
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
            RequestBody::Status => {
                return match self.node.status().await {
                    Ok(s) => Reply::Status(ServerStatus {
                        id: s.id,
                        role: s.role.to_string(),
                        term: s.term,
                        leader: s.leader,
                        commit_index: s.commit_index,
                        applied_index: s.applied_index,
                        first_index: s.first_index,
                        last_index: s.last_index,
                        snapshot_index: s.snapshot_index,
                    }),
                    Err(e) => self.reply_for(e),
                }
            }
        };
        match result {
            Ok(outcome) => Reply::Done(outcome),
            Err(e) => self.reply_for(e),
        }
    }

    fn reply_for(&self, error: NodeError) -> Reply {
        match error {
            NodeError::NotLeader { leader_hint } => Reply::NotLeader {
                leader_hint: leader_hint.and_then(|id| self.config.client_addrs.get(&id).cloned()),
            },
            NodeError::Timeout => Reply::Timeout,
            NodeError::OutcomeUnknown => Reply::OutcomeUnknown,
            NodeError::Busy(_) => Reply::Busy,
            NodeError::TooLarge(_) => Reply::TooLarge,
            e @ (NodeError::Shutdown | NodeError::Storage(_) | NodeError::Config(_)) => {
                Reply::Unavailable(e.to_string())
            }
        }
    }
}
