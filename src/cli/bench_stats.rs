//! The arithmetic of `anchorage bench`: a latency histogram in the HDR style (log-linear
//! buckets, constant memory, under 1/64 (about 1.6 %) relative error) and medians.

use std::time::Duration;

/// Sub-buckets per power of two, as a shift: 2^6 = 64 buckets between 2^k and 2^(k+1), so a
/// recorded value is off by less than 1/64 of itself.
const SUB_BITS: u32 = 6;
/// Values below this are recorded exactly.
const EXACT: u64 = 2 << SUB_BITS;
/// Buckets needed for any `u64`.
const BUCKETS: usize = (64 * (64 - SUB_BITS as usize)) + EXACT as usize;

/// Latencies in nanoseconds, bucketed log-linearly (the layout HdrHistogram uses).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0 }
    }
}

/// The bucket of `value`: exact below [`EXACT`], else `64 * shift + (value >> shift)`, where
/// `shift` keeps the top seven bits.
fn bucket(value: u64) -> usize {
    let bits = 64 - value.leading_zeros();
    let shift = bits.saturating_sub(SUB_BITS + 1);
    ((1u64 << SUB_BITS) * u64::from(shift) + (value >> shift)) as usize
}

/// The highest value that lands in bucket `index` (HdrHistogram's "highest equivalent value":
/// percentiles err on the slow side).
fn highest(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let shift = index / (1 << SUB_BITS) - 1;
    let top = index - (1 << SUB_BITS) * shift;
    // u128: the last bucket's bound is 2^64.
    u64::try_from((u128::from(top + 1) << shift) - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(nanos)] += 1;
        self.total += 1;
    }

    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// How many latencies were recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The latency at quantile `q` (0..=1) in microseconds; 0 when nothing was recorded.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        // The smallest value with at least ceil(q * total) samples at or below it.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest(index) as f64 / 1_000.0;
            }
        }
        u64::MAX as f64 / 1_000.0
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_highest_value_is_within_one_in_64_of_it() {
        for value in (0..5_000).chain([u64::MAX, u64::MAX / 3, 1 << 40, (1 << 40) - 1, 123_456_789])
        {
            let index = bucket(value);
            assert!(index < BUCKETS, "{value} must have a bucket, got {index}");
            let top = highest(index);
            assert!(top >= value, "{value}: a bucket's highest value must not be below it");
            assert!(
                (top - value) as f64 <= value as f64 / 64.0,
                "{value}: the bucket's highest value {top} must be within 1/64 of it"
            );
        }
    }

    #[test]
    fn quantiles_come_from_the_ranked_samples() {
        let mut histogram = Histogram::default();
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile_us(0.5);
        let p99 = histogram.quantile_us(0.99);
        assert!((50.0..=50.8).contains(&p50), "p50 of 1..=100 µs must be about 50 µs, got {p50}");
        assert!((99.0..=99.8).contains(&p99), "p99 of 1..=100 µs must be about 99 µs, got {p99}");
        assert_eq!(Histogram::default().quantile_us(0.5), 0.0, "an empty histogram reads 0");

        let mut merged = Histogram::default();
        merged.merge(&histogram);
        merged.merge(&histogram);
        assert_eq!(merged.len(), 200, "merging must add the samples");
        assert_eq!(merged.quantile_us(0.5), p50, "merging a histogram with itself keeps p50");
    }

    #[test]
    fn the_median_takes_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
