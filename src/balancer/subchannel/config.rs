//! How subchannels connect: reconnect backoff, connect timeout and HTTP/2 keep-alive, with the
//! ranges every setting must fall in. The backoff itself (its config and arithmetic) lives in
//! `crate::backoff`, shared with the resolvers and the etcd client.

use std::time::Duration;

pub use crate::backoff::BackoffConfig;
pub use crate::connector::MIN_KEEPALIVE_INTERVAL;

/// The longest duration any subchannel setting may have (24 h). Longer ones are rejected: hyper
/// adds the keep-alive interval to an `Instant`, which panics on overflow, and nothing useful
/// waits that long.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A subchannel setting out of its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subchannel config: {field} must be {allowed}, got {value}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, as `backoff.multiplier` or `keepalive.interval`.
    pub field: &'static str,
    /// The allowed range, in words.
    pub allowed: &'static str,
    /// The value given.
    pub value: String,
}

/// What every duration setting allows, in words.
const DURATION_RANGE: &str = "greater than zero and at most 24 h";

fn check_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() || value > MAX_SETTING_DURATION {
        return Err(ConfigError { field, allowed: DURATION_RANGE, value: format!("{value:?}") });
    }
    Ok(())
}

impl BackoffConfig {
    /// Checks every field: `initial` and `max` greater than zero and at most
    /// [`MAX_SETTING_DURATION`], `initial <= max`, `multiplier` a finite number ≥ 1, `jitter` a
    /// finite number in `0..=1`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field out of range (`backoff.initial`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration("backoff.initial", self.initial)?;
        check_duration("backoff.max", self.max)?;
        if self.initial > self.max {
            return Err(ConfigError {
                field: "backoff.initial",
                allowed: "at most backoff.max",
                value: format!("{:?} > {:?}", self.initial, self.max),
            });
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError {
                field: "backoff.multiplier",
                allowed: "a finite number of at least 1",
                value: self.multiplier.to_string(),
            });
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(ConfigError {
                field: "backoff.jitter",
                allowed: "a finite number in 0..=1",
                value: self.jitter.to_string(),
            });
        }
        Ok(())
    }
}

/// HTTP/2 keep-alive: PING every `interval`, close the connection when a PING is not answered
/// within `timeout`. Without it a connection wedged by a partition never dies.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepAlive {
    /// Time between PINGs. At least [`MIN_KEEPALIVE_INTERVAL`] (10 s, gRFC A8) over a real
    /// network: a channel raises a smaller one to it, with a warning.
    pub interval: Duration,
    /// How long to wait for the PING's acknowledgement.
    pub timeout: Duration,
    /// Whether to PING while no RPC is in flight.
    pub while_idle: bool,
}

impl KeepAlive {
    /// Checks that `interval` and `timeout` are greater than zero and at most
    /// [`MAX_SETTING_DURATION`]. The 10 s floor is not checked here: it is applied, not
    /// rejected (see [`SubchannelConfig::with_keepalive_floor`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `keepalive.interval` or `keepalive.timeout`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration("keepalive.interval", self.interval)?;
        check_duration("keepalive.timeout", self.timeout)
    }
}

/// How subchannels connect; shared by all subchannels of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SubchannelConfig {
    /// Reconnect backoff. Default: [`BackoffConfig::default`].
    pub backoff: BackoffConfig,
    /// The least time a connect attempt (dial and handshake) is given; the attempt's timeout is
    /// the larger of this and the current backoff. Default 20 s (gRPC's `MIN_CONNECT_TIMEOUT`).
    pub min_connect_timeout: Duration,
    /// HTTP/2 keep-alive. Default: off, as in gRPC.
    pub keepalive: Option<KeepAlive>,
}

impl Default for SubchannelConfig {
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            min_connect_timeout: Duration::from_secs(20),
            keepalive: None,
        }
    }
}

