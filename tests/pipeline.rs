//! The pipeline end to end (DESIGN.md sections 3 and 4): the real service (`ftp-pooler
//! run`: supervisor, ingest, one transfer worker per connection, publish) against the test
//! bed's broker and two FTP server programs (vsftpd and pyftpdlib).
//!
//! Each test runs a scenario of mixed tasks (downloads and uploads on both connections,
//! plus malformed messages, invalid tasks and missing files), sometimes with a fault in
//! the middle, and checks: every task has a result on the right topic (exactly one when
//! nothing failed, at least one otherwise, duplicates reported), every file's bytes,
//! no temporary file left, and the committed offsets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ftp_pooler_channel::CtlResponse;
use ftp_pooler_testbed::service::{
    committed, files_ending_with, produce, Seen, Service, Topics, Watcher,
};
use ftp_pooler_testbed::{FtpKind, FtpServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
const TEMP_SUFFIX: &str = ".ftp-pooler.part";

/// What a task should end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Success; the file at `dest` must equal `content`.
    Copied {
        dest: PathBuf,
        content: Vec<u8>,
    },
    Failed(&'static str),
    Dlq,
}

struct Planned {
    task_id: Option<String>,
    payload: Vec<u8>,
    expect: Expect,
}

struct Scenario {
    servers: Vec<(String, FtpServer)>,
    storage: tempfile::TempDir,
    work: tempfile::TempDir,
    topics: Topics,
    planned: Vec<Planned>,
}

fn content(i: usize) -> Vec<u8> {
    let size = if i % 100 == 7 {
        300 * 1024 + i
    } else {
        256 + (i * 7919) % 8192
    };
    (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

impl Scenario {
    /// `n` messages: downloads and uploads over connections `a` (vsftpd) and `b`
    /// (pyftpdlib), with `n / 200` each of malformed messages, invalid tasks and missing
    /// remote files.
    async fn new(n: usize) -> Scenario {
        let servers = vec![
            ("a".to_string(), FtpServer::start(FtpKind::Vsftpd, false)),
            ("b".to_string(), FtpServer::start(FtpKind::Pyftpdlib, false)),
        ];
        let storage = tempfile::Builder::new()
            .prefix("storage-")
            .tempdir()
            .unwrap();
        let work = tempfile::Builder::new()
            .prefix("service-")
            .tempdir()
            .unwrap();
        let topics = Topics::create(3).await;
        let special = (n / 200).max(1);
        let mut planned = Vec::with_capacity(n);
        for i in 0..n {
            let task_id = format!("task-{i:05}");
            let (conn, server) = &servers[i % 2];
            let data = content(i);
            let task = |src_id: &str, src_path: String, dst_id: &str, dst_path: String| {
                serde_json::to_vec(&json!({
                    "task_id": task_id, "src_id": src_id, "src_path": src_path,
                    "dst_id": dst_id, "dst_path": dst_path, "note": "unknown fields are ignored",
                }))
                .unwrap()
            };
            let p = if i < special {
                Planned {
                    task_id: None,
                    payload: format!("not json {i}").into_bytes(),
                    expect: Expect::Dlq,
                }
            } else if i < 2 * special {
                Planned {
                    payload: task("local", "x".into(), "local", "y".into()),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Failed("INVALID_CONFIG"),
                }
            } else if i < 3 * special {
                Planned {
                    payload: task(
                        conn,
                        format!("/missing/{i}.bin"),
                        "local",
                        format!("/missing/{i}.bin"),
                    ),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Failed("FILE_NOT_FOUND"),
                }
            } else if (i / 2) % 2 == 0 {
                // Download; relative remote paths are taken under the login directory.
                let remote = format!("src/d{}/f{i}.bin", i % 7);
                server.put(&remote, &data);
                let src = if i % 3 == 0 {
                    format!("/{remote}")
                } else {
                    remote
                };
                let dest_rel = format!("down/{conn}/d{}/f{i}.bin", i % 5);
                Planned {
                    payload: task(conn, src, "local", format!("/{dest_rel}")),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Copied {
                        dest: storage.path().join(dest_rel),
                        content: data,
                    },
                }
            } else {
                let src_rel = format!("up/f{i}.bin");
                let full = storage.path().join(&src_rel);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, &data).unwrap();
                let remote = format!("dst/d{}/f{i}.bin", i % 6);
                Planned {
                    payload: task("local", src_rel, conn, format!("/{remote}")),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Copied {
                        dest: server.root().join(remote),
                        content: data,
                    },
                }
            };
            planned.push(p);
        }
        Scenario {
            servers,
            storage,
            work,
            topics,
            planned,
        }
    }

    fn connections_ini(&self) -> String {
        let mut ini = String::new();
        for (id, server) in &self.servers {
            ini.push_str(&server.ini_section(id));
            ini.push('\n');
        }
        ini.push_str(&format!(
            "[local]\ntype = local\nbase_path = {}\n",
            self.storage.path().display()
        ));
        ini
    }

    fn config_yaml(&self, extra: &str) -> String {
        self.topics.config_yaml(&format!(
            "pool:\n  max_sessions_per_connection: 4\ntransfer:\n  transfer_timeout_seconds: 30\n  connect_timeout_seconds: 10\nlogging:\n  format: text\nshutdown:\n  drain_timeout_seconds: 10\nsupervisor:\n  restart_base_ms: 100\n  restart_max_ms: 2000\n{extra}"
        ))
    }

    fn start(&self, extra: &str) -> Service {
        self.start_with_env(extra, &[])
    }

    fn start_with_env(&self, extra: &str, env: &[(&str, &str)]) -> Service {
        Service::start_with_env(
            Path::new(EXE),
            &self.work.path().join("svc"),
            &self.config_yaml(extra),
            &self.connections_ini(),
            env,
        )
    }

    /// Another service instance (same group), in its own directory, with `yaml`.
    fn start_instance(&self, name: &str, yaml: &str) -> Service {
        Service::start(
            Path::new(EXE),
            &self.work.path().join(name),
            yaml,
            &self.connections_ini(),
        )
    }

    /// Produces every planned message; returns the delivery reports, in plan order.
    async fn produce(&self) -> Vec<(i32, i64)> {
        self.produce_range(0..self.planned.len()).await
    }

    async fn produce_range(&self, range: std::ops::Range<usize>) -> Vec<(i32, i64)> {
        let payloads: Vec<(Option<String>, Vec<u8>)> = self.planned[range]
            .iter()
            .map(|p| (p.task_id.clone(), p.payload.clone()))
            .collect();
        produce(&self.topics.tasks, &payloads).await
    }

    fn expected_results(&self) -> usize {
        self.planned.iter().filter(|p| p.task_id.is_some()).count()
    }

    fn expected_dlq(&self) -> usize {
        self.planned.len() - self.expected_results()
    }

    fn all_done(&self, seen: &Seen) -> bool {
        seen.dlq.len() >= self.expected_dlq()
            && self
                .planned
                .iter()
                .filter_map(|p| p.task_id.as_ref())
                .all(|id| seen.by_task.contains_key(id))
    }

    /// Waits until every message has its outcome in Kafka.
    async fn wait_all(&self, watcher: &Watcher, service: &Service, limit: Duration) -> Seen {
        watcher
            .wait_for(
                limit,
                "every task has a result",
                |s| self.all_done(s),
                || tail(&service.log(), 60),
            )
            .await
    }

    /// Checks every outcome (topic, code, file bytes) and that no temporary file remains;
    /// returns the number of duplicate results.
    fn verify(&self, seen: &Seen) -> usize {
        let by_offset_dlq = seen.dlq.len();
        assert_eq!(
            by_offset_dlq,
            self.expected_dlq(),
            "one DLQ record per malformed message (the DLQ is not deduplicated by the test)"
        );
        for record in &seen.dlq {
            assert_eq!(record.value["error_type"], "INVALID_MESSAGE");
            assert!(record.value["original_value"]
                .as_str()
                .unwrap()
                .starts_with("not json"));
        }
        for p in &self.planned {
            let Some(id) = &p.task_id else { continue };
            let results = &seen.by_task[id];
            for r in results {
                assert_eq!(
                    r.key.as_deref(),
                    Some(id.as_str()),
                    "results are keyed by task_id"
                );
                match &p.expect {
                    Expect::Copied { .. } => {
                        assert_eq!(r.topic, self.topics.results, "{id}: {}", r.value);
                        assert_eq!(r.value["status"], "success");
                        assert!(r.value["error_code"].is_null());
                        assert!(r.value["attempts"].as_u64().unwrap() >= 1);
                    }
                    Expect::Failed(code) => {
                        assert_eq!(r.topic, self.topics.failures, "{id}: {}", r.value);
                        assert_eq!(r.value["status"], "failed");
                        assert_eq!(r.value["error_code"], *code, "{id}: {}", r.value);
                    }
                    Expect::Dlq => unreachable!(),
                }
            }
            if let Expect::Copied { dest, content } = &p.expect {
                let got =
                    std::fs::read(dest).unwrap_or_else(|e| panic!("{id}: {}: {e}", dest.display()));
                assert!(
                    got == *content,
                    "{id}: {} differs from its source",
                    dest.display()
                );
                let size = seen.by_task[id][0].value["bytes_transferred"]
                    .as_u64()
                    .unwrap();
                assert_eq!(size, content.len() as u64);
            }
        }
        let mut temps = files_ending_with(self.storage.path(), TEMP_SUFFIX);
        for (_, s) in &self.servers {
            temps.extend(files_ending_with(s.root(), TEMP_SUFFIX));
        }
        assert!(temps.is_empty(), "temporary files left: {temps:?}");
        seen.duplicates()
    }

    /// Waits until the group's committed offset of every partition is the last delivered
    /// offset plus one.
    async fn wait_committed(&self, deliveries: &[(i32, i64)], limit: Duration) {
        let mut want: BTreeMap<i32, Option<i64>> =
            (0..self.topics.partitions).map(|p| (p, None)).collect();
        for &(p, o) in deliveries {
            let e = want.entry(p).or_default();
            *e = Some(e.map_or(o + 1, |x: i64| x.max(o + 1)));
        }
        let start = Instant::now();
        loop {
            let got = committed(
                &self.topics.group,
                &self.topics.tasks,
                self.topics.partitions,
            );
            let ok = want
                .iter()
                .all(|(p, w)| w.is_none() || got.get(p) == Some(w));
            if ok {
                return;
            }
            assert!(start.elapsed() < limit, "committed {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn count_for(&self, seen: &Seen, conn: &str) -> usize {
        seen.by_task
            .values()
            .filter(|rs| rs[0].value["src_id"] == conn || rs[0].value["dst_id"] == conn)
            .count()
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn wait_until<F: Fn() -> bool>(limit: Duration, what: &str, f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A run of 1,000 mixed tasks, a fifth of the way through: the scenario, its watcher,
/// the service, the stage pids at start and the delivery reports of the tasks.
struct MidRun {
    sc: Scenario,
    watcher: Watcher,
    svc: Service,
    pids: std::collections::HashMap<String, u32>,
    deliveries: Vec<(i32, i64)>,
}

async fn mid_run() -> MidRun {
    let sc = Scenario::new(1000).await;
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start("");
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    let deliveries = sc.produce().await;
    watcher
        .wait_for(
            RUN_LIMIT,
            "a fifth of the results",
            |s| s.results() >= 200,
            || tail(&svc.log(), 40),
        )
        .await;
    MidRun {
        sc,
        watcher,
        svc,
        pids,
        deliveries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_tasks_over_two_connections_each_get_exactly_one_result() {
    let sc = Scenario::new(1000).await;
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start("");
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(pids.len(), 4, "{pids:?}");
    let ps: Vec<String> = svc.stage_processes().into_values().collect();
    for cmd in [
        "ftp-pooler stage ingest",
        "ftp-pooler stage publish",
        "ftp-pooler stage transfer a",
        "ftp-pooler stage transfer b",
    ] {
        assert!(ps.iter().any(|c| c == cmd), "ps shows {ps:?}, not {cmd:?}");
    }
    let rt = std::fs::metadata(svc.runtime_dir()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&rt.permissions()) & 0o777,
        0o700
    );

    let deliveries = sc.produce().await;
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    // Linger: a duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen2 = watcher.seen();
    assert_eq!(seen2.results(), seen.results());
    let dupes = sc.verify(&seen2);
    assert_eq!(dupes, 0, "no fault, so exactly one result per task");
    sc.wait_committed(&deliveries, Duration::from_secs(20))
        .await;

    svc.signal(Signal::SIGTERM);
    let status = svc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}:\n{}", tail(&svc.log(), 40));
    assert!(!svc.runtime_dir().join("ctl.sock").exists());
}

/// Kills (SIGKILL) one stage once a fifth of the results are in; checks nothing is lost.
async fn kill_stage_mid_run(stage: &str) {
    let MidRun {
        sc,
        watcher,
        mut svc,
        pids,
        deliveries,
    } = mid_run().await;
    let victim = pids[stage];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let at_kill = watcher.seen().results();
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dupes = sc.verify(&watcher.seen());
    eprintln!(
        "SIGKILL {stage} after {at_kill} results: {} tasks, {} results, {dupes} duplicates",
        sc.expected_results(),
        seen.results() + dupes - seen.duplicates(),
    );
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    assert_ne!(after[stage], victim, "{stage} was restarted");
    let status = svc.status().await.unwrap();
    let restarted = status.iter().find(|s| s.name == stage).unwrap();
    assert!(restarted.restarts >= 1);
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_ingest_mid_run_loses_nothing() {
    kill_stage_mid_run("ingest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_transfer_worker_mid_run_loses_nothing() {
    kill_stage_mid_run("transfer:a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_publish_mid_run_loses_nothing() {
    kill_stage_mid_run("publish").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_publish_is_stopped_no_offset_passes_an_unpublished_result() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        pids,
        deliveries,
    } = mid_run().await;
    let publish = Pid::from_raw(pids["publish"] as i32);
    kill(publish, Signal::SIGSTOP).unwrap();
    // Let the last commits land and the watcher read everything already in Kafka.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = committed(&sc.topics.group, &sc.topics.tasks, sc.topics.partitions);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = watcher.seen();
    let after = committed(&sc.topics.group, &sc.topics.tasks, sc.topics.partitions);
    assert_eq!(before, after, "offsets advanced while publish was stopped");
    let mut checked = 0;
    for (p, (part, off)) in sc.planned.iter().zip(&deliveries) {
        let Some(Some(c)) = after.get(part) else {
            continue;
        };
        if off >= c {
            continue;
        }
        checked += 1;
        match &p.task_id {
            Some(id) => assert!(
                seen.by_task.contains_key(id),
                "offset {part}:{off} committed ({c}) but {id} has no result in Kafka"
            ),
            None => assert!(
                seen.dlq
                    .iter()
                    .any(|r| r.value["original_partition"] == *part
                        && r.value["original_offset"] == *off),
                "offset {part}:{off} committed but its DLQ record is not in Kafka"
            ),
        }
    }
    assert!(checked > 0, "nothing was committed before publish stopped");
    assert!(
        seen.results() < sc.expected_results(),
        "the run finished before the stop"
    );
    eprintln!("publish stopped: {checked} committed messages all have their outcome in Kafka; committed {after:?}");
    kill(publish, Signal::SIGCONT).unwrap();
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    assert_eq!(
        sc.verify(&seen),
        0,
        "a stopped (not killed) publish loses and repeats nothing"
    );
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
    let _ = svc.try_wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_drains_exits_zero_and_a_restart_finishes_the_work() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        deliveries,
        ..
    } = mid_run().await;
    let t0 = Instant::now();
    svc.signal(Signal::SIGTERM);
    // Drain deadline 10 s (+ the supervisor's margins).
    let status = svc
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("exits within the deadline");
    assert!(status.success(), "{status}:\n{}", tail(&svc.log(), 60));
    eprintln!(
        "SIGTERM: exit 0 after {:?}, {} results in",
        t0.elapsed(),
        watcher.seen().results()
    );
    assert!(svc.stage_processes().is_empty(), "stages left behind");
    svc.spawn();
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dupes = sc.verify(&watcher.seen());
    eprintln!(
        "after restart: {} results, {dupes} duplicates",
        seen.results()
    );
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_restart_of_one_worker_leaves_the_others_running() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        pids: before,
        deliveries,
    } = mid_run().await;
    let b_before = sc.count_for(&watcher.seen(), "b");
    let t0 = Instant::now();
    match svc.restart_stage("transfer:a").await {
        CtlResponse::Restarted { stage, pid } => {
            assert_eq!(stage, "transfer:a");
            assert_ne!(pid, before["transfer:a"]);
        }
        other => panic!("{other:?}\n{}", tail(&svc.log(), 40)),
    }
    let restart_took = t0.elapsed();
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    for stage in ["ingest", "publish", "transfer:b"] {
        assert_eq!(before[stage], after[stage], "{stage} kept running");
    }
    match svc.restart_stage("transfer:nope").await {
        CtlResponse::Error(e) => assert!(e.contains("transfer:a"), "{e}"),
        other => panic!("{other:?}"),
    }
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dupes = sc.verify(&watcher.seen());
    let b_after = sc.count_for(&watcher.seen(), "b");
    eprintln!(
        "ctl restart transfer:a took {restart_took:?}: {} results, {dupes} duplicates; b: {b_before} results before the restart, {b_after} at the end",
        seen.results()
    );
    assert!(
        b_after > b_before,
        "transfer:b kept transferring after the restart"
    );
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_gives_up_on_a_crash_looping_stage() {
    let sc = Scenario::new(10).await;
    let mut svc = sc.start("  max_restarts: 2\n  restart_window_seconds: 60\n");
    let mut pid = svc.wait_ready(Duration::from_secs(60)).await["publish"];
    for round in 0..3 {
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        if round == 2 {
            break;
        }
        let start = Instant::now();
        pid = loop {
            let p = svc.wait_ready(Duration::from_secs(30)).await["publish"];
            if p != pid {
                break p;
            }
            assert!(start.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
    }
    let status = svc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the supervisor gives up");
    assert!(!status.success(), "exit status {status}");
    let log = svc.log();
    assert!(log.contains("too many restarts"), "{}", tail(&log, 30));
    wait_until(
        Duration::from_secs(15),
        "stages stopped with the supervisor",
        || ftp_pooler_testbed::service::children_of(svc.pid()).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_killing_its_worker_ends_as_a_failure() {
    let sc = Scenario::new(40).await;
    let (conn, server) = &sc.servers[0];
    server.put("poison/p.bin", b"poison");
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start_with_env("", &[("FTP_POOLER_TEST_ABORT_ON", "poison/")]);
    svc.wait_ready(Duration::from_secs(60)).await;
    let poison = serde_json::to_vec(&json!({
        "task_id": "poison-1", "src_id": conn, "src_path": "poison/p.bin",
        "dst_id": "local", "dst_path": "poison/p.bin",
    }))
    .unwrap();
    produce(&sc.topics.tasks, &[(Some("poison-1".into()), poison)]).await;
    sc.produce().await;
    let seen = watcher
        .wait_for(
            RUN_LIMIT,
            "poison task and all others done",
            |s| s.by_task.contains_key("poison-1") && sc.all_done(s),
            || tail(&svc.log(), 60),
        )
        .await;
    let r = &seen.by_task["poison-1"][0];
    assert_eq!(r.topic, sc.topics.failures);
    assert_eq!(r.value["error_code"], "UNKNOWN_ERROR", "{}", r.value);
    assert_eq!(r.value["attempts"], 3);
    sc.verify(&seen);
    let status = svc.status().await.unwrap();
    let a = status
        .iter()
        .find(|s| s.name == format!("transfer:{conn}"))
        .unwrap();
    assert!(a.restarts >= 3, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_the_group_takes_partitions_without_losing_or_repeating() {
    let sc = Scenario::new(1000).await;
    let watcher = Watcher::start(&sc.topics).await;
    // One session per connection, so the first wave is still running when the second
    // instance joins.
    let yaml = sc.config_yaml("").replace(
        "max_sessions_per_connection: 4",
        "max_sessions_per_connection: 1",
    );
    let mut one = sc.start_instance("one", &yaml);
    one.wait_ready(Duration::from_secs(60)).await;
    let mut deliveries = sc.produce_range(0..600).await;
    watcher
        .wait_for(
            RUN_LIMIT,
            "the first results",
            |s| s.results() >= 50,
            || tail(&one.log(), 40),
        )
        .await;
    let mut two = sc.start_instance("two", &yaml);
    two.wait_ready(Duration::from_secs(60)).await;
    // Wait for the rebalance to hand the second instance some partitions.
    let start = Instant::now();
    while !two
        .log()
        .lines()
        .any(|l| l.contains("partitions assigned") && !l.contains("parts=[]"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no partitions for the second instance:\n{}",
            tail(&two.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_join = watcher.seen().results();
    deliveries.extend(sc.produce_range(600..1000).await);
    let seen = sc.wait_all(&watcher, &one, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dupes = sc.verify(&watcher.seen());
    let finished = |svc: &Service| {
        svc.log()
            .lines()
            .filter(|l| l.contains("task finished"))
            .count()
    };
    eprintln!(
        "rebalance: second instance joined after {at_join} results; {} results, {dupes} duplicates; tasks run by instance 1: {}, by instance 2: {}",
        seen.results(),
        finished(&one),
        finished(&two)
    );
    assert!(
        one.log().contains("partitions revoked"),
        "{}",
        tail(&one.log(), 30)
    );
    assert!(finished(&two) > 0, "the second instance ran tasks");
    assert_eq!(
        dupes, 0,
        "revoke finishes what was read of its partitions and commits it"
    );
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_pauses_the_partitions_instead_of_buffering() {
    const N: usize = 2500;
    const POD_BOUND: usize = 1024; // stages/ingest: MIN_POD_TRACKED (2 x 100 sessions is less)
    let sc = Scenario::new(10).await;
    let (conn, server) = &sc.servers[1];
    assert_eq!(
        server.kind,
        FtpKind::Pyftpdlib,
        "one process: SIGSTOP stalls it whole"
    );
    let mut payloads = Vec::new();
    for i in 0..N {
        server.put(&format!("bulk/f{i}.bin"), &content(i % 50));
        let id = format!("bulk-{i}");
        let task = json!({"task_id": id, "src_id": conn, "src_path": format!("bulk/f{i}.bin"),
                          "dst_id": "local", "dst_path": format!("bulk/f{i}.bin")});
        payloads.push((Some(id), serde_json::to_vec(&task).unwrap()));
    }
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start("");
    svc.wait_ready(Duration::from_secs(60)).await;
    let ftp = Pid::from_raw(server.pid().unwrap() as i32);
    kill(ftp, Signal::SIGSTOP).unwrap();
    let deliveries = produce(&sc.topics.tasks, &payloads).await;
    let start = Instant::now();
    while !svc.log().contains("partitions paused") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no pause:\n{}",
            tail(&svc.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill(ftp, Signal::SIGCONT).unwrap();
    let seen = watcher
        .wait_for(
            RUN_LIMIT,
            "every bulk task has a result",
            |s| s.by_task.len() >= N,
            || tail(&svc.log(), 40),
        )
        .await;
    for i in 0..N {
        let r = &seen.by_task[&format!("bulk-{i}")];
        assert_eq!(r[0].value["status"], "success", "{}", r[0].value);
    }
    let log = svc.log();
    let tracked: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("partitions paused"))
        .filter_map(|l| {
            l.split("tracked=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let max = tracked.iter().copied().max().unwrap_or(0);
    eprintln!(
        "stalled server: {} pauses, at most {max} messages tracked of {N} produced",
        tracked.len()
    );
    assert!(
        (POD_BOUND..=POD_BOUND + 3).contains(&max),
        "paused at {tracked:?}"
    );
    assert!(log.contains("partitions resumed"));
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}
