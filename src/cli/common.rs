//! Pieces the long-running subcommands share: stop signals, line output, errors, logging and
//! durations.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

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
