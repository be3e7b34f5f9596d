//! The restart policy and the give-up rule: a pure state machine (no clock, no
//! processes), unit-tested.
//!
//! For each stage: after an exit, wait `base * 2^(consecutive crashes - 1)` (capped at
//! `max`, scaled by a jitter in [0.8, 1.2]) before starting it again; a stage that ran
//! healthy for `reset_after` starts again from `base`.
//!
//! Give up (the supervisor stops everything, `/live` turns 503, it exits non-zero, and
//! systemd or Kubernetes restarts the whole unit) when one stage
//! 1. fails `max_failed_starts` starts in a row: a *failed start* exited before it was
//!    ready, or within `failed_start` of being ready. Counting in a row (not in a fixed
//!    window) lets the window grow with the backoff, so the rule fires however long the
//!    backoff has become;
//! 2. stays down (not ready) for `max_down` (the core arms that timer, see
//!    [`crate::core`]): a stage that hangs before ready and is killed at each
//!    `ready_timeout` is caught here;
//! 3. restarts more than `max_restarts` times within `window` (the crash-storm limit of
//!    the first versions; it counts every crash).
//!
//! Invariant: with the defaults, a stage that can never stay up ends the service within
//! about 3 minutes (`tests::defaults_give_up_on_a_stage_that_cannot_stay_up_within_3_minutes`),
//! and a stage that runs healthy between rare crashes never does. An unreachable broker
//! or FTP server is not a crash: stages keep running and retry. Restarts asked for by an
//! operator or a reload are not crashes and are not counted.

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
    pub failed_start: Duration,
    pub max_failed_starts: u32,
    pub max_down: Duration,
}

impl RestartPolicy {
    pub fn from_settings(s: &SupervisorSettings) -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(s.restart_base_ms),
            max: Duration::from_millis(s.restart_max_ms),
            reset_after: Duration::from_secs(s.restart_reset_seconds),
            max_restarts: s.max_restarts as usize,
            window: Duration::from_secs(s.restart_window_seconds),
            failed_start: Duration::from_secs(s.failed_start_seconds),
            max_failed_starts: s.max_failed_starts.min(u32::MAX as u64) as u32,
            max_down: Duration::from_secs(s.max_down_seconds),
        }
    }
}

/// Why the supervisor gives up on a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// `count` failed starts in a row.
    FailedStarts { count: u32 },
    /// Down (not ready) for `down`.
    DownTooLong { down: Duration },
    /// More than `restarts` restarts within `window`.
    TooManyRestarts { restarts: usize, window: Duration },
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::FailedStarts { count } => write!(f, "{count} failed starts in a row"),
            GiveUp::DownTooLong { down } => write!(f, "down for {} s", down.as_secs()),
            GiveUp::TooManyRestarts { restarts, window } => write!(
                f,
                "too many restarts ({restarts} within {} s)",
                window.as_secs()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the stage again after this pause.
    Restart { after: Duration },
    /// Stop everything.
    GiveUp(GiveUp),
}

/// How a stage's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Since it was started.
    pub uptime: Duration,
    /// Since it reported ready (None: it never did).
    pub ready_for: Option<Duration>,
}

/// One stage's restart history.
#[derive(Debug, Default, Clone)]
pub struct Restarts {
    /// Crashes since the last healthy run (the backoff's exponent).
    consecutive: u32,
    /// Failed starts in a row.
    failed_starts: u32,
    recent: VecDeque<Instant>,
    total: u32,
}

impl Restarts {
    /// Restarts so far (crashes only).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Failed starts in a row so far.
    pub fn failed_starts(&self) -> u32 {
        self.failed_starts
    }

    /// The stage exited unasked at `now`; `jitter` in [0, 1).
    pub fn on_crash(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        exit: Exit,
        jitter: f64,
    ) -> Decision {
        if exit.uptime >= policy.reset_after {
            self.consecutive = 0;
        }
        let failed = exit.ready_for.is_none_or(|r| r < policy.failed_start);
        if failed {
            self.failed_starts += 1;
            if self.failed_starts >= policy.max_failed_starts {
                return Decision::GiveUp(GiveUp::FailedStarts {
                    count: self.failed_starts,
                });
            }
        } else {
            self.failed_starts = 0;
        }
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= policy.max_restarts {
            return Decision::GiveUp(GiveUp::TooManyRestarts {
                restarts: self.recent.len(),
                window: policy.window,
            });
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
            failed_start: Duration::from_secs(30),
            max_failed_starts: 100,
            max_down: Duration::from_secs(150),
        }
    }

    fn defaults() -> RestartPolicy {
        RestartPolicy::from_settings(&SupervisorSettings::default())
    }

    /// Crashed before ready after `secs` of uptime.
    fn early(secs: u64) -> Exit {
        Exit {
            uptime: Duration::from_secs(secs),
            ready_for: None,
        }
    }

