//! The circuit breaker of one FTP connection: a pure state machine (the caller passes the
//! clock), unit-tested.
//!
//! Closed: calls go through; `failure_threshold` consecutive failures open it. Open:
//! calls fail fast for `timeout_seconds`, then it is half-open. Half-open: at most
//! `half_open_max_calls` calls at once go through; `success_threshold` successes close
//! it, any failure opens it again. Only failures that say something about the server
//! count (connection errors, timeouts, rejected logins), never a missing file or a local
//! disk error.

use std::time::{Duration, Instant};

use ftp_pooler_config::CircuitBreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The metric value: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    success_threshold: u32,
    open_for: Duration,
    half_open_max_calls: u32,
    state: BreakerState,
    failures: u32,
    successes: u32,
    half_open_calls: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(s: &CircuitBreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            failure_threshold: s.failure_threshold.max(1) as u32,
            success_threshold: s.success_threshold.max(1) as u32,
            open_for: Duration::from_secs(s.timeout_seconds),
            half_open_max_calls: s.half_open_max_calls.max(1) as u32,
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
            half_open_calls: 0,
            opened_at: None,
        }
    }

    /// The state at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(t)) if now.duration_since(t) >= self.open_for => {
                BreakerState::HalfOpen
            }
            (s, _) => s,
        }
    }

    /// Consecutive failures counted (closed), and successes counted (half-open).
    pub fn counts(&self) -> (u32, u32) {
        (self.failures, self.successes)
    }

    /// May a call go through at `now`? `Err(wait)`: no, fail fast; it may in `wait`.
    pub fn try_call(&mut self, now: Instant) -> Result<(), Duration> {
        if self.state == BreakerState::Open {
            let since = now.duration_since(self.opened_at.unwrap_or(now));
            if since < self.open_for {
                return Err(self.open_for - since);
            }
            self.state = BreakerState::HalfOpen;
            self.successes = 0;
            self.half_open_calls = 0;
        }
        if self.state == BreakerState::HalfOpen {
            if self.half_open_calls >= self.half_open_max_calls {
                return Err(Duration::from_millis(100));
            }
            self.half_open_calls += 1;
        }
        Ok(())
    }

    /// A call let through by [`CircuitBreaker::try_call`] succeeded.
    pub fn on_success(&mut self) {
        match self.state {
            BreakerState::Closed => self.failures = 0,
            BreakerState::HalfOpen => {
                self.half_open_calls = self.half_open_calls.saturating_sub(1);
                self.successes += 1;
                if self.successes >= self.success_threshold {
                    self.state = BreakerState::Closed;
                    self.failures = 0;
                    self.opened_at = None;
                }
            }
            BreakerState::Open => {}
        }
    }

    /// A call let through failed in a way that counts against the server.
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => {}
        }
    }

    /// A call let through ended in a way that says nothing about the server.
    pub fn on_neutral(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.half_open_calls = self.half_open_calls.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.successes = 0;
        self.half_open_calls = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(&CircuitBreakerSettings {
            failure_threshold: 3,
            success_threshold: 2,
            timeout_seconds: 10,
            half_open_max_calls: 1,
        })
    }

    #[test]
    fn consecutive_failures_open_it_and_it_fails_fast() {
        let (mut b, t0) = (breaker(), Instant::now());
        for _ in 0..2 {
            b.try_call(t0).unwrap();
            b.on_failure(t0);
        }
        b.try_call(t0).unwrap();
        b.on_success();
        for _ in 0..3 {
            b.try_call(t0).unwrap();
            b.on_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        let wait = b.try_call(t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(6));
    }

    #[test]
    fn half_open_lets_few_through_and_closes_after_successes() {
        let (mut b, t0) = (breaker(), Instant::now());
        for _ in 0..3 {
            b.try_call(t0).unwrap();
            b.on_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.try_call(t1).unwrap();
        assert!(b.try_call(t1).is_err(), "one call at a time when half-open");
        b.on_success();
        b.try_call(t1).unwrap();
        b.on_success();
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn a_failure_when_half_open_opens_it_again() {
        let (mut b, t0) = (breaker(), Instant::now());
        for _ in 0..3 {
            b.try_call(t0).unwrap();
            b.on_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(11);
        b.try_call(t1).unwrap();
        b.on_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert!(b.try_call(t1 + Duration::from_secs(9)).is_err());
        assert!(b.try_call(t1 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn neutral_outcomes_free_the_half_open_slot() {
        let (mut b, t0) = (breaker(), Instant::now());
        for _ in 0..3 {
            b.try_call(t0).unwrap();
            b.on_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        b.try_call(t1).unwrap();
        b.on_neutral();
        assert!(b.try_call(t1).is_ok());
    }
}
