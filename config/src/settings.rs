//! `config.yaml` and its environment overrides: the [`Settings`] tree.
//!
//! Keys and defaults are the Python ftp-pooler's (DESIGN.md section 6) plus the additions
//! of section 8 (`shutdown.drain_timeout_seconds`, `kafka.consumer_config`,
//! `kafka.producer_config`) and `logging.file`. Loading runs in four steps, each
//! collecting every problem: read and parse the file; check it against the defaults'
//! shape ([`crate::schema`]); apply `FTP_POOLER_SECTION__KEY` variables; check ranges and
//! cross-key rules. Each problem names the file or variable it came from.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::{ConfigError, ConfigErrors, Place};
use crate::kafka::{property_place, resolve_references, KafkaCheck, KafkaMap};
use crate::schema::{self, Shape};
use crate::ENV_PREFIX;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub pool: PoolSettings,
    pub transfer: TransferSettings,
    pub circuit_breaker: CircuitBreakerSettings,
    pub api: ApiSettings,
    pub metrics: MetricsSettings,
    pub logging: LoggingSettings,
    pub shutdown: ShutdownSettings,
    /// New: how the supervisor restarts crashed stages.
    pub supervisor: SupervisorSettings,
    /// The Python version's `Settings.config_path`: accepted, informational only.
    pub config_path: Option<String>,
    /// The connections file, when neither `--connections` nor FTP_POOLER_CONNECTIONS names one.
    pub connections_path: Option<String>,
}

/// `Debug` hides the values of secret librdkafka properties (see [`is_secret_property`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: Vec<String>,
    pub consumer_group: String,
    pub input_topic: String,
    pub result_topic: String,
    pub fail_topic: String,
    pub dlq_topic: String,
    pub max_retries: u64,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// New: the ingest consumer is a static member of the group (`group.instance.id`, one
    /// per service instance: docs/PIPELINE.md, "A restarted ingest resumes"), so that a
    /// restarted ingest gets its partitions back at once. `false`: a dynamic member, for
    /// Tansu 0.6.0 groups of several instances, where a static member that never comes
    /// back keeps its partitions (docs/NOTES.md, "Kafka (Tansu)").
    pub static_membership: bool,
    /// New: after a crash or a rebalance, the new owner of a task partition, and a publish
    /// that starts, read the result topics' headers for what is already done, so it is
    /// not run or published again (docs/PIPELINE.md, "What a crash redoes"). `false`:
    /// do not; needed to run tasks again by resetting the group's offsets while their
    /// results are still in the result topics (they would be skipped as done).
    pub recall: bool,
    /// librdkafka consumer properties, passed as-is (after the service's own).
    pub consumer_config: BTreeMap<String, String>,
    /// librdkafka producer properties, passed as-is (after the service's own).
    pub producer_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    pub max_sessions_per_pod: u64,
    pub max_sessions_per_connection: u64,
    pub session_timeout_seconds: u64,
    pub prewarm_enabled: bool,
    pub prewarm_sessions_per_connection: u64,
    pub prewarm_timeout_seconds: u64,
    /// New: reuse sessions across tasks (the point of the pool). `false` logs in for every
    /// task and quits after it: for benchmarks and for servers that cannot bear reuse.
    pub reuse_sessions: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferSettings {
    pub transfer_timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    /// New: how a downloaded file reaches the device before its rename and its result.
    /// `group` (default): one `syncfs` per file system covers every file that finished
    /// meanwhile (group commit). `per_file`: an `fsync` of each file and of its directory,
    /// for file systems whose `syncfs` does nothing (some FUSE file systems) or that other
    /// programs keep full of unwritten data.
    pub fsync: String,
    /// New (issue 21): the digest every transfer computes of its bytes as they pass, put
    /// on its result: `sha256` (default), `md5`, `xxh3` or `none`. A task that expects a
    /// digest gets it computed in its own algorithm whatever this says.
    pub checksum: String,
    /// New (issue 21): ask the server for its own digest of each file moved, where its
    /// FEAT offers one in the transfer's algorithm (HASH, XSHA256, XMD5), and fail the
    /// attempt with CHECKSUM_MISMATCH (retried) when it differs. One round trip per file
    /// on those servers, and the server reads the file once more.
    pub verify_server_checksum: bool,
    /// New (issue 21): a retried transfer continues where the failed attempt stopped
    /// (REST + RETR, APPE) when that attempt moved at least 1 MiB, the source is unchanged
    /// and the kept part checks out; otherwise it starts again from zero.
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerSettings {
    pub failure_threshold: u64,
    pub success_threshold: u64,
    pub timeout_seconds: u64,
    pub half_open_max_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub host: String,
    pub port: u64,
    /// New: a file holding the bearer token that the mutating routes
    /// (`POST /stages/{name}/restart`) require (`FTP_POOLER_ADMIN_TOKEN` wins over it).
    /// Without either, those routes answer loopback peers only. Read at each such
    /// request (a rotated Secret applies at once); the token is never logged or shown.
    pub admin_token_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub port: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// TRACE, DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL; any case.
    pub level: String,
    /// `json` or `text` (`console` is taken as `text`).
    pub format: String,
    /// Optional daily-rolling log file (in addition to stderr).
    pub file: Option<String>,
    /// New: how many daily files of `file` to keep, today's included (older ones are
    /// deleted at start and at each rollover); 0 keeps them all.
    pub max_files: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    pub drain_timeout_seconds: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: vec!["localhost:9092".into()],
            consumer_group: "ftp-pooler".into(),
            input_topic: "ftp-tasks".into(),
            result_topic: "ftp-results".into(),
            fail_topic: "ftp-failures".into(),
            dlq_topic: "ftp-tasks-dlq".into(),
            max_retries: 5,
            base_backoff_ms: 1000,
            max_backoff_ms: 30000,
            static_membership: true,
            recall: true,
            consumer_config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_sessions_per_pod: 100,
            max_sessions_per_connection: 10,
            session_timeout_seconds: 300,
            prewarm_enabled: true,
            prewarm_sessions_per_connection: 2,
            prewarm_timeout_seconds: 30,
            reuse_sessions: true,
        }
    }
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            transfer_timeout_seconds: 300,
            connect_timeout_seconds: 30,
            fsync: "group".into(),
            checksum: "sha256".into(),
            verify_server_checksum: true,
            resume: true,
        }
    }
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        CircuitBreakerSettings {
            failure_threshold: 5,
            success_threshold: 3,
            timeout_seconds: 60,
            half_open_max_calls: 3,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            host: "0.0.0.0".into(),
            port: 8080,
            admin_token_file: None,
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { port: 9090 }
    }
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "INFO".into(),
            format: "json".into(),
            file: None,
            max_files: 7,
        }
    }
}

