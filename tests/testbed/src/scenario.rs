//! A scenario of mixed tasks for end-to-end tests: downloads and uploads over two
//! connections (`a` on vsftpd, `b` on pyftpdlib) plus malformed messages, invalid tasks
//! and missing files, with what each should end as; and the checks every fault test
//! makes after it (every task has a result on the right topic, every file's bytes, no
//! temporary file, committed offsets at the end of each partition). What a fault made
//! the service do twice is counted two ways ([`Redone`]): duplicate results on the
//! topics, and redone transfers in the FTP servers' transfer logs ([`crate::xferlog`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::service::{committed, files_ending_with, produce, Seen, Service, Topics, Watcher};
pub use crate::xferlog::Redone;
use crate::xferlog::{self, Key};
use crate::{FtpKind, FtpServer};

/// The suffix of the service's temporary files.
pub const TEMP_SUFFIX: &str = ".ftp-pooler.part";

/// How long a scenario run may take before its test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// What a task should end as.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Success; the file at `dest` must equal `content`.
    Copied {
        dest: PathBuf,
        content: Vec<u8>,
    },
    Failed(&'static str),
    Dlq,
}

pub struct Planned {
    pub task_id: Option<String>,
    pub payload: Vec<u8>,
    pub expect: Expect,
    /// For a task that copies a file over FTP: its connection and where its transfers
    /// show in that server's transfer log.
    pub on_server: Option<(String, Key)>,
}

pub struct Scenario {
    exe: PathBuf,
    pub servers: Vec<(String, FtpServer)>,
    pub storage: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub topics: Topics,
    pub planned: Vec<Planned>,
    /// The FTP connections in active mode (`passive = false`) instead of passive.
    pub active: bool,
}

