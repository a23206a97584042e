//! TLS with rustls (the `ring` crypto provider: no OpenSSL, no system libraries) for channels
//! and servers.
//!
//! - [`TlsConfig`] is a client's side: which roots it trusts (PEM, or the Mozilla roots that
//!   `webpki-roots` carries), which server name it verifies, and an optional client certificate
//!   for mTLS. [`ChannelBuilder::tls`](crate::channel::ChannelBuilder::tls) puts it under every
//!   subchannel through [`TlsConnector`], which wraps the channel's [`Connector`](crate::connector::Connector)
//!   (so a simulated network's connector gets TLS too).
//! - [`ServerTlsConfig`] is a server's side: its certificate chain and key, and optionally the
//!   CA whose client certificates it requires (mTLS).
//!   [`TlsListener`](crate::server::TlsListener) puts it under any listener.
//!
//! Both sides offer ALPN `h2` only, as gRPC does, and each refuses a peer that does not
//! negotiate it (RFC 9113 §3.2; grpc-go clients and servers do the same since 1.67).
//!
//! ```
//! use anchorage::tls::TlsConfig;
//!
//! // Trust the Mozilla roots and verify the name in the channel's `:authority`.
//! let public = TlsConfig::with_webpki_roots();
//! // Verify a fixed name instead, whatever the `:authority`.
//! let pinned = TlsConfig::with_webpki_roots().server_name("api.example.com")?;
//! # Ok::<_, anchorage::tls::TlsError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

mod connector;

pub use connector::TlsConnector;

/// The ALPN protocol gRPC runs on.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors in TLS settings: unreadable files, PEM without what it should hold, keys that do not
/// match, names that are no server name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("tls: cannot read {what} file {path:?}: {source}")]
    Read {
        /// What the file was to hold (`CA certificates`, `certificate chain`, `private key`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM input holds no `CERTIFICATE` block, or one that does not decode.
    #[error("tls: {what} ({origin}): {reason}")]
    NoCertificates {
        /// What the input was to hold.
        what: &'static str,
        /// Where the input came from: a file name, or `PEM bytes`.
        origin: String,
        /// Why no certificate was read.
        reason: String,
    },
    /// The PEM input holds no private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    #[error("tls: private key ({origin}): {reason}")]
    NoPrivateKey {
        /// Where the input came from: a file name, or `PEM bytes`.
        origin: String,
        /// Why no key was read.
        reason: String,
    },
    /// rustls refused a certificate or key: a CA certificate it cannot use as a root, a key of
    /// an unsupported kind, or a key that does not match its certificate.
    #[error("tls: {what}: {reason}")]
    Rejected {
        /// What was refused.
        what: &'static str,
        /// rustls's reason.
        reason: String,
    },
    /// The name to verify is not a DNS name or an IP address.
    #[error("tls: server name {name:?} is not a DNS name or an IP address: {reason}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
}

/// The `ring` provider, built once per config.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file, naming it in the error.
fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Every `CERTIFICATE` block in `pem`; at least one.
fn certificates(
    pem: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error =
        |reason: String| TlsError::NoCertificates { what, origin: origin.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

/// The first private key in `pem`.
fn private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::NoPrivateKey {
        origin: origin.to_owned(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".to_owned(),
            other => other.to_string(),
        },
    })
}

