//! The shared client token (issue 21, Security): a node started with one serves a Clerk that
//! gives it, and answers `Unauthorized` to one that gives none, a wrong one of the same
//! length, a prefix of it or a longer one (compared in constant time).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use raftkv_kv::clerk::{Clerk, ClerkConfig, ClerkError};
use raftkv_node::standalone::{StandaloneConfig, StandaloneNode};
use raftkv_node::tcp_client::{TcpConnector, TcpConnectorConfig};
use raftkv_raft::runtime::tokio::TokioRuntime;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn clerk(
    runtime: &TokioRuntime,
    addr: &str,
    token: Option<&str>,
) -> Clerk<TokioRuntime, TcpConnector<TokioRuntime>> {
    let connector = TcpConnectorConfig {
        token: token.map(Arc::from),
        ..TcpConnectorConfig::default()
    };
    Clerk::new(
        runtime.clone(),
        TcpConnector::new(runtime.clone(), connector),
        vec![addr.to_string()],
        ClerkConfig {
            timeout: Duration::from_secs(10),
            ..ClerkConfig::default()
        },
    )
}

#[test]
fn a_node_with_a_client_token_serves_only_clerks_that_give_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    rt.block_on(async move {
        let (peer, client) = (free_addr(), free_addr());
        let mut config = StandaloneConfig::new(
            1,
            BTreeMap::from([(1, peer)]),
            BTreeMap::from([(1, client)]),
            None,
        );
        config.client_token = Some("s3cret-token".into());
        let node = StandaloneNode::start(runtime.clone(), config)
            .await
            .unwrap();
        let addr = client.to_string();

        let mut ck = clerk(&runtime, &addr, Some("s3cret-token"));
        ck.put("k", "v", None).await.unwrap();
        assert_eq!(&ck.get("k").await.unwrap().0[..], b"v");
        assert_eq!(ck.server_status(&addr).await.unwrap().id, 1);

        for wrong in [
            None,
            Some("s3cret-tokem"),
            Some("s3cret"),
            Some("s3cret-token!"),
        ] {
            let mut ck = clerk(&runtime, &addr, wrong);
            assert_eq!(
                ck.put("k", "w", None).await,
                Err(ClerkError::Unauthorized),
                "token {wrong:?}"
            );
            assert_eq!(
                ck.get("k").await,
                Err(ClerkError::Unauthorized),
                "token {wrong:?}"
            );
        }
        // Nothing of the refused writes was applied.
        assert_eq!(ck.get("k").await.unwrap(), (bytes::Bytes::from("v"), 1));
        node.stop(&runtime).await;
    });
}
