//! Loading config.yaml + environment, and connections.ini: defaults, precedence and
//! every kind of error, each naming file, section and key.

use std::io::Write;
use std::path::{Path, PathBuf};

use ftp_pooler_config::{
    load_settings, ConnectionKind, Place, Registry, Settings, Sources, TlsMode,
};

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn errors_of<T: std::fmt::Debug>(r: Result<T, ftp_pooler_config::ConfigErrors>) -> Vec<String> {
    r.unwrap_err().iter().map(|e| e.to_string()).collect()
}

#[test]
fn defaults_are_the_python_versions() {
    let s = load_settings(None, &[]).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.kafka.bootstrap_servers, ["localhost:9092"]);
    assert_eq!(s.kafka.consumer_group, "ftp-pooler");
    assert_eq!(s.kafka.dlq_topic, "ftp-tasks-dlq");
    assert_eq!(
        (
            s.kafka.max_retries,
            s.kafka.base_backoff_ms,
            s.kafka.max_backoff_ms
        ),
        (5, 1000, 30000)
    );
    assert_eq!(
        (
            s.pool.max_sessions_per_pod,
            s.pool.max_sessions_per_connection
        ),
        (100, 10)
    );
    assert_eq!(s.pool.session_timeout_seconds, 300);
    assert!(s.pool.prewarm_enabled);
    assert_eq!(
        (
            s.pool.prewarm_sessions_per_connection,
            s.pool.prewarm_timeout_seconds
        ),
        (2, 30)
    );
    assert_eq!(
        (
            s.transfer.transfer_timeout_seconds,
            s.transfer.connect_timeout_seconds
        ),
        (300, 30)
    );
    let cb = &s.circuit_breaker;
    assert_eq!(
        (
            cb.failure_threshold,
            cb.success_threshold,
            cb.timeout_seconds,
            cb.half_open_max_calls
        ),
        (5, 3, 60, 3)
    );
    assert_eq!(
        (s.api.host.as_str(), s.api.port, s.metrics.port),
        ("0.0.0.0", 8080, 9090)
    );
    assert_eq!(
        (s.logging.level.as_str(), s.logging.format.as_str()),
        ("INFO", "json")
    );
    assert_eq!(s.shutdown.drain_timeout_seconds, 30);
}

#[test]
fn the_example_file_is_every_key_with_its_default() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    assert_eq!(
        load_settings(Some(&example), &[]).unwrap(),
        Settings::default()
    );
}

#[test]
fn a_python_config_loads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "config.yaml",
        "
kafka:
  bootstrap_servers: [\"kafka-0:9092\", \"kafka-1:9092\"]
  consumer_group: pooler
  input_topic: tasks
pool:
  max_sessions_per_pod: 50
logging:
  level: DEBUG
  format: json
",
    );
    let s = load_settings(Some(&f), &[]).unwrap();
    assert_eq!(s.kafka.bootstrap_servers, ["kafka-0:9092", "kafka-1:9092"]);
    assert_eq!(s.kafka.consumer_group, "pooler");
    assert_eq!(s.kafka.result_topic, "ftp-results");
    assert_eq!(s.pool.max_sessions_per_pod, 50);
    assert_eq!(s.pool.max_sessions_per_connection, 10);
}

