//! [`MeteredHandler`]: the KV service, counting every client request it answers by kind and
//! result, with its latency.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use raftkv_kv::protocol::{Reply, RequestBody};
use raftkv_kv::state::{KvError, Op, Outcome};

use super::NodeMetrics;
use crate::rpc::Handler;

/// A KV [`Handler`] that counts each answered request into
/// `raftkv_client_requests_total{op,result}` and `raftkv_client_request_seconds{op}`. Both
/// labels take values from closed sets (the request kinds and the answers), so the number of
/// series is bounded whatever clients send.
#[derive(Clone)]
pub struct MeteredHandler<H> {
    inner: H,
    metrics: NodeMetrics,
}

impl<H> MeteredHandler<H> {
    pub fn new(inner: H, metrics: NodeMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<H: Handler<Body = RequestBody, Outcome = Outcome>> Handler for MeteredHandler<H> {
    type Body = RequestBody;
    type Outcome = Outcome;

    fn handle(&self, peer: SocketAddr, body: RequestBody) -> impl Future<Output = Reply> + Send {
        let op = op_name(&body);
        let start = Instant::now();
        let answer = self.inner.handle(peer, body);
        async move {
            let reply = answer.await;
            self.metrics
                .client_request(op, result_name(&reply), start.elapsed().as_secs_f64());
            reply
        }
    }

    fn auth_token(body: &RequestBody) -> Option<&[u8]> {
        H::auth_token(body)
    }
}

/// A request's kind, as the `op` label names it. `get` is a read either way (ReadIndex or
/// through the log).
pub fn op_name(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Register => "register",
        RequestBody::Write { op, .. } => match op {
            Op::Get { .. } => "get",
            Op::Put { version: None, .. } => "put",
            Op::Put {
                version: Some(_), ..
            } => "put_if_version",
            Op::Append { .. } => "append",
            Op::Delete { .. } => "delete",
        },
        RequestBody::Read { .. } => "get",
        RequestBody::Status => "status",
        RequestBody::MemberList => "member_list",
        RequestBody::Member(_) => "member_change",
        RequestBody::MoveLeader { .. } => "move_leader",
        RequestBody::Auth { .. } => "auth",
    }
}

/// How a request was answered, as the `result` label names it.
pub fn result_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Done(Outcome::Err(e)) => match e {
            KvError::NoKey => "no_key",
            KvError::Version { .. } => "version_mismatch",
            KvError::SessionExpired => "session_expired",
            KvError::Stale => "stale",
            KvError::Malformed => "malformed",
            KvError::Forgotten => "forgotten",
            KvError::StoreFull => "store_full",
            _ => "error",
        },
        Reply::Done(_) | Reply::Status(_) | Reply::Members(_) => "ok",
        Reply::NotLeader { .. } => "not_leader",
        Reply::Timeout => "timeout",
        Reply::OutcomeUnknown => "outcome_unknown",
        Reply::Busy => "busy",
        Reply::TooLarge => "too_large",
        Reply::Unavailable(_) => "unavailable",
        Reply::MembershipRefused { .. } => "refused",
        Reply::Unauthorized => "unauthorized",
    }
}
