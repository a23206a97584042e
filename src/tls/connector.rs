//! [`TlsConnector`]: a TLS handshake on top of whatever another connector dials.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use super::{ALPN_H2, NameSource, TlsConfig, TlsError, parse_server_name};
use crate::connector::{BoxedIo, ConnectFuture, Connector};

/// Dials with an inner [`Connector`], then performs a TLS handshake over the stream, verifying
/// the server's certificate against one server name. Each call is a new connection with its own
/// handshake, bounded by the subchannel's connect timeout like the dial itself.
///
/// [`ChannelBuilder::tls`](crate::channel::ChannelBuilder::tls) builds one around the channel's
/// connector; build one directly only to use TLS outside a channel.
///
/// # Errors
/// A failed handshake is an [`io::Error`] whose message starts with `TLS handshake failed` and
/// says why in words: `unknown CA`, `name mismatch`, `certificate required` (the server wants a
/// client certificate), followed by rustls's own reason. The subchannel reports it as its
/// connection error, so it reaches the `UNAVAILABLE` status of the RPCs that fail because of
/// it. An alert the server sends right after the handshake (TLS 1.3 servers check the client's
/// certificate then) fails the first read with the same kind of message.
#[derive(Clone)]
pub struct TlsConnector {
    inner: Arc<dyn Connector>,
    tls: tokio_rustls::TlsConnector,
    /// [`NameSource::Fixed`] or [`NameSource::Dialed`].
    name: NameSource,
}

impl TlsConnector {
    /// TLS over `inner`, with `config`, verifying `authority_host` unless `config` names another
    /// server name.
    ///
    /// # Errors
    /// [`TlsError::ServerName`] when the name to verify is no DNS name or IP address;
    /// [`TlsError::Rejected`] when rustls refuses the settings.
    pub fn new(
        inner: Arc<dyn Connector>,
        config: &TlsConfig,
        authority_host: &str,
    ) -> Result<Self, TlsError> {
        let name = config.name_for(authority_host)?;
        let tls = tokio_rustls::TlsConnector::from(config.client_config()?);
        Ok(Self { inner, tls, name })
    }

    /// The name the server's certificate is verified against; `None` when each connection
    /// verifies the host it dials ([`TlsConfig::verify_dialed_host`]).
    pub fn server_name(&self) -> Option<String> {
        match &self.name {
            NameSource::Fixed(name) => Some(name.to_str().into_owned()),
            _ => None,
        }
    }

    /// The name to verify on a connection to `addr` (`host:port`).
    fn name_for(&self, addr: &str) -> io::Result<ServerName<'static>> {
        match &self.name {
            NameSource::Fixed(name) => Ok(name.clone()),
            _ => {
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                parse_server_name(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    }
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("inner", &self.inner)
            .field("server_name", &self.server_name())
            .finish_non_exhaustive()
    }
}

impl Connector for TlsConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let name = match self.name_for(addr) {
            Ok(name) => name,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let dial = self.inner.connect(addr);
        let tls = self.tls.clone();
        Box::pin(async move {
            let io = dial.await?;
            let stream = tls.connect(name.clone(), io).await.map_err(|e| {
                rewrite(e, &format!("TLS handshake failed (server name {:?})", name.to_str()))
            })?;
            let alpn = stream.get_ref().1.alpn_protocol();
            if alpn != Some(ALPN_H2) {
                let got =
                    alpn.map_or("none".to_owned(), |p| format!("{:?}", String::from_utf8_lossy(p)));
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "TLS handshake failed: the server did not select ALPN \"h2\" (got {got})"
                    ),
                ));
            }
            Ok(Box::new(TlsIo { stream }) as BoxedIo)
        })
    }

    fn min_keepalive_interval(&self) -> Duration {
        self.inner.min_keepalive_interval()
    }
}

/// The client's TLS stream, whose read errors say in words what a TLS alert means.
struct TlsIo {
    stream: TlsStream<BoxedIo>,
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.get_mut().stream).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(rewrite(e, "TLS"))),
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    crate::io::forward_async_write!(stream, write_failed);
}

impl TlsIo {
    /// A write failed: if the server sent a TLS alert first (TLS 1.3 servers refuse a missing
    /// client certificate with one, after the handshake, and close), the alert is why, and it
    /// waits unread; say that rather than "broken pipe".
    fn write_failed(&mut self, error: io::Error, cx: &mut Context<'_>) -> io::Error {
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Err(alert)) if alert.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
                rewrite(alert, "TLS")
            }
            _ => rewrite(error, "TLS"),
        }
    }
}

/// `error` with `context` and, when it carries a rustls error, that error in words.
fn rewrite(error: io::Error, context: &str) -> io::Error {
    let words = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or_else(|| error.to_string(), describe);
    io::Error::new(error.kind(), format!("{context}: {words}"))
}

/// What a rustls error means to someone setting up TLS, then rustls's own words.
pub(super) fn describe(error: &rustls::Error) -> String {
    let meaning = match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown CA: the server's certificate does not chain to a trusted root"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "name mismatch: the server's certificate is not valid for the name verified",
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired",
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "certificate required: the server requires a client certificate (mTLS) and this \
             channel has none"
        }
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown,
        ) => "the server rejected this channel's client certificate",
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            "the server does not speak ALPN \"h2\" (HTTP/2)"
        }
        rustls::Error::InvalidMessage(_) => "the peer does not speak TLS",
        _ => return error.to_string(),
    };
    format!("{meaning} ({error})")
}