#[test]
fn env_beats_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "c.yaml", "kafka: {bootstrap_servers: [\"file:9092\"], max_retries: 2}\npool: {max_sessions_per_pod: 7}\n");
    let e = env(&[
        (
            "FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS",
            "host1:9092,host2:9092",
        ),
        ("FTP_POOLER_POOL__PREWARM_ENABLED", "false"),
        ("FTP_POOLER_API__PORT", "18080"),
        ("FTP_POOLER_KAFKA__CONSUMER_GROUP", "12345"),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG",
            "{\"session.timeout.ms\": 6000}",
        ),
        ("FTP_POOLER_TEST_BOOTSTRAP", "ignored:1"),
        ("FTP_POOLER_CONFIG", "ignored"),
        ("UNRELATED__VAR", "x"),
    ]);
    let s = load_settings(Some(&f), &e).unwrap();
    assert_eq!(s.kafka.bootstrap_servers, ["host1:9092", "host2:9092"]);
    assert_eq!(s.kafka.max_retries, 2, "file value kept");
    assert_eq!(s.pool.max_sessions_per_pod, 7, "file value kept");
    assert!(!s.pool.prewarm_enabled);
    assert_eq!(s.api.port, 18080);
    assert_eq!(
        s.kafka.consumer_group, "12345",
        "a string setting stays a string"
    );
    assert_eq!(s.kafka.consumer_config["session.timeout.ms"], "6000");
    assert_eq!(s.kafka.input_topic, "ftp-tasks", "default kept");
    let props = s.kafka.consumer_properties();
    assert!(props.contains(&("bootstrap.servers".into(), "host1:9092,host2:9092".into())));
    assert!(props.contains(&("enable.auto.commit".into(), "false".into())));
    assert!(
        !props.iter().any(|(k, _)| k == "session.timeout.ms"),
        "the service's own only: the kafka crate adds the operator's"
    );
}

#[test]
fn every_unknown_key_and_wrong_type_is_reported_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "config.yaml",
        "
kafka:
  bootstrap_server: [\"x:1\"]
  max_retries: five
pool:
  max_sessions_per_pod: -3
  prewarm_enabled: \"yes\"
loging:
  level: INFO
",
    );
    let errs = errors_of(load_settings(Some(&f), &[]));
    let path = f.display().to_string();
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(errs.contains(&format!("{path}: kafka.bootstrap_server: unknown key \"bootstrap_server\" (did you mean \"bootstrap_servers\"?)")), "{errs:#?}");
    assert!(
        errs.contains(&format!(
            "{path}: kafka.max_retries: expected a whole number >= 0, found \"five\""
        )),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&format!(
            "{path}: pool.max_sessions_per_pod: expected a whole number >= 0, found -3"
        )),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&format!(
            "{path}: pool.prewarm_enabled: expected true or false, found \"yes\""
        )),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&format!(
            "{path}: loging: unknown key \"loging\" (did you mean \"logging\"?)"
        )),
        "{errs:#?}"
    );
}

#[test]
fn ranges_and_cross_key_rules_name_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "config.yaml",
        "
api: {port: 70000}
kafka: {result_topic: ftp-tasks, base_backoff_ms: 5000, max_backoff_ms: 100,
        producer_config: {acks: \"1\"}}
logging: {level: LOUD, format: xml}
transfer: {fsync: never, checksum: crc32}
",
    );
    let e = env(&[("FTP_POOLER_METRICS__PORT", "0")]);
    let errs = errors_of(load_settings(Some(&f), &e));
    let path = f.display().to_string();
    for want in [
        format!("{path}: api.port: 70000 is not a TCP port (1-65535)"),
        "environment variable FTP_POOLER_METRICS__PORT: 0 is not a TCP port (1-65535)".to_string(),
        format!("{path}: kafka.result_topic: must differ from kafka.input_topic (\"ftp-tasks\"): results would be read back as tasks"),
        format!("{path}: kafka.max_backoff_ms: must be >= kafka.base_backoff_ms (5000)"),
        format!("{path}: kafka.producer_config: acks must stay all: the delivery guarantees depend on it"),
        format!("{path}: logging.level: \"LOUD\" is not a level (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL)"),
        format!("{path}: logging.format: \"xml\" is not a format (json or text)"),
        format!("{path}: transfer.fsync: \"never\" is not a mode (group or per_file)"),
        format!("{path}: transfer.checksum: \"crc32\" is not an algorithm (sha256, md5, xxh3 or none)"),
    ] {
        assert!(errs.contains(&want), "missing {want:?} in {errs:#?}");
    }
}

