//! Unit tests of the core while reloading.

use super::*;

#[test]
fn a_rejected_reload_changes_nothing_and_is_reported() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let out = sim.handle(Event::Signal(Sig::Hup));
    assert_eq!(out, [Action::ReadConfig]);
    assert_eq!(
        *sim.core.lifecycle(),
        Lifecycle::Reloading { was_running: true }
    );
    let out = sim.command(Command::Reload, 3);
    assert!(out.is_empty(), "coalesced with the reload under way");
    let out = sim.handle(Event::ReloadRead(Err(
        vec!["[c] bogus: unknown key".into()],
    )));
    assert!(out.contains(&Action::ReloadRejected {
        errors: vec!["[c] bogus: unknown key".into()]
    }));
    assert!(matches!(&replies(&out)[0], (3, CtlResponse::Error(e)) if e.contains("[c] bogus")));
    assert!(!out.iter().any(|a| matches!(a, Action::PublishConfig(_))));
    assert!(signals(&out).is_empty() && spawns(&out).is_empty());
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Running);
    assert_eq!(sim.core.config().generation, 1);
    // A stage restarted now gets the configuration in force (nothing new to publish).
    let out = sim.exit(&t("a"));
    let out = sim.fire(&out, restart_due);
    assert!(!out.iter().any(|a| matches!(a, Action::PublishConfig(_))));
}

#[test]
fn an_applied_reload_adds_restarts_and_retires_workers_for_every_stage_at_once() {
    let (mut sim, _) = Sim::new(&[("a", "p"), ("b", "p")]);
    sim.ready_all();
    sim.command(Command::Reload, 1);
    let new = config(&[("a", "new-password"), ("c", "p")]);
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(new.clone()))));
    let published = out
        .iter()
        .position(|a| matches!(a, Action::PublishConfig(c) if c.generation == 2 && c.config == new))
        .expect("the new configuration is published");
    let first_spawn = out
        .iter()
        .position(|a| matches!(a, Action::Spawn { .. }))
        .unwrap();
    assert!(published < first_spawn, "in force before any stage starts");
    assert_eq!(spawns(&out), [t("c")]);
    assert_eq!(signals(&out), [(t("a"), StageSignal::Term)]);
    assert_eq!(
        replies(&out),
        [(
            1,
            CtlResponse::Reloaded {
                generation: 2,
                added: vec!["c".into()],
                removed: vec!["b".into()],
                restarted: vec!["transfer:a".into()],
            }
        )]
    );
    // b stops once ingest's report no longer routes to it.
    let ingest = sim.pid(&StageId::Ingest);
    let out = sim.handle(Event::Reported {
        id: StageId::Ingest,
        pid: ingest,
        routes: Some(vec!["a".into(), "b".into(), "c".into()]),
    });
    assert!(signals(&out).is_empty());
    let out = sim.handle(Event::Reported {
        id: StageId::Ingest,
        pid: ingest,
        routes: Some(vec!["a".into(), "c".into()]),
    });
    assert_eq!(signals(&out), [(t("b"), StageSignal::Term)]);
    let names = |sim: &Sim| -> Vec<String> {
        sim.core
            .status(sim.now)
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    };
    // Listed until its process is gone.
    assert_eq!(
        names(&sim),
        [
            "publish",
            "transfer:a",
            "transfer:b",
            "transfer:c",
            "ingest"
        ]
    );
    let out = sim.exit(&t("b"));
    assert_eq!(
        names(&sim),
        ["publish", "transfer:a", "transfer:c", "ingest"]
    );
    assert!(spawns(&out).is_empty(), "a removed worker is not restarted");
    assert!(!sim.core.children.contains_key(&t("b")));
    // a restarts on the new configuration; ingest and publish were not touched.
    let out = sim.exit(&t("a"));
    assert_eq!(spawns(&out), [t("a")]);
    assert_eq!(sim.state(&StageId::Ingest), StageState::Running);
    assert_eq!(sim.state(&StageId::Publish), StageState::Running);
}

