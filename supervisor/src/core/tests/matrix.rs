//! Every kind of event in every lifecycle state (starting, running, reloading,
//! draining, stopped): alone and in a row, the core keeps its invariants (nothing starts
//! or changes once stopping, every caller is answered or waits for a reason, a status is
//! always answered).

use super::*;

/// A simulation brought into one lifecycle state.
fn in_state(name: &str) -> Sim {
    let (mut sim, _) = Sim::new(&[("a", "p")]);
    match name {
        "starting" => {}
        "running" => {
            sim.ready_all();
        }
        "reloading" => {
            sim.ready_all();
            sim.handle(Event::Signal(Sig::Hup));
        }
        "draining" => {
            sim.ready_all();
            sim.handle(Event::Signal(Sig::Term));
        }
        "stopped" => {
            sim.ready_all();
            sim.handle(Event::Signal(Sig::Term));
            for id in [StageId::Ingest, t("a"), StageId::Publish] {
                sim.exit(&id);
            }
        }
        other => panic!("{other}"),
    }
    sim
}

/// Every kind of event, for the current processes of `sim` (and a stale one).
fn every_event(sim: &Sim) -> Vec<Event> {
    let a = t("a");
    let spawn = sim.spawn_of(&a);
    let pid = sim.child(&a).pid.unwrap_or(1);
    vec![
        Event::Spawned {
            id: a.clone(),
            spawn: spawn + 100,
            pid: 5,
        },
        Event::Ready { id: a.clone(), pid },
        Event::Reported {
            id: StageId::Ingest,
            pid: sim.child(&StageId::Ingest).pid.unwrap_or(1),
            routes: Some(vec!["a".into()]),
        },
        Event::Timer(Timer::RestartDue {
            id: a.clone(),
            spawn,
        }),
        Event::Timer(Timer::ReadyDeadline {
            id: a.clone(),
            spawn,
        }),
        Event::Timer(Timer::KillDeadline {
            id: a.clone(),
            spawn,
        }),
        Event::Timer(Timer::DownDeadline {
            id: a.clone(),
            down: 1,
        }),
        Event::Timer(Timer::RetireDeadline {
            id: a.clone(),
            spawn,
        }),
        Event::Timer(Timer::StopDeadline { stop: 99 }),
        Event::Timer(Timer::ExitDeadline { stop: 99 }),
        Event::Command {
            command: Command::Status,
            reply: Some(1),
        },
        Event::Command {
            command: Command::Restart("publish".into()),
            reply: Some(2),
        },
        Event::Command {
            command: Command::Reload,
            reply: Some(3),
        },
        Event::ReloadRead(Err(vec!["bad".into()])),
        Event::ReloadRead(Ok(Box::new(config(&[("a", "other")])))),
        Event::Signal(Sig::Hup),
        Event::Exited {
            id: a,
            spawn,
            how: "exit code 1".into(),
        },
        Event::Signal(Sig::Term),
    ]
}

#[test]
fn every_event_in_every_lifecycle_state_keeps_the_invariants() {
    for state in ["starting", "running", "reloading", "draining", "stopped"] {
        let events = every_event(&in_state(state));
        for (i, event) in events.iter().enumerate() {
            // Each event alone on a fresh simulation in that state...
            let mut sim = in_state(state);
            let out = sim.handle(event.clone());
            let stopping = matches!(state, "draining" | "stopped");
            if stopping {
                assert!(
                    spawns(&out).is_empty(),
                    "{state}: {event:?} spawned: {out:?}"
                );
                assert!(
                    !out.iter().any(|a| matches!(a, Action::PublishConfig(_))),
                    "{state}: {event:?} changed the configuration"
                );
            }
            if state == "stopped" {
                assert!(
                    out.iter().all(|a| matches!(a, Action::Reply { .. })),
                    "{state}: {event:?} did something: {out:?}"
                );
            }
            if let Event::Command {
                reply: Some(to),
                command,
            } = event
            {
                let answered = replies(&out).iter().filter(|(r, _)| r == to).count();
                let waits = match command {
                    Command::Restart(_) => !stopping,
                    Command::Reload => state == "reloading" || !stopping,
                    Command::Status => false,
                };
                assert_eq!(answered, usize::from(!waits), "{state}: {event:?}: {out:?}");
            }
            // ...and all of them in a row: no panic, and a status is still answered.
            let mut sim = in_state(state);
            for e in &events[..=i] {
                sim.handle(e.clone());
            }
            let out = sim.command(Command::Status, 42);
            assert_eq!(replies(&out).len(), 1, "{state}: after {event:?}");
        }
    }
}
