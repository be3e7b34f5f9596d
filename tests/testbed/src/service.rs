//! The real service, for end-to-end tests: `ftp-pooler run` as a child process, the
//! Kafka side of a client (produce tasks, watch results, read committed offsets), and
//! checks on the files it leaves.
//!
//! Nothing here is a fake: the service is the built binary, talking to the test bed's
//! broker and FTP servers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_channel::{CtlRequest, CtlResponse, RuntimePaths, StageStatus};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::Value;

use crate::{broker, unique};

/// The topics and consumer group of one test.
#[derive(Debug, Clone)]
pub struct Topics {
    pub tasks: String,
    pub results: String,
    pub failures: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
}

impl Topics {
    /// Creates fresh topics (`partitions` each) on the shared broker.
    pub async fn create(partitions: i32) -> Topics {
        let t = Topics {
            tasks: unique("tasks"),
            results: unique("results"),
            failures: unique("failures"),
            dlq: unique("dlq"),
            group: unique("group"),
            partitions,
        };
        for name in [&t.tasks, &t.results, &t.failures, &t.dlq] {
            broker().create_topic(name, partitions).await;
        }
        t
    }

    /// A config.yaml for the service on these topics; `extra` is appended (more sections).
    /// A secured broker's properties go into both librdkafka maps.
    pub fn config_yaml(&self, extra: &str) -> String {
        let security: String = broker()
            .properties()
            .iter()
            .map(|(k, v)| format!(", {k}: {}", serde_json::Value::String(v.clone())))
            .collect();
        let producer = security.strip_prefix(", ").unwrap_or("");
        format!(
            "kafka:\n  bootstrap_servers: [\"{}\"]\n  consumer_group: {}\n  input_topic: {}\n  result_topic: {}\n  fail_topic: {}\n  dlq_topic: {}\n  max_retries: 3\n  base_backoff_ms: 100\n  max_backoff_ms: 1000\n  consumer_config: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500{security}}}\n  producer_config: {{{producer}}}\n{extra}",
            broker().bootstrap(),
            self.group,
            self.tasks,
            self.results,
            self.failures,
            self.dlq
        )
    }
}

/// `ftp-pooler run`, started by a test; killed (with its stages) when dropped.
pub struct Service {
    exe: PathBuf,
    pub dir: PathBuf,
    child: Option<Child>,
    pid: u32,
    starts: u32,
    env: Vec<(String, String)>,
    /// The REST API and metrics ports (free ones, given through the environment).
    pub api_port: u16,
    pub metrics_port: u16,
}

impl Service {
    /// Writes `config.yaml` and `connections.ini` into `dir` and starts the service.
    pub fn start(exe: &Path, dir: &Path, config_yaml: &str, connections_ini: &str) -> Service {
        Self::start_with_env(exe, dir, config_yaml, connections_ini, &[])
    }

    /// As [`Service::start`], with extra environment variables for the service.
    pub fn start_with_env(
        exe: &Path,
        dir: &Path,
        config_yaml: &str,
        connections_ini: &str,
        env: &[(&str, &str)],
    ) -> Service {
        std::fs::create_dir_all(dir).expect("service dir");
        std::fs::write(dir.join("config.yaml"), config_yaml).expect("write config.yaml");
        std::fs::write(dir.join("connections.ini"), connections_ini)
            .expect("write connections.ini");
        let mut s = Service {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            child: None,
            pid: 0,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            api_port: crate::free_port(),
            metrics_port: crate::free_port(),
        };
        s.spawn();
        s
    }

