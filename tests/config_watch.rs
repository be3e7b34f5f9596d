//! The service reloads on its own when its files change (issue 19, DESIGN.md section 9:
//! "a change of the watched files"), against the real service, broker and FTP servers:
//! no SIGHUP, no `ctl reload` anywhere in this file.
//!
//! - an edit of connections.ini (a connection added) is in force within seconds: a new
//!   generation, a new worker in `/stages`, tasks for it succeed;
//! - a file rewritten with the same bytes (and its time changed) is no reload;
//! - an invalid edit is rejected once, reported (`GET /config` last_reload, the failure
//!   counter, a log line), the configuration in force stays; the fix is taken;
//! - a Kubernetes volume update (the `..data` symlink swapped to a new directory, the
//!   old one deleted, both files changed) is one reload, not one per file.
//!
//! `supervisor.watch_interval_seconds: 1`: a settled change is taken 1-2 s after it.

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::service::{produce, Service, Watcher};
use ftp_pooler_testbed::two_servers::TwoServers;
use ftp_pooler_testbed::FtpKind;
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
/// Within this, a settled edit is in force (two 1 s readings, the reload, a worker start).
const PICKUP: Duration = Duration::from_secs(15);

/// [`TwoServers`] and this file's helpers.
struct Bed(TwoServers);

impl std::ops::Deref for Bed {
    type Target = TwoServers;
    fn deref(&self) -> &TwoServers {
        &self.0
    }
}

impl std::ops::DerefMut for Bed {
    fn deref_mut(&mut self) -> &mut TwoServers {
        &mut self.0
    }
}

impl Bed {
    async fn new() -> Bed {
        Bed(TwoServers::new(FtpKind::Pyftpdlib).await)
    }

    /// config.yaml, with `supervisor` keys added.
    fn yaml(&self, supervisor: &str) -> String {
        self.topics.config_yaml(&format!(
            "shutdown:\n  drain_timeout_seconds: 5\nsupervisor:\n  watch_interval_seconds: 1\n{supervisor}"
        ))
    }

    /// connections.ini with these ftp connections (a, b) and the local one; `extra` last.
    fn ini(&self, ids: &[&str], extra: &str) -> String {
        let mut s = String::new();
        for id in ids {
            let server = if *id == "a" { &self.a } else { &self.b };
            s.push_str(&server.ini_section(id));
            s.push('\n');
        }
        format!(
            "{s}[local]\ntype = local\nbase_path = {}\n{extra}",
            self.storage.path().display()
        )
    }

    fn start_in(&self, dir: &Path, ini: &str) -> Service {
        Service::start(Path::new(EXE), dir, &self.yaml(""), ini)
    }
}