pub fn content(i: usize) -> Vec<u8> {
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
    pub async fn new(exe: &Path, n: usize) -> Scenario {
        Self::with_partitions(exe, n, 3).await
    }

    /// As [`Scenario::new`], on topics of `partitions` partitions.
    pub async fn with_partitions(exe: &Path, n: usize, partitions: i32) -> Scenario {
        let servers = vec![
            (
                "a".to_string(),
                FtpServer::start_logging_transfers(FtpKind::Vsftpd, false),
            ),
            (
                "b".to_string(),
                FtpServer::start_logging_transfers(FtpKind::Pyftpdlib, false),
            ),
        ];
        let storage = tempfile::Builder::new()
            .prefix("storage-")
            .tempdir()
            .unwrap();
        let work = tempfile::Builder::new()
            .prefix("service-")
            .tempdir()
            .unwrap();
        let topics = Topics::create(partitions).await;
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
                    on_server: None,
                }
            } else if i < 2 * special {
                Planned {
                    payload: task("local", "x".into(), "local", "y".into()),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Failed("INVALID_CONFIG"),
                    on_server: None,
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
                    on_server: None,
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
                let on_server = Some((conn.clone(), Key::download(&src)));
                Planned {
                    payload: task(conn, src, "local", format!("/{dest_rel}")),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Copied {
                        dest: storage.path().join(dest_rel),
                        content: data,
                    },
                    on_server,
                }
            } else {
                let src_rel = format!("up/f{i}.bin");
                let full = storage.path().join(&src_rel);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, &data).unwrap();
                let remote = format!("dst/d{}/f{i}.bin", i % 6);
                let on_server = Some((conn.clone(), Key::upload(&remote, &task_id)));
                Planned {
                    payload: task("local", src_rel, conn, format!("/{remote}")),
                    task_id: Some(task_id.clone()),
                    expect: Expect::Copied {
                        dest: server.root().join(remote),
                        content: data,
                    },
                    on_server,
                }
            };
            planned.push(p);
        }
        Scenario {
            exe: exe.to_path_buf(),
            servers,
            storage,
            work,
            topics,
            planned,
            active: false,
        }
    }

    pub fn connections_ini(&self) -> String {
        let mut ini = String::new();
        for (id, server) in &self.servers {
            ini.push_str(&server.ini_section(id));
            if self.active {
                ini.push_str("passive = false\n");
            }
            ini.push('\n');
        }
        ini.push_str(&format!(
            "[local]\ntype = local\nbase_path = {}\n",
            self.storage.path().display()
        ));
        ini
    }

    pub fn config_yaml(&self, extra: &str) -> String {
        self.topics.config_yaml(&format!(
            "pool:\n  max_sessions_per_connection: 4\ntransfer:\n  transfer_timeout_seconds: 30\n  connect_timeout_seconds: 10\nlogging:\n  format: text\nshutdown:\n  drain_timeout_seconds: 10\nsupervisor:\n  restart_base_ms: 100\n  restart_max_ms: 2000\n{extra}"
        ))
    }

    pub fn start(&self, extra: &str) -> Service {
        self.start_with_env(extra, &[])
    }

    pub fn start_with_env(&self, extra: &str, env: &[(&str, &str)]) -> Service {
        Service::start_with_env(
            &self.exe,
            &self.work.path().join("svc"),
            &self.config_yaml(extra),
            &self.connections_ini(),
            env,
        )
    }

    /// Another service instance (same group), in its own directory, with `yaml`.
    pub fn start_instance(&self, name: &str, yaml: &str) -> Service {
        Service::start(
            &self.exe,
            &self.work.path().join(name),
            yaml,
            &self.connections_ini(),
        )
    }

    /// Produces every planned message; returns the delivery reports, in plan order.
    pub async fn produce(&self) -> Vec<(i32, i64)> {
        self.produce_range(0..self.planned.len()).await
    }

    pub async fn produce_range(&self, range: std::ops::Range<usize>) -> Vec<(i32, i64)> {
        let payloads: Vec<(Option<String>, Vec<u8>)> = self.planned[range]
            .iter()
            .map(|p| (p.task_id.clone(), p.payload.clone()))
            .collect();
        produce(&self.topics.tasks, &payloads).await
    }

    pub fn expected_results(&self) -> usize {
        self.planned.iter().filter(|p| p.task_id.is_some()).count()
    }

    pub fn expected_dlq(&self) -> usize {
        self.planned.len() - self.expected_results()
    }

    pub fn all_done(&self, seen: &Seen) -> bool {
        seen.dlq.len() >= self.expected_dlq()
            && self
                .planned
                .iter()
                .filter_map(|p| p.task_id.as_ref())
                .all(|id| seen.by_task.contains_key(id))
    }

    /// Waits until every message has its outcome in Kafka.
    pub async fn wait_all(&self, watcher: &Watcher, service: &Service, limit: Duration) -> Seen {
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
    pub fn verify(&self, seen: &Seen) -> usize {
        // One DLQ record per malformed message; a fault may repeat some (at least once).
        let originals: std::collections::BTreeSet<(i64, i64)> = seen
            .dlq
            .iter()
            .map(|r| {
                (
                    r.value["original_partition"].as_i64().unwrap(),
                    r.value["original_offset"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            originals.len(),
            self.expected_dlq(),
            "one DLQ record per malformed message"
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
        // Every task has its result, but a duplicate (allowed for a task in flight at a
        // fault, and run again after it) may still be at work on its temporary file: a
        // temporary file is left behind only if it outlives the work.
        let deadline = Instant::now() + Duration::from_secs(20);
        let temps = loop {
            let mut temps = files_ending_with(self.storage.path(), TEMP_SUFFIX);
            for (_, s) in &self.servers {
                temps.extend(files_ending_with(s.root(), TEMP_SUFFIX));
            }
            if temps.is_empty() || Instant::now() >= deadline {
                break temps;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(temps.is_empty(), "temporary files left: {temps:?}");
        seen.duplicates()
    }

    /// What was done twice: `duplicate_results` (from [`Scenario::verify`]) and the
    /// transfers beyond the first of every task that copies a file over FTP, counted in
    /// the servers' transfer logs. Checks that each of those tasks was transferred at
    /// least once (else the count would be wrong, not the service).
    pub fn redone(&self, duplicate_results: usize) -> Redone {
        let mut counts = Vec::new();
        for (conn, server) in &self.servers {
            let keys: Vec<(Key, u64)> = self
                .planned
                .iter()
                .filter_map(|p| match (&p.on_server, &p.expect) {
                    (Some((c, key)), Expect::Copied { content, .. }) if c == conn => {
                        Some((key.clone(), content.len() as u64))
                    }
                    _ => None,
                })
                .collect();
            let per_key = xferlog::count(&server.transfers(), &keys);
            let missing: Vec<&Key> = per_key
                .iter()
                .filter(|(_, c)| c.transfers == 0)
                .map(|(k, _)| k)
                .collect();
            assert!(
                missing.is_empty(),
                "{} tasks of {conn} ({}) have no transfer in its log, e.g. {:?}",
                missing.len(),
                server.kind.name(),
                &missing[..missing.len().min(3)]
            );
            counts.extend(per_key.into_values());
        }
        Redone::from_counts(duplicate_results, &counts)
    }

    /// Waits until the group's committed offset of every partition is the last delivered
    /// offset plus one.
    pub async fn wait_committed(&self, deliveries: &[(i32, i64)], limit: Duration) {
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

    pub fn count_for(&self, seen: &Seen, conn: &str) -> usize {
        seen.by_task
            .values()
            .filter(|rs| rs[0].value["src_id"] == conn || rs[0].value["dst_id"] == conn)
            .count()
    }
}

pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `tracked=` count of every "partitions paused" line of a service log (ingest's
/// flow control), in order.
pub fn paused_tracked(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|l| l.contains("partitions paused"))
        .filter_map(|l| {
            l.split("tracked=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

pub async fn wait_until<F: Fn() -> bool>(limit: Duration, what: &str, f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run of 1,000 mixed tasks, a fifth of the way through: the scenario, its watcher,
/// the service, the stage pids at start and the delivery reports of the tasks.
pub struct MidRun {
    pub sc: Scenario,
    pub watcher: Watcher,
    pub svc: Service,
    pub pids: std::collections::HashMap<String, u32>,
    pub deliveries: Vec<(i32, i64)>,
}

pub async fn mid_run(exe: &Path) -> MidRun {
    mid_run_with_env(exe, &[]).await
}

/// [`mid_run`], the service started with `env` (e.g. `FTP_POOLER_LOGGING__FORMAT=json`).
pub async fn mid_run_with_env(exe: &Path, env: &[(&str, &str)]) -> MidRun {
    let sc = Scenario::new(exe, 1000).await;
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start_with_env("", env);
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

/// Kills (SIGKILL) one stage (`ingest`, `publish`, `transfer:a`) once a fifth of the
/// results of a [`mid_run`] are in; checks that every task still gets its result, that
/// the stage was restarted, and that the offsets are committed. Returns (and prints) the
/// duplicate results and the redone transfers (allowed: tasks in flight at the kill).
pub async fn kill_stage_mid_run(exe: &Path, stage: &str) -> Redone {
    let MidRun {
        sc,
        watcher,
        mut svc,
        pids,
        deliveries,
    } = mid_run(exe).await;
    let victim = pids[stage];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let at_kill = watcher.seen().results();
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dupes = sc.verify(&watcher.seen());
    let redone = sc.redone(dupes);
    eprintln!(
        "SIGKILL {stage} after {at_kill} results: {} tasks, {} results, {redone}",
        sc.expected_results(),
        seen.results() + dupes - seen.duplicates(),
    );
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    assert_ne!(after[stage], victim, "{stage} was restarted");
    let status = svc.status().await.unwrap();
    let stage_id: ftp_pooler_channel::StageId = stage.parse().unwrap();
    let restarted = status.iter().find(|s| s.name == stage_id).unwrap();
    assert!(restarted.restarts >= 1);
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
    redone
}

/// `n` mixed tasks and no fault: exactly one result per task, the offsets committed, and
/// a clean exit on SIGTERM.
pub async fn clean_run(exe: &Path, n: usize) {
    clean_run_with_env(exe, n, &[]).await
}

/// [`clean_run`], the service started with `env` (e.g. settings overrides).
pub async fn clean_run_with_env(exe: &Path, n: usize, env: &[(&str, &str)]) {
    clean_run_of(&Scenario::new(exe, n).await, env).await
}

/// [`clean_run`] of a scenario made by the caller.
pub async fn clean_run_of(sc: &Scenario, env: &[(&str, &str)]) {
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start_with_env("", env);
    svc.wait_ready(Duration::from_secs(60)).await;
    let deliveries = sc.produce().await;
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    // Linger: a duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen2 = watcher.seen();
    assert_eq!(seen2.results(), seen.results());
    assert_eq!(
        sc.verify(&seen2),
        0,
        "no fault, so exactly one result per task"
    );
    sc.wait_committed(&deliveries, Duration::from_secs(20))
        .await;
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    let status = svc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}:\n{}", tail(&svc.log(), 40));
}

/// CPU time (user + system) used so far by `pid`, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}
