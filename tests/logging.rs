//! Logs as operators and log pipelines see them (issue 19, item 1), from the real
//! service: in JSON mode every line of every process is one JSON object, a fatal error
//! and a panic are one line each, once; `logging.max_files` prunes the daily file; one
//! task can be followed through ingest, transfer and publish by its `task_id`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::service::{json_lines, produce, SmallStack};
use ftp_pooler_testbed::{FtpKind, FtpServer};
use serde_json::{json, Map, Value};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// `ftp-pooler run` to its end (no broker needed: a stage fails before using one);
/// returns the exit code and stdout + stderr.
fn run_to_end(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        dir.join("connections.ini"),
        format!("[local]\ntype = local\nbase_path = {}\n", data.display()),
    )
    .unwrap();
    let mut cmd = Command::new(EXE);
    for (k, _) in std::env::vars() {
        if k.starts_with("FTP_POOLER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("run")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--connections")
        .arg(dir.join("connections.ini"))
        .arg("--runtime-dir")
        .arg(dir.join("rt"))
        .env("FTP_POOLER_API__HOST", "127.0.0.1")
        .env(
            "FTP_POOLER_API__PORT",
            ftp_pooler_testbed::free_port().to_string(),
        )
        .env(
            "FTP_POOLER_METRICS__PORT",
            ftp_pooler_testbed::free_port().to_string(),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut text = String::from_utf8(out.stdout).unwrap();
    text.push_str(&String::from_utf8(out.stderr).unwrap());
    (out.status.code(), text)
}

const FAILING: &str = "kafka:\n  bootstrap_servers: [\"127.0.0.1:1\"]\nsupervisor:\n  restart_base_ms: 50\n  max_failed_starts: 2\nlogging:\n  format: json\n";

/// The lines whose `field` is `value`.
fn with<'a>(
    lines: &'a [Map<String, Value>],
    field: &str,
    value: &str,
) -> Vec<&'a Map<String, Value>> {
    lines
        .iter()
        .filter(|l| l.get(field).and_then(Value::as_str) == Some(value))
        .collect()
}

/// Per pid, how many of `lines` it wrote.
fn per_pid(lines: &[&Map<String, Value>]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l["pid"].as_u64().unwrap()).or_default() += 1;
    }
    m
}

#[test]
fn a_failing_start_in_json_mode_is_json_lines_with_each_fatal_error_once_and_the_file_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    // Old daily files of the log, and one that is not ours.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for d in 1..=4 {
        std::fs::write(logs.join(format!("svc.log.2020-01-0{d}")), "old\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(logs.join("keep.txt"), "not a log\n").unwrap();
    let yaml = format!(
        "{FAILING}  file: {}\n  max_files: 2\n",
        logs.join("svc.log").display()
    );
    let (code, out) = run_to_end(
        dir.path(),
        &yaml,
        &[("FTP_POOLER_TEST_FAIL_AT_START", "publish:error")],
    );
    assert_eq!(code, Some(1), "{out}");
    let lines = json_lines(&out);
    // Each publish process reports its own failure once; the supervisor gives up once.
    let failures = with(
        &lines,
        "error",
        "publish: test hook FTP_POOLER_TEST_FAIL_AT_START",
    );
    let pids = per_pid(&failures);
    assert_eq!(pids.len(), 2, "two failed starts:\n{out}");
    assert!(pids.values().all(|n| *n == 1), "{pids:?}\n{out}");
    for f in &failures {
        assert_eq!(f["stage"], "publish", "{out}");
        assert_eq!(f["level"], "ERROR", "{out}");
    }
    let gave_up = with(&lines, "error", "stage publish kept crashing; gave up");
    assert_eq!(gave_up.len(), 1, "{out}");
    assert_eq!(gave_up[0]["stage"], "supervisor");
    assert_eq!(
        lines.last().unwrap(),
        gave_up[0],
        "the last line is the fatal one"
    );

    // The file: today's, with the same JSON lines; 2 files kept of the 4 old ones + today.
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let today = format!("svc.log.{}", chrono::Utc::now().format("%Y-%m-%d"));
    // At most max_files of ours, today's among them (every process of the service prunes
    // when it opens the file: after today's exists, a start keeps max_files - 1 old ones).
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("svc.log")).collect();
    assert!(ours.len() <= 2, "{names:?}");
    assert!(names.contains(&today), "{names:?}");
    assert!(names.contains(&"keep.txt".to_string()), "{names:?}");
    for d in 1..=3 {
        assert!(
            !names.contains(&format!("svc.log.2020-01-0{d}")),
            "{names:?}"
        );
    }
    let file = std::fs::read_to_string(logs.join(&today)).unwrap();
    let in_file = json_lines(&file);
    assert_eq!(
        with(&in_file, "error", "stage publish kept crashing; gave up").len(),
        1,
        "{file}"
    );
}