#[test]
fn env_errors_name_the_variable() {
    let e = env(&[
        ("FTP_POOLER_KAFKA__MAX_RETRIS", "3"),
        ("FTP_POOLER_POOL__MAX_SESSIONS_PER_POD", "many"),
        ("FTP_POOLER_NOPE__KEY", "1"),
    ]);
    let errs = errors_of(load_settings(None, &e));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("environment variable FTP_POOLER_KAFKA__MAX_RETRIS: unknown key \"max_retris\" (did you mean \"max_retries\"?)"), "{errs:#?}");
    assert!(
        errs[1].starts_with(
            "environment variable FTP_POOLER_POOL__MAX_SESSIONS_PER_POD: expected a whole number"
        ),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("environment variable FTP_POOLER_NOPE__KEY: "),
        "{errs:#?}"
    );
}

#[test]
fn missing_and_broken_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let errs = errors_of(load_settings(Some(&missing), &[]));
    assert!(
        errs[0].starts_with(&format!("{}: cannot read", missing.display())),
        "{errs:?}"
    );
    let broken = file(dir.path(), "broken.yaml", "kafka: [unclosed\n");
    let errs = errors_of(load_settings(Some(&broken), &[]));
    assert!(
        errs[0].starts_with(&format!("{}: not valid YAML", broken.display())),
        "{errs:?}"
    );
    let list = file(dir.path(), "list.yaml", "- a\n- b\n");
    let errs = errors_of(load_settings(Some(&list), &[]));
    assert!(errs[0].contains("expected a section"), "{errs:?}");
}

fn registry(text: &str) -> Result<Registry, ftp_pooler_config::ConfigErrors> {
    Registry::parse(Path::new("connections.ini"), text)
}

#[test]
fn connections_parse_with_python_keys_and_new_ones() {
    let base = tempfile::tempdir().unwrap();
    let r = registry(&format!(
        "
[server-a]
type = ftp
host = 127.0.0.1
port = 2121
user = alice
pass = se;cr#et \\x
passive = yes

[server-b]
TYPE = ftp
Host = example.org
user = bob
password = pw
tls = implicit
max_sessions = 4
timeout = 15

[local]
type = local
base_path = {}
",
        base.path().display()
    ))
    .unwrap();
    let ids: Vec<&str> = r.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["server-a", "server-b", "local"]);
    let a = r.get("server-a").unwrap().as_ftp().unwrap();
    assert_eq!(
        (a.host.as_str(), a.port, a.user.as_str()),
        ("127.0.0.1", 2121, "alice")
    );
    assert_eq!(
        a.password.expose(),
        "se;cr#et \\x",
        "values are literal, as in configparser"
    );
    assert!(a.passive);
    assert_eq!(a.tls, TlsMode::None);
    let b = r.get("server-b").unwrap().as_ftp().unwrap();
    assert_eq!(
        (b.port, b.tls, b.max_sessions, b.timeout_seconds),
        (990, TlsMode::Implicit, Some(4), Some(15))
    );
    assert!(matches!(
        r.get("local").unwrap().kind,
        ConnectionKind::Local(_)
    ));
    assert_eq!(r.servers().count(), 2);
}

#[test]
fn passwords_never_show() {
    let r = registry("[s]\ntype = ftp\nhost = h\nuser = u\npass = hunter2-secret\n").unwrap();
    let c = r.get("s").unwrap();
    assert!(!format!("{r:?}").contains("hunter2-secret"));
    assert!(!format!("{c:?}").contains("hunter2-secret"));
    assert!(!c.summary().contains("hunter2-secret"));
    assert!(c.summary().contains("u@h:21"));
}

