//! The event trace of one run: resolver updates, subchannel states, pickers, connections
//! accepted and closed, RPC outcomes and faults, each stamped with simulated time.
//!
//! # Determinism
//! Lines are appended in the order the simulation executes them (one thread, hosts stepped in a
//! fixed order), stamped with turmoil's simulated clock, and contain nothing taken from the
//! wall clock, from hashing or from the process (no task ids, no pointers). The same scenario and
//! seed therefore give byte-identical text; [`fnv1a`] hashes it with a function fixed here, so
//! hashes compare across processes, builds and Rust releases.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::lock;

/// A shared, append-only trace. Cheap to clone; clones append to the same trace.
#[derive(Debug, Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<Line>>>);

#[derive(Debug, Clone)]
struct Line {
    at: Duration,
    source: String,
    text: String,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a line stamped with the simulated time of the host running now (0 outside one).
    pub fn record(&self, source: &str, text: impl Into<String>) {
        self.record_at(now(), source, text);
    }

    /// Appends a line stamped `at`.
    pub fn record_at(&self, at: Duration, source: &str, text: impl Into<String>) {
        lock(&self.0).push(Line { at, source: source.to_owned(), text: text.into() });
    }

    /// How many lines there are.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The trace as text, one line per event: `[   1.234567s] client   text`.
    pub fn render(&self) -> String {
        let lines = lock(&self.0);
        let mut out = String::with_capacity(lines.len() * 64);
        for line in lines.iter() {
            let _ = writeln!(out, "[{}] {:<8} {}", stamp(line.at), line.source, line.text);
        }
        out
    }
}

/// The simulated time of the host running now; zero outside a simulation.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Formats a simulated time as seconds with microseconds, right-aligned: `   1.234567s`.
pub fn stamp(at: Duration) -> String {
    format!("{:>4}.{:06}s", at.as_secs(), at.subsec_micros())
}

/// Formats a simulated time or span for prose: `0.820s`, `12.000s`.
pub fn secs(at: Duration) -> String {
    format!("{}.{:03}s", at.as_secs(), at.subsec_millis())
}

/// FNV-1a (64-bit) of `text`: a hash defined here, stable across processes and releases
/// (std's `DefaultHasher` promises neither).
pub fn fnv1a(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn lines_render_in_order_with_simulated_time_stamps() {
        let trace = Trace::new();
        trace.record_at(Duration::from_micros(1_500_250), "client", "first");
        trace.record_at(Duration::from_secs(12), "a", "second");
        assert_eq!(
            trace.render(),
            "[   1.500250s] client   first\n[  12.000000s] a        second\n"
        );
    }
}
