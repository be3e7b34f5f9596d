//! Unit tests of the core: each event in each lifecycle state, on simulated time.
//! Starting, running and giving up here; draining and reloading in the submodules.

use super::*;
use crate::Outcome;
use ftp_pooler_config::{Registry, Settings};

/// The configuration with these ftp connections (id, password) and a local one, built as
/// typed values.
pub(crate) fn config(conns: &[(&str, &str)]) -> Config {
    use ftp_pooler_config::{
        Connection, ConnectionKind, FtpConnection, LocalConnection, Secret, TlsMode,
    };
    let mut list: Vec<Connection> = conns
        .iter()
        .map(|(id, pass)| Connection {
            id: id.to_string(),
            kind: ConnectionKind::Ftp(FtpConnection {
                host: "h".into(),
                port: 21,
                user: "u".into(),
                password: Secret::new(*pass),
                passive: true,
                active_address: None,
                active_port_range: None,
                timeout_seconds: None,
                tls: TlsMode::None,
                tls_ca_file: None,
                tls_insecure: false,
                max_sessions: None,
            }),
        })
        .collect();
    list.push(Connection {
        id: "l".into(),
        kind: ConnectionKind::Local(LocalConnection {
            base_path: "/srv/files".into(),
        }),
    });
    Config {
        settings: Settings::default(),
        registry: Registry::try_from(list).unwrap(),
        config_file: None,
        connections_file: "c.ini".into(),
    }
}

pub(super) fn t(id: &str) -> StageId {
    StageId::Transfer(id.parse().unwrap())
}

/// A core with a fake process table: every `Spawn` gets a pid at once.
pub(super) struct Sim {
    core: Core,
    now: Instant,
    next_pid: u32,
}

impl Sim {
    fn new(conns: &[(&str, &str)]) -> (Sim, Vec<Action>) {
        let now = Instant::now();
        let mut sim = Sim {
            core: Core::new(config(conns), 1, 7, now),
            now,
            next_pid: 100,
        };
        let first = sim.core.start(now);
        let all = sim.run(first);
        (sim, all)
    }

    /// Feeds `Spawned` for every `Spawn`; returns every action, follow-ups included.
    fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if let Action::Spawn { id, spawn } = &a {
                self.next_pid += 1;
                let ev = Event::Spawned {
                    id: id.clone(),
                    spawn: *spawn,
                    pid: self.next_pid,
                };
                queue.extend(self.core.handle(ev, self.now));
            }
            all.push(a);
        }
        all
    }

    fn handle(&mut self, ev: Event) -> Vec<Action> {
        let out = self.core.handle(ev, self.now);
        self.run(out)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn child(&self, id: &StageId) -> &Child {
        &self.core.children[id]
    }

    fn pid(&self, id: &StageId) -> u32 {
        self.child(id).pid.expect("running")
    }

    fn spawn_of(&self, id: &StageId) -> u64 {
        self.child(id).spawn
    }

    fn ready(&mut self, id: &StageId) -> Vec<Action> {
        let pid = self.pid(id);
        self.handle(Event::Ready {
            id: id.clone(),
            pid,
        })
    }

    fn ready_all(&mut self) -> Vec<Action> {
        let ids: Vec<StageId> = self.core.children.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            if self.child(&id).state == StageState::Starting {
                out.extend(self.ready(&id));
            }
        }
        out
    }

    fn exit(&mut self, id: &StageId) -> Vec<Action> {
        let spawn = self.spawn_of(id);
        self.handle(Event::Exited {
            id: id.clone(),
            spawn,
            how: "killed by SIGKILL".into(),
        })
    }

    fn state(&self, id: &StageId) -> StageState {
        self.child(id).state
    }

    fn command(&mut self, command: Command, reply: ReplyId) -> Vec<Action> {
        self.handle(Event::Command {
            command,
            reply: Some(reply),
        })
    }

    /// Fires every armed timer of `actions` that matches `pick`, in order.
    fn fire(&mut self, actions: &[Action], pick: impl Fn(&Timer) -> bool) -> Vec<Action> {
        let timers: Vec<(Duration, Timer)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Arm { after, timer } if pick(timer) => Some((*after, timer.clone())),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (after, timer) in timers {
            self.advance(after);
            out.extend(self.handle(Event::Timer(timer)));
        }
        out
    }
}