#[test]
fn a_removed_worker_stops_at_the_deadline_when_ingest_never_lets_go() {
    let (mut sim, _) = Sim::new(&[("a", "p"), ("b", "p")]);
    sim.ready_all();
    sim.handle(Event::Signal(Sig::Hup));
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(config(&[("a", "p")])))));
    let out = sim.fire(&out, |t| matches!(t, Timer::RetireDeadline { .. }));
    assert_eq!(signals(&out), [(t("b"), StageSignal::Term)]);
}

#[test]
fn a_child_exiting_during_a_reload_restarts_and_the_reload_still_applies() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.handle(Event::Signal(Sig::Hup));
    let crashed = sim.exit(&StageId::Publish);
    assert_eq!(sim.state(&StageId::Publish), StageState::Backoff);
    let mut new = config(&[("a", "p")]);
    new.settings.kafka.result_topic = "other-results".into();
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(new))));
    // Publish (in backoff) starts at once on the new configuration; a and ingest restart.
    assert_eq!(spawns(&out), [StageId::Publish]);
    assert_eq!(
        signals(&out),
        [
            (t("a"), StageSignal::Term),
            (StageId::Ingest, StageSignal::Term)
        ]
    );
    // Its old restart timer is stale.
    assert!(spawns(&sim.fire(&crashed, restart_due)).is_empty());
}

#[test]
fn a_stop_signal_during_a_reload_drains_and_the_late_read_is_ignored() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.command(Command::Reload, 4);
    let out = sim.handle(Event::Signal(Sig::Term));
    assert!(replies(&out).iter().any(|(to, r)| *to == 4 && is_error(r)));
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(config(&[("a", "x")])))));
    assert!(out.is_empty());
    assert_eq!(sim.core.config().generation, 1);
}

#[test]
fn an_unchanged_reload_keeps_the_generation_and_restarts_nothing() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    sim.command(Command::Reload, 1);
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(config(&[("a", "p")])))));
    assert!(signals(&out).is_empty() && spawns(&out).is_empty());
    assert!(matches!(
        &replies(&out)[0].1,
        CtlResponse::Reloaded { generation: 1, .. }
    ));
}

#[test]
fn a_reload_while_starting_goes_back_to_starting() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.handle(Event::Signal(Sig::Hup));
    sim.handle(Event::ReloadRead(Err(vec!["x".into()])));
    assert_eq!(*sim.core.lifecycle(), Lifecycle::Starting);
    let out = sim.ready_all();
    assert!(out.iter().any(|a| matches!(a, Action::Notify(_))));
}

#[test]
fn a_connection_removed_and_added_again_before_its_worker_stopped_restarts_it() {
    let (mut sim, _) = Sim::new(&[("a", "p"), ("b", "p")]);
    sim.ready_all();
    sim.handle(Event::Signal(Sig::Hup));
    sim.handle(Event::ReloadRead(Ok(Box::new(config(&[("a", "p")])))));
    sim.handle(Event::Signal(Sig::Hup));
    sim.handle(Event::ReloadRead(Ok(Box::new(config(&[
        ("a", "p"),
        ("b", "p2"),
    ])))));
    let out = sim.exit(&t("b"));
    assert_eq!(spawns(&out), [t("b")]);
    assert_eq!(sim.core.config().generation, 3);
}

#[test]
fn a_reload_changes_the_restart_policy_in_force() {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    sim.ready_all();
    let mut new = config(&[("a", "p")]);
    new.settings.supervisor.max_failed_starts = 1;
    sim.handle(Event::Signal(Sig::Hup));
    let out = sim.handle(Event::ReloadRead(Ok(Box::new(new))));
    assert!(
        signals(&out).is_empty(),
        "no stage reads the supervisor section"
    );
    let out = sim.exit(&t("a"));
    assert!(out.contains(&Action::GaveUp(t("a"))));
}
