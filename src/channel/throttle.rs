//! Retry throttling (gRFC A6): one token bucket per channel, shared by every RPC.
//!
//! The bucket starts full at `maxTokens`. An attempt that fails with a code its method's
//! `retryableStatusCodes` lists takes one token; an RPC that ends OK gives back `tokenRatio`, up to
//! `maxTokens`. While the tokens are at or below `maxTokens / 2`, no RPC is retried. Tokens are
//! counted in thousandths (the ratio has at most 3 decimal places), so the arithmetic is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use crate::service_config::RetryThrottling;

/// The channel's current bucket, replaced by a fresh, full one when the service config's
/// `retryThrottling` changes (grpc-go builds a new throttler whenever it applies a config).
/// Every RPC reads it, so it sits behind an atomic swap rather than a lock.
#[derive(Debug, Default)]
pub(crate) struct Throttles(ArcSwapOption<Throttle>);

impl Throttles {
    /// The bucket for RPCs started under `policy`; `None` when the config does not throttle.
    pub(crate) fn bucket(&self, policy: Option<&RetryThrottling>) -> Option<Arc<Throttle>> {
        let policy = policy?;
        let current = self.0.load_full().filter(|bucket| bucket.policy == *policy);
        if current.is_some() {
            return current;
        }
        // The bucket the swap stored, or the matching one it found: `rcu` may run the closure
        // again if another RPC swapped in between, and the last run is the one that counts.
        let mut chosen = None;
        self.0.rcu(|current| {
            let bucket = match current {
                Some(bucket) if bucket.policy == *policy => bucket.clone(),
                _ => Arc::new(Throttle::new(*policy)),
            };
            chosen = Some(bucket.clone());
            Some(bucket)
        });
        chosen
    }
}

/// One token bucket.
#[derive(Debug)]
pub(crate) struct Throttle {
    policy: RetryThrottling,
    /// `maxTokens` in thousandths.
    max: u64,
    /// `tokenRatio` in thousandths.
    ratio: u64,
    /// The current tokens, in thousandths.
    tokens: AtomicU64,
}

impl Throttle {
    fn new(policy: RetryThrottling) -> Self {
        let max = u64::from(policy.max_tokens) * 1000;
        // Validated: greater than 0 with at most 3 decimals; `as` saturates huge ratios.
        let ratio = (policy.token_ratio * 1000.0).round() as u64;
        Self { policy, max, ratio, tokens: AtomicU64::new(max) }
    }

    /// Records an attempt that failed with a retryable code; returns whether a retry is still
    /// allowed (tokens above half the maximum).
    pub(crate) fn failure(&self) -> bool {
        let take = |tokens: u64| Some(tokens.saturating_sub(1000));
        let before = self.tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, take);
        let after = before.map_or(0, |tokens| tokens.saturating_sub(1000));
        after * 2 > self.max
    }

    /// Records an RPC that ended OK.
    pub(crate) fn success(&self) {
        let refill = |tokens: u64| Some(tokens.saturating_add(self.ratio).min(self.max));
        let _ = self.tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, refill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_config::ServiceConfig;

    fn policy(json: &str) -> RetryThrottling {
        *ServiceConfig::parse(json).unwrap().retry_throttling().unwrap()
    }

    #[test]
    fn failures_stop_retries_at_half_the_tokens_and_successes_refill_by_the_ratio() {
        let throttle =
            Throttle::new(policy(r#"{"retryThrottling":{"maxTokens":3,"tokenRatio":0.5}}"#));
        assert!(throttle.failure(), "3 - 1 = 2 tokens is above 1.5: retries are allowed");
        assert!(!throttle.failure(), "1 token is at or below 1.5: retries must stop");
        assert!(!throttle.failure(), "0 tokens: retries stay stopped");
        for _ in 0..6 {
            throttle.success();
        }
        assert!(throttle.failure(), "6 successes × 0.5 refill to 3 (the cap), then 2 > 1.5");
    }

    /// Runs `work` on two threads at once.
    fn on_two_threads(work: impl Fn() + Sync) {
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(&work);
            }
        });
    }

    /// The tokens are updated without a lock: concurrent updates must all count.
    #[test]
    fn concurrent_failures_and_successes_all_count() {
        let throttle =
            Throttle::new(policy(r#"{"retryThrottling":{"maxTokens":1000,"tokenRatio":1}}"#));
        on_two_threads(|| {
            for _ in 0..200 {
                throttle.failure();
            }
        });
        assert_eq!(throttle.tokens.load(Ordering::Relaxed), 600_000, "1000 - 2 × 200 tokens");
        on_two_threads(|| {
            for _ in 0..150 {
                throttle.success();
            }
        });
        assert_eq!(throttle.tokens.load(Ordering::Relaxed), 900_000, "600 + 2 × 150 tokens");
    }

    /// Regression: the bucket was read again after the swap, so an RPC racing a policy change
    /// could be handed the other policy's bucket.
    #[test]
    fn racing_policies_each_get_a_bucket_of_their_own_policy() {
        let throttles = Throttles::default();
        let a = policy(r#"{"retryThrottling":{"maxTokens":2,"tokenRatio":1}}"#);
        let b = policy(r#"{"retryThrottling":{"maxTokens":4,"tokenRatio":1}}"#);
        std::thread::scope(|scope| {
            for mine in [a, b] {
                let throttles = &throttles;
                scope.spawn(move || {
                    for _ in 0..20_000 {
                        let bucket = throttles.bucket(Some(&mine)).expect("a bucket");
                        assert_eq!(bucket.policy, mine, "an RPC must get its own policy's bucket");
                    }
                });
            }
        });
    }

    #[test]
    fn a_changed_policy_starts_a_fresh_bucket_and_an_unchanged_one_keeps_it() {
        let throttles = Throttles::default();
        let a = policy(r#"{"retryThrottling":{"maxTokens":2,"tokenRatio":1}}"#);
        let b = policy(r#"{"retryThrottling":{"maxTokens":4,"tokenRatio":1}}"#);
        let first = throttles.bucket(Some(&a)).unwrap();
        assert!(
            Arc::ptr_eq(&first, &throttles.bucket(Some(&a)).unwrap()),
            "same policy, same bucket"
        );
        assert!(
            !Arc::ptr_eq(&first, &throttles.bucket(Some(&b)).unwrap()),
            "new policy, new bucket"
        );
        assert!(throttles.bucket(None).is_none(), "no policy, no throttling");
    }
}
