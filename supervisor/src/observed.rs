//! What the supervisor observed of its stages, shared with the HTTP handlers
//! ([`crate::api`]): their status, their latest reports and metrics, whether the
//! supervisor gave up, and the last reload; and the readiness rule built on it.
//!
//! Invariant: only the event loop writes it (the shell, after each event); the
//! handlers read it under its lock and never wait on a stage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ftp_pooler_channel::{
    BrokerProblem, IngestDetail, PublishDetail, StageDetail, StageId, StageState, StageStatus,
    TransferDetail,
};
use ftp_pooler_config::{Config, ConnectionId};
use serde_json::{json, Value};

use crate::metrics::Aggregator;
use crate::reload::ReloadPlan;

/// A stage is unresponsive when it has not reported for this long.
pub const REPORT_STALE: Duration = Duration::from_secs(5);

/// What the supervisor knows, shared with the HTTP handlers.
#[derive(Default)]
pub struct Observed {
    /// False once the service is draining.
    pub running: bool,
    pub stages: Vec<StageStatus>,
    /// Latest report detail of each stage, with when it arrived.
    pub details: HashMap<StageId, (Instant, StageDetail)>,
    pub metrics: Aggregator,
    /// The stage the supervisor gave up on (`/live` is 503).
    pub gave_up: Option<StageId>,
    /// The last reload, applied or rejected.
    pub last_reload: Option<LastReload>,
}

/// What the last reload did, for `GET /config`.
#[derive(Debug, Clone, PartialEq)]
pub struct LastReload {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub body: Value,
}

impl LastReload {
    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    pub fn rejected(errors: Vec<String>) -> LastReload {
        let at = Self::now();
        LastReload {
            at,
            body: json!({"status": "rejected", "at": at, "errors": errors}),
        }
    }

    pub fn applied(generation: u64, plan: &ReloadPlan) -> LastReload {
        let at = Self::now();
        let ids = |v: &[ConnectionId]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        LastReload {
            at,
            body: json!({
                "status": "applied",
                "at": at,
                "generation": generation,
                "added": ids(&plan.added),
                "removed": ids(&plan.removed),
                "restarted": plan.restart.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "next_start": plan.next_start,
            }),
        }
    }
}

impl Observed {
    pub(crate) fn transfer(&self, id: &str) -> Option<&TransferDetail> {
        let id = StageId::Transfer(id.parse().ok()?);
        match self.details.get(&id) {
            Some((_, StageDetail::Transfer(t))) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn ingest(&self) -> Option<&IngestDetail> {
        match self.details.get(&StageId::Ingest) {
            Some((_, StageDetail::Ingest(i))) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn publish(&self) -> Option<&PublishDetail> {
        match self.details.get(&StageId::Publish) {
            Some((_, StageDetail::Publish(p))) => Some(p),
            _ => None,
        }
    }

    /// Ok when ready; else the reason and what it concerns. The worker of a connection
    /// that a reload removed (listed while it stops) does not count.
    pub fn readiness(
        &self,
        now: Instant,
        config: &Config,
    ) -> Result<(), (&'static str, Vec<String>)> {
        if !self.running {
            return Err(("application_not_running", Vec::new()));
        }
        let in_force = |s: &&StageStatus| {
            s.name
                .connection()
                .is_none_or(|c| config.registry.get(c.as_str()).is_some())
        };
        let down: Vec<String> = self
            .stages
            .iter()
            .filter(in_force)
            .filter(|s| s.state != StageState::Running)
            .map(|s| s.name.to_string())
            .collect();
        if !down.is_empty() {
            return Err(("stage_down", down));
        }
        let silent: Vec<String> = self
            .stages
            .iter()
            .filter(in_force)
            .filter(|s| {
                self.details
                    .get(&s.name)
                    .is_none_or(|(at, _)| now.duration_since(*at) > REPORT_STALE)
            })
            .map(|s| s.name.to_string())
            .collect();
        if !silent.is_empty() {
            return Err(("stage_unresponsive", silent));
        }
        let mut unreachable = Vec::new();
        let mut problems = Vec::new();
        let ingest = self.ingest().map(|i| (i.broker_up, i.broker_problem));
        let publish = self.publish().map(|p| (p.broker_up, p.broker_problem));
        for (name, seen) in [(StageId::Ingest, ingest), (StageId::Publish, publish)] {
            if let Some((false, Some(problem))) = seen {
                problems.push(problem);
            }
            if !seen.is_some_and(|(up, _)| up) {
                unreachable.push(name.to_string());
            }
        }
        if !unreachable.is_empty() {
            // A client that saw why says so: a wrong password is not a network outage.
            let reason = if problems.contains(&BrokerProblem::Authentication) {
                "broker_authentication_failed"
            } else if problems.contains(&BrokerProblem::Tls) {
                "broker_tls_failed"
            } else {
                "broker_unreachable"
            };
            return Err((reason, unreachable));
        }
        Ok(())
    }
}