/// A root store holding every certificate in `certs`.
fn root_store(
    certs: &[CertificateDer<'static>],
    what: &'static str,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| TlsError::Rejected { what, reason: e.to_string() })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key.
#[derive(Clone)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    fn from_pem(cert: &[u8], key: &[u8], origin: (&str, &str)) -> Result<Self, TlsError> {
        Ok(Self {
            chain: certificates(cert, "certificate chain", origin.0)?,
            key: Arc::new(private_key(key, origin.1)?),
        })
    }

    fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = (read(cert, "certificate chain")?, read(key, "private key")?);
        let origin = (cert.display().to_string(), key.display().to_string());
        Self::from_pem(&cert_pem, &key_pem, (&origin.0, &origin.1))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

/// Which roots a client trusts.
#[derive(Clone)]
enum Roots {
    /// The certificates given.
    Pem(Vec<CertificateDer<'static>>),
    /// The Mozilla roots in `webpki-roots`.
    Webpki,
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The count, not the bytes.
        match self {
            Roots::Pem(certs) => write!(f, "Pem({} certificates)", certs.len()),
            Roots::Webpki => f.write_str("Webpki"),
        }
    }
}

/// Which name a server's certificate is verified against.
#[derive(Debug, Clone)]
pub(crate) enum NameSource {
    /// The channel's `:authority` host.
    Authority,
    /// This name, on every connection.
    Fixed(ServerName<'static>),
    /// The host of the address each connection dials.
    Dialed,
}

/// A client's TLS settings: trusted roots, the server name to verify and an optional client
/// certificate. Give it to [`ChannelBuilder::tls`](crate::channel::ChannelBuilder::tls).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    roots: Roots,
    name: NameSource,
    identity: Option<Identity>,
}

impl TlsConfig {
    /// Trusts the Mozilla root certificates that `webpki-roots` carries (the same set browsers
    /// use), not the operating system's store.
    pub fn with_webpki_roots() -> Self {
        Self { roots: Roots::Webpki, name: NameSource::Authority, identity: None }
    }

    /// Trusts the certificates in `pem` (one or more `CERTIFICATE` blocks), and no others.
    ///
    /// # Errors
    /// [`TlsError::NoCertificates`] when `pem` holds none; [`TlsError::Rejected`] when one
    /// cannot serve as a root.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        Self::with_roots(certificates(pem, "CA certificates", "PEM bytes")?)
    }

    /// Trusts the certificates in the PEM file at `path`, and no others.
    ///
    /// # Errors
    /// [`TlsError::Read`] naming the file, and the errors of [`with_ca_pem`](Self::with_ca_pem).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let pem = read(path, "CA certificates")?;
        Self::with_roots(certificates(&pem, "CA certificates", &path.display().to_string())?)
    }

    fn with_roots(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        root_store(&certs, "CA certificate")?;
        Ok(Self { roots: Roots::Pem(certs), name: NameSource::Authority, identity: None })
    }

    /// Verifies the server's certificate against `name` (a DNS name or an IP address) instead
    /// of the channel's `:authority` host. Default: the `:authority` host (DESIGN §2.5).
    ///
    /// # Errors
    /// [`TlsError::ServerName`] when `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsError> {
        self.name = NameSource::Fixed(parse_server_name(name)?);
        Ok(self)
    }

    /// Verifies each connection's server against the host of the address that connection dials
    /// (its resolved address) instead of one name for the whole channel. For lists of
    /// endpoints that each present their own certificate, such as etcd members reached
    /// through an `https://` endpoint list (etcd's Go client verifies each endpoint's own
    /// name too). A connection whose address has no valid host fails to connect. Overrides
    /// [`server_name`](Self::server_name), and is overridden by a later call to it.
    pub fn verify_dialed_host(mut self) -> Self {
        self.name = NameSource::Dialed;
        self
    }

    /// Presents this client certificate chain and key when the server asks for one (mTLS).
    /// Default: no client certificate.
    ///
    /// # Errors
    /// [`TlsError::NoCertificates`] / [`TlsError::NoPrivateKey`] for PEM without them;
    /// [`TlsError::Rejected`] for a key rustls cannot use or one that does not match the
    /// certificate.
    pub fn identity_pem(self, cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        self.with_identity(Identity::from_pem(cert_chain, key, ("PEM bytes", "PEM bytes"))?)
    }

    /// [`identity_pem`](Self::identity_pem) from PEM files.
    ///
    /// # Errors
    /// [`TlsError::Read`] naming an unreadable file, and those of
    /// [`identity_pem`](Self::identity_pem).
    pub fn identity_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        self.with_identity(Identity::from_files(cert_chain.as_ref(), key.as_ref())?)
    }

    fn with_identity(mut self, identity: Identity) -> Result<Self, TlsError> {
        self.identity = Some(identity);
        self.client_config()?;
        Ok(self)
    }

    /// For a list of endpoints that each have their own name (etcd members): verifies each
    /// dialed host, unless a server name was given.
    pub(crate) fn for_endpoints(mut self) -> Self {
        if matches!(self.name, NameSource::Authority) {
            self.name = NameSource::Dialed;
        }
        self
    }

    /// Where the name to verify comes from: [`NameSource::Authority`] resolved to
    /// `authority_host`.
    pub(crate) fn name_for(&self, authority_host: &str) -> Result<NameSource, TlsError> {
        Ok(match &self.name {
            NameSource::Authority => NameSource::Fixed(parse_server_name(authority_host)?),
            other => other.clone(),
        })
    }

    /// The rustls client config: roots, client certificate, ALPN `h2`.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.roots {
            Roots::Pem(certs) => root_store(certs, "CA certificate")?,
            Roots::Webpki => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected { what: "protocol versions", reason: e.to_string() })?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|e| TlsError::Rejected {
                    what: "client certificate and key",
                    reason: e.to_string(),
                })?,
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Parses a server name: a DNS name or an IP address; brackets around an IPv6 literal (as in
/// an authority) are dropped.
pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|e| TlsError::ServerName { name: name.to_owned(), reason: e.to_string() })
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA whose client
/// certificates it requires (mTLS). Give it to [`TlsListener`](crate::server::TlsListener).
#[derive(Clone)]
pub struct ServerTlsConfig {
    identity: Identity,
    client_roots: Option<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts, not the bytes (and never the key).
        f.debug_struct("ServerTlsConfig")
            .field("identity", &self.identity)
            .field("client_roots", &self.client_roots.as_ref().map(Vec::len))
            .finish()
    }
}