/// Restart policy of the supervisor: exponential backoff from `restart_base_ms` to
/// `restart_max_ms` (with jitter), reset after `restart_reset_seconds` of healthy uptime.
/// A stage must report ready within `ready_timeout_seconds` of its start. The supervisor
/// gives up (stops everything, `/live` 503, exit non-zero) when one stage
/// - fails `max_failed_starts` starts in a row (a failed start: it exited before it was
///   ready, or within `failed_start_seconds` of being ready), or
/// - stays down (not ready) for `max_down_seconds`, or
/// - is restarted more than `max_restarts` times within `restart_window_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorSettings {
    pub restart_base_ms: u64,
    pub restart_max_ms: u64,
    pub restart_reset_seconds: u64,
    pub max_restarts: u64,
    pub restart_window_seconds: u64,
    pub ready_timeout_seconds: u64,
    /// New: an exit this soon after ready (or before it) is a failed start.
    pub failed_start_seconds: u64,
    /// New: this many failed starts in a row: give up.
    pub max_failed_starts: u64,
    /// New: a stage down (not ready) this long: give up.
    pub max_down_seconds: u64,
    /// New: reload on its own when the content of a configuration file changes
    /// (config.yaml, connections.ini, the `${file:...}` of the librdkafka maps), as
    /// SIGHUP does.
    pub watch_config: bool,
    /// New: how often the watched files are read; a change is taken once it has stayed
    /// the same for one more interval (so a reload comes 1-2 intervals after an edit).
    pub watch_interval_seconds: u64,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            restart_base_ms: 200,
            restart_max_ms: 30_000,
            restart_reset_seconds: 30,
            max_restarts: 10,
            restart_window_seconds: 60,
            ready_timeout_seconds: 60,
            failed_start_seconds: 30,
            max_failed_starts: 5,
            max_down_seconds: 150,
            watch_config: true,
            watch_interval_seconds: 2,
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_timeout_seconds: 30,
        }
    }
}