#[test]
fn every_connection_error_names_file_section_and_key() {
    let errs = errors_of(registry(
        "
[a]
type = ftp
host = h
user = u
port = 70000
passive = maybe
colour = blue

[a]
type = local
base_path = /tmp

[b]
type = local
base_path = relative/dir

[c]
type = smb

[d]
host = h

[e]
type = ftp
pass = x
password = y

[f]
type = local
base_path = /definitely/not/here
",
    ));
    for want in [
        "connections.ini: [a] port: \"70000\" is not a TCP port (1-65535)",
        "connections.ini: [a] passive: \"maybe\" is not a boolean",
        "connections.ini: [a] colour: unknown key \"colour\"",
        "connections.ini: [a]: duplicate section",
        "connections.ini: [b] base_path: \"relative/dir\" is not an absolute path",
        "connections.ini: [c] type: \"smb\" is not a connection type (ftp, sftp or local)",
        "connections.ini: [d] type: missing",
        "connections.ini: [e] host: missing",
        "connections.ini: [e] password: both pass and password are given",
        "connections.ini: [f] base_path: \"/definitely/not/here\": No such file or directory",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn a_base_path_must_be_a_writable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "plain-file", "x");
    let errs = errors_of(registry(&format!(
        "[l]\ntype = local\nbase_path = {}\n",
        f.display()
    )));
    assert!(errs[0].ends_with("is not a directory"), "{errs:?}");
    let errs = errors_of(registry("[l]\ntype = local\nbase_path = /proc/self\n"));
    assert!(errs[0].contains("is not writable"), "{errs:?}");
}

#[test]
fn keys_outside_sections_and_empty_files_fail() {
    let errs = errors_of(registry("host = h\n[a]\ntype = local\nbase_path = /tmp\n"));
    assert!(errs[0].contains("stands before any [section]"), "{errs:?}");
    let errs = errors_of(registry("; nothing\n"));
    assert!(errs[0].ends_with("defines no connection"), "{errs:?}");
}

#[test]
fn sources_load_both_files_and_report_both_files_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file(dir.path(), "config.yaml", "kafka: {max_retires: 1}\n");
    let conns = file(dir.path(), "connections.ini", "[x]\ntype = ftp\n");
    let sources = Sources {
        config_file: Some(cfg),
        connections_file: Some(conns.clone()),
        env: vec![],
    };
    let errs = sources.load().unwrap_err();
    assert_eq!(errs.len(), 2, "{errs}");
    assert!(matches!(errs.0[0].place, Place::Yaml { .. }));
    assert!(matches!(errs.0[1].place, Place::Ini { .. }));

    let good = file(
        dir.path(),
        "good.yaml",
        &format!("connections_path: {}\n", conns.display()),
    );
    std::fs::write(
        &conns,
        format!("[l]\ntype = local\nbase_path = {}\n", dir.path().display()),
    )
    .unwrap();
    let sources = Sources {
        config_file: Some(good),
        connections_file: None,
        env: vec![],
    };
    let config = sources.load().unwrap();
    assert_eq!(
        config.connections_file, conns,
        "connections_path from config.yaml"
    );
    assert_eq!(config.registry.len(), 1);

    let none = Sources::default().load().unwrap_err();
    assert!(
        none.to_string().contains("FTP_POOLER_CONNECTIONS"),
        "{none}"
    );
}

#[test]
fn the_example_connections_file_parses_up_to_its_production_paths() {
    // The example names production paths (/etc/ftp-pooler/ca.pem, /data/storage) that do
    // not exist here: those, and only those, are reported.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("connections.ini");
    let errs = errors_of(Registry::load(&example));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].contains("[remote-server-a] tls_ca_file: cannot read /etc/ftp-pooler/ca.pem"),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("[local] base_path: \"/data/storage\""),
        "{errs:#?}"
    );
}