pub(super) fn spawns(actions: &[Action]) -> Vec<StageId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn signals(actions: &[Action]) -> Vec<(StageId, StageSignal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { id, signal, .. } => Some((id.clone(), *signal)),
            _ => None,
        })
        .collect()
}

pub(super) fn replies(actions: &[Action]) -> Vec<(ReplyId, CtlResponse)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { to, response } => Some((*to, response.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn exit_of(actions: &[Action]) -> Option<Outcome> {
    actions.iter().find_map(|a| match a {
        Action::Exit(o) => Some(o.clone()),
        _ => None,
    })
}

pub(super) fn restart_due(t: &Timer) -> bool {
    matches!(t, Timer::RestartDue { .. })
}

pub(super) fn is_error(r: &CtlResponse) -> bool {
    matches!(r, CtlResponse::Error(_))
}

mod draining;
mod matrix;
mod reloading;

// ---- starting ----

#[test]
fn start_spawns_publish_then_workers_then_ingest_with_the_configuration_first() {
    let (sim, out) = Sim::new(&[("a", "p"), ("b", "p")]);
    assert!(matches!(&out[0], Action::PublishConfig(c) if c.generation == 1));
    assert_eq!(
        spawns(&out),
        [StageId::Publish, t("a"), t("b"), StageId::Ingest]
    );
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Starting);
    let names: Vec<String> = sim
        .core
        .status(sim.now)
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["publish", "transfer:a", "transfer:b", "ingest"]);
}

#[test]
fn starting_becomes_running_when_every_stage_is_ready_and_systemd_hears_it_once() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    let out = sim.ready(&StageId::Publish);
    assert!(!out.iter().any(|a| matches!(a, Action::Notify(_))));
    let out = sim.ready_all();
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Notify(n) if n.starts_with("READY=1"))));
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Running);
    // A later restart and ready does not announce again.
    let out = sim.exit(&t("a"));
    sim.fire(&out, restart_due);
    let out = sim.ready(&t("a"));
    assert!(!out.iter().any(|a| matches!(a, Action::Notify(_))));
}

#[test]
fn a_crash_while_starting_restarts_with_backoff() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    let out = sim.exit(&t("a"));
    assert_eq!(sim.state(&t("a")), StageState::Backoff);
    assert!(out.contains(&Action::CountRestart(t("a"))));
    let out = sim.fire(&out, restart_due);
    assert_eq!(spawns(&out), [t("a")]);
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Starting);
}

#[test]
fn a_stage_not_ready_in_time_is_killed_and_a_late_deadline_is_stale() {
    let (mut sim, out) = Sim::new(&[("a", "p")]);
    sim.ready(&StageId::Publish);
    let out = sim.fire(&out, |t| matches!(t, Timer::ReadyDeadline { .. }));
    // Publish was ready: its deadline is stale; the others are killed.
    assert_eq!(
        signals(&out),
        [
            (t("a"), StageSignal::Kill),
            (StageId::Ingest, StageSignal::Kill)
        ]
    );
}

// ---- running ----

#[test]
fn backoff_grows_and_a_stale_restart_timer_or_exit_changes_nothing() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let first = sim.exit(&t("a"));
    let old_spawn = sim.spawn_of(&t("a"));
    let pause = |out: &[Action]| {
        out.iter()
            .find_map(|a| match a {
                Action::Arm {
                    after,
                    timer: Timer::RestartDue { .. },
                } => Some(*after),
                _ => None,
            })
            .unwrap()
    };
    let p1 = pause(&first);
    sim.fire(&first, restart_due);
    let second = sim.exit(&t("a"));
    let p2 = pause(&second);
    assert!(p2 > p1, "{p1:?} then {p2:?}");
    // The first restart timer again, and the first process's exit: both stale.
    let stale = sim.handle(Event::Timer(Timer::RestartDue {
        id: t("a"),
        spawn: old_spawn,
    }));
    assert!(spawns(&stale).is_empty());
    let stale = sim.handle(Event::Exited {
        id: t("a"),
        spawn: old_spawn,
        how: "exit code 1".into(),
    });
    assert!(stale.is_empty());
    assert_eq!(sim.state(&t("a")), StageState::Backoff);
}

