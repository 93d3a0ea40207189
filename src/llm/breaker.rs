//! A circuit breaker for one model server: after `threshold` consecutive
//! failed attempts it opens and calls fail fast for `cooldown`; then one
//! probe is let through, and its result closes or re-opens the breaker.
//! A dead model server then costs the operator nothing but a log line, and
//! a gauge that alerts read ([`CircuitBreaker::report_open_to`]).
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Consecutive-failure circuit breaker. Thread-safe; cheap to call.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// Set to 1 when the breaker opens and to 0 when a call succeeds; the
    /// operator hands it in after building the provider.
    open_gauge: OnceLock<Gauge>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            open_gauge: OnceLock::new(),
        }
    }

    /// Reports the breaker's state to `gauge` from now on: 1 from opening
    /// until a call succeeds (open, or waiting for its probe), else 0.
    /// Only the first gauge handed in counts.
    pub fn report_open_to(&self, gauge: Gauge) {
        let _ = self.open_gauge.set(gauge);
    }

    fn report_open(&self, open: bool) {
        if let Some(gauge) = self.open_gauge.get() {
            gauge.set(i64::from(open));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May an attempt go out now? `Err(retry_in)` while open, or while the
    /// one half-open probe is still in flight.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
            State::HalfOpen => Err(Duration::ZERO),
        }
    }

    /// The server answered properly.
    pub fn record_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
        self.report_open(false);
    }

    /// The attempt failed in a way that says the server is unwell.
    pub fn record_failure(&self) {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen => self.threshold,
            State::Open { .. } => return,
        };
        *state = if failures >= self.threshold {
            tracing::warn!(
                failures,
                cooldown_s = self.cooldown.as_secs_f64(),
                "model circuit breaker opened"
            );
            self.report_open(true);
            State::Open {
                until: Instant::now() + self.cooldown,
            }
        } else {
            State::Closed { failures }
        };
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { until } if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(breaker.admit().is_ok());
            breaker.record_failure();
        }
        assert!(!breaker.is_open());
        breaker.record_failure();
        assert!(breaker.is_open());
        let retry_in = breaker.admit().unwrap_err();
        assert!(retry_in > Duration::from_secs(50));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert!(!breaker.is_open());
    }

    #[test]
    fn the_gauge_reads_1_from_opening_until_a_call_succeeds() {
        let breaker = CircuitBreaker::new(2, Duration::from_millis(20));
        let gauge = Gauge::default();
        breaker.report_open_to(gauge.clone());
        breaker.record_failure();
        assert_eq!(gauge.get(), 0, "one failure does not open it");
        breaker.record_failure();
        assert_eq!(gauge.get(), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.admit().is_ok(), "the probe goes out");
        assert_eq!(gauge.get(), 1, "still not closed while the probe runs");
        breaker.record_success();
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(20));
        breaker.record_failure();
        assert!(breaker.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.admit().is_ok(), "the probe goes out");
        assert_eq!(breaker.admit(), Err(Duration::ZERO), "one probe at a time");
        breaker.record_failure();
        assert!(breaker.is_open(), "a failed probe re-opens");

        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.admit().is_ok());
        breaker.record_success();
        assert!(breaker.admit().is_ok());
        assert!(breaker.admit().is_ok(), "closed again");
    }
}
