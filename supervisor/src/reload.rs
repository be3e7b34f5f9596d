//! The reload plan: what must happen to the stages for a new configuration to be in
//! force (pure, unit-tested).
//!
//! [`plan`] compares the configuration in force with a new, validated one:
//! - an ftp connection that appeared gets a worker; one that went away has its worker
//!   retired (once ingest no longer routes to it); one whose entry or session budget
//!   changed, or every one when a local connection changed, has its worker restarted;
//! - a settings section that a stage reads makes that stage restart (it gets the new
//!   configuration when it connects): ingest reads `kafka`, `pool`, `shutdown`,
//!   `logging`; publish `kafka`, `shutdown`, `logging`; a worker everything but `api`,
//!   `metrics` and `supervisor`;
//! - `supervisor` (watching the files included) and `api.admin_token_file` apply in the
//!   supervisor at once; `api` (host, port) and `metrics` (its listeners)
//!   and the supervisor's own `logging` only at the next start of the service: the plan
//!   names them in [`ReloadPlan::next_start`];
//! - ingest takes a new registry without a restart (the supervisor sends it the new
//!   configuration).
//!
//! Invariant: a stage is in at most one of added / retired / restarted, and an empty
//! plan means the two configurations are equal for every stage.

use std::collections::{BTreeMap, BTreeSet};

use ftp_pooler_channel::StageId;
use ftp_pooler_config::{Config, ConnectionId, Settings};

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Workers to start (new ftp connections).
    pub added: Vec<ConnectionId>,
    /// Workers to stop for good (removed ftp connections).
    pub removed: Vec<ConnectionId>,
    /// Stages to restart, in start order.
    pub restart: Vec<StageId>,
    /// Settings that apply only when the service starts again.
    pub next_start: Vec<&'static str>,
    /// Anything differs (a new generation is due even if no stage restarts).
    pub changed: bool,
}

/// What a reload may not change, each as an error naming the key: the task topic and
/// the consumer group are the identity of every task message, and the service keeps facts
/// about task messages by (partition, offset) of that topic (publish's ledger, ingest's
/// tracker, the headers of the records it writes). A reload restarts the stages one after
/// another while the old ones drain, so for a moment an old ingest's results would reach a
/// new publish, which would name the new topic in their headers: later, messages of the
/// new topic at those offsets would be skipped as done. A restart of the service has no
/// such moment. Empty: the reload may go on.
pub fn refusals(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.settings.kafka, &new.settings.kafka);
    let mut out = Vec::new();
    for (key, before, after) in [
        ("kafka.input_topic", &o.input_topic, &n.input_topic),
        ("kafka.consumer_group", &o.consumer_group, &n.consumer_group),
    ] {
        if before != after {
            out.push(format!(
                "config.yaml: {key}: changed from {before:?} to {after:?}; it changes only with a restart of the service (results and offsets name it), not with a reload"
            ));
        }
    }
    out
}

/// The sections of config.yaml that differ.
fn changed_sections(old: &Settings, new: &Settings) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            out.insert(name);
        }
    };
    check("kafka", old.kafka != new.kafka);
    check("pool", old.pool != new.pool);
    check("transfer", old.transfer != new.transfer);
    check(
        "circuit_breaker",
        old.circuit_breaker != new.circuit_breaker,
    );
    check(
        "api",
        old.api.host != new.api.host || old.api.port != new.api.port,
    );
    // Read by the API at each mutating request: in force at once, no stage reads it.
    check(
        "api.admin_token_file",
        old.api.admin_token_file != new.api.admin_token_file,
    );
    check("metrics", old.metrics != new.metrics);
    check("logging", old.logging != new.logging);
    check("shutdown", old.shutdown != new.shutdown);
    check("supervisor", old.supervisor != new.supervisor);
    check(
        "paths",
        old.config_path != new.config_path || old.connections_path != new.connections_path,
    );
    out
}

/// The sections each kind of stage reads.
fn reads(stage: &StageId, section: &str) -> bool {
    match stage {
        StageId::Ingest => matches!(section, "kafka" | "pool" | "shutdown" | "logging"),
        StageId::Publish => matches!(section, "kafka" | "shutdown" | "logging"),
        StageId::Transfer(_) => !matches!(
            section,
            "api" | "api.admin_token_file" | "metrics" | "supervisor" | "paths"
        ),
    }
}

fn ftp_ids(c: &Config) -> BTreeMap<ConnectionId, &ftp_pooler_config::Connection> {
    c.registry
        .servers()
        .filter_map(|(id, f)| id.parse().ok().map(|id| (id, f)))
        .collect()
}