    /// Starts the service again (after it exited), with the same files.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the service is still running");
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("service log");
        let child = Command::new(&self.exe)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .arg("--connections")
            .arg(self.dir.join("connections.ini"))
            .arg("--runtime-dir")
            .arg(self.runtime_dir())
            .env_remove("FTP_POOLER_CONFIG")
            .env_remove("FTP_POOLER_CONNECTIONS")
            .env(
                "RUST_LOG",
                std::env::var("FTP_POOLER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("FTP_POOLER_API__HOST", "127.0.0.1")
            .env("FTP_POOLER_API__PORT", self.api_port.to_string())
            .env("FTP_POOLER_METRICS__PORT", self.metrics_port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ftp-pooler run");
        self.pid = child.id();
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("rt")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("service.log")
    }

    /// The service's log so far (all processes).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `ctl status` through the control socket (None while it does not answer).
    pub async fn status(&self) -> Option<Vec<StageStatus>> {
        let paths = RuntimePaths::new(self.runtime_dir());
        match ftp_pooler_supervisor::ctl(&paths, &CtlRequest::Status, Duration::from_secs(5)).await
        {
            Ok(CtlResponse::Status { stages, .. }) => Some(stages),
            _ => None,
        }
    }

    /// `ctl restart <stage>`.
    pub async fn restart_stage(&self, stage: &str) -> CtlResponse {
        let paths = RuntimePaths::new(self.runtime_dir());
        ftp_pooler_supervisor::ctl(
            &paths,
            &CtlRequest::Restart {
                stage: stage.into(),
            },
            Duration::from_secs(120),
        )
        .await
        .expect("ctl restart")
    }

    /// `ctl reload`: re-read connections.ini.
    pub async fn reload(&self) -> CtlResponse {
        let paths = RuntimePaths::new(self.runtime_dir());
        ftp_pooler_supervisor::ctl(&paths, &CtlRequest::Reload, Duration::from_secs(10))
            .await
            .expect("ctl reload")
    }

    /// Waits until every stage is running; returns their pids by name.
    pub async fn wait_ready(&mut self, limit: Duration) -> HashMap<String, u32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "the service exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if let Some(stages) = self.status().await {
                if stages
                    .iter()
                    .all(|s| s.state == ftp_pooler_channel::StageState::Running)
                {
                    return stages
                        .into_iter()
                        .map(|s| (s.name.to_string(), s.pid.unwrap_or(0)))
                        .collect();
                }
            }
            assert!(
                start.elapsed() < limit,
                "the service was not ready within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stage processes, read from /proc: command line (as `ps` shows it) by pid.
    pub fn stage_processes(&self) -> BTreeMap<u32, String> {
        children_of(self.pid)
    }

    /// Sends `sig` to the supervisor.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
    }

    /// The exit status, if the supervisor has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// Waits for the supervisor to exit (None: still running after `limit`).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this instance's ingest logs an assignment with at least one partition
    /// (after a rebalance); panics after `limit`.
    pub async fn wait_assigned(&self, limit: Duration) {
        let start = Instant::now();
        while !self
            .log()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.contains("parts=[]"))
        {
            assert!(
                start.elapsed() < limit,
                "no partitions assigned within {limit:?}:\n{}",
                crate::scenario::tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the supervisor and every stage at once (SIGKILL).
    pub fn kill_all(&mut self) {
        for pid in children_of(self.pid).keys() {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() || std::env::var_os("FTP_POOLER_TEST_KEEP_LOGS").is_some() {
            // The test failed (or logs were asked for): keep the whole log.
            let keep = std::env::temp_dir().join(format!("ftp-pooler-failed-{}.log", self.pid));
            let _ = std::fs::copy(self.log_path(), &keep);
            eprintln!("service log kept at {}", keep.display());
        }
    }
}

/// Processes whose parent is `ppid`: pid -> command line (arguments joined by spaces).
pub fn children_of(ppid: u32) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces; split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(ppid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.insert(pid, args.join(" "));
    }
    out
}

/// Produces `payloads` (key, value) to `topic` and waits for every delivery report;
/// returns (partition, offset) of each, in order.
pub async fn produce(topic: &str, payloads: &[(Option<String>, Vec<u8>)]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = broker()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = payloads.iter().map(|(key, value)| {
        let producer = &producer;
        async move {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(value.as_slice());
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            let d = producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
            (d.partition, d.offset)
        }
    });
    futures::future::join_all(sends).await
}

/// One record read back from a result, failure or DLQ topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: Option<String>,
    pub value: Value,
    /// Where it is in Kafka.
    pub partition: i32,
    pub offset: i64,
    /// When the watcher read it.
    pub at: Instant,
}

/// Everything seen so far on the watched topics.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Results by task_id (several when duplicated).
    pub by_task: HashMap<String, Vec<Record>>,
    /// DLQ records.
    pub dlq: Vec<Record>,
    /// Records the watcher read a second time (same topic, partition and offset: its
    /// consumer re-read them, e.g. after a broker restart) and did not count again.
    pub reread: usize,
}

impl Seen {
    pub fn results(&self) -> usize {
        self.by_task.values().map(Vec::len).sum()
    }