impl SubchannelConfig {
    /// Checks every setting (see [`BackoffConfig::validate`] and [`KeepAlive::validate`];
    /// `min_connect_timeout` greater than zero and at most [`MAX_SETTING_DURATION`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backoff.validate()?;
        check_duration("min_connect_timeout", self.min_connect_timeout)?;
        self.keepalive.as_ref().map_or(Ok(()), KeepAlive::validate)
    }

    /// Raises a keep-alive interval below `floor` to `floor`, with a warning, as grpc-go does
    /// with gRFC A8's 10 s minimum (`floor` comes from
    /// [`Connector::min_keepalive_interval`](crate::connector::Connector::min_keepalive_interval)).
    pub fn with_keepalive_floor(mut self, floor: Duration) -> Self {
        if let Some(keepalive) = &mut self.keepalive
            && keepalive.interval < floor
        {
            tracing::warn!(
                requested = ?keepalive.interval,
                minimum = ?floor,
                "keep-alive interval below gRFC A8's minimum; using the minimum"
            );
            keepalive.interval = floor;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configs_are_valid() {
        assert_eq!(SubchannelConfig::default().validate(), Ok(()), "defaults must validate");
    }

    #[test]
    fn out_of_range_settings_are_rejected_naming_the_field_and_the_range() {
        let backoff = BackoffConfig::default();
        let cases = [
            (BackoffConfig { multiplier: f64::NAN, ..backoff.clone() }, "backoff.multiplier"),
            (BackoffConfig { multiplier: -1.6, ..backoff.clone() }, "backoff.multiplier"),
            (BackoffConfig { multiplier: f64::INFINITY, ..backoff.clone() }, "backoff.multiplier"),
            (BackoffConfig { multiplier: 0.5, ..backoff.clone() }, "backoff.multiplier"),
            (BackoffConfig { jitter: -0.1, ..backoff.clone() }, "backoff.jitter"),
            (BackoffConfig { jitter: f64::NAN, ..backoff.clone() }, "backoff.jitter"),
            (BackoffConfig { jitter: 1.5, ..backoff.clone() }, "backoff.jitter"),
            (BackoffConfig { initial: Duration::ZERO, ..backoff.clone() }, "backoff.initial"),
            (BackoffConfig { max: Duration::MAX, ..backoff.clone() }, "backoff.max"),
            (
                BackoffConfig { initial: Duration::from_secs(200), ..backoff.clone() },
                "backoff.initial",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().expect_err(&format!("{config:?} must be rejected"));
            assert_eq!(error.field, field, "the error must name the field: {error}");
            assert!(
                error.to_string().starts_with(&format!("subchannel config: {field} must be ")),
                "the message must start with the concept and name the field and range: {error}"
            );
        }
        let zero = SubchannelConfig { min_connect_timeout: Duration::ZERO, ..Default::default() };
        assert_eq!(zero.validate().unwrap_err().field, "min_connect_timeout");
        let keepalive = KeepAlive {
            interval: Duration::MAX,
            timeout: Duration::from_secs(1),
            while_idle: true,
        };
        let huge = SubchannelConfig { keepalive: Some(keepalive), ..Default::default() };
        assert_eq!(huge.validate().unwrap_err().field, "keepalive.interval");
    }

    #[test]
    fn a_keepalive_interval_below_the_floor_is_raised_to_it_and_larger_ones_are_kept() {
        let with_interval = |interval| SubchannelConfig {
            keepalive: Some(KeepAlive {
                interval,
                timeout: Duration::from_secs(1),
                while_idle: true,
            }),
            ..Default::default()
        };
        let interval = |config: SubchannelConfig| config.keepalive.unwrap().interval;
        let floor = MIN_KEEPALIVE_INTERVAL;
        assert_eq!(
            interval(with_interval(Duration::from_secs(1)).with_keepalive_floor(floor)),
            floor,
            "gRFC A8: a user's keep-alive interval below 10 s must be raised to 10 s"
        );
        assert_eq!(
            interval(with_interval(Duration::from_secs(30)).with_keepalive_floor(floor)),
            Duration::from_secs(30),
            "an interval above the floor must be kept"
        );
        assert_eq!(
            interval(
                with_interval(Duration::from_millis(100)).with_keepalive_floor(Duration::ZERO)
            ),
            Duration::from_millis(100),
            "a zero floor (a simulated network) must keep any interval"
        );
    }
}