/// The plan that takes the stages from `old` to `new`.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let sections = changed_sections(&old.settings, &new.settings);
    let old_ftp = ftp_ids(old);
    let new_ftp = ftp_ids(new);
    let old_budget = ftp_pooler_config::session_budget(&old.settings, &old.registry);
    let new_budget = ftp_pooler_config::session_budget(&new.settings, &new.registry);
    let locals = |c: &Config| -> Vec<ftp_pooler_config::Connection> {
        c.registry
            .iter()
            .filter(|c| c.is_local())
            .cloned()
            .collect()
    };
    let locals_changed = locals(old) != locals(new);

    let added: Vec<ConnectionId> = new_ftp
        .keys()
        .filter(|k| !old_ftp.contains_key(*k))
        .cloned()
        .collect();
    let removed: Vec<ConnectionId> = old_ftp
        .keys()
        .filter(|k| !new_ftp.contains_key(*k))
        .cloned()
        .collect();

    let mut restart: BTreeSet<StageId> = BTreeSet::new();
    for stage in [StageId::Publish, StageId::Ingest] {
        if sections.iter().any(|s| reads(&stage, s)) {
            restart.insert(stage);
        }
    }
    for (id, conn) in &new_ftp {
        let Some(before) = old_ftp.get(id) else {
            continue;
        };
        let stage = StageId::Transfer(id.clone());
        if before != conn
            || old_budget.get(id.as_str()) != new_budget.get(id.as_str())
            || locals_changed
            || sections.iter().any(|s| reads(&stage, s))
        {
            restart.insert(stage);
        }
    }
    let mut restart: Vec<StageId> = restart.into_iter().collect();
    restart.sort_by_key(|s| s.start_rank());

    let mut next_start = Vec::new();
    if sections.contains("api") {
        next_start.push("api");
    }
    if sections.contains("metrics") {
        next_start.push("metrics");
    }
    if sections.contains("logging") {
        next_start.push("logging (the supervisor's own)");
    }
    ReloadPlan {
        changed: !sections.is_empty() || old.registry != new.registry,
        added,
        removed,
        restart,
        next_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftp_pooler_config::Registry;

    /// Typed configurations: (id, password) ftp connections and a local one at `base`.
    fn config_at(conns: &[(&str, &str)], base: &str) -> Config {
        let mut c = crate::core::tests::config(conns);
        let mut list: Vec<ftp_pooler_config::Connection> = c.registry.iter().cloned().collect();
        for conn in &mut list {
            if let ftp_pooler_config::ConnectionKind::Local(l) = &mut conn.kind {
                l.base_path = base.into();
            }
        }
        c.registry = Registry::try_from(list).unwrap();
        c
    }

    fn config(conns: &[(&str, &str)]) -> Config {
        config_at(conns, "/srv/files")
    }

    fn t(id: &str) -> StageId {
        StageId::Transfer(id.parse().unwrap())
    }

    fn ids(v: &[&str]) -> Vec<ConnectionId> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_task_topic_and_the_group_change_only_with_a_restart() {
        let old = config(&[("a", "p")]);
        let mut new = old.clone();
        new.settings.kafka.result_topic = "other".into();
        assert!(refusals(&old, &new).is_empty());
        new.settings.kafka.input_topic = "tasks-2".into();
        new.settings.kafka.consumer_group = "g-2".into();
        let r = refusals(&old, &new);
        assert_eq!(r.len(), 2);
        assert!(
            r[0].starts_with("config.yaml: kafka.input_topic: changed from"),
            "{r:?}"
        );
        assert!(r[1].contains("kafka.consumer_group"), "{r:?}");
    }

    #[test]
    fn the_same_configuration_is_an_empty_plan() {
        let c = config(&[("a", "p")]);
        assert_eq!(plan(&c, &c.clone()), ReloadPlan::default());
    }

    #[test]
    fn connections_added_removed_and_changed() {
        let old = config(&[("a", "p"), ("b", "p")]);
        let new = config(&[("a", "new"), ("c", "p")]);
        let p = plan(&old, &new);
        assert_eq!(p.added, ids(&["c"]));
        assert_eq!(p.removed, ids(&["b"]));
        // a's password changed: its worker restarts; ingest and publish do not.
        assert_eq!(p.restart, vec![t("a")]);
        assert!(p.changed && p.next_start.is_empty());
    }

    #[test]
    fn a_budget_change_restarts_the_worker_whose_share_moved() {
        let old = config(&[("a", "p")]);
        let mut new = old.clone();
        new.settings.pool.max_sessions_per_connection = 3;
        let p = plan(&old, &new);
        // pool is read by ingest (its windows) and by the workers.
        assert_eq!(p.restart, vec![t("a"), StageId::Ingest]);
    }

    #[test]
    fn settings_restart_the_stages_that_read_them() {
        let old = config(&[("a", "p"), ("b", "p")]);
        let mut kafka = old.clone();
        kafka.settings.kafka.result_topic = "other".into();
        assert_eq!(
            plan(&old, &kafka).restart,
            vec![StageId::Publish, t("a"), t("b"), StageId::Ingest]
        );
        let mut breaker = old.clone();
        breaker.settings.circuit_breaker.failure_threshold = 9;
        assert_eq!(plan(&old, &breaker).restart, vec![t("a"), t("b")]);
        let mut sup = old.clone();
        sup.settings.supervisor.max_failed_starts = 9;
        let p = plan(&old, &sup);
        assert!(p.changed && p.restart.is_empty() && p.next_start.is_empty());
        let mut api = old.clone();
        api.settings.api.port = 1234;
        let p = plan(&old, &api);
        assert!(p.restart.is_empty());
        assert_eq!(p.next_start, vec!["api"]);
        // The admin token file and the file watch apply at once, restarting nothing.
        let mut token = old.clone();
        token.settings.api.admin_token_file = Some("/run/secrets/admin-token".into());
        token.settings.supervisor.watch_interval_seconds = 5;
        let p = plan(&old, &token);
        assert!(p.changed && p.restart.is_empty() && p.next_start.is_empty());
    }

    #[test]
    fn a_local_change_restarts_every_worker_but_not_ingest() {
        let old = config(&[("a", "p")]);
        let new = config_at(&[("a", "p")], "/srv/other");
        assert_eq!(plan(&old, &new).restart, vec![t("a")]);
    }
}
