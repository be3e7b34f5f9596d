//! Unit tests of the core while draining (and stopped).

use super::*;

#[test]
fn drain_stops_ingest_then_the_workers_then_publish_then_exits() {
    let (mut sim, _) = Sim::new(&[("a", "p"), ("b", "p")]);
    sim.ready_all();
    let out = sim.handle(Event::Signal(Sig::Term));
    assert!(out.contains(&Action::Draining));
    assert_eq!(signals(&out), [(StageId::Ingest, StageSignal::Term)]);
    let out = sim.exit(&StageId::Ingest);
    assert_eq!(
        signals(&out),
        [(t("a"), StageSignal::Term), (t("b"), StageSignal::Term)]
    );
    let out = sim.exit(&t("a"));
    assert!(signals(&out).is_empty(), "b still runs");
    let out = sim.exit(&t("b"));
    assert_eq!(signals(&out), [(StageId::Publish, StageSignal::Term)]);
    let out = sim.exit(&StageId::Publish);
    assert_eq!(exit_of(&out), Some(Outcome::Stopped));
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Stopped(Outcome::Stopped));
    // Stopped: a late command is answered, nothing else happens.
    let out = sim.command(Command::Status, 5);
    assert!(is_error(&replies(&out)[0].1));
}

#[test]
fn during_a_drain_nothing_restarts_and_requests_are_answered() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    // A worker in backoff when the drain begins.
    let crashed = sim.exit(&t("a"));
    sim.handle(Event::Signal(Sig::Int));
    assert_eq!(sim.state(&t("a")), StageState::Stopped);
    assert!(spawns(&sim.fire(&crashed, restart_due)).is_empty());
    let out = sim.command(Command::Restart("publish".into()), 1);
    assert!(is_error(&replies(&out)[0].1));
    assert!(signals(&out).is_empty());
    let out = sim.command(Command::Reload, 2);
    assert!(is_error(&replies(&out)[0].1));
    assert!(!out.contains(&Action::ReadConfig));
    let out = sim.command(Command::Status, 3);
    assert!(matches!(replies(&out)[0].1, CtlResponse::Status { .. }));
    // Ingest exits: the workers' group has nothing running, publish is next.
    let out = sim.exit(&StageId::Ingest);
    assert_eq!(signals(&out), [(StageId::Publish, StageSignal::Term)]);
    // A crash of publish while draining is its stop, not a restart.
    let out = sim.exit(&StageId::Publish);
    assert_eq!(exit_of(&out), Some(Outcome::Stopped));
}

#[test]
fn a_restart_waiter_is_answered_when_the_drain_begins() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.command(Command::Restart("transfer:a".into()), 7);
    let out = sim.handle(Event::Signal(Sig::Term));
    assert_eq!(
        replies(&out),
        [(7, CtlResponse::Error("the service is stopping".into()))]
    );
    // Its exit does not start it again.
    sim.exit(&StageId::Ingest);
    let out = sim.exit(&t("a"));
    assert!(spawns(&out).is_empty());
}

#[test]
fn a_group_that_overstays_its_deadline_is_killed_then_the_drain_goes_on() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.handle(Event::Signal(Sig::Term));
    let killed = sim.fire(&out, |t| matches!(t, Timer::StopDeadline { .. }));
    assert_eq!(signals(&killed), [(StageId::Ingest, StageSignal::Kill)]);
    let out = sim.exit(&StageId::Ingest);
    assert_eq!(signals(&out), [(t("a"), StageSignal::Term)]);
    // The old phase's exit deadline is stale now.
    let out = sim.fire(&killed, |t| matches!(t, Timer::ExitDeadline { .. }));
    assert!(exit_of(&out).is_none());
}

#[test]
fn a_second_stop_signal_hurries_every_stage() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.handle(Event::Signal(Sig::Term));
    let out = sim.handle(Event::Signal(Sig::Term));
    let mut sent = signals(&out);
    sent.sort_by_key(|(id, _)| id.start_rank());
    assert_eq!(
        sent,
        [
            (StageId::Publish, StageSignal::Term),
            (t("a"), StageSignal::Term),
            (StageId::Ingest, StageSignal::Term)
        ]
    );
    let killed = sim.fire(&out, |t| matches!(t, Timer::StopDeadline { .. }));
    assert_eq!(signals(&killed).len(), 3);
    assert!(signals(&killed)
        .iter()
        .all(|(_, s)| *s == StageSignal::Kill));
    // Processes that never go away: exit anyway.
    let out = sim.fire(&killed, |t| matches!(t, Timer::ExitDeadline { .. }));
    assert_eq!(exit_of(&out), Some(Outcome::Stopped));
}

#[test]
fn a_stage_spawned_as_the_drain_begins_is_stopped() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.exit(&t("a"));
    // Its restart timer fires and the spawn is under way when SIGTERM arrives.
    let (_, timer) = out
        .iter()
        .find_map(|a| match a {
            Action::Arm { after, timer } if restart_due(timer) => Some((*after, timer.clone())),
            _ => None,
        })
        .unwrap();
    let spawn_actions = sim.core.handle(Event::Timer(timer), sim.now);
    let spawn = match &spawn_actions[..] {
        [.., Action::Spawn { spawn, .. }, Action::Arm { .. }] => *spawn,
        other => panic!("{other:?}"),
    };
    sim.handle(Event::Signal(Sig::Term));
    let out = sim.handle(Event::Spawned {
        id: t("a"),
        spawn,
        pid: 999,
    });
    assert_eq!(signals(&out), [(t("a"), StageSignal::Term)]);
}

#[test]
fn a_stage_that_outlives_its_kill_is_left_behind_and_the_next_group_still_stops() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.handle(Event::Signal(Sig::Term));
    let killed = sim.fire(&out, |t| matches!(t, Timer::StopDeadline { .. }));
    // Ingest never exits, even after SIGKILL: the workers are stopped anyway.
    let out = sim.fire(&killed, |t| matches!(t, Timer::ExitDeadline { .. }));
    assert_eq!(signals(&out), [(t("a"), StageSignal::Term)]);
    assert!(sim.child(&t("a")).pid.is_some());
    let out = sim.exit(&t("a"));
    assert_eq!(signals(&out), [(StageId::Publish, StageSignal::Term)]);
    let out = sim.exit(&StageId::Publish);
    assert_eq!(exit_of(&out), Some(Outcome::Stopped));
}
