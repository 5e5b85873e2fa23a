//! Mutual TLS between transports (issue 21, Security): peers whose certificates the cluster's
//! CA signed exchange messages (on smol and on tokio); a peer with a certificate from another
//! CA, and a peer without TLS, are refused with one log line each and never deliver anything.
//! The certificates are made at test time.

mod common;

use common::*;
use raftkv_raft::NetRuntime;
use raftkv_transport_tcp::{PeerTls, TcpTransport, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// A CA and node certificates it signs, as PEM files in a directory.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes `ca.pem`, `<name>.pem` and `<name>.key` (valid for 127.0.0.1 and localhost)
    /// into `dir`.
    fn files(&self, dir: &Path, name: &str) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, self.cert.pem()).unwrap();
        files
    }
}

/// Transports 1 and 2 (each with its own TLS settings, `None`: plain TCP) on `runtime`.
fn pair<R: NetRuntime>(runtime: R, tls: [Option<PeerTls>; 2]) -> BTreeMap<u64, TcpTransport> {
    let listeners = [bind(), bind()];
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut out = BTreeMap::new();
    for (i, (listener, tls)) in listeners.into_iter().zip(tls).enumerate() {
        let id = i as u64 + 1;
        let other = 2 - i as u64;
        let mut config = config(id, BTreeMap::from([(other, addrs[other as usize - 1])]));
        config.tls = tls;
        out.insert(
            id,
            TcpTransport::start_on(runtime.clone(), config, listener).unwrap(),
        );
    }
    out
}

fn mutual_tls_peers_exchange_messages<R: NetRuntime>(runtime: R) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let tls = |name| Some(PeerTls::from_files(&ca.files(dir.path(), name)).unwrap());
    let mut c = pair(runtime, [tls("n1"), tls("n2")]);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
    drain(c.get_mut(&2).unwrap(), Duration::from_millis(50));
    // A burst larger than one TLS record arrives whole and in order.
    for seq in 0..500 {
        raftkv_raft::Transport::send(c.get_mut(&1).unwrap(), msg(1, 2, seq));
    }
    let got = drain(c.get_mut(&2).unwrap(), Duration::from_millis(500));
    let expected: Vec<_> = (0..500).map(|seq| msg(1, 2, seq)).collect();
    assert_eq!(got, expected);
    for t in c.values() {
        assert_eq!(t.stats().connections_refused, 0, "{:?}", t.stats());
    }
}

#[test]
fn mutual_tls_peers_exchange_messages_on_smol() {
    mutual_tls_peers_exchange_messages(runtime());
}

#[test]
fn mutual_tls_peers_exchange_messages_on_tokio() {
    mutual_tls_peers_exchange_messages(tokio());
}

/// Sends from 1 to 2 for a while; nothing may arrive, and 2 must refuse connections.
fn assert_refused(mut c: BTreeMap<u64, TcpTransport>) {
    for seq in 0..20 {
        raftkv_raft::Transport::send(c.get_mut(&1).unwrap(), msg(1, 2, seq));
        std::thread::sleep(Duration::from_millis(25));
    }
    let got = drain(c.get_mut(&2).unwrap(), Duration::from_millis(300));
    assert!(got.is_empty(), "delivered: {got:?}");
    let stats = c[&2].stats();
    assert!(stats.connections_refused >= 1, "{stats:?}");
    assert_eq!(stats.frames_received, 0, "{stats:?}");
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Ca::new("cluster CA");
    let theirs = Ca::new("another CA");
    let n2 = PeerTls::from_files(&ours.files(dir.path(), "n2")).unwrap();
    // n1 trusts our CA (so it would accept n2 as a server), but its own certificate is
    // another CA's: n2 refuses it.
    let mut n1 = theirs.files(dir.path(), "n1");
    n1.ca = ours.files(dir.path(), "unused").ca;
    let n1 = PeerTls::from_files(&n1).unwrap();
    assert_refused(pair(runtime(), [Some(n1), Some(n2)]));
}

#[test]
fn a_peer_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let n2 = PeerTls::from_files(&ca.files(dir.path(), "n2")).unwrap();
    assert_refused(pair(runtime(), [None, Some(n2)]));
}

#[test]
fn unreadable_tls_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let mut files = ca.files(dir.path(), "n1");
    files.key = dir.path().join("missing.key");
    let e = PeerTls::from_files(&files).unwrap_err().to_string();
    assert!(
        e.contains("private key") && e.contains("missing.key"),
        "{e}"
    );
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    files = ca.files(dir.path(), "n1");
    files.ca = dir.path().join("empty.pem");
    let e = PeerTls::from_files(&files).unwrap_err().to_string();
    assert!(
        e.contains("CA certificate") && e.contains("empty.pem"),
        "{e}"
    );
}

/// Certificates are replaced without a restart: a node whose certificate another CA signed is
/// refused until its peer's files are reissued by that CA and reloaded; then it connects. A
/// reload from broken files is an error that leaves the settings in force.
#[test]
fn reloaded_certificates_are_used_from_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let n2_files = old.files(dir.path(), "n2");
    let n2 = PeerTls::from_files(&n2_files).unwrap();
    let n1 = PeerTls::from_files(&new.files(dir.path(), "n1")).unwrap();
    let mut c = pair(runtime(), [Some(n1), Some(n2.clone())]);
    for seq in 0..10 {
        raftkv_raft::Transport::send(c.get_mut(&1).unwrap(), msg(1, 2, seq));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(drain(c.get_mut(&2).unwrap(), Duration::from_millis(200)).is_empty());
    assert!(c[&2].stats().connections_refused >= 1);

    assert_eq!(new.files(dir.path(), "n2"), n2_files, "reissued in place");
    n2.reload().unwrap();
    send_until_received(&mut c, 1, 2, 5 * SECOND);

    std::fs::write(&n2_files.key, "not a key\n").unwrap();
    let e = n2.reload().unwrap_err().to_string();
    assert!(e.contains("private key") && e.contains("n2.key"), "{e}");
    send_until_received(&mut c, 1, 2, 5 * SECOND);
}
