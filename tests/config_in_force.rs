//! The configuration in force (DESIGN.md section 9; issue 17), against the real service,
//! broker and FTP servers: an edit of connections.ini or config.yaml changes nothing
//! until a reload, whatever stage is killed or restarted meanwhile; after SIGHUP it
//! applies to every stage; an invalid edit is rejected, reported in the API and
//! /metrics, and the configuration in force stays. And the give-up rule: a stage that
//! can never start ends the service (`/live` 503, exit non-zero) with the default
//! settings, within 3 minutes.
//!
//! Outages of the broker and of an FTP server are not crashes (with a give-up rule
//! scaled down to the first crash, 20 s of each end nothing).
//!
//! Configurations are written whole (typed connections rendered by [`Ini`]); tests assert
//! on Kafka results, files, the API and /metrics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ftp_pooler_channel::{CtlResponse, StageId};
use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::service::{produce, Service, Topics, Watcher};
use ftp_pooler_testbed::two_servers::TwoServers;
use ftp_pooler_testbed::{ftp_password, ftp_user, FtpKind, FtpServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// One ftp connection of connections.ini.
#[derive(Clone)]
struct Ftp {
    id: &'static str,
    port: u16,
    password: String,
    tls_ca_file: Option<PathBuf>,
}

impl Ftp {
    fn of(id: &'static str, server: &FtpServer) -> Ftp {
        Ftp {
            id,
            port: server.connection().port,
            password: ftp_password(),
            tls_ca_file: None,
        }
    }
}

/// A whole connections.ini: ftp connections and the local one.
struct Ini<'a> {
    ftp: Vec<Ftp>,
    local: &'a Path,
}

impl Ini<'_> {
    fn render(&self) -> String {
        let mut s = String::new();
        for f in &self.ftp {
            s.push_str(&format!(
                "[{}]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\n",
                f.id,
                f.port,
                ftp_user(),
                f.password
            ));
            if let Some(ca) = &f.tls_ca_file {
                s.push_str(&format!("tls = explicit\ntls_ca_file = {}\n", ca.display()));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "[local]\ntype = local\nbase_path = {}\n",
            self.local.display()
        ));
        s
    }
}

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
        Bed(TwoServers::new(FtpKind::Vsftpd).await)
    }

    fn yaml(&self, topics: &Topics) -> String {
        topics.config_yaml("shutdown:\n  drain_timeout_seconds: 5\nlogging:\n  format: json\n")
    }

    /// The service with the file watch off: these tests edit files and reload by hand
    /// (tests/config_watch.rs has the watch).
    fn start(&self, ini: &Ini) -> Service {
        self.start_with(ini, "", &[])
    }

    /// As [`Bed::start`], with more config.yaml and environment variables.
    fn start_with(&self, ini: &Ini, extra_yaml: &str, env: &[(&str, &str)]) -> Service {
        let mut env = env.to_vec();
        env.push(("FTP_POOLER_SUPERVISOR__WATCH_CONFIG", "false"));
        Service::start_with_env(
            Path::new(EXE),
            &self.work.path().join("svc"),
            &format!("{}{extra_yaml}", self.yaml(&self.topics)),
            &ini.render(),
            &env,
        )
    }

    fn ini(&self, ftp: Vec<Ftp>) -> Ini<'_> {
        Ini {
            ftp,
            local: self.storage.path(),
        }
    }
}

fn write(svc: &Service, file: &str, text: &str) {
    std::fs::write(svc.dir.join(file), text).unwrap();
}

fn task(id: &str, conn: &str) -> (Option<String>, Vec<u8>) {
    let t = json!({"task_id": id, "src_id": conn, "src_path": "r/f.bin", "dst_id": "local", "dst_path": format!("r/{id}.bin")});
    (Some(id.to_string()), serde_json::to_vec(&t).unwrap())
}

