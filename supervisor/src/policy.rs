//! The restart policy: a pure state machine (no clock, no processes), unit-tested.
//!
//! For each stage: after an exit, wait `base * 2^(consecutive crashes - 1)` (capped at
//! `max`, scaled by a jitter in [0.8, 1.2]) before starting it again; a stage that ran
//! healthy for `reset_after` starts again from `base`. More than `max_restarts` restarts
//! within `window`: give up (the supervisor stops everything and exits non-zero, and
//! systemd or Kubernetes restarts the whole unit). Restarts asked for by an operator are
//! not crashes and are not counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ftp_pooler_config::SupervisorSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub base: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    pub max_restarts: usize,
    pub window: Duration,
}

impl RestartPolicy {
    pub fn from_settings(s: &SupervisorSettings) -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(s.restart_base_ms),
            max: Duration::from_millis(s.restart_max_ms),
            reset_after: Duration::from_secs(s.restart_reset_seconds),
            max_restarts: s.max_restarts as usize,
            window: Duration::from_secs(s.restart_window_seconds),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the stage again after this pause.
    Restart { after: Duration },
    /// Too many restarts: stop everything.
    GiveUp { restarts: usize, window: Duration },
}

/// One stage's restart history.
#[derive(Debug, Default, Clone)]
pub struct Restarts {
    consecutive: u32,
    recent: VecDeque<Instant>,
    total: u32,
}

impl Restarts {
    /// Restarts so far (crashes only).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The stage exited unasked at `now` after running for `uptime`; `jitter` in [0, 1).
    pub fn on_crash(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        uptime: Duration,
        jitter: f64,
    ) -> Decision {
        if uptime >= policy.reset_after {
            self.consecutive = 0;
        }
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= policy.max_restarts {
            return Decision::GiveUp {
                restarts: self.recent.len(),
                window: policy.window,
            };
        }
        self.recent.push_back(now);
        self.total += 1;
        self.consecutive += 1;
        let exp = policy
            .base
            .saturating_mul(1u32 << (self.consecutive - 1).min(20));
        let scale = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        Decision::Restart {
            after: exp.min(policy.max).mul_f64(scale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            reset_after: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }

    fn after(d: Decision) -> Duration {
        match d {
            Decision::Restart { after } => after,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        let pauses: Vec<u128> = (0..5)
            .map(|i| {
                after(r.on_crash(&p, t0 + Duration::from_secs(i * 13), Duration::ZERO, 0.5))
                    .as_millis()
            })
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000]);
        assert_eq!(r.total(), 5);
    }

    #[test]
    fn jitter_spreads_the_pause() {
        let p = policy();
        let t0 = Instant::now();
        let low = after(Restarts::default().on_crash(&p, t0, Duration::ZERO, 0.0));
        let high = after(Restarts::default().on_crash(&p, t0, Duration::ZERO, 0.999));
        assert_eq!(low, Duration::from_millis(80));
        assert!(high > Duration::from_millis(119) && high <= Duration::from_millis(120));
    }

    #[test]
    fn healthy_uptime_resets_the_backoff() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        r.on_crash(&p, t0, Duration::ZERO, 0.5);
        r.on_crash(&p, t0 + Duration::from_secs(1), Duration::ZERO, 0.5);
        let d = r.on_crash(
            &p,
            t0 + Duration::from_secs(40),
            Duration::from_secs(39),
            0.5,
        );
        assert_eq!(after(d), Duration::from_millis(100));
    }

    #[test]
    fn too_many_restarts_in_the_window_give_up() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        for i in 0..5 {
            after(r.on_crash(&p, t0 + Duration::from_secs(i), Duration::ZERO, 0.5));
        }
        assert_eq!(
            r.on_crash(&p, t0 + Duration::from_secs(5), Duration::ZERO, 0.5),
            Decision::GiveUp {
                restarts: 5,
                window: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        for i in 0..5 {
            after(r.on_crash(&p, t0 + Duration::from_secs(i), Duration::ZERO, 0.5));
        }
        // 61 s after the first: the first four have left the window.
        let d = r.on_crash(&p, t0 + Duration::from_secs(64), Duration::ZERO, 0.5);
        assert!(matches!(d, Decision::Restart { .. }));
    }
}
