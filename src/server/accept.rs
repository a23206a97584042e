//! Accepting without a busy loop: after a failed accept the server waits before the next one.
//!
//! A listener that fails (most often `EMFILE`, "too many open files") fails again at once, so
//! retrying immediately burns a core and floods the log. As hyper's and tonic's own TCP
//! acceptors do, the server sleeps after each failure, [`ACCEPT_BACKOFF_INITIAL`] at first and
//! twice as long after each further failure up to [`ACCEPT_BACKOFF_MAX`]; one success resets it.
//! Failures are logged at most once per [`ACCEPT_WARNING_INTERVAL`], with the number of
//! failures not logged since the previous warning.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

/// The pause after the first failed accept in a row.
pub const ACCEPT_BACKOFF_INITIAL: Duration = Duration::from_millis(1);

/// The longest pause between failed accepts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one accept-failure warning is logged per this interval.
pub const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// The backoff and log rate limit of one accept loop.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// The pause after the last failure; `None` after a success.
    delay: Option<Duration>,
    last_warning: Option<Instant>,
    /// Failures not logged since `last_warning`.
    suppressed: u64,
}

/// What to do after one failed accept.
#[derive(Debug, PartialEq, Eq)]
struct AfterFailure {
    /// How long to wait before accepting again.
    delay: Duration,
    /// `Some(n)` when this failure is to be logged, `n` being the failures not logged before it.
    warn: Option<u64>,
}

impl AcceptBackoff {
    fn failed(&mut self, now: Instant) -> AfterFailure {
        let delay = self.delay.map_or(ACCEPT_BACKOFF_INITIAL, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        self.delay = Some(delay);
        let due = self.last_warning.is_none_or(|at| now - at >= ACCEPT_WARNING_INTERVAL);
        let warn = if due {
            self.last_warning = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        };
        AfterFailure { delay, warn }
    }

    fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// `inner` with failed accepts absorbed: each is logged (rate-limited) and followed by a pause;
/// only accepted connections come out. Ends when `inner` ends.
pub(super) struct BackoffIncoming<S> {
    inner: Pin<Box<S>>,
    server: String,
    backoff: AcceptBackoff,
    pause: Option<Pin<Box<Sleep>>>,
}

impl<S> BackoffIncoming<S> {
    pub(super) fn new(inner: S, server: String) -> Self {
        Self { inner: Box::pin(inner), server, backoff: AcceptBackoff::default(), pause: None }
    }
}

impl<S, T> Stream for BackoffIncoming<S>
where
    S: Stream<Item = io::Result<T>>,
{
    type Item = io::Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(accepted)) => {
                    this.backoff.succeeded();
                    return Poll::Ready(Some(Ok(accepted)));
                }
                Some(Err(err)) => {
                    let after = this.backoff.failed(Instant::now());
                    if let Some(suppressed) = after.warn {
                        tracing::warn!(
                            server = %this.server,
                            %err,
                            suppressed,
                            retry_in_ms = after.delay.as_millis(),
                            "accept failed"
                        );
                    }
                    this.pause = Some(Box::pin(tokio::time::sleep(after.delay)));
                }
            }
        }
    }
}

impl<S> std::fmt::Debug for BackoffIncoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackoffIncoming").field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_from_one_millisecond_to_one_second_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<u64> =
            (0..12).map(|_| backoff.failed(Instant::now()).delay.as_millis() as u64).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(Instant::now()).delay, ACCEPT_BACKOFF_INITIAL, "reset");
    }

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_second_carries_the_number_of_failures_not_logged() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        let warnings: Vec<Option<u64>> = [0, 10, 500, 999, 1000, 1500, 2100]
            .into_iter()
            .map(|ms| backoff.failed(start + Duration::from_millis(ms)).warn)
            .collect();
        assert_eq!(
            warnings,
            [Some(0), None, None, None, Some(3), None, Some(1)],
            "a warning must be logged at most once per second, counting the suppressed ones"
        );
    }
}