async fn config_view(svc: &Service) -> Value {
    let (code, body) = request(svc.api_port, "GET", "/config").await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of an unlabelled sample of /metrics.
async fn metric(svc: &Service, name: &str) -> Option<f64> {
    let (_, text) = request(svc.metrics_port, "GET", "/metrics").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The stage names of `GET /stages` whose state is running.
async fn running(svc: &Service) -> Vec<String> {
    let (_, body) = request(svc.api_port, "GET", "/stages").await.unwrap();
    let stages: Value = serde_json::from_str(&body).unwrap();
    stages
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "running")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `GET /config` shows `generation` (at most [`PICKUP`]); the time it took.
async fn wait_generation(svc: &Service, generation: u64) -> Duration {
    let start = Instant::now();
    loop {
        let view = config_view(svc).await;
        if view["generation"] == generation {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PICKUP,
            "generation {generation} not in force within {PICKUP:?}: {view}\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_running(svc: &Service, stage: &str, want: bool) {
    let start = Instant::now();
    while running(svc).await.iter().any(|s| s == stage) != want {
        assert!(
            start.elapsed() < PICKUP,
            "{stage} running: not {want}\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces a task from `conn` and returns its result.
async fn run_task(bed: &Bed, watcher: &Watcher, svc: &Service, id: &str, conn: &str) -> Value {
    let t = json!({"task_id": id, "src_id": conn, "src_path": "r/f.bin", "dst_id": "local", "dst_path": format!("r/{id}.bin")});
    produce(
        &bed.topics.tasks,
        &[(Some(id.to_string()), serde_json::to_vec(&t).unwrap())],
    )
    .await;
    let seen = watcher
        .wait_for(
            Duration::from_secs(60),
            id,
            |s| s.by_task.contains_key(id),
            || svc.log(),
        )
        .await;
    seen.by_task[id][0].value.clone()
}

/// How many log lines of the service say the watched files changed.
fn watch_reloads(svc: &Service) -> usize {
    svc.log()
        .lines()
        .filter(|l| l.contains("configuration files changed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_connections_ini_apply_without_sighup_and_invalid_ones_change_nothing() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let mut svc = bed.start_in(&bed.work.path().join("svc"), &bed.ini(&["a"], ""));
    svc.wait_ready(Duration::from_secs(60)).await;
    let ini = svc.dir.join("connections.ini");

    // Rewritten with the same bytes, its time moved: no reload at all.
    let same = std::fs::read(&ini).unwrap();
    std::fs::write(&ini, &same).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&ini)
        .unwrap()
        .set_modified(later)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let view = config_view(&svc).await;
    assert_eq!(view["generation"], 1, "{view}");
    assert_eq!(view["last_reload"], Value::Null, "{view}");
    assert_eq!(watch_reloads(&svc), 0, "{}", svc.log());

    // b added: in force without SIGHUP, with a worker and tasks.
    std::fs::write(&ini, bed.ini(&["a", "b"], "")).unwrap();
    let took = wait_generation(&svc, 2).await;
    eprintln!("connection added: generation 2 after {took:?}");
    wait_running(&svc, "transfer:b", true).await;
    let view = config_view(&svc).await;
    assert_eq!(view["last_reload"]["status"], "applied", "{view}");
    assert_eq!(view["last_reload"]["added"], json!(["b"]), "{view}");
    assert_eq!(watch_reloads(&svc), 1);
    let r = run_task(&bed, &watcher, &svc, "b-added", "b").await;
    assert_eq!(r["status"], "success", "{r}");

    // An invalid edit: rejected once, reported, the configuration in force stays.
    std::fs::write(
        &ini,
        bed.ini(&["a", "b"], "\n[c]\ntype = ftp\nhost = h\nbogus = 1\n"),
    )
    .unwrap();
    let start = Instant::now();
    while metric(&svc, "ftp_config_reload_failures_total").await != Some(1.0) {
        assert!(start.elapsed() < PICKUP, "not rejected:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = config_view(&svc).await;
    assert_eq!(view["generation"], 2, "{view}");
    assert_eq!(view["last_reload"]["status"], "rejected", "{view}");
    assert!(
        view["last_reload"]["errors"].to_string().contains("bogus"),
        "{view}"
    );
    assert!(svc.log().contains("reload rejected"), "no log line");
    // The same invalid content is not tried again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        metric(&svc, "ftp_config_reload_failures_total").await,
        Some(1.0)
    );
    assert_eq!(metric(&svc, "ftp_config_generation").await, Some(2.0));
    assert!(running(&svc).await.contains(&"transfer:b".to_string()));
    let r = run_task(&bed, &watcher, &svc, "during-invalid", "b").await;
    assert_eq!(r["status"], "success", "{r}");

    // Fixed (b removed meanwhile): taken, b's worker goes.
    std::fs::write(&ini, bed.ini(&["a"], "")).unwrap();
    wait_generation(&svc, 3).await;
    wait_running(&svc, "transfer:b", false).await;
    let r = run_task(&bed, &watcher, &svc, "b-removed", "b").await;
    assert_eq!(r["error_code"], "INVALID_CONFIG", "{r}");
    let r = run_task(&bed, &watcher, &svc, "a-still", "a").await;
    assert_eq!(r["status"], "success", "{r}");
}

/// Lays out `dir` as the kubelet does a ConfigMap volume: `<file> -> ..data/<file>`,
/// `..data -> <version>`; returns the version directory to fill.
fn k8s_volume(dir: &Path, version: &str) -> std::path::PathBuf {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::os::unix::fs::symlink(version, dir.join("..data")).unwrap();
    for f in ["config.yaml", "connections.ini"] {
        std::os::unix::fs::symlink(Path::new("..data").join(f), dir.join(f)).unwrap();
    }
    v
}

/// The kubelet's update: a new version directory, `..data` swapped to it by rename
/// (atomic), the old directory deleted.
fn k8s_update(dir: &Path, old: &str, new: &str, files: &[(&str, String)]) {
    let v = dir.join(new);
    std::fs::create_dir_all(&v).unwrap();
    for (name, text) in files {
        std::fs::write(v.join(name), text).unwrap();
    }
    std::os::unix::fs::symlink(new, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_volume_update_is_one_reload() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let dir = bed.work.path().join("volume");
    k8s_volume(&dir, "..2025_01_01_00_00_00.1");
    // Written through the symlinks, as mounted.
    let mut svc = bed.start_in(&dir, &bed.ini(&["a"], ""));
    svc.wait_ready(Duration::from_secs(60)).await;
    assert!(std::fs::symlink_metadata(dir.join("connections.ini"))
        .unwrap()
        .is_symlink());

    // Both files change in one update: b added, and a supervisor setting.
    k8s_update(
        &dir,
        "..2025_01_01_00_00_00.1",
        "..2025_01_01_00_05_00.2",
        &[
            ("config.yaml", bed.yaml("  max_restarts: 12\n")),
            ("connections.ini", bed.ini(&["a", "b"], "")),
        ],
    );
    let took = wait_generation(&svc, 2).await;
    eprintln!("volume update: generation 2 after {took:?}");
    wait_running(&svc, "transfer:b", true).await;
    let view = config_view(&svc).await;
    assert_eq!(view["last_reload"]["added"], json!(["b"]), "{view}");
    let r = run_task(&bed, &watcher, &svc, "b-after-update", "b").await;
    assert_eq!(r["status"], "success", "{r}");
    // One reload for the whole update, and nothing more while nothing changes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(config_view(&svc).await["generation"], 2);
    assert_eq!(watch_reloads(&svc), 1, "{}", svc.log());

    // The next update (b removed) is read through the new ..data as well.
    k8s_update(
        &dir,
        "..2025_01_01_00_05_00.2",
        "..2025_01_01_00_10_00.3",
        &[
            ("config.yaml", bed.yaml("  max_restarts: 12\n")),
            ("connections.ini", bed.ini(&["a"], "")),
        ],
    );
    wait_generation(&svc, 3).await;
    wait_running(&svc, "transfer:b", false).await;
    assert_eq!(
        metric(&svc, "ftp_config_reload_failures_total").await,
        Some(0.0)
    );
}
