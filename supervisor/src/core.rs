//! The supervisor's pure core, in the manner of an OTP supervisor:
//! [`Core::handle`]`(event, now) -> Vec<Action>`. No I/O: no clock reads (`now` is
//! given), no processes, no sockets, no files; randomness (the backoff's jitter) comes
//! from a seeded generator. The shell ([`crate::shell`]) runs the actions and feeds back
//! what happened; decisions are logged with `tracing` (observability only).
//!
//! Owns: the lifecycle ([`Lifecycle`]: starting, running, reloading, draining, stopped),
//! each stage's state keyed by [`StageId`] (spawn number, pid, restart history, waiting
//! `ctl restart` callers), the configuration in force and its generation.
//!
//! Invariants:
//! - every event that names a spawn (exit, timers) or a pid (ready, report) of an older
//!   process of a stage is stale and changes nothing; spawn numbers are unique across
//!   all stages, so a removed-then-added connection cannot match old events;
//! - nothing is restarted once draining began; draining stops ingest, then the transfer
//!   workers, then publish, each group after the previous one has exited (or was killed
//!   at its deadline); a second stop signal hurries: everything gets SIGTERM, then
//!   SIGKILL after 2 s;
//! - giving up (see [`crate::policy`]) stops every stage at once, reports `/live` 503 and
//!   exits with [`Outcome::GaveUp`];
//! - the configuration in force changes only on an applied reload, for every stage at
//!   once: the new one is published to every stage, stages the plan names restart and
//!   get it when they connect; a rejected reload changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftp_pooler_channel::{ConfigInForce, CtlResponse, StageId, StageState, StageStatus};
use ftp_pooler_config::{Config, ConnectionId};

use crate::policy::{Decision, Exit, GiveUp, RestartPolicy, Restarts};

mod events;
mod reloading;
mod stopping;
#[cfg(test)]
pub(crate) mod tests;

pub use events::*;

#[derive(Debug)]
struct Child {
    /// Unique across all stages; 0 before the first spawn.
    spawn: u64,
    pid: Option<u32>,
    state: StageState,
    started_at: Instant,
    ready_at: Option<Instant>,
    restarts: Restarts,
    /// Restarts asked for (ctl, API, reload): not crashes.
    operator_restarts: u32,
    /// Stopping to be started again at once (not a crash).
    restart_requested: bool,
    /// `ctl restart` callers waiting for the new process to be ready.
    waiters: Vec<ReplyId>,
    /// Its connection was removed: it stops for good and is not listed.
    retiring: bool,
    /// Down (not ready) since, and how many times it went down.
    down_since: Option<Instant>,
    downs: u64,
}

impl Child {
    fn new(now: Instant) -> Child {
        Child {
            spawn: 0,
            pid: None,
            state: StageState::Stopped,
            started_at: now,
            ready_at: None,
            restarts: Restarts::default(),
            operator_restarts: 0,
            restart_requested: false,
            waiters: Vec::new(),
            retiring: false,
            down_since: None,
            downs: 0,
        }
    }
}

/// The supervisor's state.
pub struct Core {
    lifecycle: Lifecycle,
    config: Arc<ConfigInForce>,
    policy: RestartPolicy,
    timings: Timings,
    children: BTreeMap<StageId, Child>,
    next_spawn: u64,
    stops: u64,
    reload_waiters: Vec<Option<ReplyId>>,
    /// The supervisor's own pid (for `ctl status`).
    pid: u32,
    rng: fastrand::Rng,
}

type Out = Vec<Action>;

