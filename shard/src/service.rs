//! [`ControllerService`]: one controller node's endpoint, independent of how requests arrive
//! (the simulator's client network in `testing` (feature `testing`); over TCP, `raftkv-node`'s
//! server).
//! Changes go through the Raft log; queries through ReadIndex — as `raftkv_kv::service`.

use std::sync::Arc;

use raftkv_kv::service::ServiceConfig;
use raftkv_raft::{Node, Runtime};

use crate::protocol::{CtrlReply, CtrlRequestBody};
use crate::state::{Command, ControllerStateMachine, Query};

/// One node's controller service: it turns client requests into proposals and ReadIndex reads.
pub struct ControllerService<R: Runtime> {
    node: Node<R, ControllerStateMachine>,
    runtime: R,
    config: Arc<ServiceConfig>,
}

impl<R: Runtime> Clone for ControllerService<R> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            runtime: self.runtime.clone(),
            config: self.config.clone(),
        }
    }
}

impl<R: Runtime> ControllerService<R> {
    /// `config` is the KV service's: the clock epoch for session timestamps and every node's
    /// client address (for `NotLeader` hints).
    pub fn new(node: Node<R, ControllerStateMachine>, runtime: R, config: ServiceConfig) -> Self {
        Self {
            node,
            runtime,
            config: Arc::new(config),
        }
    }

    /// The node behind this service.
    pub fn node(&self) -> &Node<R, ControllerStateMachine> {
        &self.node
    }

    fn now_ms(&self) -> u64 {
        self.config.now_ms(self.runtime.now())
    }

    /// Serves one request.
    pub async fn handle(&self, body: CtrlRequestBody) -> CtrlReply {
        let result = match body {
            CtrlRequestBody::Register => {
                let command = Command::Register {
                    now_ms: self.now_ms(),
                };
                self.node.propose(command.encode()).await
            }
            CtrlRequestBody::Change { session, seq, op } => {
                let command = Command::Request {
                    session,
                    seq,
                    now_ms: self.now_ms(),
                    op,
                };
                self.node.propose(command.encode()).await
            }
            CtrlRequestBody::Query { num } => {
                self.node.linearizable_read(Query { num }.encode()).await
            }
            CtrlRequestBody::Status => return self.config.status_reply(self.node.status().await),
        };
        self.config.reply(result)
    }
}
