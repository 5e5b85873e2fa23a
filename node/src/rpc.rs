//! [`Handler`]: what [`crate::server::KvServer`] serves — any request/reply protocol in the
//! client frame (`{id, body}` in, `{id, reply}` out, the answer in kv's generic [`Reply`]).
//! The KV service is one; the shard controller and the replica groups (`crate::sharded`) are
//! the others, so one server and one connector ([`crate::tcp_client::TcpConnector`]) carry
//! every protocol of the deployment.
//!
//! The frames here have the layout of kv's `ClientRequest`/`ClientResponse` (postcard writes a
//! struct's fields in order, with no names): a KV request is the same bytes either way.

use std::future::Future;
use std::net::SocketAddr;

use raftkv_kv::protocol::{Reply, RequestBody};
use raftkv_kv::service::KvService;
use raftkv_kv::state::Outcome;
use raftkv_raft::{Runtime, StateMachine};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A protocol a server answers: requests of type `Body`, answers `Reply<Outcome>`.
pub trait Handler: Clone + Send + Sync + 'static {
    /// What a client asks.
    type Body: DeserializeOwned + Send + 'static;
    /// The service's answer inside [`Reply::Done`].
    type Outcome: Serialize + Send + 'static;

    /// Serves one request that arrived from `peer` (the connection's remote address).
    fn handle(
        &self,
        peer: SocketAddr,
        body: Self::Body,
    ) -> impl Future<Output = Reply<Self::Outcome>> + Send;

    /// The client token `body` carries, if it is the protocol's authentication request (the
    /// first request of every connection to a server started with a client token). A protocol
    /// without one (the default) cannot be served with a token: every request is refused.
    fn auth_token(body: &Self::Body) -> Option<&[u8]> {
        let _ = body;
        None
    }
}

/// A request frame: the client's id, echoed in the answer, and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame<B> {
    pub id: u64,
    pub body: B,
}

/// An answer frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame<O> {
    pub id: u64,
    pub reply: Reply<O>,
}

impl<R: Runtime, M: StateMachine<Response = Outcome>> Handler for KvService<R, M> {
    type Body = RequestBody;
    type Outcome = Outcome;

    fn handle(&self, _peer: SocketAddr, body: RequestBody) -> impl Future<Output = Reply> + Send {
        KvService::handle(self, body)
    }

    fn auth_token(body: &RequestBody) -> Option<&[u8]> {
        match body {
            RequestBody::Auth { token } => Some(token.as_bytes()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use raftkv_kv::protocol::{ClientRequest, ClientResponse};
    use raftkv_transport_tcp::Codec;

    use super::*;

    /// The generic frames are kv's frames byte for byte: old clients and servers interoperate.
    #[test]
    fn generic_frames_have_kv_frames_bytes() {
        let codec = Codec::new(1 << 20);
        let body = RequestBody::Read {
            key: bytes::Bytes::from_static(b"k"),
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        codec
            .encode(
                &ClientRequest {
                    id: 7,
                    body: body.clone(),
                },
                &mut a,
            )
            .unwrap();
        codec.encode(&RequestFrame { id: 7, body }, &mut b).unwrap();
        assert_eq!(a, b);
        let reply: Reply = Reply::NotLeader {
            leader_hint: Some("127.0.0.1:1".into()),
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        codec
            .encode(
                &ClientResponse {
                    id: 9,
                    reply: reply.clone(),
                },
                &mut a,
            )
            .unwrap();
        codec
            .encode(&ResponseFrame { id: 9, reply }, &mut b)
            .unwrap();
        assert_eq!(a, b);
    }
}