#[test]
fn a_stage_panic_in_json_mode_is_one_json_line_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_to_end(
        dir.path(),
        FAILING,
        &[
            ("FTP_POOLER_TEST_FAIL_AT_START", "publish:panic"),
            ("RUST_BACKTRACE", "0"),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    let lines = json_lines(&out);
    let panics = with(
        &lines,
        "panic",
        "publish: test hook FTP_POOLER_TEST_FAIL_AT_START",
    );
    let pids = per_pid(&panics);
    assert_eq!(pids.len(), 2, "{out}");
    assert!(pids.values().all(|n| *n == 1), "{pids:?}\n{out}");
    for p in panics {
        assert_eq!(p["level"], "ERROR");
        assert_eq!(p["stage"], "publish");
        assert!(
            p["location"].as_str().unwrap().starts_with("src/main.rs:"),
            "{p:?}"
        );
    }
    assert_eq!(
        with(&lines, "error", "stage publish kept crashing; gave up").len(),
        1
    );
}

#[test]
fn an_invalid_configuration_is_json_lines_when_the_file_asks_for_json_and_text_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "kafka:\n  max_retries: lots\nlogging:\n  format: json\n";
    let (code, out) = run_to_end(dir.path(), yaml, &[]);
    assert_eq!(code, Some(2), "{out}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .ends_with("kafka.max_retries: expected a whole number >= 0, found \"lots\""));
    assert_eq!(lines[1]["message"], "configuration invalid: 1 error(s)");
    // The environment's format wins over the file's: text as before.
    let (code, out) = run_to_end(dir.path(), yaml, &[("FTP_POOLER_LOGGING__FORMAT", "text")]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("configuration invalid: 1 error(s)"),
        "{out}"
    );
    assert!(!out.contains('{'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_followed_by_its_task_id_through_ingest_transfer_and_publish() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    server.put("src/one.bin", b"one");
    let storage = tempfile::Builder::new()
        .prefix("storage-")
        .tempdir()
        .unwrap();
    let stack = SmallStack::start(
        Path::new(EXE),
        server,
        storage.path(),
        &[("FTP_POOLER_LOGGING__FORMAT", "json")],
    )
    .await;
    let tasks = [("log-ok", "src/one.bin"), ("log-missing", "src/none.bin")];
    let payloads: Vec<(Option<String>, Vec<u8>)> = tasks
        .iter()
        .map(|(id, path)| {
            let t = json!({"task_id": id, "src_id": "a", "src_path": path,
                           "dst_id": "local", "dst_path": format!("/{id}.bin")});
            (Some(id.to_string()), t.to_string().into_bytes())
        })
        .collect();
    produce(&stack.topics.tasks, &payloads).await;
    stack
        .watcher
        .wait_for(
            Duration::from_secs(60),
            "both results",
            |s| tasks.iter().all(|(id, _)| s.by_task.contains_key(*id)),
            || stack.svc.log(),
        )
        .await;
    // publish logs after the delivery report: give its line a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = stack.svc.log();
    let lines = json_lines(&log);
    for (id, _) in tasks {
        let about = with(&lines, "task_id", id);
        let events: Vec<(String, String)> = about
            .iter()
            .map(|l| {
                (
                    l["stage"].as_str().unwrap().to_string(),
                    l["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for want in [
            ("ingest", "task received"),
            ("transfer:a", "task finished"),
            ("publish", "result published"),
        ] {
            assert!(
                events.contains(&(want.0.to_string(), want.1.to_string())),
                "{id}: {want:?} missing in {events:?}"
            );
        }
    }
    let finished = with(&lines, "task_id", "log-missing")
        .into_iter()
        .find(|l| l["message"] == "task finished")
        .unwrap();
    assert_eq!(finished["error_code"], "FILE_NOT_FOUND", "{finished:?}");

    // The build is on /metrics.
    let (status, metrics) = request(stack.svc.metrics_port, "GET", "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let info = metrics
        .lines()
        .find(|l| l.starts_with("ftp_pooler_build_info{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(info.ends_with("} 1"), "{info}");
    for label in ["version=\"", "commit=\"", "rustc=\"", "librdkafka=\""] {
        assert!(info.contains(label), "{label}: {info}");
    }
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
}
