//! monitoring/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), the dashboard's queries are valid PromQL, every alert has its
//! runbook entry in docs/OPERATIONS.md, the PrometheusRule carries the same rules, the
//! Pod/ServiceMonitor scrape the port the pods name; and, against the real service after
//! real tasks, every metric named by a rule or a panel is in the scrape (the stage-labelled
//! process metrics and the two latency histograms included).
//!
//! promtool comes from Debian's `prometheus` package (`scripts/testbed/install.sh`); a
//! machine without it fails these tests, it does not skip them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::promql::metric_names;
use ftp_pooler_testbed::scenario::Scenario;
use ftp_pooler_testbed::service::Watcher;
use ftp_pooler_testbed::workspace_root;
use serde_yaml::Value;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// Metrics the rules read that ftp-pooler does not export: `up` is Prometheus's own,
/// `kube_pod_status_ready` comes from kube-state-metrics (see docs/OPERATIONS.md).
const EXTERNAL: &[&str] = &["up", "kube_pod_status_ready"];

fn monitoring() -> PathBuf {
    workspace_root().join("monitoring")
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.expect(
        "promtool is not installed: run scripts/testbed/install.sh (Debian package `prometheus`)",
    )
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (alert name, expression) of every rule of the rules file.
fn alerts() -> Vec<(String, String)> {
    let rules = yaml(&monitoring().join("ftp-pooler-rules.yml"));
    let mut v = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            v.push((
                rule["alert"]
                    .as_str()
                    .expect("alert rules only")
                    .to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    v
}

/// Every panel query of the dashboard (rows included).
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v = Vec::new();
    let mut ids = BTreeSet::new();
    fn walk(panels: &[serde_json::Value], v: &mut Vec<(String, String)>, ids: &mut BTreeSet<u64>) {
        for p in panels {
            let id = p["id"].as_u64().expect("every panel has an id");
            assert!(ids.insert(id), "panel id {id} used twice");
            for t in p["targets"].as_array().into_iter().flatten() {
                v.push((
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
            if let Some(inner) = p["panels"].as_array() {
                walk(inner, v, ids);
            }
        }
    }
    walk(dash["panels"].as_array().unwrap(), &mut v, &mut ids);
    assert!(v.len() >= 20, "the dashboard has {} queries", v.len());
    v
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = monitoring();
    let checked = run_promtool(&["check", "rules", "ftp-pooler-rules.yml"], &dir);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{checked}"
    );
    let tested = run_promtool(&["test", "rules", "tests/ftp-pooler-rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is exercised by the unit tests.
    let tests = std::fs::read_to_string(dir.join("tests/ftp-pooler-rules.test.yml")).unwrap();
    for (name, _) in alerts() {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool unit test"
        );
    }
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    // promtool has no offline PromQL check of its own: each query becomes a recording
    // rule (Grafana's variables replaced) and the file goes through `check rules`.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in panel_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$pod", ".*");
        assert!(!expr.contains('$'), "{title}: unknown variable in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    run_promtool(&["check", "rules", "dashboard.yml"], dir.path());
}

#[test]
fn every_alert_has_its_runbook_entry_and_the_operator_files_agree() {
    let ops = std::fs::read_to_string(workspace_root().join("docs/OPERATIONS.md")).unwrap();
    let section = ops
        .split_once("\n## Alerts\n")
        .expect("docs/OPERATIONS.md has a section \"## Alerts\"")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let rules = yaml(&monitoring().join("ftp-pooler-rules.yml"));
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                section.contains(&format!("\n### {name}\n")),
                "no runbook entry \"### {name}\" under \"## Alerts\" in docs/OPERATIONS.md"
            );
            assert_eq!(
                rule["annotations"]["runbook_url"].as_str(),
                Some(format!("docs/OPERATIONS.md#{}", name.to_lowercase()).as_str()),
                "{name}'s runbook_url"
            );
            for key in ["summary", "description"] {
                assert!(rule["annotations"][key].is_string(), "{name} lacks {key}");
            }
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{name}'s severity"
            );
        }
    }
    // The PrometheusRule carries exactly the rules file's groups.
    let operator = yaml(&monitoring().join("prometheusrule.yml"));
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        operator["spec"]["groups"], rules["groups"],
        "monitoring/prometheusrule.yml differs from monitoring/ftp-pooler-rules.yml"
    );
    // The monitors scrape the port the pods name "metrics", at /metrics, as job
    // "ftp-pooler" (what the rules select).
    let pm = yaml(&monitoring().join("podmonitor.yml"));
    assert_eq!(pm["kind"].as_str(), Some("PodMonitor"));
    let sm = yaml(&monitoring().join("servicemonitor.yml"));
    assert_eq!(sm["kind"].as_str(), Some("ServiceMonitor"));
    for (endpoint, doc) in [
        (&pm["spec"]["podMetricsEndpoints"][0], &pm),
        (&sm["spec"]["endpoints"][0], &sm),
    ] {
        assert_eq!(endpoint["port"].as_str(), Some("metrics"));
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
        assert_eq!(
            doc["spec"]["jobLabel"].as_str(),
            Some("app.kubernetes.io/name")
        );
        assert_eq!(
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
            Some("ftp-pooler")
        );
    }
    let pods = kubernetes_docs()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .expect("a StatefulSet under deploy/k8s");
    let tmpl = &pods["spec"]["template"];
    assert_eq!(
        tmpl["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
        Some("ftp-pooler")
    );
    let named_metrics = tmpl["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
        .any(|p| p["name"].as_str() == Some("metrics"));
    assert!(named_metrics, "no container port named \"metrics\"");
}

/// Every YAML document under deploy/k8s (whatever its layout).
fn kubernetes_docs() -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    if let Ok(v) = serde::Deserialize::deserialize(doc) {
                        out.push(v);
                    }
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(&workspace_root().join("deploy/k8s"), &mut v);
    v
}

/// Sample name -> (labels text -> value) of a scrape.
fn parse_scrape(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut m: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        m.entry(name.to_string())
            .or_default()
            .insert(labels.to_string(), value.parse().unwrap());
    }
    m
}

fn total(scrape: &BTreeMap<String, BTreeMap<String, f64>>, name: &str) -> f64 {
    scrape.get(name).map_or(0.0, |s| s.values().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_named_by_a_rule_or_a_panel_is_in_the_scrape_of_a_running_service() {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (name, expr) in alerts() {
        for m in metric_names(&expr) {
            wanted.entry(m).or_insert_with(|| format!("alert {name}"));
        }
    }
    for (title, expr) in panel_queries() {
        for m in metric_names(&expr) {
            wanted
                .entry(m)
                .or_insert_with(|| format!("panel {title:?}"));
        }
    }
    for external in EXTERNAL {
        assert!(
            wanted.remove(*external).is_some(),
            "{external} is listed as external but nothing reads it"
        );
    }
    assert!(wanted.len() >= 20, "{wanted:?}");

    // Real tasks over two connections: downloads, uploads, a malformed message, an
    // invalid task and a missing file, so that every family has series.
    let sc = Scenario::new(Path::new(EXE), 16).await;
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start("");
    svc.wait_ready(Duration::from_secs(60)).await;
    sc.produce().await;
    let seen = sc.wait_all(&watcher, &svc, Duration::from_secs(120)).await;
    let results = seen.results() as f64;

    // Stages report about once a second: wait until the scrape has caught up.
    let start = Instant::now();
    let (text, scrape) = loop {
        let (status, text) = request(svc.metrics_port, "GET", "/metrics").await.unwrap();
        assert_eq!(status, 200);
        let scrape = parse_scrape(&text);
        let missing = wanted.keys().any(|m| !scrape.contains_key(m));
        if (!missing && total(&scrape, "ftp_task_latency_seconds_count") >= results)
            || start.elapsed() > Duration::from_secs(20)
        {
            break (text, scrape);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(m, _)| !scrape.contains_key(*m))
        .map(|(m, by)| format!("{m} (read by {by})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics named by monitoring/ but not exported: {missing:?}\n{text}"
    );

    // Every result has its end-to-end latency (its task's Kafka timestamp came along),
    // and it is plausible: more than nothing, less than the whole run.
    assert_eq!(total(&scrape, "ftp_tasks_total"), results, "{text}");
    assert_eq!(
        total(&scrape, "ftp_task_latency_seconds_count"),
        results,
        "{text}"
    );
    let mean = total(&scrape, "ftp_task_latency_seconds_sum") / results;
    assert!(
        mean > 0.0 && mean < start.elapsed().as_secs_f64() + 120.0,
        "mean end-to-end latency {mean} s"
    );
    // Each connection's tasks waited for sessions.
    let waits = &scrape["ftp_session_wait_seconds_count"];
    for conn in ["a", "b"] {
        let n: f64 = waits
            .iter()
            .filter(|(l, _)| l.contains(&format!("connection_id=\"{conn}\"")))
            .map(|(_, v)| v)
            .sum();
        assert!(n > 0.0, "no session wait on {conn}: {waits:?}");
    }
    // Process metrics of every stage and of the supervisor, each up.
    for stage in [
        "supervisor",
        "ingest",
        "publish",
        "transfer:a",
        "transfer:b",
    ] {
        let label = format!("stage=\"{stage}\"");
        // (A quiet stage may have used less than one clock tick of CPU: 0 is fine.)
        let cpu = scrape["process_cpu_seconds_total"].get(&label);
        assert!(cpu.is_some_and(|v| *v >= 0.0), "cpu of {stage}: {cpu:?}");
        for family in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let v = scrape[family].get(&label);
            assert!(v.is_some_and(|v| *v > 0.0), "{family}{{{label}}}: {v:?}");
        }
        if stage != "supervisor" {
            assert_eq!(scrape["ftp_stage_up"].get(&label), Some(&1.0), "{text}");
        }
    }
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(svc.wait_exit(Duration::from_secs(30)).await.is_some());
}
