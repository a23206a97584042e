//! Pieces the long-running subcommands share: stop signals, line output, errors, logging,
//! durations and TLS flags.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anchorage::etcd::{Endpoints, EtcdClientBuilder};
use anchorage::tls::{ServerTlsConfig, TlsConfig, TlsError};

/// TLS flags of an etcd client (`register`, `serve --register`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct EtcdTlsArgs {
    /// Speak TLS to etcd, trusting only the CA certificates in this PEM file; each endpoint's
    /// certificate must name that endpoint's host. Without it, `https://` endpoints trust the
    /// Mozilla root certificates built in (webpki-roots).
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// A client builder for `endpoints` with the TLS the flags and the endpoints ask for.
    ///
    /// # Errors
    /// A message starting with `--etcd-ca` when its file cannot be used.
    pub(crate) fn client_builder(&self, endpoints: Endpoints) -> Result<EtcdClientBuilder, String> {
        let builder = EtcdClientBuilder::default().endpoints(endpoints);
        Ok(match &self.etcd_ca {
            None => builder,
            Some(path) => {
                builder.tls(TlsConfig::with_ca_file(path).map_err(|e| format!("--etcd-ca: {e}"))?)
            }
        })
    }
}

/// TLS flags of a client (`probe`): any of them turns TLS on.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct TlsClientArgs {
    /// Speak TLS. Without --ca, trust the Mozilla root certificates built in (webpki-roots).
    /// Implied by --ca, --server-name and --cert.
    #[arg(long)]
    tls: bool,
    /// Speak TLS, trusting only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Speak TLS, verifying this name in the server's certificate instead of the host of the
    /// target's authority.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Speak TLS, presenting this client certificate chain (PEM) to servers that ask (mTLS).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl TlsClientArgs {
    /// The TLS settings the flags ask for; `None` for plaintext.
    ///
    /// # Errors
    /// A message naming the flag and the file or name that is wrong.
    pub(crate) fn config(&self) -> Result<Option<TlsConfig>, String> {
        if !(self.tls || self.ca.is_some() || self.server_name.is_some() || self.cert.is_some()) {
            return Ok(None);
        }
        let mut config = match &self.ca {
            Some(path) => TlsConfig::with_ca_file(path).map_err(|e| format!("--ca: {e}"))?,
            None => TlsConfig::with_webpki_roots(),
        };
        if let Some(name) = &self.server_name {
            config = config.server_name(name).map_err(|e| format!("--server-name: {e}"))?;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config
                .identity_files(cert, key)
                .map_err(|e| identity_error(&e, "--cert", "--key"))?;
        }
        Ok(Some(config))
    }
}

/// TLS flags of a server (`serve`, `audit-serve`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct TlsServerArgs {
    /// Serve TLS with this certificate chain (PEM, the server's own certificate first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by a CA in this PEM file (mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

impl TlsServerArgs {
    /// The TLS settings the flags ask for; `None` for plaintext.
    ///
    /// # Errors
    /// A message naming the flag and the file that is wrong.
    pub(crate) fn config(&self) -> Result<Option<ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::from_files(cert, key)
            .map_err(|e| identity_error(&e, "--tls-cert", "--tls-key"))?;
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_file(ca).map_err(|e| format!("--client-ca: {e}"))?;
        }
        Ok(Some(config))
    }
}

/// An error loading a certificate and key, prefixed with the flag of the file at fault.
fn identity_error(error: &TlsError, cert_flag: &str, key_flag: &str) -> String {
    let flag = match error {
        TlsError::Read { what: "private key", .. } | TlsError::NoPrivateKey { .. } => key_flag,
        TlsError::Rejected { .. } => return format!("{cert_flag}/{key_flag}: {error}"),
        _ => cert_flag,
    };
    format!("{flag}: {error}")
}

/// Completes on Ctrl-C, on SIGTERM (Unix) or when `run_for` has elapsed.
pub(crate) fn stop_signal(
    run_for: Option<Duration>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    Ok(async move {
        let elapsed = async {
            match run_for {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        tokio::select! {
            biased;
            _ = interrupt.recv() => tracing::info!("interrupted"),
            _ = terminate.recv() => tracing::info!("terminated"),
            () = elapsed => tracing::info!("--for elapsed"),
        }
        #[cfg(not(unix))]
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            () = elapsed => tracing::info!("--for elapsed"),
        }
    })
}

/// Writes one line to stdout and flushes it, so a reader on a pipe sees it at once.
pub(crate) fn print_line(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|err| format!("stdout: {err}"))
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Another subscriber may already be installed; then that one is used.
    let _ =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
}

/// Parses a duration: a number of seconds (`30`, `0.5`) or a number with a unit (`30s`,
/// `500ms`, `2m`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let bad = || format!("{text:?} is not a duration (say 30, 30s, 500ms or 2m)");
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// The longest duration any duration flag accepts: one day. A longer one is a typo, and a
/// bound keeps every deadline computed from it far from overflow.
pub(crate) const MAX_FLAG_DURATION: Duration = Duration::from_secs(86_400);

/// The shortest duration a duration flag accepts.
pub(crate) const MIN_FLAG_DURATION: Duration = Duration::from_millis(1);

/// Parses a duration flag ([`parse_duration`]) that must lie in
/// [`MIN_FLAG_DURATION`]`..=`[`MAX_FLAG_DURATION`]; the error states the range (clap names the
/// flag and exits with status 2).
pub(crate) fn parse_bounded_duration(text: &str) -> Result<Duration, String> {
    const RANGE: &str = "a duration must be from 1ms to 1 day (86400s)";
    match parse_duration(text) {
        Ok(duration) if (MIN_FLAG_DURATION..=MAX_FLAG_DURATION).contains(&duration) => Ok(duration),
        Ok(_) => Err(format!("{text:?} is out of range: {RANGE}")),
        Err(err) => Err(format!("{err}; {RANGE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: duration flags took any value, up to the largest `Duration`.
    #[test]
    fn bounded_durations_run_from_one_millisecond_to_one_day() {
        assert_eq!(parse_bounded_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_bounded_duration("86400"), Ok(MAX_FLAG_DURATION));
        for bad in ["0", "0.0001", "86401", "1e12", "1e300", "100000m"] {
            let err = parse_bounded_duration(bad).expect_err(bad);
            assert!(err.contains("86400s") && err.contains("1ms"), "{bad}: {err}");
        }
        assert!(parse_bounded_duration("x").is_err());
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.3"), Ok(Duration::from_millis(300)));
        for bad in ["", "s", "-1", "1h", "x", "inf", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