/// Produces one task and returns its result.
async fn run_task(bed: &Bed, watcher: &Watcher, svc: &Service, id: &str, conn: &str) -> Value {
    produce(&bed.topics.tasks, &[task(id, conn)]).await;
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

fn stage(name: &str) -> StageId {
    name.parse().unwrap()
}

/// Kills the stage's process and waits until a new one is ready.
async fn kill_stage(svc: &mut Service, name: &str) {
    let before = svc.wait_ready(Duration::from_secs(30)).await[name];
    kill(Pid::from_raw(before as i32), Signal::SIGKILL).unwrap();
    let start = Instant::now();
    loop {
        let now = svc.wait_ready(Duration::from_secs(30)).await;
        if now.get(name).is_some_and(|p| *p != before) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{name} not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn restart(svc: &Service, name: &str) {
    match svc.restart_stage(name).await {
        CtlResponse::Restarted { stage, .. } => assert_eq!(stage, name),
        other => panic!("ctl restart {name}: {other:?}\n{}", svc.log()),
    }
}

async fn get(svc: &Service, path: &str) -> (u16, String) {
    request(svc.api_port, "GET", path).await.unwrap()
}

async fn config_view(svc: &Service) -> Value {
    let (code, body) = get(svc, "/config").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of an unlabelled sample of /metrics.
async fn metric(svc: &Service, name: &str) -> Option<f64> {
    let (_, text) = request(svc.metrics_port, "GET", "/metrics").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_generation(svc: &Service, generation: u64) {
    let start = Instant::now();
    while config_view(svc).await["generation"] != generation {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "generation {generation} not in force: {}",
            config_view(svc).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_edit_applies_only_on_reload_whatever_restarts_meanwhile() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let good = bed.ini(vec![Ftp::of("a", &bed.a)]);
    let mut svc = bed.start(&good);
    svc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        run_task(&bed, &watcher, &svc, "t0", "a").await["status"],
        "success"
    );

    // The operator edits the password (wrongly) and does not reload.
    let mut wrong = Ftp::of("a", &bed.a);
    wrong.password = "not-the-password".into();
    write(&svc, "connections.ini", &bed.ini(vec![wrong]).render());
    // A crash of the worker, then a restart by the operator: both run on the
    // configuration in force and still log in.
    kill_stage(&mut svc, "transfer:a").await;
    let r = run_task(&bed, &watcher, &svc, "after-kill", "a").await;
    assert_eq!(r["status"], "success", "{r}");
    restart(&svc, "transfer:a").await;
    let r = run_task(&bed, &watcher, &svc, "after-restart", "a").await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(
        std::fs::read(bed.storage.path().join("r/after-restart.bin")).unwrap(),
        b"from a"
    );
    assert_eq!(config_view(&svc).await["generation"], 1);

    // SIGHUP: the edit is in force for every stage; the worker now fails to log in.
    svc.signal(Signal::SIGHUP);
    wait_generation(&svc, 2).await;
    svc.wait_ready(Duration::from_secs(30)).await;
    let r = run_task(&bed, &watcher, &svc, "after-reload", "a").await;
    assert_eq!(r["error_code"], "AUTH_ERROR", "{r}");
    assert_eq!(metric(&svc, "ftp_config_generation").await, Some(2.0));
    let view = config_view(&svc).await;
    assert_eq!(view["last_reload"]["status"], "applied", "{view}");
    assert_eq!(view["last_reload"]["restarted"], json!(["transfer:a"]));
    assert!(!view.to_string().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_removed_connections_wait_for_the_reload() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let mut svc = bed.start(&bed.ini(vec![Ftp::of("a", &bed.a)]));
    svc.wait_ready(Duration::from_secs(60)).await;

    // b added to the file, no reload: a restarted ingest still does not route to it,
    // and no worker exists for it.
    write(
        &svc,
        "connections.ini",
        &bed.ini(vec![Ftp::of("a", &bed.a), Ftp::of("b", &bed.b)])
            .render(),
    );
    kill_stage(&mut svc, "ingest").await;
    restart(&svc, "publish").await;
    let r = run_task(&bed, &watcher, &svc, "b-unknown", "b").await;
    assert_eq!(r["error_code"], "INVALID_CONFIG", "{r}");
    assert!(!svc
        .wait_ready(Duration::from_secs(10))
        .await
        .contains_key("transfer:b"));

    // SIGHUP: b gets a worker and tasks.
    svc.signal(Signal::SIGHUP);
    let start = Instant::now();
    while !svc
        .wait_ready(Duration::from_secs(30))
        .await
        .contains_key("transfer:b")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no transfer:b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = run_task(&bed, &watcher, &svc, "b-added", "b").await;
    assert_eq!(r["status"], "success", "{r}");

    // b removed from the file, no reload: its worker, killed or restarted, still works.
    write(
        &svc,
        "connections.ini",
        &bed.ini(vec![Ftp::of("a", &bed.a)]).render(),
    );
    kill_stage(&mut svc, "transfer:b").await;
    restart(&svc, "transfer:b").await;
    kill_stage(&mut svc, "ingest").await;
    let r = run_task(&bed, &watcher, &svc, "b-still", "b").await;
    assert_eq!(r["status"], "success", "{r}");

    // SIGHUP: b is gone for every stage.
    svc.signal(Signal::SIGHUP);
    let start = Instant::now();
    while svc
        .status()
        .await
        .unwrap_or_default()
        .iter()
        .any(|s| s.name == stage("transfer:b"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "transfer:b still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = run_task(&bed, &watcher, &svc, "b-removed", "b").await;
    assert_eq!(r["error_code"], "INVALID_CONFIG", "{r}");
    assert_eq!(config_view(&svc).await["generation"], 3);
    let r = run_task(&bed, &watcher, &svc, "a-still", "a").await;
    assert_eq!(r["status"], "success", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_is_rejected_reported_and_changes_nothing() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let mut svc = bed.start(&bed.ini(vec![Ftp::of("a", &bed.a)]));
    svc.wait_ready(Duration::from_secs(60)).await;

    // An invalid connections.ini (an unknown key) and an invalid config.yaml edit.
    let broken_ini = format!(
        "{}\n[c]\ntype = ftp\nhost = h\nbogus = 1\n",
        bed.ini(vec![Ftp::of("a", &bed.a)]).render()
    );
    write(&svc, "connections.ini", &broken_ini);
    // Every stage killed meanwhile comes back: none reads the broken file.
    for name in ["publish", "transfer:a", "ingest"] {
        kill_stage(&mut svc, name).await;
    }
    let r = run_task(&bed, &watcher, &svc, "during-edit", "a").await;
    assert_eq!(r["status"], "success", "{r}");

    let reply = svc.reload().await;
    match &reply {
        CtlResponse::Error(e) => assert!(e.contains("[c] bogus"), "{e}"),
        other => panic!("{other:?}"),
    }
    let view = config_view(&svc).await;
    assert_eq!(view["generation"], 1, "{view}");
    assert_eq!(view["last_reload"]["status"], "rejected", "{view}");
    assert!(view["last_reload"]["errors"].to_string().contains("bogus"));
    assert_eq!(
        metric(&svc, "ftp_config_reload_failures_total").await,
        Some(1.0)
    );
    assert_eq!(metric(&svc, "ftp_config_generation").await, Some(1.0));

    // A config.yaml that is not valid either (an unknown key): rejected too.
    write(
        &svc,
        "connections.ini",
        &bed.ini(vec![Ftp::of("a", &bed.a)]).render(),
    );
    write(
        &svc,
        "config.yaml",
        &format!("{}pool:\n  max_session_per_pod: 3\n", bed.yaml(&bed.topics)),
    );
    svc.signal(Signal::SIGHUP);
    let start = Instant::now();
    while metric(&svc, "ftp_config_reload_failures_total").await != Some(2.0) {
        assert!(start.elapsed() < Duration::from_secs(10), "not rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(config_view(&svc).await["generation"], 1);
    let (code, _) = get(&svc, "/ready").await;
    assert_eq!(code, 200);
    let r = run_task(&bed, &watcher, &svc, "after-rejects", "a").await;
    assert_eq!(r["status"], "success", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_yaml_edit_applies_only_on_reload() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    // Another result topic, which the edit points the service to.
    let other = Topics::create(3).await;
    let other_results = Watcher::start(&Topics {
        results: other.results.clone(),
        failures: other.failures.clone(),
        ..bed.topics.clone()
    })
    .await;
    let mut svc = bed.start(&bed.ini(vec![Ftp::of("a", &bed.a)]));
    svc.wait_ready(Duration::from_secs(60)).await;

    let edited = Topics {
        results: other.results.clone(),
        failures: other.failures.clone(),
        ..bed.topics.clone()
    };
    write(&svc, "config.yaml", &bed.yaml(&edited));
    // Publish killed and restarted without a reload: results still go to the old topic.
    kill_stage(&mut svc, "publish").await;
    restart(&svc, "publish").await;
    let r = run_task(&bed, &watcher, &svc, "old-topic", "a").await;
    assert_eq!(r["status"], "success", "{r}");
    assert!(other_results.seen().by_task.is_empty());

    // After the reload the new topic is in force.
    let reply = svc.reload().await;
    match reply {
        CtlResponse::Reloaded {
            generation,
            restarted,
            ..
        } => {
            assert_eq!(generation, 2);
            assert_eq!(restarted, ["publish", "transfer:a", "ingest"]);
        }
        other => panic!("{other:?}"),
    }
    svc.wait_ready(Duration::from_secs(30)).await;
    produce(&bed.topics.tasks, &[task("new-topic", "a")]).await;
    let seen = other_results
        .wait_for(
            Duration::from_secs(60),
            "the result on the new topic",
            |s| s.by_task.contains_key("new-topic"),
            || svc.log(),
        )
        .await;
    assert_eq!(seen.by_task["new-topic"][0].value["status"], "success");
    assert!(!watcher.seen().by_task.contains_key("new-topic"));
}

/// A worker that can never start (its tls_ca_file holds no certificate: the files are
/// valid, the worker's TLS set-up fails at every start). With the default supervisor
/// settings the supervisor gives up: `/live` 503, exit status non-zero, within 3
/// minutes (in practice about 5 s: five failed starts with a short backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_give_up_on_a_stage_that_can_never_start() {
    let bed = Bed::new().await;
    let empty_ca = bed.work.path().join("empty-ca.pem");
    std::fs::write(&empty_ca, "not a certificate\n").unwrap();
    let mut broken = Ftp::of("a", &bed.a);
    broken.tls_ca_file = Some(empty_ca);
    let mut svc = bed.start(&bed.ini(vec![broken, Ftp::of("b", &bed.b)]));
    let start = Instant::now();
    let mut live_503 = None;
    let status = loop {
        if let Some(status) = svc.try_wait() {
            break status;
        }
        if live_503.is_none() {
            if let Ok((503, body)) = request(svc.api_port, "GET", "/live").await {
                live_503 = Some(body);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the supervisor did not give up within 3 minutes:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let body: Value = serde_json::from_str(&live_503.expect("/live turned 503")).unwrap();
    assert_eq!(body["stage"], "transfer:a", "{body}");
    eprintln!("gave up after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(180));
}

/// A give-up rule so strict that any crash, or any stage down for 3 s, ends the service.
const STRICT: &str = "supervisor:\n  max_failed_starts: 1\n  max_down_seconds: 3\n";

/// Asserts that the service runs, every stage is running and none was restarted.
async fn assert_untouched(svc: &mut Service, pids: &std::collections::HashMap<String, u32>) {
    assert!(
        svc.try_wait().is_none(),
        "the service ended:\n{}",
        svc.log()
    );
    assert_eq!(&svc.wait_ready(Duration::from_secs(5)).await, pids);
    for s in svc.status().await.unwrap() {
        assert_eq!(s.restarts, 0, "{} restarted:\n{}", s.name, svc.log());
    }
    assert_eq!(get(svc, "/live").await.0, 200);
}

/// An unreachable broker and a dead FTP server are not crashes: with a give-up rule that
/// ends the service at the first crash or after 3 s down, 20 s of each end nothing (the
/// defaults, which allow far more, are proven on the policy's and the core's unit tests;
/// an outage of any length is the same as these 20 s: no stage goes down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_the_broker_and_of_an_ftp_server_are_not_crashes() {
    let mut bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;

    // The broker unreachable from the start, for 20 s.
    let dead = ftp_pooler_testbed::free_port().to_string();
    let bootstrap = format!("127.0.0.1:{dead}");
    let mut svc = bed.start_with(
        &bed.ini(vec![Ftp::of("a", &bed.a)]),
        STRICT,
        &[("FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS", bootstrap.as_str())],
    );
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_untouched(&mut svc, &pids).await;
    let (code, body) = get(&svc, "/ready").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("broker_unreachable"), "{body}");
    svc.kill_all();

    // The FTP server down for 20 s while tasks for it arrive (the circuit breaker kept
    // closed, so the first task after the outage is tried at once).
    let mut svc = bed.start_with(
        &bed.ini(vec![Ftp::of("b", &bed.b)]),
        &format!("{STRICT}circuit_breaker:\n  failure_threshold: 1000\n"),
        &[],
    );
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    // pyftpdlib: one process, so its sessions go with it.
    bed.b.stop();
    let r = run_task(&bed, &watcher, &svc, "server-down", "b").await;
    assert_eq!(r["error_code"], "CONNECTION_ERROR", "{r}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_untouched(&mut svc, &pids).await;
    bed.b.restart();
    bed.b.put("r/f.bin", b"from b");
    let r = run_task(&bed, &watcher, &svc, "server-back", "b").await;
    assert_eq!(r["status"], "success", "{r}");
    assert_untouched(&mut svc, &pids).await;
}
