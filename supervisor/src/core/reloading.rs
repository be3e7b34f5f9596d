//! Reloading: read the files (the shell does, on [`Action::ReadConfig`]), plan
//! ([`crate::reload::plan`]), apply to every stage at once.
//!
//! Invariants: a reload asked for while one is under way waits for the same read (one
//! answer for all); a rejected read changes nothing (the generation stays, nothing is
//! published or restarted); an applied one publishes the new configuration *before* any
//! stage is started or restarted, so each of them gets it when it connects; a read that
//! arrives once stopping began is ignored (its callers were answered).

use std::sync::Arc;
use std::time::Instant;

use ftp_pooler_channel::{ConfigInForce, CtlResponse, StageId};
use ftp_pooler_config::Config;

use super::{
    stopping_reply, Action, Child, Core, Lifecycle, Out, ReplyId, Timer, Timings, RETIRE_WAIT,
};
use crate::policy::RestartPolicy;
use crate::reload::{plan, refusals, ReloadPlan};

impl Core {
    pub(super) fn begin_reload(&mut self, reply: Option<ReplyId>, out: &mut Out) {
        match self.lifecycle {
            Lifecycle::Draining { .. } | Lifecycle::Stopped(_) => {
                if let Some(to) = reply {
                    out.push(stopping_reply(to));
                }
            }
            Lifecycle::Reloading { .. } => self.reload_waiters.push(reply),
            Lifecycle::Starting | Lifecycle::Running => {
                self.lifecycle = Lifecycle::Reloading {
                    was_running: self.lifecycle == Lifecycle::Running,
                };
                self.reload_waiters.push(reply);
                out.push(Action::ReadConfig);
            }
        }
    }

    pub(super) fn on_reload_read(
        &mut self,
        read: Result<Box<Config>, Vec<String>>,
        now: Instant,
        out: &mut Out,
    ) {
        let Lifecycle::Reloading { was_running } = self.lifecycle else {
            // Draining began meanwhile: its callers were answered.
            return;
        };
        self.lifecycle = if was_running {
            Lifecycle::Running
        } else {
            Lifecycle::Starting
        };
        let waiters: Vec<ReplyId> = self.reload_waiters.drain(..).flatten().collect();
        let read = read.and_then(|c| {
            let refused = refusals(&self.config.config, &c);
            if refused.is_empty() {
                Ok(c)
            } else {
                Err(refused)
            }
        });
        let new = match read {
            Ok(c) => *c,
            Err(errors) => {
                let text = format!(
                    "reload rejected, the configuration in force (generation {}) stays:\n{}",
                    self.config.generation,
                    errors.join("\n")
                );
                for to in waiters {
                    out.push(Action::Reply {
                        to,
                        response: CtlResponse::Error(text.clone()),
                    });
                }
                out.push(Action::ReloadRejected { errors });
                return;
            }
        };
        let plan = plan(&self.config.config, &new);
        if plan.changed {
            self.apply(new, &plan, now, out);
        }
        let generation = self.config.generation;
        for to in waiters {
            out.push(Action::Reply {
                to,
                response: CtlResponse::Reloaded {
                    generation,
                    added: plan.added.iter().map(|c| c.to_string()).collect(),
                    removed: plan.removed.iter().map(|c| c.to_string()).collect(),
                    restarted: plan.restart.iter().map(|s| s.to_string()).collect(),
                },
            });
        }
        out.push(Action::ReloadApplied { generation, plan });
    }

    /// Puts `new` in force: every stage gets it, the plan's stages restart.
    pub(super) fn apply(&mut self, new: Config, plan: &ReloadPlan, now: Instant, out: &mut Out) {
        self.policy = RestartPolicy::from_settings(&new.settings.supervisor);
        self.timings = Timings::from_config(&new);
        self.config = Arc::new(ConfigInForce {
            generation: self.config.generation + 1,
            config: new,
        });
        // First in force (a worker started below connects and gets it), then the stages.
        out.push(Action::PublishConfig(self.config.clone()));
        for conn in &plan.added {
            let id = StageId::Transfer(conn.clone());
            match self.children.get_mut(&id) {
                // Removed and added again before its old worker stopped: restart it.
                Some(c) if c.retiring => {
                    c.retiring = false;
                    if c.pid.is_some() {
                        c.restart_requested = true;
                    } else {
                        self.spawn(&id, now, out);
                    }
                }
                Some(_) => {}
                None => {
                    self.children.insert(id.clone(), Child::new(now));
                    self.spawn(&id, now, out);
                }
            }
        }
        for id in &plan.restart {
            if self.children.contains_key(id) {
                self.restart(id, now, out);
            }
        }
        for conn in &plan.removed {
            let id = StageId::Transfer(conn.clone());
            let Some(c) = self.children.get_mut(&id) else {
                continue;
            };
            c.retiring = true;
            c.restart_requested = false;
            for to in c.waiters.drain(..) {
                out.push(Action::Reply {
                    to,
                    response: CtlResponse::Error(format!("{id} was removed by a reload")),
                });
            }
            if c.pid.is_none() {
                self.children.remove(&id);
                continue;
            }
            // It stops once ingest no longer routes to it (its next report), or at the
            // deadline.
            out.push(Action::Arm {
                after: RETIRE_WAIT,
                timer: Timer::RetireDeadline { spawn: c.spawn, id },
            });
        }
    }
}
