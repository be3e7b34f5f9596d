//! What an operator touches (DESIGN.md section 7), against the real service, broker and
//! FTP servers: every REST route, readiness going down and up with a stage, restarting a
//! stage over HTTP, the Prometheus scrape matching what was published, JSON logs, and no
//! password anywhere.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_channel::{StageId, StageState};
use ftp_pooler_testbed::http::{get_json, request};
use ftp_pooler_testbed::service::{produce, Seen, Service, Topics, Watcher};
use ftp_pooler_testbed::{ftp_password, FtpKind, FtpServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

struct Bed {
    server: FtpServer,
    storage: tempfile::TempDir,
    work: tempfile::TempDir,
    topics: Topics,
}

impl Bed {
    async fn new() -> Bed {
        Bed {
            server: FtpServer::start(FtpKind::Vsftpd, false),
            storage: tempfile::Builder::new()
                .prefix("storage-")
                .tempdir()
                .unwrap(),
            work: tempfile::tempdir().unwrap(),
            topics: Topics::create(3).await,
        }
    }

    fn start(&self, extra: &str) -> Service {
        self.start_with_env(extra, &[])
    }

    fn start_with_env(&self, extra: &str, env: &[(&str, &str)]) -> Service {
        let yaml = self.topics.config_yaml(&format!(
            "shutdown:\n  drain_timeout_seconds: 10\nlogging:\n  format: json\n{extra}"
        ));
        let ini = format!(
            "{}\n[local]\ntype = local\nbase_path = {}\n",
            self.server.ini_section("a"),
            self.storage.path().display()
        );
        Service::start_with_env(
            Path::new(EXE),
            &self.work.path().join("svc"),
            &yaml,
            &ini,
            env,
        )
    }
}

async fn wait_ready_http(svc: &Service, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = request(svc.api_port, "GET", "/ready").await {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            start.elapsed() < limit,
            "/ready not 200 within {limit:?}:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_not_ready(svc: &Service, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Ok((503, body)) = request(svc.api_port, "GET", "/ready").await {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(start.elapsed() < limit, "/ready never 503 within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_python_shapes_and_no_secret() {
    let bed = Bed::new().await;
    let mut svc = bed.start("");
    let started = Instant::now();
    svc.wait_ready(Duration::from_secs(60)).await;
    let ready = wait_ready_http(&svc, Duration::from_secs(30)).await;
    eprintln!("/ready 200 after {:?}", started.elapsed());
    assert_eq!(ready, json!({"status": "ready"}));
    let port = svc.api_port;

    let (s, v) = get_json(port, "/health").await;
    assert_eq!((s, &v["status"]), (200, &json!("healthy")));
    assert!(v["version"].is_string());
    assert_eq!(
        get_json(port, "/live").await,
        (200, json!({"status": "alive"}))
    );

    // Wait for the pre-warmed sessions to show up in a report.
    let start = Instant::now();
    while get_json(port, "/pool/stats").await.1["total_sessions"] != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no pre-warmed sessions reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, stats) = get_json(port, "/stats").await;
    assert_eq!(s, 200);
    for key in ["running", "pool", "consumer", "producer", "dlq", "transfer"] {
        assert!(stats.get(key).is_some(), "/stats lacks {key}: {stats}");
    }
    assert_eq!(stats["running"], true);
    for key in [
        "tasks_received",
        "parse_errors",
        "total_lag",
        "lag_by_partition",
        "input_topic",
        "consumer_group",
        "running",
    ] {
        assert!(
            stats["consumer"].get(key).is_some(),
            "consumer lacks {key}: {stats}"
        );
    }
    assert_eq!(stats["consumer"]["input_topic"], bed.topics.tasks);
    for key in [
        "results_sent",
        "failures_sent",
        "send_errors",
        "pending_count",
        "result_topic",
        "fail_topic",
    ] {
        assert!(stats["producer"].get(key).is_some(), "producer lacks {key}");
    }
    assert_eq!(stats["dlq"]["dlq_topic"], bed.topics.dlq);
    assert!(stats["transfer"]["tasks_in_progress"].is_u64());

    let (s, pool) = get_json(port, "/pool/stats").await;
    assert_eq!(s, 200);
    assert_eq!(pool["max_sessions_per_pod"], 100);
    assert_eq!(pool["max_sessions_per_connection"], 10);
    let a = &pool["pools"]["a"];
    assert_eq!(a["connection_id"], "a");
    assert_eq!(a["max_sessions"], 10);
    assert_eq!(a["total_sessions"], 2, "pre-warmed: {pool}");
    assert_eq!(a["available_sessions"], 2);
    assert_eq!(a["active_sessions"], 0);
    assert_eq!(pool["total_sessions"], 2);
    assert_eq!(pool["circuit_breakers"]["a"]["state"], "closed");
    assert!(pool["circuit_breakers"]["a"]["last_failure"].is_null());

    let (s, health) = get_json(port, "/pool/health").await;
    assert_eq!(s, 200);
    let h = &health["a"];
    assert_eq!(
        (
            h["connection_id"].clone(),
            h["total_sessions"].clone(),
            h["healthy"].clone(),
            h["unhealthy"].clone()
        ),
        (json!("a"), json!(2), json!(2), json!(0))
    );
    assert_eq!(
        get_json(port, "/pool/connections/a/health").await,
        (200, h.clone())
    );
    let (s, nf) = get_json(port, "/pool/connections/nope/health").await;
    assert_eq!(
        (s, nf),
        (404, json!({"detail": "Connection not found: nope"}))
    );
    assert_eq!(
        get_json(port, "/pool/connections/local/health").await.0,
        404
    );

    let (s, conns) = get_json(port, "/pool/connections").await;
    assert_eq!(s, 200);
    assert_eq!(conns["connections"], json!(["a", "local"]));

    let (s, stages) = get_json(port, "/stages").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = stages
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["publish", "transfer:a", "ingest"]);
    for st in stages.as_array().unwrap() {
        assert_eq!(st["state"], "running");
        assert!(
            st["pid"].is_u64() && st["restarts"].is_u64() && st["uptime_seconds"].is_u64(),
            "{st}"
        );
        // Exactly the contract's keys (DESIGN.md section 8).
        let mut keys: Vec<&str> = st.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["name", "pid", "restarts", "state", "uptime_seconds"]);
    }
    // The same states on the supervisor channel (ctl), as typed values.
    let status = svc.status().await.unwrap();
    assert!(status.iter().all(|s| s.state == StageState::Running));
    let before: HashMap<String, u64> = stages
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["pid"].as_u64().unwrap(),
            )
        })
        .collect();

    let (s, body) = request(port, "POST", "/stages/transfer:a/restart")
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["stage"], "transfer:a");
    assert_ne!(body["pid"].as_u64().unwrap(), before["transfer:a"]);
    let (_, stages) = get_json(port, "/stages").await;
    for st in stages.as_array().unwrap() {
        let name = st["name"].as_str().unwrap();
        if name == "transfer:a" {
            assert_eq!(st["restarts"], 1);
        } else {
            assert_eq!(
                st["pid"].as_u64().unwrap(),
                before[name],
                "{name} untouched"
            );
        }
    }
    let (s, body) = request(port, "POST", "/stages/nope/restart").await.unwrap();
    assert_eq!(s, 404, "{body}");
    let (s, body) = request(port, "POST", "/stages/transfer:nope/restart")
        .await
        .unwrap();
    assert_eq!(s, 404, "{body}");
    assert_eq!(get_json(port, "/no/such/route").await.0, 404);

    // No password in any body or in the metrics.
    let password = ftp_password();
    for path in [
        "/stats",
        "/pool/stats",
        "/pool/health",
        "/pool/connections",
        "/stages",
    ] {
        let (_, body) = request(port, "GET", path).await.unwrap();
        assert!(!body.contains(&password), "{path} shows the password");
    }
    let (s, metrics) = request(svc.metrics_port, "GET", "/metrics").await.unwrap();
    assert_eq!(s, 200);
    assert!(!metrics.contains(&password));
    assert!(
        metrics.contains("ftp_stage_restarts_total{stage=\"transfer:a\"} 1"),
        "{metrics}"
    );
    let _ = svc.try_wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_goes_503_while_a_stage_is_down_or_hung_and_200_when_it_is_back() {
    let bed = Bed::new().await;
    // A slow restart, so the window where ingest is down is easy to see.
    let svc = bed.start("supervisor:\n  restart_base_ms: 3000\n  restart_max_ms: 3000\n");
    let mut svc = svc;
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    wait_ready_http(&svc, Duration::from_secs(30)).await;

    kill(Pid::from_raw(pids["ingest"] as i32), Signal::SIGKILL).unwrap();
    let down = wait_not_ready(&svc, Duration::from_secs(5)).await;
    assert_eq!(down["status"], "not_ready");
    assert_eq!(down["reason"], "stage_down", "{down}");
    assert_eq!(down["stages"], json!(["ingest"]));
    wait_ready_http(&svc, Duration::from_secs(30)).await;

    // A hung stage stops reporting: unresponsive.
    let publish = Pid::from_raw(pids["publish"] as i32);
    kill(publish, Signal::SIGSTOP).unwrap();
    let hung = wait_not_ready(&svc, Duration::from_secs(15)).await;
    kill(publish, Signal::SIGCONT).unwrap();
    assert_eq!(hung["reason"], "stage_unresponsive", "{hung}");
    assert_eq!(hung["stages"], json!(["publish"]));
    wait_ready_http(&svc, Duration::from_secs(15)).await;
    let _ = svc.try_wait();
}

fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(typed.insert(name.to_string()), "family {name} typed twice");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "duplicate series {key}"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_matches_what_was_published_and_logs_are_json_without_secrets() {
    let bed = Bed::new().await;
    let watcher = Watcher::start(&bed.topics).await;
    let log_dir = tempfile::tempdir().unwrap();
    let mut svc = bed.start(&format!(
        "  file: {}/ftp-pooler.log\n",
        log_dir.path().display()
    ));
    svc.wait_ready(Duration::from_secs(60)).await;
    let mut payloads = Vec::new();
    for i in 0..30 {
        bed.server
            .put(&format!("m/f{i}.bin"), &vec![b'x'; 1000 + i]);
        let down = json!({"task_id": format!("d{i}"), "src_id": "a", "src_path": format!("m/f{i}.bin"), "dst_id": "local", "dst_path": format!("in/f{i}.bin")});
        payloads.push((Some(format!("d{i}")), serde_json::to_vec(&down).unwrap()));
    }
    for i in 0..4 {
        let missing = json!({"task_id": format!("x{i}"), "src_id": "a", "src_path": "m/none", "dst_id": "local", "dst_path": "x"});
        payloads.push((Some(format!("x{i}")), serde_json::to_vec(&missing).unwrap()));
    }
    payloads.push((None, b"not json".to_vec()));
    payloads.push((None, b"{\"src_id\": 1}".to_vec()));
    produce(&bed.topics.tasks, &payloads).await;
    let seen: Seen = watcher
        .wait_for(
            Duration::from_secs(120),
            "all results",
            |s| s.by_task.len() >= 34 && s.dlq.len() >= 2,
            || svc.log(),
        )
        .await;
    let successes = seen
        .by_task
        .values()
        .filter(|r| r[0].value["status"] == "success")
        .count() as f64;
    let failures = seen
        .by_task
        .values()
        .filter(|r| r[0].value["status"] == "failed")
        .count() as f64;
    let bytes: f64 = seen
        .by_task
        .values()
        .map(|r| r[0].value["bytes_transferred"].as_f64().unwrap())
        .sum();
    assert_eq!((successes, failures), (30.0, 4.0));

    // Counters reach what Kafka holds within a report or two.
    let start = Instant::now();
    let samples = loop {
        let (s, text) = request(svc.metrics_port, "GET", "/metrics").await.unwrap();
        assert_eq!(s, 200);
        let samples = parse_prometheus(&text);
        let get = |k: &str| samples.get(k).copied().unwrap_or(-1.0);
        if get("ftp_tasks_total{status=\"success\"}") == successes
            && get("ftp_tasks_total{status=\"failed\"}") == failures
            && get("ftp_dlq_messages_total") == 2.0
            && get("ftp_kafka_messages_received_total") == 36.0
        {
            break samples;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "scrape never matched:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let get = |k: &str| {
        samples
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in the scrape"))
    };
    assert_eq!(
        get("ftp_transfer_bytes_total{direction=\"download\"}"),
        bytes
    );
    assert_eq!(get("ftp_errors_total{error_code=\"FILE_NOT_FOUND\"}"), 4.0);
    assert_eq!(
        get("ftp_kafka_messages_sent_total{topic_type=\"result\"}"),
        30.0
    );
    assert_eq!(
        get("ftp_kafka_messages_sent_total{topic_type=\"fail\"}"),
        4.0
    );
    assert_eq!(get("ftp_kafka_messages_received_total"), 36.0);
    assert_eq!(
        get("ftp_transfer_duration_seconds_count{direction=\"download\",status=\"success\"}"),
        30.0
    );
    assert_eq!(get("ftp_circuit_breaker_state{connection_id=\"a\"}"), 0.0);
    assert_eq!(get("ftp_session_pool_size"), 100.0);
    assert!(samples.contains_key("ftp_sessions_active{connection_id=\"a\"}"));
    assert!(samples.contains_key("ftp_sessions_total{connection_id=\"a\"}"));
    assert!(samples.contains_key("ftp_tasks_in_progress"));
    assert!(samples.contains_key("ftp_kafka_consumer_lag"));
    assert!(samples.contains_key("ftp_transfer_retries_total{connection_id=\"a\"}"));
    assert!(samples.contains_key("ftp_stage_restarts_total{stage=\"ingest\"}"));
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("ftp_committed_offset{")),
        "no committed offsets"
    );

    svc.signal(Signal::SIGTERM);
    assert!(svc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits")
        .success());
    let log = svc.log();
    let password = ftp_password();
    let mut outcomes = 0;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["stage"].is_string() && v["pid"].is_u64(), "{line}");
        assert_eq!(
            line.matches("\"stage\":").count(),
            1,
            "one stage key: {line}"
        );
        assert_eq!(line.matches("\"pid\":").count(), 1, "one pid key: {line}");
        assert!(
            !line.contains(&password),
            "a log line shows the password: {line}"
        );
        if v["message"] == "task finished" {
            outcomes += 1;
            for key in [
                "task_id",
                "direction",
                "connection",
                "bytes",
                "duration_ms",
                "error_code",
                "attempts",
            ] {
                assert!(v.get(key).is_some(), "task event lacks {key}: {line}");
            }
        }
    }
    assert_eq!(outcomes, 34, "one event per task outcome");
    // The daily-rolling file holds the same JSON lines.
    let files: Vec<_> = std::fs::read_dir(log_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("ftp-pooler.log."));
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let in_file = text
        .lines()
        .filter(|l| l.contains("\"task finished\""))
        .count();
    assert_eq!(in_file, 34);
    for line in text.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("file line not JSON ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_broker_is_unreachable() {
    let bed = Bed::new().await;
    let dead = ftp_pooler_testbed::free_port();
    let svc = bed.start_with_env(
        "",
        &[(
            "FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{dead}").as_str(),
        )],
    );
    let mut svc = svc;
    svc.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (s, v) = get_json(svc.api_port, "/ready").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["reason"], "broker_unreachable", "{v}");
    assert_eq!(
        get_json(svc.api_port, "/live").await.0,
        200,
        "alive all the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let bed = Bed::new().await;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let h = heard.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                h.lock().unwrap().push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    });
    let path = sock_path.display().to_string();
    let mut svc = bed.start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    svc.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    svc.signal(Signal::SIGTERM);
    assert!(svc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits")
        .success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    let heard = heard.lock().unwrap().clone();
    let texts: Vec<&str> = heard.iter().map(|(_, t)| t.as_str()).collect();
    let ready = texts
        .iter()
        .position(|t| t.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {texts:?}"));
    let stopping = texts
        .iter()
        .position(|t| t.starts_with("STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1 in {texts:?}"));
    assert!(ready < stopping);
    assert_eq!(texts.iter().filter(|t| t.starts_with("READY=1")).count(), 1);
    let pings = texts.iter().filter(|t| **t == "WATCHDOG=1").count();
    assert!(pings >= 2, "watchdog every second: {texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_connections_without_touching_the_others() {
    let bed = Bed::new().await;
    let transfer_b: StageId = "transfer:b".parse().unwrap();
    let b = FtpServer::start(FtpKind::Pyftpdlib, false);
    b.put("r/f.bin", b"from b");
    bed.server.put("r/f.bin", b"from a");
    let watcher = Watcher::start(&bed.topics).await;
    // Reloads by hand (SIGHUP, ctl): the file watch off.
    let mut svc = bed.start_with_env("", &[("FTP_POOLER_SUPERVISOR__WATCH_CONFIG", "false")]);
    let before = svc.wait_ready(Duration::from_secs(60)).await;
    let local = format!(
        "[local]\ntype = local\nbase_path = {}\n",
        bed.storage.path().display()
    );
    let task = |id: &str, conn: &str| {
        let t = json!({"task_id": id, "src_id": conn, "src_path": "r/f.bin", "dst_id": "local", "dst_path": format!("r/{id}.bin")});
        (Some(id.to_string()), serde_json::to_vec(&t).unwrap())
    };
    let result = |id: &'static str| {
        let w = &watcher;
        async move {
            let seen = w
                .wait_for(
                    Duration::from_secs(60),
                    id,
                    |s| s.by_task.contains_key(id),
                    String::new,
                )
                .await;
            seen.by_task[id][0].value.clone()
        }
    };

    produce(&bed.topics.tasks, &[task("b-before", "b")]).await;
    let r = result("b-before").await;
    assert_eq!(r["error_code"], "INVALID_CONFIG", "{r}");

    // Add b.
    let ini_ab = format!(
        "{}\n{}\n{local}",
        bed.server.ini_section("a"),
        b.ini_section("b")
    );
    std::fs::write(svc.dir.join("connections.ini"), &ini_ab).unwrap();
    svc.signal(Signal::SIGHUP);
    let start = Instant::now();
    let after = loop {
        let stages = svc.status().await.unwrap_or_default();
        if stages
            .iter()
            .any(|s| s.name == transfer_b && s.state == StageState::Running)
        {
            break svc.wait_ready(Duration::from_secs(10)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no transfer:b:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for stage in ["ingest", "publish", "transfer:a"] {
        assert_eq!(before[stage], after[stage], "{stage} was not restarted");
    }
    produce(
        &bed.topics.tasks,
        &[task("b-after", "b"), task("a-after", "a")],
    )
    .await;
    assert_eq!(result("b-after").await["status"], "success");
    assert_eq!(result("a-after").await["status"], "success");
    assert_eq!(
        std::fs::read(bed.storage.path().join("r/b-after.bin")).unwrap(),
        b"from b"
    );

    // An invalid file is rejected: nothing changes.
    std::fs::write(
        svc.dir.join("connections.ini"),
        format!("{ini_ab}\n[c]\ntype = ftp\nhost = h\nbogus = 1\n"),
    )
    .unwrap();
    let reply = svc.reload().await;
    match reply {
        ftp_pooler_channel::CtlResponse::Error(e) => assert!(e.contains("[c] bogus"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(svc.wait_ready(Duration::from_secs(5)).await, after);

    // Remove b: its worker stops, tasks for it are INVALID_CONFIG again.
    std::fs::write(
        svc.dir.join("connections.ini"),
        format!("{}\n{local}", bed.server.ini_section("a")),
    )
    .unwrap();
    let reply = svc.reload().await;
    assert_eq!(
        reply,
        ftp_pooler_channel::CtlResponse::Reloaded {
            generation: 3,
            added: vec![],
            removed: vec!["b".into()],
            restarted: vec![]
        }
    );
    let start = Instant::now();
    while svc
        .status()
        .await
        .unwrap_or_default()
        .iter()
        .any(|s| s.name == transfer_b)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "transfer:b still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&bed.topics.tasks, &[task("b-gone", "b")]).await;
    assert_eq!(result("b-gone").await["error_code"], "INVALID_CONFIG");
    let last = svc.wait_ready(Duration::from_secs(10)).await;
    for stage in ["ingest", "publish", "transfer:a"] {
        assert_eq!(before[stage], last[stage], "{stage} was not restarted");
    }
    assert!(!svc
        .stage_processes()
        .values()
        .any(|c| c == "ftp-pooler stage transfer b"));
}