    /// Crashed after `secs` of healthy running.
    fn after_ready(secs: u64) -> Exit {
        Exit {
            uptime: Duration::from_secs(secs + 1),
            ready_for: Some(Duration::from_secs(secs)),
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
                after(r.on_crash(&p, t0 + Duration::from_secs(i * 13), early(0), 0.5)).as_millis()
            })
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000]);
        assert_eq!(r.total(), 5);
    }

    #[test]
    fn jitter_spreads_the_pause() {
        let p = policy();
        let t0 = Instant::now();
        let low = after(Restarts::default().on_crash(&p, t0, early(0), 0.0));
        let high = after(Restarts::default().on_crash(&p, t0, early(0), 0.999));
        assert_eq!(low, Duration::from_millis(80));
        assert!(high > Duration::from_millis(119) && high <= Duration::from_millis(120));
    }

    #[test]
    fn healthy_uptime_resets_the_backoff() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        r.on_crash(&p, t0, early(0), 0.5);
        r.on_crash(&p, t0 + Duration::from_secs(1), early(0), 0.5);
        let d = r.on_crash(&p, t0 + Duration::from_secs(40), after_ready(39), 0.5);
        assert_eq!(after(d), Duration::from_millis(100));
        assert_eq!(r.failed_starts(), 0);
    }

    #[test]
    fn too_many_restarts_in_the_window_give_up() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        for i in 0..5 {
            after(r.on_crash(&p, t0 + Duration::from_secs(i), after_ready(40), 0.5));
        }
        assert_eq!(
            r.on_crash(&p, t0 + Duration::from_secs(5), after_ready(40), 0.5),
            Decision::GiveUp(GiveUp::TooManyRestarts {
                restarts: 5,
                window: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        for i in 0..5 {
            after(r.on_crash(&p, t0 + Duration::from_secs(i), early(0), 0.5));
        }
        // 61 s after the first: the first four have left the window.
        let d = r.on_crash(&p, t0 + Duration::from_secs(64), early(0), 0.5);
        assert!(matches!(d, Decision::Restart { .. }));
    }

    #[test]
    fn failed_starts_in_a_row_give_up_and_a_good_run_forgives_them() {
        let mut p = policy();
        p.max_failed_starts = 3;
        let t0 = Instant::now();
        let mut r = Restarts::default();
        // Two failed starts (one before ready, one 5 s after), then a run of 40 s.
        after(r.on_crash(&p, t0, early(1), 0.5));
        after(r.on_crash(&p, t0 + Duration::from_secs(10), after_ready(5), 0.5));
        after(r.on_crash(&p, t0 + Duration::from_secs(60), after_ready(40), 0.5));
        assert_eq!(r.failed_starts(), 0);
        after(r.on_crash(&p, t0 + Duration::from_secs(70), early(1), 0.5));
        after(r.on_crash(&p, t0 + Duration::from_secs(80), early(1), 0.5));
        assert_eq!(
            r.on_crash(&p, t0 + Duration::from_secs(90), early(1), 0.5),
            Decision::GiveUp(GiveUp::FailedStarts { count: 3 })
        );
    }

    /// Simulates a stage crashing `crash_after` after each start (ready at once when it
    /// lives long enough for that), with the worst jitter; returns when the policy gave
    /// up, or None within `limit`.
    fn simulate(p: &RestartPolicy, crash_after: Duration, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut r = Restarts::default();
        let startup = Duration::from_millis(300);
        while now - t0 < limit {
            now += crash_after;
            let exit = Exit {
                uptime: crash_after,
                ready_for: crash_after.checked_sub(startup),
            };
            match r.on_crash(p, now, exit, 0.999) {
                Decision::Restart { after } => now += after,
                Decision::GiveUp(_) => return Some(now - t0),
            }
        }
        None
    }

    #[test]
    fn defaults_give_up_on_a_stage_that_cannot_stay_up_within_3_minutes() {
        let p = defaults();
        // Killed at every start (at once, at ready, a few seconds after ready, just
        // before it would count as a good run): given up on within 3 minutes, leaving
        // time to stop the other stages.
        for ms in [1, 300, 2_000, 10_000, 29_000] {
            let gave_up = simulate(&p, Duration::from_millis(ms), Duration::from_secs(600))
                .unwrap_or_else(|| panic!("never gave up on a stage crashing after {ms} ms"));
            assert!(
                gave_up < Duration::from_secs(165),
                "crashing after {ms} ms: gave up after {gave_up:?}"
            );
        }
        // A stage hung before ready is killed at every ready timeout: the down-time limit
        // (armed by the core) ends it; the failed starts alone would take 5 timeouts.
        assert!(p.max_down + Duration::from_secs(10) < Duration::from_secs(180));
    }

    #[test]
    fn defaults_never_give_up_on_transient_crash_patterns() {
        let p = defaults();
        let hour = Duration::from_secs(3600);
        // Crashing after a healthy minute, again and again, for an hour.
        assert_eq!(simulate(&p, Duration::from_secs(60), hour), None);
        // Four failed starts, then it stays up (a dependency came back).
        let t0 = Instant::now();
        let mut r = Restarts::default();
        let mut now = t0;
        for _ in 0..4 {
            now += Duration::from_secs(1);
            match r.on_crash(&p, now, early(1), 0.999) {
                Decision::Restart { after } => now += after,
                other => panic!("{other:?}"),
            }
        }
        now += Duration::from_secs(120);
        assert!(matches!(
            r.on_crash(&p, now, after_ready(119), 0.5),
            Decision::Restart { .. }
        ));
        // Then the same again: the good run forgave the first four.
        for _ in 0..4 {
            now += Duration::from_secs(1);
            assert!(matches!(
                r.on_crash(&p, now, early(1), 0.5),
                Decision::Restart { .. }
            ));
        }
        // A kill -9 now and then (a killed stage, an OOM kill) after healthy runs.
        let mut r = Restarts::default();
        for i in 0..100u64 {
            assert!(matches!(
                r.on_crash(&p, t0 + Duration::from_secs(i * 45), after_ready(40), 0.5),
                Decision::Restart { .. }
            ));
        }
    }
}