#[test]
fn configparser_features_default_section_colon_and_anonymous() {
    let base = tempfile::tempdir().unwrap();
    let r = registry(&format!(
        "
[DEFAULT]
user: shared
pass = shared-pw
port = 2121

[a]
type = ftp
host = h1

[b]
type = ftp
host = h2
user = own
port = 21

[c]
type = ftp
host = h3
user =

[disk]
type = local
base_path = {}
",
        base.path().display()
    ))
    .unwrap();
    let a = r.get("a").unwrap().as_ftp().unwrap();
    assert_eq!(
        (a.user.as_str(), a.password.expose(), a.port),
        ("shared", "shared-pw", 2121)
    );
    let b = r.get("b").unwrap().as_ftp().unwrap();
    assert_eq!((b.user.as_str(), b.port), ("own", 21));
    let c = r.get("c").unwrap().as_ftp().unwrap();
    assert_eq!(
        c.user, "anonymous",
        "no user: anonymous, as in the Python version"
    );
    assert!(r.get("DEFAULT").is_none());
    assert_eq!(
        r.len(),
        4,
        "[DEFAULT] is not a connection; its ftp keys do not trouble [disk]"
    );
}

#[test]
fn single_librdkafka_properties_come_from_the_environment() {
    let e = env(&[
        (
            "FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD",
            "from-a-secret",
        ),
        (
            "FTP_POOLER_KAFKA__PRODUCER_CONFIG",
            "{\"security.protocol\": \"SASL_SSL\"}",
        ),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__SESSION_TIMEOUT_MS",
            "10000",
        ),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__ENABLE_AUTO_COMMIT",
            "true",
        ),
    ]);
    let errs = errors_of(load_settings(None, &e));
    assert_eq!(errs, ["environment variable FTP_POOLER_KAFKA__CONSUMER_CONFIG__ENABLE_AUTO_COMMIT: enable.auto.commit must stay false: the delivery guarantees depend on it"]);
    let s = load_settings(None, &e[..3]).unwrap();
    assert_eq!(s.kafka.producer_config["sasl.password"], "from-a-secret");
    assert_eq!(
        s.kafka.producer_config["security.protocol"], "SASL_SSL",
        "whole map applied first"
    );
    assert_eq!(s.kafka.consumer_config["session.timeout.ms"], "10000");
}

#[test]
fn secret_librdkafka_properties_never_show_in_debug() {
    let e = env(&[
        (
            "FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD",
            "hunter2-kafka",
        ),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__SSL_KEY_PASSWORD",
            "hunter3-kafka",
        ),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__SASL_USERNAME",
            "visible-user",
        ),
    ]);
    let s = load_settings(None, &e).unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("hunter2-kafka") && !shown.contains("hunter3-kafka"),
        "{shown}"
    );
    assert!(shown.contains("visible-user"), "{shown}");
    assert_eq!(
        s.kafka.producer_config["sasl.password"], "hunter2-kafka",
        "still passed to librdkafka"
    );
}

#[test]
fn the_pod_session_budget_is_shared_between_connections() {
    use ftp_pooler_config::{session_budget, Registry, Settings};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    let ini = format!(
        "[a]\ntype = ftp\nhost = h\n\n[b]\ntype = ftp\nhost = h\nmax_sessions = 30\n\n[c]\ntype = ftp\nhost = h\nmax_sessions = 2\n\n[l]\ntype = local\nbase_path = {base}\n"
    );
    let registry = Registry::parse(std::path::Path::new("connections.ini"), &ini).unwrap();
    let mut s = Settings::default();
    s.pool.max_sessions_per_connection = 10;
    s.pool.max_sessions_per_pod = 100;
    let b = session_budget(&s, &registry);
    assert_eq!(
        b.values().copied().collect::<Vec<_>>(),
        [10, 30, 2],
        "fits: each its own"
    );
    s.pool.max_sessions_per_pod = 21;
    let b = session_budget(&s, &registry);
    assert_eq!(b.values().sum::<u64>(), 21);
    assert_eq!((b["a"], b["b"], b["c"]), (5, 15, 1));
    s.pool.max_sessions_per_pod = 2;
    let b = session_budget(&s, &registry);
    assert!(b.values().all(|&v| v == 1), "at least one each: {b:?}");
}