impl Core {
    /// The core for `config` (generation 1); [`Core::start`] starts the stages.
    pub fn new(config: Config, pid: u32, seed: u64, now: Instant) -> Core {
        let policy = RestartPolicy::from_settings(&config.settings.supervisor);
        let timings = Timings::from_config(&config);
        let mut children = BTreeMap::new();
        children.insert(StageId::Publish, Child::new(now));
        for (id, _) in config.registry.servers() {
            if let Ok(id) = id.parse::<ConnectionId>() {
                children.insert(StageId::Transfer(id), Child::new(now));
            }
        }
        children.insert(StageId::Ingest, Child::new(now));
        Core {
            lifecycle: Lifecycle::Starting,
            config: Arc::new(ConfigInForce {
                generation: 1,
                config,
            }),
            policy,
            timings,
            children,
            next_spawn: 0,
            stops: 0,
            reload_waiters: Vec::new(),
            pid,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Starts every stage: publish, the transfer workers, ingest.
    pub fn start(&mut self, now: Instant) -> Out {
        let mut out = vec![Action::PublishConfig(self.config.clone())];
        for id in self.in_start_order() {
            self.spawn(&id, now, &mut out);
        }
        out
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    pub fn config(&self) -> &Arc<ConfigInForce> {
        &self.config
    }

    fn draining(&self) -> bool {
        matches!(
            self.lifecycle,
            Lifecycle::Draining { .. } | Lifecycle::Stopped(_)
        )
    }

    fn in_start_order(&self) -> Vec<StageId> {
        let mut ids: Vec<StageId> = self.children.keys().cloned().collect();
        ids.sort_by_key(|id| id.start_rank());
        ids
    }

    /// Every stage with a process or in the configuration in force, in start order (the
    /// worker of a removed connection is listed until its process has exited).
    pub fn status(&self, now: Instant) -> Vec<StageStatus> {
        self.in_start_order()
            .into_iter()
            .filter_map(|id| {
                let c = &self.children[&id];
                (!c.retiring || c.pid.is_some()).then(|| StageStatus {
                    pid: c.pid,
                    state: c.state,
                    restarts: c.restarts.total() + c.operator_restarts,
                    uptime_seconds: match c.pid {
                        Some(_) => now.saturating_duration_since(c.started_at).as_secs(),
                        None => 0,
                    },
                    name: id,
                })
            })
            .collect()
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Out {
        let mut out = Vec::new();
        if matches!(self.lifecycle, Lifecycle::Stopped(_)) {
            if let Event::Command {
                reply: Some(to), ..
            } = event
            {
                out.push(stopping_reply(to));
            }
            return out;
        }
        match event {
            Event::Spawned { id, spawn, pid } => self.on_spawned(id, spawn, pid, &mut out),
            Event::SpawnFailed { id, spawn, error } => {
                self.on_exit(id, spawn, format!("not started: {error}"), now, &mut out)
            }
            Event::Exited { id, spawn, how } => self.on_exit(id, spawn, how, now, &mut out),
            Event::Ready { id, pid } => self.on_ready(id, pid, now, &mut out),
            Event::Reported { id, pid, routes } => self.on_report(id, pid, routes, &mut out),
            Event::Timer(t) => self.on_timer(t, now, &mut out),
            Event::Command { command, reply } => self.on_command(command, reply, now, &mut out),
            Event::Signal(Sig::Hup) => self.begin_reload(None, &mut out),
            Event::Signal(sig) => self.on_stop_signal(sig, &mut out),
            Event::ReloadRead(read) => self.on_reload_read(read, now, &mut out),
        }
        out
    }

    fn spawn(&mut self, id: &StageId, now: Instant, out: &mut Out) {
        self.next_spawn += 1;
        let spawn = self.next_spawn;
        let ready_timeout = self.timings.ready_timeout;
        let max_down = self.policy.max_down;
        let c = self.children.get_mut(id).expect("spawn of a known stage");
        c.spawn = spawn;
        c.pid = None;
        c.state = StageState::Starting;
        c.started_at = now;
        c.ready_at = None;
        if c.down_since.is_none() {
            c.down_since = Some(now);
            c.downs += 1;
            out.push(Action::Arm {
                after: max_down,
                timer: Timer::DownDeadline {
                    id: id.clone(),
                    down: c.downs,
                },
            });
        }
        out.push(Action::Spawn {
            id: id.clone(),
            spawn,
        });
        out.push(Action::Arm {
            after: ready_timeout,
            timer: Timer::ReadyDeadline {
                id: id.clone(),
                spawn,
            },
        });
    }

    fn signal(&self, id: &StageId, signal: StageSignal, out: &mut Out) {
        if let Some(pid) = self.children.get(id).and_then(|c| c.pid) {
            out.push(Action::Signal {
                id: id.clone(),
                pid,
                signal,
            });
        }
    }

    /// Asks a stage to stop (SIGTERM, SIGKILL at `grace`).
    fn ask_stop(&mut self, id: &StageId, grace: Duration, out: &mut Out) {
        let Some(c) = self.children.get_mut(id) else {
            return;
        };
        if c.pid.is_none() {
            return;
        }
        c.state = StageState::Stopping;
        let spawn = c.spawn;
        self.signal(id, StageSignal::Term, out);
        out.push(Action::Arm {
            after: grace,
            timer: Timer::KillDeadline {
                id: id.clone(),
                spawn,
            },
        });
    }

    fn on_spawned(&mut self, id: StageId, spawn: u64, pid: u32, out: &mut Out) {
        let draining = self.draining();
        let Some(c) = self.children.get_mut(&id) else {
            return;
        };
        if c.spawn != spawn {
            return;
        }
        c.pid = Some(pid);
        tracing::info!(child = %id, child_pid = pid, "stage started");
        if draining {
            // Started just before the drain began: stop it with its group.
            c.state = StageState::Stopping;
            self.signal(&id, StageSignal::Term, out);
        }
    }

    fn on_exit(&mut self, id: StageId, spawn: u64, how: String, now: Instant, out: &mut Out) {
        let draining = self.draining();
        let Some(c) = self.children.get_mut(&id) else {
            return;
        };
        if c.spawn != spawn {
            tracing::debug!(child = %id, spawn, "exit of an older process");
            return;
        }
        out.push(Action::ForgetProcess(id.clone()));
        let was_ready_at = c.ready_at.take();
        c.pid = None;
        if draining {
            c.state = StageState::Stopped;
            tracing::info!(child = %id, exit = %how, "stage stopped");
            self.advance_stop(now, out);
            return;
        }
        if c.retiring {
            tracing::info!(child = %id, exit = %how, "worker of a removed connection stopped");
            self.children.remove(&id);
            return;
        }
        if c.restart_requested {
            c.restart_requested = false;
            c.operator_restarts += 1;
            tracing::info!(child = %id, exit = %how, "stopped for a restart; starting it again");
            out.push(Action::CountRestart(id.clone()));
            self.spawn(&id, now, out);
            return;
        }
        if c.down_since.is_none() {
            c.down_since = Some(now);
            c.downs += 1;
            out.push(Action::Arm {
                after: self.policy.max_down,
                timer: Timer::DownDeadline {
                    id: id.clone(),
                    down: c.downs,
                },
            });
        }
        let exit = Exit {
            uptime: now.saturating_duration_since(c.started_at),
            ready_for: was_ready_at.map(|r| now.saturating_duration_since(r)),
        };
        let jitter = self.rng.f64();
        match c.restarts.on_crash(&self.policy, now, exit, jitter) {
            Decision::Restart { after } => {
                c.state = StageState::Backoff;
                tracing::warn!(child = %id, exit = %how, uptime_s = exit.uptime.as_secs(), restart_in_ms = after.as_millis() as u64, "stage exited; restarting");
                out.push(Action::CountRestart(id.clone()));
                out.push(Action::Arm {
                    after,
                    timer: Timer::RestartDue { id, spawn },
                });
            }
            Decision::GiveUp(why) => {
                c.state = StageState::Stopped;
                self.give_up(id, why, &how, now, out);
            }
        }
    }

    fn on_ready(&mut self, id: StageId, pid: u32, now: Instant, out: &mut Out) {
        let Some(c) = self.children.get_mut(&id) else {
            return;
        };
        if c.pid != Some(pid) || c.state != StageState::Starting {
            tracing::debug!(child = %id, child_pid = pid, "ready from an older process");
            return;
        }
        c.state = StageState::Running;
        c.ready_at = Some(now);
        c.down_since = None;
        tracing::info!(child = %id, child_pid = pid, "stage ready");
        for to in c.waiters.drain(..) {
            out.push(Action::Reply {
                to,
                response: CtlResponse::Restarted {
                    stage: id.to_string(),
                    pid,
                },
            });
        }
        if self.lifecycle == Lifecycle::Starting
            && self
                .children
                .values()
                .all(|c| c.state == StageState::Running)
        {
            self.lifecycle = Lifecycle::Running;
            tracing::info!("all stages ready");
            out.push(Action::Notify("READY=1\nSTATUS=all stages ready".into()));
        }
    }

    fn on_report(&mut self, id: StageId, pid: u32, routes: Option<Vec<String>>, out: &mut Out) {
        if self.children.get(&id).and_then(|c| c.pid) != Some(pid) {
            return;
        }
        out.push(Action::RecordReport(id.clone()));
        let (Some(routes), StageId::Ingest) = (routes, &id) else {
            return;
        };
        // Removed connections' workers stop once ingest no longer routes to them.
        let done: Vec<StageId> = self
            .children
            .iter()
            .filter(|(sid, c)| {
                c.retiring
                    && c.state != StageState::Stopping
                    && sid
                        .connection()
                        .is_some_and(|conn| !routes.iter().any(|r| r == conn.as_str()))
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        let grace = self.timings.stop_grace();
        for sid in done {
            tracing::info!(child = %sid, "connection removed and no longer routed: stopping its worker");
            self.ask_stop(&sid, grace, out);
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant, out: &mut Out) {
        let draining = self.draining();
        let current = |core: &Core, id: &StageId, spawn: u64, state: StageState| {
            core.children
                .get(id)
                .is_some_and(|c| c.spawn == spawn && c.state == state)
        };
        match timer {
            Timer::RestartDue { id, spawn } => {
                if !draining && current(self, &id, spawn, StageState::Backoff) {
                    self.spawn(&id, now, out);
                }
            }
            Timer::ReadyDeadline { id, spawn } => {
                if current(self, &id, spawn, StageState::Starting) {
                    tracing::error!(child = %id, timeout_s = self.timings.ready_timeout.as_secs(), "not ready in time: killing it");
                    self.signal(&id, StageSignal::Kill, out);
                }
            }
            Timer::KillDeadline { id, spawn } => {
                if current(self, &id, spawn, StageState::Stopping) {
                    tracing::warn!(child = %id, "did not stop in time: killing it");
                    self.signal(&id, StageSignal::Kill, out);
                }
            }
            Timer::DownDeadline { id, down } => {
                let Some(c) = self.children.get_mut(&id) else {
                    return;
                };
                if draining || c.retiring || c.downs != down {
                    return;
                }
                if let Some(since) = c.down_since {
                    let how = "still down".to_string();
                    let why = GiveUp::DownTooLong {
                        down: now.saturating_duration_since(since),
                    };
                    self.give_up(id, why, &how, now, out);
                }
            }
            Timer::RetireDeadline { id, spawn } => {
                let retiring = self
                    .children
                    .get(&id)
                    .is_some_and(|c| c.retiring && c.spawn == spawn);
                if retiring && !current(self, &id, spawn, StageState::Stopping) {
                    let grace = self.timings.stop_grace();
                    self.ask_stop(&id, grace, out);
                }
            }
            Timer::StopDeadline { stop } => self.on_stop_deadline(stop, out),
            Timer::ExitDeadline { stop } => self.on_exit_deadline(stop, now, out),
        }
    }

    fn on_command(
        &mut self,
        command: Command,
        reply: Option<ReplyId>,
        now: Instant,
        out: &mut Out,
    ) {
        match command {
            Command::Status => {
                if let Some(to) = reply {
                    out.push(Action::Reply {
                        to,
                        response: CtlResponse::Status {
                            pid: self.pid,
                            stages: self.status(now),
                        },
                    });
                }
            }
            Command::Reload => self.begin_reload(reply, out),
            Command::Restart(name) => {
                if self.draining() {
                    if let Some(to) = reply {
                        out.push(stopping_reply(to));
                    }
                    return;
                }
                let known = name
                    .parse::<StageId>()
                    .ok()
                    .filter(|id| self.children.get(id).is_some_and(|c| !c.retiring));
                let Some(id) = known else {
                    if let Some(to) = reply {
                        let names: Vec<String> = self
                            .status(now)
                            .into_iter()
                            .map(|s| s.name.to_string())
                            .collect();
                        out.push(Action::Reply {
                            to,
                            response: CtlResponse::Error(format!(
                                "no stage named {name:?}; stages: {}",
                                names.join(", ")
                            )),
                        });
                    }
                    return;
                };
                tracing::info!(child = %id, "restart requested by an operator");
                if let Some(to) = reply {
                    self.children.get_mut(&id).expect("known").waiters.push(to);
                }
                self.restart(&id, now, out);
            }
        }
    }

    /// Stops a stage and starts it again at once (not a crash).
    fn restart(&mut self, id: &StageId, now: Instant, out: &mut Out) {
        let grace = self.timings.stop_grace();
        let c = self.children.get_mut(id).expect("restart of a known stage");
        match (c.state, c.pid) {
            (StageState::Backoff | StageState::Stopped, _) | (_, None) => {
                c.operator_restarts += 1;
                out.push(Action::CountRestart(id.clone()));
                self.spawn(id, now, out);
            }
            _ => {
                c.restart_requested = true;
                self.ask_stop(id, grace, out);
            }
        }
    }
}

fn stopping_reply(to: ReplyId) -> Action {
    Action::Reply {
        to,
        response: CtlResponse::Error("the service is stopping".into()),
    }
}