#[test]
fn ready_and_reports_of_an_older_process_are_ignored() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let old = sim.pid(&t("a"));
    let out = sim.exit(&t("a"));
    sim.fire(&out, restart_due);
    assert!(sim
        .handle(Event::Ready {
            id: t("a"),
            pid: old
        })
        .is_empty());
    assert_eq!(sim.state(&t("a")), StageState::Starting);
    assert!(sim
        .handle(Event::Reported {
            id: t("a"),
            pid: old,
            routes: None
        })
        .is_empty());
    let pid = sim.pid(&t("a"));
    assert_eq!(
        sim.handle(Event::Reported {
            id: t("a"),
            pid,
            routes: None
        }),
        [Action::RecordReport(t("a"))]
    );
}

#[test]
fn an_operator_restart_stops_and_starts_again_and_answers_when_ready() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.command(Command::Restart("transfer:a".into()), 9);
    assert_eq!(signals(&out), [(t("a"), StageSignal::Term)]);
    assert_eq!(sim.state(&t("a")), StageState::Stopping);
    let out = sim.exit(&t("a"));
    assert_eq!(spawns(&out), [t("a")]);
    assert!(out.contains(&Action::CountRestart(t("a"))));
    let pid = sim.pid(&t("a"));
    let out = sim.ready(&t("a"));
    assert_eq!(
        replies(&out),
        [(
            9,
            CtlResponse::Restarted {
                stage: "transfer:a".into(),
                pid
            }
        )]
    );
    // Not a crash: no failed start, no crash counted.
    assert_eq!(sim.child(&t("a")).restarts.total(), 0);
    assert_eq!(sim.core.status(sim.now)[1].restarts, 1);
}

#[test]
fn a_restart_of_an_unknown_stage_or_of_a_stage_in_backoff() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.command(Command::Restart("transfer:nope".into()), 1);
    assert!(
        matches!(&replies(&out)[0], (1, CtlResponse::Error(e)) if e.starts_with("no stage named"))
    );
    let out = sim.command(Command::Restart("bogus name".into()), 2);
    assert!(is_error(&replies(&out)[0].1));
    sim.exit(&t("a"));
    let out = sim.command(Command::Restart("transfer:a".into()), 3);
    assert_eq!(spawns(&out), [t("a")], "at once, not after the backoff");
}

#[test]
fn a_stop_deadline_kills_a_stage_that_does_not_stop() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.command(Command::Restart("publish".into()), 1);
    let out = sim.fire(&out, |t| matches!(t, Timer::KillDeadline { .. }));
    assert_eq!(signals(&out), [(StageId::Publish, StageSignal::Kill)]);
}

#[test]
fn status_lists_every_stage_in_each_state() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    let out = sim.command(Command::Status, 4);
    match &replies(&out)[0].1 {
        CtlResponse::Status { pid, stages } => {
            assert_eq!(*pid, 1);
            assert!(stages.iter().all(|s| s.state == StageState::Starting));
        }
        other => panic!("{other:?}"),
    }
    sim.ready_all();
    sim.exit(&StageId::Ingest);
    let st = sim.core.status(sim.now);
    assert_eq!(st[2].state, StageState::Backoff);
    assert_eq!(st[2].pid, None);
}

// ---- giving up ----