/// Loads the settings: defaults, then `file` (if any), then environment overrides.
pub(crate) fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    check: &KafkaCheck<'_>,
) -> Result<Settings, ConfigErrors> {
    let defaults = serde_yaml::to_value(Settings::default()).expect("defaults serialise");
    let shape = Shape::of(&defaults);
    let mut errors = ConfigErrors::default();
    // Where each dotted key's value came from, for the errors of the last step.
    let mut origin: HashMap<String, Place> = HashMap::new();

    let mut tree = match file {
        Some(path) => {
            let mut tree = read_yaml(path)?;
            let mut problems = Vec::new();
            let mut visited = Vec::new();
            schema::normalise(&mut tree, &shape, "", &mut problems, &mut visited);
            for (key, problem) in problems {
                errors.push(ConfigError::new(yaml_place(path, &key), problem));
            }
            for key in visited {
                let place = yaml_place(path, &key);
                origin.insert(key, place);
            }
            tree
        }
        None => Value::Mapping(Default::default()),
    };

    // Overrides, shortest path first: a whole librdkafka map before its single properties.
    let mut overrides: Vec<(&String, &String, Vec<String>)> = env
        .iter()
        .filter_map(|(var, text)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            // Without `__` it is no setting: FTP_POOLER_CONFIG, FTP_POOLER_CONNECTIONS, ...
            rest.contains("__").then(|| {
                let path = rest
                    .to_ascii_lowercase()
                    .split("__")
                    .map(String::from)
                    .collect();
                (var, text, path)
            })
        })
        .collect();
    overrides.sort_by_key(|(_, _, path)| path.len());
    for (var, text, path) in overrides {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let (parent, last) = path.split_at(path.len() - 1);
        let place = Place::Env(var.clone());
        match (shape.at(&path), shape.at(parent)) {
            (Some(leaf), _) => match schema::from_env_text(text, leaf) {
                Ok(value) => {
                    schema::set_path(&mut tree, &path, value);
                    origin.insert(path.join("."), place);
                }
                Err(problem) => errors.push(ConfigError::new(place, problem)),
            },
            // One librdkafka property (`_` stands for `.`), e.g. secrets from the
            // environment: FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD.
            (None, Some(Shape::FreeMap)) => {
                let property = last[0].replace('_', ".");
                let mut at = parent.to_vec();
                at.push(&property);
                schema::set_path(&mut tree, &at, Value::String(text.clone()));
                origin.insert(format!("{}.{property}", parent.join(".")), place.clone());
                // The map keeps the origin of what else it holds (the YAML file's key).
                origin.entry(parent.join(".")).or_insert(place);
            }
            (None, Some(section @ Shape::Section(_))) => {
                errors.push(ConfigError::new(
                    place,
                    schema::unknown(last[0], &section.keys()),
                ));
            }
            (None, _) => errors.push(ConfigError::new(
                place,
                format!("unknown setting {}", path.join(".")),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut settings: Settings = serde_yaml::from_value(tree).map_err(|e| {
        let place = file.map_or(Place::Env(ENV_PREFIX.into()), |f| Place::File(f.into()));
        ConfigErrors::from(ConfigError::new(place, e.to_string()))
    })?;
    let at = |key: &str| {
        origin
            .get(key)
            .cloned()
            .unwrap_or_else(|| Place::Default(key.to_string()))
    };
    let unresolved = resolve_references(&mut settings.kafka, env, &at, &mut errors);
    validate(&settings, &at, &mut errors);
    // librdkafka checks the rest even when a reference failed (every error at once),
    // without the properties whose value is unknown.
    let mut checked = settings.kafka.clone();
    for (map, property) in &unresolved {
        match map {
            KafkaMap::Consumer => checked.consumer_config.remove(property),
            KafkaMap::Producer => checked.producer_config.remove(property),
        };
    }
    for p in check(&checked) {
        let place = match &p.property {
            Some(property) => property_place(&at, p.map.key(), property),
            None => at(p.map.key()),
        };
        errors.push(ConfigError::new(place, p.problem));
    }
    errors.into_result(settings)
}

fn read_yaml(path: &Path) -> Result<Value, ConfigErrors> {
    let file_err =
        |problem: String| ConfigErrors::from(ConfigError::new(Place::File(path.into()), problem));
    let text = std::fs::read_to_string(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Default::default()));
    }
    let value: Value =
        serde_yaml::from_str(&text).map_err(|e| file_err(format!("not valid YAML: {e}")))?;
    Ok(match value {
        Value::Null => Value::Mapping(Default::default()),
        v => v,
    })
}

fn yaml_place(file: &Path, key: &str) -> Place {
    if key.is_empty() {
        Place::File(file.into())
    } else {
        Place::Yaml {
            file: file.into(),
            key: key.to_string(),
        }
    }
}

/// Ranges and cross-key rules, checked after types.
fn validate(s: &Settings, at: &dyn Fn(&str) -> Place, errors: &mut ConfigErrors) {
    let mut bad = |key: &str, problem: String| errors.push(ConfigError::new(at(key), problem));

    let k = &s.kafka;
    if k.bootstrap_servers.is_empty() {
        bad(
            "kafka.bootstrap_servers",
            "must name at least one broker (host:port)".into(),
        );
    }
    for server in &k.bootstrap_servers {
        if let Err(problem) = check_host_port(server) {
            bad("kafka.bootstrap_servers", format!("{server:?}: {problem}"));
        }
    }
    for (key, value) in [
        ("kafka.consumer_group", &k.consumer_group),
        ("kafka.input_topic", &k.input_topic),
        ("kafka.result_topic", &k.result_topic),
        ("kafka.fail_topic", &k.fail_topic),
        ("kafka.dlq_topic", &k.dlq_topic),
    ] {
        if value.trim().is_empty() {
            bad(key, "must not be empty".into());
        }
    }
    for (key, value) in [
        ("kafka.result_topic", &k.result_topic),
        ("kafka.fail_topic", &k.fail_topic),
        ("kafka.dlq_topic", &k.dlq_topic),
    ] {
        if *value == k.input_topic {
            bad(key, format!("must differ from kafka.input_topic ({value:?}): results would be read back as tasks"));
        }
    }
    if k.max_backoff_ms < k.base_backoff_ms {
        bad(
            "kafka.max_backoff_ms",
            format!("must be >= kafka.base_backoff_ms ({})", k.base_backoff_ms),
        );
    }
    // Pinned properties and keys set elsewhere, named where they were set.
    let mut rule_errors = Vec::new();
    for p in k.rule_problems() {
        let place = match &p.property {
            Some(property) => property_place(at, p.map.key(), property),
            None => at(p.map.key()),
        };
        rule_errors.push(ConfigError::new(place, p.problem));
    }

    let p = &s.pool;
    for (key, v) in [
        ("pool.max_sessions_per_pod", p.max_sessions_per_pod),
        (
            "pool.max_sessions_per_connection",
            p.max_sessions_per_connection,
        ),
        ("pool.session_timeout_seconds", p.session_timeout_seconds),
        (
            "transfer.transfer_timeout_seconds",
            s.transfer.transfer_timeout_seconds,
        ),
        (
            "transfer.connect_timeout_seconds",
            s.transfer.connect_timeout_seconds,
        ),
        (
            "circuit_breaker.failure_threshold",
            s.circuit_breaker.failure_threshold,
        ),
        (
            "circuit_breaker.success_threshold",
            s.circuit_breaker.success_threshold,
        ),
        (
            "circuit_breaker.half_open_max_calls",
            s.circuit_breaker.half_open_max_calls,
        ),
        ("supervisor.restart_base_ms", s.supervisor.restart_base_ms),
        ("supervisor.max_restarts", s.supervisor.max_restarts),
        (
            "supervisor.restart_window_seconds",
            s.supervisor.restart_window_seconds,
        ),
        (
            "supervisor.ready_timeout_seconds",
            s.supervisor.ready_timeout_seconds,
        ),
        (
            "supervisor.max_failed_starts",
            s.supervisor.max_failed_starts,
        ),
        ("supervisor.max_down_seconds", s.supervisor.max_down_seconds),
        (
            "supervisor.watch_interval_seconds",
            s.supervisor.watch_interval_seconds,
        ),
    ] {
        if v == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    if s.supervisor.restart_max_ms < s.supervisor.restart_base_ms {
        bad(
            "supervisor.restart_max_ms",
            format!(
                "must be >= supervisor.restart_base_ms ({})",
                s.supervisor.restart_base_ms
            ),
        );
    }
    if p.prewarm_enabled && p.prewarm_timeout_seconds == 0 {
        bad(
            "pool.prewarm_timeout_seconds",
            "must be at least 1 when prewarm_enabled".into(),
        );
    }
    for (key, port) in [("api.port", s.api.port), ("metrics.port", s.metrics.port)] {
        if !(1..=65535).contains(&port) {
            bad(key, format!("{port} is not a TCP port (1-65535)"));
        }
    }
    if s.api.port == s.metrics.port {
        bad(
            "metrics.port",
            format!("must differ from api.port ({})", s.api.port),
        );
    }
    if s.api.host.trim().is_empty() {
        bad("api.host", "must not be empty".into());
    }
    if let Some(file) = &s.api.admin_token_file {
        if let Err(problem) = crate::admin_token::read_file(Path::new(file)) {
            bad("api.admin_token_file", problem);
        }
    }
    if s.logging.level_filter().is_none() {
        bad(
            "logging.level",
            format!(
                "{:?} is not a level (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL)",
                s.logging.level
            ),
        );
    }
    if s.transfer.per_file_fsync().is_none() {
        bad(
            "transfer.fsync",
            format!("{:?} is not a mode (group or per_file)", s.transfer.fsync),
        );
    }
    if s.transfer.checksum_name().is_none() {
        bad(
            "transfer.checksum",
            format!(
                "{:?} is not an algorithm (sha256, md5, xxh3 or none)",
                s.transfer.checksum
            ),
        );
    }
    if s.logging.is_json().is_none() {
        bad(
            "logging.format",
            format!("{:?} is not a format (json or text)", s.logging.format),
        );
    }
    for e in rule_errors {
        errors.push(e);
    }
}

impl TransferSettings {
    /// `Some(true)` for `per_file`, `Some(false)` for `group`, `None` if unknown.
    /// `transfer.checksum` as its canonical lowercase name (`Some("none")` for none), if
    /// valid. The transfer stage maps the name to its algorithm.
    pub fn checksum_name(&self) -> Option<&'static str> {
        let name = self.checksum.to_ascii_lowercase();
        ["sha256", "md5", "xxh3", "none"]
            .into_iter()
            .find(|known| *known == name)
    }

    pub fn per_file_fsync(&self) -> Option<bool> {
        match self.fsync.to_ascii_lowercase().as_str() {
            "group" => Some(false),
            "per_file" => Some(true),
            _ => None,
        }
    }
}

impl LoggingSettings {
    /// The level as a tracing filter directive (`info`, `warn`, ...), if valid.
    pub fn level_filter(&self) -> Option<&'static str> {
        Some(match self.level.to_ascii_uppercase().as_str() {
            "TRACE" => "trace",
            "DEBUG" => "debug",
            "INFO" => "info",
            "WARNING" | "WARN" => "warn",
            "ERROR" | "CRITICAL" | "FATAL" => "error",
            _ => return None,
        })
    }

    /// `Some(true)` for JSON lines, `Some(false)` for text, `None` if unknown.
    pub fn is_json(&self) -> Option<bool> {
        match self.format.to_ascii_lowercase().as_str() {
            "json" => Some(true),
            "text" | "console" | "plain" => Some(false),
            _ => None,
        }
    }
}

/// `host:port` with a port in 1-65535 (IPv6 as `[::1]:9092`).
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    if host.is_empty() || host == "[]" {
        return Err("host is empty".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not a TCP port (1-65535)")),
    }
}