#[test]
fn a_malformed_librdkafka_map_never_shows_its_text() {
    let e = env(&[(
        "FTP_POOLER_KAFKA__CONSUMER_CONFIG",
        "{\"sasl.password\": \"hunter2-map\", ",
    )]);
    let errs = errors_of(load_settings(None, &e));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(!errs[0].contains("hunter2-map"), "{errs:?}");
    let e = env(&[(
        "FTP_POOLER_KAFKA__PRODUCER_CONFIG",
        "sasl.password=hunter2-text",
    )]);
    let errs = errors_of(load_settings(None, &e));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(!errs[0].contains("hunter2-text"), "{errs:?}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "kafka:\n  producer_config: {sasl.password: [hunter2-list]}\n",
    )
    .unwrap();
    let errs = errors_of(load_settings(Some(&f), &[]));
    assert!(!errs.iter().any(|e| e.contains("hunter2")), "{errs:?}");
    assert!(
        !format!("{:?}", load_settings(None, &env(&[("FTP_POOLER_KAFKA__CONSUMER_CONFIG__SASL_OAUTHBEARER_ASSERTION_PRIVATE_KEY_PASSPHRASE", "hunter2-pp")])).unwrap()).contains("hunter2-pp")
    );
}

#[test]
fn pinned_properties_accept_what_librdkafka_reads_as_the_same_value() {
    for (k, v) in [
        ("FTP_POOLER_KAFKA__CONSUMER_CONFIG__ENABLE_AUTO_COMMIT", "0"),
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__ENABLE_AUTO_OFFSET_STORE",
            "F",
        ),
        ("FTP_POOLER_KAFKA__PRODUCER_CONFIG__ENABLE_IDEMPOTENCE", "1"),
        ("FTP_POOLER_KAFKA__PRODUCER_CONFIG__ACKS", "-1"),
    ] {
        assert!(load_settings(None, &env(&[(k, v)])).is_ok(), "{k}={v}");
    }
    for (k, v) in [
        ("FTP_POOLER_KAFKA__CONSUMER_CONFIG__ENABLE_AUTO_COMMIT", "1"),
        ("FTP_POOLER_KAFKA__PRODUCER_CONFIG__ACKS", "1"),
    ] {
        assert!(load_settings(None, &env(&[(k, v)])).is_err(), "{k}={v}");
    }
}

#[test]
fn the_admin_token_file_and_the_file_watch_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let token = file(dir.path(), "token", "s3cret-admin\n");
    let ok = file(
        dir.path(),
        "ok.yaml",
        &format!(
            "api: {{admin_token_file: {}}}\nsupervisor: {{watch_config: false, watch_interval_seconds: 5}}\n",
            token.display()
        ),
    );
    let s = load_settings(Some(&ok), &[]).unwrap();
    assert_eq!(s.api.admin_token_file, Some(token.display().to_string()));
    assert!(!s.supervisor.watch_config);
    assert_eq!(s.supervisor.watch_interval_seconds, 5);
    let d = Settings::default();
    assert!(d.supervisor.watch_config && d.supervisor.watch_interval_seconds == 2);
    assert_eq!(d.api.admin_token_file, None);

    let empty = file(dir.path(), "empty", " \n");
    let missing = dir.path().join("missing");
    for (path, want) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let f = file(
            dir.path(),
            "bad.yaml",
            &format!(
                "api: {{admin_token_file: {}}}\nsupervisor: {{watch_interval_seconds: 0}}\n",
                path.display()
            ),
        );
        let errs = errors_of(load_settings(Some(&f), &[]));
        let at = f.display().to_string();
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{at}: api.admin_token_file:"))
                    && e.contains(want)
                    && e.contains(&path.display().to_string())),
            "{errs:#?}"
        );
        assert!(
            errs.contains(&format!(
                "{at}: supervisor.watch_interval_seconds: must be at least 1"
            )),
            "{errs:#?}"
        );
    }
    // Overridable from the environment as every key.
    let e = env(&[("FTP_POOLER_SUPERVISOR__WATCH_CONFIG", "false")]);
    assert!(!load_settings(None, &e).unwrap().supervisor.watch_config);
}
