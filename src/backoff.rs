//! Exponential backoff with seeded jitter (gRPC's connection-backoff doc), shared by
//! everything that retries: subchannels reconnecting, resolvers re-resolving, etcd clients and
//! registrations retrying.
//!
//! [`BackoffConfig`] is public API at `anchorage::balancer::subchannel::BackoffConfig`; its
//! ranges are checked by `BackoffConfig::validate` in `balancer::subchannel`, with the other
//! subchannel settings.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Reconnect backoff (gRPC's connection-backoff doc).
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// Delay after the first failure. Default 1 s.
    pub initial: Duration,
    /// Factor applied after each further failure. Default 1.6.
    pub multiplier: f64,
    /// Relative jitter, drawn uniformly from `[-jitter, +jitter]`. Default 0.2.
    pub jitter: f64,
    /// Upper bound on the delay before jitter. Default 120 s.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

/// `duration × factor`, saturating: never panics, whatever the factor (a NaN or negative factor
/// gives zero, an overflowing product [`Duration::MAX`]).
fn scale(duration: Duration, factor: f64) -> Duration {
    let secs = duration.as_secs_f64() * factor;
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// Exponential backoff with seeded jitter. Its arithmetic saturates, so even a configuration
/// that skipped [`BackoffConfig::validate`] cannot make it panic.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    current: Duration,
    jitter: JitterStream,
}

/// Where the jitter's generator stands: its seed, stream and word position, from which each draw
/// rebuilds it. Every subchannel's task keeps a backoff for as long as it lives; a ChaCha
/// generator kept inline is about 320 bytes (most of it a block of output buffered ahead), while
/// rebuilding costs one block per draw, paid only after a failure.
#[derive(Debug)]
struct JitterStream {
    seed: [u8; 32],
    stream: u64,
    word_pos: u128,
}

impl JitterStream {
    fn of(rng: &ChaCha8Rng) -> Self {
        Self { seed: rng.get_seed(), stream: rng.get_stream(), word_pos: rng.get_word_pos() }
    }

    /// A draw from `-jitter..=jitter`, exactly as the generator would give it next.
    fn draw(&mut self, jitter: f64) -> f64 {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        let value = rng.random_range(-jitter..=jitter);
        self.word_pos = rng.get_word_pos();
        value
    }
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig, rng: ChaCha8Rng) -> Self {
        Self { current: config.initial, config, jitter: JitterStream::of(&rng) }
    }

    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }

    /// The delay before the next attempt, with jitter; grows the base for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = scale(base, self.config.multiplier).min(self.config.max);
        let jitter = self.config.jitter;
        let factor =
            if jitter.is_finite() && jitter > 0.0 { 1.0 + self.jitter.draw(jitter) } else { 1.0 };
        scale(base, factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap_and_resets() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            max: Duration::from_secs(5),
        };
        let mut backoff = Backoff::new(config, ChaCha8Rng::seed_from_u64(1));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5], "backoff must multiply and stop at max");
        backoff.reset();
        assert_eq!(backoff.next_delay().as_secs(), 1, "READY must reset the backoff");
    }

    #[test]
    fn backoff_jitter_stays_within_bounds_and_is_seeded() {
        let draw = |seed| {
            let mut backoff =
                Backoff::new(BackoffConfig::default(), ChaCha8Rng::seed_from_u64(seed));
            (0..20).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        let delays = draw(7);
        assert_eq!(delays, draw(7), "the same seed must give the same jitter");
        let mut base = Duration::from_secs(1);
        for delay in delays {
            assert!(
                delay >= base.mul_f64(0.8) && delay <= base.mul_f64(1.2),
                "{delay:?} vs {base:?}"
            );
            base = base.mul_f64(1.6).min(Duration::from_secs(120));
        }
    }

    /// Every subchannel's task keeps a `Backoff` for as long as it lives, so its size is paid
    /// once per connection: a generator kept inline cost about 320 bytes of it.
    #[test]
    fn a_backoff_is_small_enough_to_keep_in_every_subchannel() {
        let size = std::mem::size_of::<Backoff>();
        assert!(size <= 128, "a Backoff takes {size} bytes; it must stay within 128");
    }

    /// Storing the generator's position instead of the generator must not change a single
    /// draw: seeded runs would change. The reference draws from a live generator in order,
    /// on a stream other than 0 and from a position other than the start.
    #[test]
    fn jitter_is_the_generators_draws_in_order_from_where_it_stood() {
        let config = BackoffConfig { jitter: 0.5, ..BackoffConfig::default() };
        for seed in 0..20 {
            let mut live = ChaCha8Rng::seed_from_u64(seed);
            live.set_stream(seed % 3);
            live.set_word_pos(u128::from(seed) * 7);
            let mut backoff = Backoff::new(config.clone(), live.clone());
            let mut base = config.initial;
            for draw in 0..30 {
                let expected = scale(base, 1.0 + live.random_range(-0.5..=0.5));
                assert_eq!(backoff.next_delay(), expected, "seed {seed}, draw {draw}");
                base = scale(base, config.multiplier).min(config.max);
            }
        }
    }

    /// Regression: `Duration::mul_f64` panicked on a negative, NaN or infinite multiplier or
    /// jitter, and on a product too large for a `Duration`, killing the subchannel's task.
    #[test]
    fn backoff_arithmetic_never_panics_whatever_the_config() {
        let odd = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 1e300, 2.0];
        let durations = [Duration::ZERO, Duration::from_millis(1), Duration::MAX];
        for &multiplier in &odd {
            for &jitter in &odd {
                for &initial in &durations {
                    for &max in &durations {
                        let config = BackoffConfig { initial, multiplier, jitter, max };
                        let mut backoff = Backoff::new(config, ChaCha8Rng::seed_from_u64(3));
                        for _ in 0..4 {
                            let delay = backoff.next_delay();
                            assert!(
                                delay <= Duration::MAX,
                                "a backoff delay must always be a duration"
                            );
                        }
                    }
                }
            }
        }
    }
}
