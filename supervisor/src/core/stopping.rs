//! Stopping: draining on SIGTERM/SIGINT (ingest, then the transfer workers, then
//! publish, each group once the previous one is down or killed at its deadline), a
//! second stop signal (everything at once, SIGKILL after 2 s), and giving up on a stage
//! that cannot stay up (everything at once, `/live` 503, exit non-zero).
//!
//! Invariants: once stopping began nothing restarts and every waiting caller has been
//! answered; each phase's deadline timers carry the phase's number, so a deadline of an
//! earlier phase is stale; the core exits exactly once ([`Lifecycle::Stopped`]).

use std::time::{Duration, Instant};

use ftp_pooler_channel::{StageId, StageState};

use super::{
    stopping_reply, Action, Core, Lifecycle, Out, Phase, Sig, StageSignal, Timer, EXIT_WAIT,
    GIVE_UP_GRACE, HURRY_GRACE,
};
use crate::policy::GiveUp;
use crate::Outcome;

impl Core {
    pub(super) fn on_stop_signal(&mut self, sig: Sig, out: &mut Out) {
        let now_phase = match &self.lifecycle {
            Lifecycle::Draining { outcome, .. } => {
                tracing::warn!(signal = ?sig, "second stop signal: stopping every stage now");
                Some(outcome.clone())
            }
            _ => None,
        };
        match now_phase {
            Some(outcome) => self.enter_phase_with(Phase::All, outcome, HURRY_GRACE, out),
            None => {
                tracing::info!(signal = ?sig, "draining");
                out.push(Action::Notify("STOPPING=1\nSTATUS=draining".into()));
                self.begin_stop(Phase::Ingest, Outcome::Stopped, out);
            }
        }
    }

    pub(super) fn give_up(
        &mut self,
        id: StageId,
        why: GiveUp,
        how: &str,
        now: Instant,
        out: &mut Out,
    ) {
        let _ = now;
        tracing::error!(child = %id, exit = %how, reason = %why, "the stage cannot stay up: giving up, stopping everything");
        out.push(Action::GaveUp(id.clone()));
        out.push(Action::Notify(format!(
            "STOPPING=1\nSTATUS=stage {id} cannot stay up ({why}); giving up"
        )));
        self.begin_stop(Phase::All, Outcome::GaveUp { stage: id }, out);
    }

    /// Leaves normal operation: callers waiting for restarts or reloads are answered.
    pub(super) fn begin_stop(&mut self, phase: Phase, outcome: Outcome, out: &mut Out) {
        out.push(Action::Draining);
        for to in self.reload_waiters.drain(..).flatten() {
            out.push(stopping_reply(to));
        }
        for c in self.children.values_mut() {
            c.restart_requested = false;
            for to in c.waiters.drain(..) {
                out.push(stopping_reply(to));
            }
            if c.pid.is_none() {
                c.state = StageState::Stopped;
            }
        }
        let grace = match phase {
            Phase::All => GIVE_UP_GRACE,
            _ => self.timings.drain + Duration::from_secs(10),
        };
        self.enter_phase_with(phase, outcome, grace, out);
    }

    pub(super) fn enter_phase(
        &mut self,
        phase: Phase,
        outcome: Outcome,
        _now: Instant,
        out: &mut Out,
    ) {
        let grace = self.timings.drain + Duration::from_secs(10);
        self.enter_phase_with(phase, outcome, grace, out);
    }

    /// Stops the stages of `phase` (SIGTERM, SIGKILL at `grace`); goes on to the next
    /// group at once when none of them runs.
    pub(super) fn enter_phase_with(
        &mut self,
        phase: Phase,
        outcome: Outcome,
        grace: Duration,
        out: &mut Out,
    ) {
        self.stops += 1;
        self.lifecycle = Lifecycle::Draining {
            phase,
            outcome: outcome.clone(),
        };
        let members: Vec<StageId> = self
            .children
            .keys()
            .filter(|id| phase.holds(id))
            .cloned()
            .collect();
        let mut running = false;
        for id in &members {
            let c = self.children.get_mut(id).expect("member");
            if c.pid.is_some() {
                running = true;
                c.state = StageState::Stopping;
                tracing::info!(child = %id, "stopping");
                self.signal(id, StageSignal::Term, out);
            } else {
                c.state = StageState::Stopped;
            }
        }
        if running {
            out.push(Action::Arm {
                after: grace,
                timer: Timer::StopDeadline { stop: self.stops },
            });
            return;
        }
        match phase.next() {
            Some(next) => self.enter_phase_with(next, outcome, grace, out),
            None => self.finish(outcome, out),
        }
    }

    /// After an exit while draining: the next group once this one is down.
    pub(super) fn advance_stop(&mut self, now: Instant, out: &mut Out) {
        let Lifecycle::Draining { phase, outcome } = self.lifecycle.clone() else {
            return;
        };
        let busy = self
            .children
            .iter()
            .any(|(id, c)| phase.holds(id) && c.pid.is_some());
        if busy {
            return;
        }
        match phase.next() {
            Some(next) => self.enter_phase(next, outcome, now, out),
            None => self.finish(outcome, out),
        }
    }

    pub(super) fn finish(&mut self, outcome: Outcome, out: &mut Out) {
        tracing::info!("all stages stopped");
        self.lifecycle = Lifecycle::Stopped(outcome.clone());
        out.push(Action::Exit(outcome));
    }

    /// The group being stopped overstayed its deadline: SIGKILL.
    pub(super) fn on_stop_deadline(&mut self, stop: u64, out: &mut Out) {
        let Lifecycle::Draining { phase, .. } = self.lifecycle.clone() else {
            return;
        };
        if stop != self.stops {
            return;
        }
        let late: Vec<StageId> = self
            .children
            .iter()
            .filter(|(id, c)| phase.holds(id) && c.pid.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &late {
            tracing::warn!(child = %id, "did not stop within the deadline: killing it");
            self.signal(id, StageSignal::Kill, out);
        }
        out.push(Action::Arm {
            after: EXIT_WAIT,
            timer: Timer::ExitDeadline { stop },
        });
    }

    /// Killed and still not gone (a process in uninterruptible sleep): go on without it.
    pub(super) fn on_exit_deadline(&mut self, stop: u64, now: Instant, out: &mut Out) {
        let Lifecycle::Draining { phase, outcome } = self.lifecycle.clone() else {
            return;
        };
        if stop != self.stops {
            return;
        }
        for (id, c) in self.children.iter_mut() {
            if phase.holds(id) && c.pid.is_some() {
                tracing::error!(child = %id, "killed and still not gone: going on without it");
                c.pid = None;
                c.state = StageState::Stopped;
            }
        }
        match phase.next() {
            Some(next) => self.enter_phase(next, outcome, now, out),
            None => self.finish(outcome, out),
        }
    }
}
