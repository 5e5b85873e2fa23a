//! TLS on real nodes (issue 21, Security): three `StandaloneNode`s with mutual TLS between
//! peers form a cluster and serve a Clerk that speaks TLS; a plaintext client is refused (a
//! prompt error, not a hang); with a client CA, a Clerk without a client certificate is
//! refused and one with a certificate the CA signed is served. Certificates are made at test
//! time.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftkv_kv::clerk::{CallError, Clerk, ClerkConfig, ClerkError};
use raftkv_node::standalone::{NodeTls, StandaloneConfig, StandaloneNode};
use raftkv_node::tcp_client::{TcpConnector, TcpConnectorConfig};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_transport_tcp::{ClientTls, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA that signs certificates valid for 127.0.0.1, written as PEM files.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Self { cert, key, pem }
    }

    /// A certificate and key for `name`, as files (certificate, key).
    fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn clerk(
    runtime: &TokioRuntime,
    addrs: &[String],
    tls: Option<ClientTls>,
    timeout: Duration,
) -> Clerk<TokioRuntime, TcpConnector<TokioRuntime>> {
    let connector = TcpConnectorConfig {
        tls,
        ..TcpConnectorConfig::default()
    };
    Clerk::new(
        runtime.clone(),
        TcpConnector::new(runtime.clone(), connector),
        addrs.to_vec(),
        ClerkConfig {
            timeout,
            ..ClerkConfig::default()
        },
    )
}

#[test]
fn mutual_tls_nodes_form_a_cluster_and_refuse_clients_without_tls() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "cluster-ca");
        let client_ca = Ca::new(dir.path(), "client-ca");
        let peers: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
        let clients: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let (cert, key) = ca.issue(dir.path(), &format!("n{id}"));
            let mut config = StandaloneConfig::new(id, peers.clone(), clients.clone(), None);
            config.tls = Some(NodeTls {
                files: TlsFiles {
                    cert,
                    key,
                    ca: ca.pem.clone(),
                },
                // Node 3 asks clients for a certificate the client CA signed.
                client_ca: (id == 3).then(|| client_ca.pem.clone()),
            });
            nodes.push(
                StandaloneNode::start(runtime.clone(), config)
                    .await
                    .unwrap(),
            );
        }
        let addrs: Vec<String> = clients.values().take(2).map(|a| a.to_string()).collect();
        let server_only = ClientTls::from_files(&ca.pem, None).unwrap();
        let (cert, key) = client_ca.issue(dir.path(), "client");
        let with_cert = ClientTls::from_files(&ca.pem, Some((&cert, &key))).unwrap();
        // With a client certificate: node 3 (perhaps the leader) asks for one.
        let mut ck = clerk(
            &runtime,
            &addrs,
            Some(with_cert.clone()),
            Duration::from_secs(15),
        );
        // The peers elected a leader over TLS, and the cluster serves a TLS client.
        ck.put("k", "over tls", None).await.unwrap();
        assert_eq!(&ck.get("k").await.unwrap().0[..], b"over tls");

        // A plaintext client is refused: an error well before its deadline, not a hang.
        let plain_addr = clients[&1].to_string();
        let plain = clerk(
            &runtime,
            std::slice::from_ref(&plain_addr),
            None,
            Duration::from_secs(5),
        );
        let started = Instant::now();
        let e = plain.server_status(&plain_addr).await.unwrap_err();
        assert!(
            matches!(
                e,
                ClerkError::Call {
                    error: CallError::Lost { .. }
                }
            ),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );

        // A TLS client that trusts another CA refuses the server.
        let other = Ca::new(dir.path(), "other-ca");
        let wrong = clerk(
            &runtime,
            std::slice::from_ref(&plain_addr),
            Some(ClientTls::from_files(&other.pem, None).unwrap()),
            Duration::from_secs(5),
        );
        let e = wrong.server_status(&plain_addr).await.unwrap_err();
        assert!(e.to_string().contains("TLS handshake failed"), "{e}");

        // Node 3 wants a client certificate: none is refused; the client CA's is served.
        let n3 = clients[&3].to_string();
        let anonymous = clerk(
            &runtime,
            std::slice::from_ref(&n3),
            Some(server_only),
            Duration::from_secs(5),
        );
        assert!(anonymous.server_status(&n3).await.is_err());
        let known = clerk(
            &runtime,
            std::slice::from_ref(&n3),
            Some(with_cert),
            Duration::from_secs(5),
        );
        let status = known.server_status(&n3).await.unwrap();
        assert_eq!(status.id, 3);

        for node in nodes {
            node.stop(&runtime).await;
        }
    });
}