impl ServerTlsConfig {
    /// A server presenting `cert_chain` (PEM, its own certificate first) with `key` (PEM).
    ///
    /// # Errors
    /// [`TlsError::NoCertificates`] / [`TlsError::NoPrivateKey`] for PEM without them;
    /// [`TlsError::Rejected`] for a key rustls cannot use or one that does not match the
    /// certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let identity = Identity::from_pem(cert_chain, key, ("PEM bytes", "PEM bytes"))?;
        Self::checked(Self { identity, client_roots: None })
    }

    /// [`from_pem`](Self::from_pem) from PEM files.
    ///
    /// # Errors
    /// [`TlsError::Read`] naming an unreadable file, and those of [`from_pem`](Self::from_pem).
    pub fn from_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let identity = Identity::from_files(cert_chain.as_ref(), key.as_ref())?;
        Self::checked(Self { identity, client_roots: None })
    }

    /// Requires every client to present a certificate that chains to one in `pem` (mTLS); a
    /// client without one fails the handshake. Default: no client certificate asked for.
    ///
    /// # Errors
    /// [`TlsError::NoCertificates`] when `pem` holds none; [`TlsError::Rejected`] when one
    /// cannot serve as a root.
    pub fn client_ca_pem(self, pem: &[u8]) -> Result<Self, TlsError> {
        let certs = certificates(pem, "client CA certificates", "PEM bytes")?;
        Self::checked(Self { client_roots: Some(certs), ..self })
    }

    /// [`client_ca_pem`](Self::client_ca_pem) from a PEM file.
    ///
    /// # Errors
    /// [`TlsError::Read`] naming the file, and those of [`client_ca_pem`](Self::client_ca_pem).
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let pem = read(path, "client CA certificates")?;
        let certs = certificates(&pem, "client CA certificates", &path.display().to_string())?;
        Self::checked(Self { client_roots: Some(certs), ..self })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.client_roots.is_some()
    }

    fn checked(self) -> Result<Self, TlsError> {
        self.server_config()?;
        Ok(self)
    }

    /// The rustls server config: certificate, client verification, ALPN `h2`.
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected { what: "protocol versions", reason: e.to_string() })?;
        let builder = match &self.client_roots {
            None => builder.with_no_client_auth(),
            Some(certs) => {
                let roots = Arc::new(root_store(certs, "client CA certificate")?);
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| TlsError::Rejected {
                            what: "client CA certificates",
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(|e| TlsError::Rejected {
                what: "server certificate and private key",
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}