    /// Tasks with more than one result, and how many extra results in all.
    pub fn duplicates(&self) -> usize {
        self.by_task
            .values()
            .map(|v| v.len().saturating_sub(1))
            .sum()
    }
}

/// Reads the result, failure and DLQ topics from the beginning, in the background.
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn start(topics: &Topics) -> Watcher {
        let consumer: StreamConsumer = broker()
            .client_config()
            .set("group.id", unique("watcher"))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("watcher consumer");
        consumer
            .subscribe(&[&topics.results, &topics.failures, &topics.dlq])
            .expect("subscribe");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let dlq = topics.dlq.clone();
        let task = tokio::spawn(async move {
            let mut stream = consumer.stream();
            // The watcher commits nothing: a consumer that rejoins its group (after a
            // broker restart) reads from the beginning again. Each record counts once,
            // so duplicates are the service's, not the watcher's.
            let mut read = std::collections::HashSet::new();
            while let Some(msg) = stream.next().await {
                let Ok(msg) = msg else { continue };
                if !read.insert((msg.topic().to_string(), msg.partition(), msg.offset())) {
                    s.lock().unwrap().reread += 1;
                    continue;
                }
                let value: Value = serde_json::from_slice(msg.payload().unwrap_or_default())
                    .expect("results are JSON");
                let record = Record {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value,
                    partition: msg.partition(),
                    offset: msg.offset(),
                    at: Instant::now(),
                };
                let mut seen = s.lock().unwrap();
                if record.topic == dlq {
                    seen.dlq.push(record);
                } else {
                    let id = record.value["task_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    seen.by_task.entry(id).or_default().push(record);
                }
            }
        });
        Watcher { seen, task }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Drops the records read so far (a record read again later still counts as a
    /// re-read): for a long benchmark, whose every run would otherwise clone all earlier
    /// runs' records when it ends.
    pub fn forget(&self) {
        let mut seen = self.seen.lock().unwrap();
        seen.by_task.clear();
        seen.dlq.clear();
    }

    /// Waits until `done(seen)`; panics after `limit` with `context()`'s text.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Seen) -> bool,
        context: impl Fn() -> String,
    ) -> Seen {
        let start = Instant::now();
        loop {
            // Checked under the lock, cloned once: a clone of everything read so far every
            // 100 ms cost the bench's process more CPU with every round (it competes with
            // the service for the machine's two cores).
            {
                let seen = self.seen.lock().unwrap();
                if done(&seen) {
                    return seen.clone();
                }
            }
            if start.elapsed() > limit {
                let seen = self.seen();
                panic!(
                    "{what}: not within {limit:?} ({} results, {} DLQ records)\n{}",
                    seen.results(),
                    seen.dlq.len(),
                    context()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The committed offsets of `group` on `topic` (None: nothing committed).
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Option<i64>> {
    let consumer: BaseConsumer = broker()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let parts: Vec<i32> = (0..partitions).collect();
    ftp_pooler_ingest::committed(&consumer, topic, &parts, Duration::from_secs(10))
        .expect("committed offsets")
}

/// Files under `root` whose name ends with `suffix` (temporary files left behind).
pub fn files_ending_with(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// The smallest whole service: one vsftpd connection `a` (the given server) and a local
/// connection `local` at `base`, on fresh single-partition topics, with a watcher; for
/// tests of one kind of input or fault.
pub struct SmallStack {
    pub server: crate::FtpServer,
    pub topics: Topics,
    pub watcher: Watcher,
    pub svc: Service,
    /// Stage pids once ready.
    pub pids: HashMap<String, u32>,
    _work: tempfile::TempDir,
}

impl SmallStack {
    /// Starts the service (`exe`) with `env` and waits until it is ready.
    pub async fn start(
        exe: &Path,
        server: crate::FtpServer,
        base: &Path,
        env: &[(&str, &str)],
    ) -> SmallStack {
        let work = tempfile::Builder::new()
            .prefix("service-")
            .tempdir()
            .expect("service dir");
        let topics = Topics::create(1).await;
        let watcher = Watcher::start(&topics).await;
        let ini = format!(
            "{}\n[local]\ntype = local\nbase_path = {}\n",
            server.ini_section("a"),
            base.display()
        );
        let yaml = topics.config_yaml(
            "pool:\n  max_sessions_per_connection: 2\nlogging:\n  format: text\nsupervisor:\n  restart_base_ms: 100\n",
        );
        let mut svc = Service::start_with_env(exe, &work.path().join("svc"), &yaml, &ini, env);
        let pids = svc.wait_ready(Duration::from_secs(60)).await;
        SmallStack {
            server,
            topics,
            watcher,
            svc,
            pids,
            _work: work,
        }
    }

    /// Panics unless every stage is the process it was at start (no crash, no restart).
    pub async fn assert_no_restart(&mut self) {
        let now = self.svc.wait_ready(Duration::from_secs(10)).await;
        assert_eq!(now, self.pids, "no stage was restarted");
        for s in self.svc.status().await.expect("status") {
            assert_eq!(s.restarts, 0, "{} restarted", s.name);
        }
    }
}

/// Every line of a service log, each one JSON object (`logging.format: json`); panics
/// naming the first line that is not, so that CI proves log pipelines lose nothing.
pub fn json_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.lines()
        .enumerate()
        .map(|(i, line)| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => o,
            _ => panic!(
                "line {} of the service log is not one JSON object: {line:?}",
                i + 1
            ),
        })
        .collect()
}
