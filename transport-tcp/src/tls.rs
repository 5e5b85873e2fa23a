//! TLS (rustls) over any `futures` socket, so that every runtime shares one implementation:
//! the peer transport, the KV server and the KV client all wrap the runtime's socket in a
//! [`MaybeTls`] stream.
//!
//! - [`PeerTls`]: mutual TLS between the nodes of a cluster. Each node presents its
//!   certificate and key, and checks the other side's certificate against the cluster's CA,
//!   both ways: a connection from (or to) a node whose certificate another CA signed fails its
//!   handshake and is closed. The name a node's certificate must hold is the host of its peer
//!   address (an IP address or a DNS name), as a client checks a server's.
//! - [`ServerTls`] / [`ClientTls`]: the KV client port, where client certificates are
//!   optional (required only when the server is given a client CA).
//!
//! Certificates and keys are read from PEM files. Each of the three can be reloaded from its
//! files while in use (`reload`, e.g. on `SIGHUP` in `raftkv serve`): every clone of it sees
//! the new certificates at its next handshake; connections already open keep theirs; files
//! that fail to load leave the old settings in force. The crypto provider is `ring`, chosen per
//! configuration (no process-wide default is installed). TLS 1.3 and 1.2 are accepted; no
//! session tickets are sent (connections are few and long-lived, and peers never read after
//! their handshake).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncWrite};
use futures::pin_mut;
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use raftkv_raft::Runtime;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

/// Why TLS settings could not be made from their files.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("TLS {what} {path}: {reason}")]
    File {
        /// "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificates or keys (a key that does not match its certificate, a
    /// CA that is not a valid certificate...).
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA certificates.
    #[error("TLS client verification: {0}")]
    Verifier(String),
}

/// The paths of one node's PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (its own certificate first).
    pub cert: PathBuf,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates that sign the cluster's node certificates.
    pub ca: PathBuf,
}

/// rustls with *ring*: its default provider is deprecated for lacking post-quantum key
/// exchange (aws-lc-rs has it, but needs cmake and builds far slower).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// A configuration replaced as a whole by `reload`; every clone shares the latest.
struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    fn new(config: Arc<T>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    fn get(&self) -> Arc<T> {
        // A poisoned lock still holds a whole configuration: replacing it is one assignment.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, config: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// The server side of TLS: this node's certificate, and who may connect.
#[derive(Clone)]
pub struct ServerTls {
    config: Live<ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The client side of TLS: which servers to trust, and this side's certificate if any.
#[derive(Clone)]
pub struct ClientTls {
    config: Live<ClientConfig>,
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

impl ServerTls {
    /// This node's certificate `cert` and key `key`; with `client_ca`, clients must present a
    /// certificate signed by it, else none is asked for.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        Ok(Self {
            config: Live::new(server_config(cert, key, client_ca)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
        })
    }

    /// Reads the files again; later handshakes (of every clone) use them. On an error the
    /// settings in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key, self.client_ca.as_deref())?;
        self.config.set(config);
        Ok(())
    }

    /// The server side of a handshake (see `accept`).
    pub async fn accept<R: Runtime, S>(
        &self,
        runtime: &R,
        socket: S,
        timeout: Duration,
    ) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        accept(runtime, &self.config.get(), socket, timeout).await
    }
}

impl ClientTls {
    /// Servers must present a certificate signed by `ca` for the name dialled; with
    /// `identity` (certificate, key), this side presents it when asked.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        Ok(Self {
            config: Live::new(client_config(ca, identity)?),
            ca: ca.to_path_buf(),
            identity: identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
        })
    }

    /// Reads the files again; later handshakes (of every clone) use them. On an error the
    /// settings in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let identity = self
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        self.config.set(client_config(&self.ca, identity)?);
        Ok(())
    }

    /// The client side of a handshake with the server at `addr` (see `connect`).
    pub async fn connect<R: Runtime, S>(
        &self,
        runtime: &R,
        addr: &str,
        socket: S,
        timeout: Duration,
    ) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        connect(runtime, &self.config.get(), addr, socket, timeout).await
    }
}

fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs(cert, "certificate")?, key(key_path)?)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some((cert, key_path)) => {
            builder.with_client_auth_cert(certs(cert, "certificate")?, key(key_path)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Both sides of mutual TLS from a node's files.
fn peer_configs(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    Ok((
        server_config(&files.cert, &files.key, Some(&files.ca))?,
        client_config(&files.ca, Some((&files.cert, &files.key)))?,
    ))
}

/// Mutual TLS between the nodes of a cluster: both sides present a certificate, and both
/// check the other's against the cluster's CA.
#[derive(Clone)]
pub struct PeerTls {
    server: Live<ServerConfig>,
    client: Live<ClientConfig>,
    files: TlsFiles,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

impl PeerTls {
    /// Reads the node's certificate, key and the cluster's CA.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        let (server, client) = peer_configs(files)?;
        Ok(Self {
            server: Live::new(server),
            client: Live::new(client),
            files: files.clone(),
        })
    }

    /// Reads the files again (certificate, key and CA); later handshakes, both ways and of
    /// every clone, use them. On an error the settings in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (server, client) = peer_configs(&self.files)?;
        self.server.set(server);
        self.client.set(client);
        Ok(())
    }

    /// Accepts a peer's connection (see `accept`).
    pub async fn accept<R: Runtime, S>(
        &self,
        runtime: &R,
        socket: S,
        timeout: Duration,
    ) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        accept(runtime, &self.server.get(), socket, timeout).await
    }

    /// Opens TLS to the peer at `addr` (see `connect`).
    pub async fn connect<R: Runtime, S>(
        &self,
        runtime: &R,
        addr: &str,
        socket: S,
        timeout: Duration,
    ) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        connect(runtime, &self.client.get(), addr, socket, timeout).await
    }
}

/// The server side of a handshake, within `timeout`. A client that does not speak TLS (a
/// plaintext frame) fails it at once with `InvalidData`; one that stalls, with `TimedOut`.
async fn accept<R: Runtime, S>(
    runtime: &R,
    config: &Arc<ServerConfig>,
    socket: S,
    timeout: Duration,
) -> io::Result<MaybeTls<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = TlsAcceptor::from(config.clone()).accept(socket);
    let stream = within(runtime, handshake, timeout).await?;
    Ok(MaybeTls::Tls(Box::new(stream.into())))
}

/// The client side of a handshake with the server at `addr` ("host:port"; the server's
/// certificate must name the host), within `timeout`.
async fn connect<R: Runtime, S>(
    runtime: &R,
    config: &Arc<ClientConfig>,
    addr: &str,
    socket: S,
    timeout: Duration,
) -> io::Result<MaybeTls<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = server_name(addr)?;
    let handshake = TlsConnector::from(config.clone()).connect(name, socket);
    let stream = within(runtime, handshake, timeout).await?;
    Ok(MaybeTls::Tls(Box::new(stream.into())))
}

/// The name a server at `addr` (`"host:port"`, `"[v6]:port"`) must hold in its certificate.
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}: not a name TLS can check: {e}"),
        )
    })
}

/// `handshake`, failing with `TimedOut` after `timeout`.
async fn within<R: Runtime, T>(
    runtime: &R,
    handshake: impl std::future::Future<Output = io::Result<T>>,
    timeout: Duration,
) -> io::Result<T> {
    let timer = runtime.sleep(timeout);
    pin_mut!(handshake, timer);
    match select(handshake, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {timeout:?}"),
        )),
    }
}

/// A socket, in plain text or inside TLS.
pub enum MaybeTls<S> {
    /// Plain TCP.
    Plain(S),
    /// After a completed handshake, either side.
    Tls(Box<futures_rustls::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