/// A stage killed at every start (at once): with the default settings the supervisor
/// gives up, stops everything and exits within 3 minutes of simulated time.
#[test]
fn defaults_give_up_on_a_stage_killed_at_every_start_within_3_minutes() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let t0 = sim.now;
    let mut gave_up = false;
    for _ in 0..100 {
        sim.advance(Duration::from_millis(200));
        let out = sim.exit(&t("a"));
        if out.contains(&Action::GaveUp(t("a"))) {
            gave_up = true;
            assert_eq!(
                *sim.core.lifecycle(),
                Lifecycle::Draining {
                    phase: Phase::All,
                    outcome: Outcome::GaveUp { stage: t("a") }
                }
            );
            // Every other stage is asked to stop at once.
            assert_eq!(
                signals(&out),
                [
                    (StageId::Ingest, StageSignal::Term),
                    (StageId::Publish, StageSignal::Term)
                ]
            );
            break;
        }
        sim.fire(&out, restart_due);
    }
    assert!(gave_up);
    sim.exit(&StageId::Ingest);
    let out = sim.exit(&StageId::Publish);
    assert_eq!(exit_of(&out), Some(Outcome::GaveUp { stage: t("a") }));
    assert!(
        sim.now - t0 < Duration::from_secs(180),
        "{:?}",
        sim.now - t0
    );
}

/// A stage that hangs before ready is killed at each ready timeout; the down-time limit
/// ends it within 3 minutes.
#[test]
fn defaults_give_up_on_a_stage_that_never_gets_ready() {
    let (mut sim, first) = Sim::new(&[("a", "p")]);
    let t0 = sim.now;
    sim.ready(&StageId::Publish);
    sim.ready(&StageId::Ingest);
    let down = first
        .iter()
        .find_map(|a| match a {
            Action::Arm {
                after,
                timer: timer @ Timer::DownDeadline { id, .. },
            } if *id == t("a") => Some((*after, timer.clone())),
            _ => None,
        })
        .unwrap();
    let mut out = first;
    // Ready deadline, kill, exit, backoff, start: until the down deadline passes.
    while sim.now + Duration::from_secs(61) < t0 + down.0 {
        sim.fire(&out, |t| matches!(t, Timer::ReadyDeadline { .. }));
        let exited = sim.exit(&t("a"));
        out = sim.fire(&exited, restart_due);
    }
    sim.now = t0 + down.0;
    let out = sim.handle(Event::Timer(down.1));
    assert!(out.contains(&Action::GaveUp(t("a"))), "{out:?}");
    assert!(sim.now - t0 < Duration::from_secs(170));
}

#[test]
fn a_down_deadline_after_the_stage_came_back_is_stale() {
    let (mut sim, first) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.fire(&first, |t| matches!(t, Timer::DownDeadline { .. }));
    assert!(!out.iter().any(|a| matches!(a, Action::GaveUp(_))));
}

#[test]
fn transient_crashes_with_healthy_runs_between_never_give_up() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    for _ in 0..200 {
        sim.advance(Duration::from_secs(45));
        let out = sim.exit(&t("a"));
        assert!(!out.iter().any(|a| matches!(a, Action::GaveUp(_))));
        let out = sim.fire(&out, restart_due);
        sim.ready(&t("a"));
        // The down deadline armed at the exit is stale now.
        let out = sim.fire(&out, |t| matches!(t, Timer::DownDeadline { .. }));
        assert!(out.is_empty());
    }
}

#[test]
fn a_spawn_failure_counts_as_a_failed_start() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.exit(&t("a"));
    let spawn = sim.spawn_of(&t("a"));
    // The restart's spawn fails (the executable is gone).
    sim.core.handle(
        Event::Timer(Timer::RestartDue { id: t("a"), spawn }),
        sim.now,
    );
    let spawn = sim.spawn_of(&t("a"));
    let out = sim.handle(Event::SpawnFailed {
        id: t("a"),
        spawn,
        error: "No such file".into(),
    });
    assert_eq!(sim.state(&t("a")), StageState::Backoff);
    assert_eq!(sim.child(&t("a")).restarts.failed_starts(), 2);
    assert!(out.contains(&Action::CountRestart(t("a"))));
}
