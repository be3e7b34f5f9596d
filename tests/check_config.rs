//! `ftp-pooler check-config`, as an operator runs it: exit 0 with a summary that shows no
//! password, or exit 2 with every error, one per line, naming file, section and key.

use std::process::Command;

fn ftp_pooler() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftp-pooler"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FTP_POOLER_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn valid_files_print_a_summary_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let conns = dir.path().join("connections.ini");
    std::fs::write(
        &conns,
        format!("[server-a]\ntype = ftp\nhost = 127.0.0.1\nuser = alice\npass = s3cr3t-pw\n\n[local]\ntype = local\nbase_path = {}\n", storage.display()),
    )
    .unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.yaml");
    let out = ftp_pooler()
        .args(["check-config", "--config", example])
        .env("FTP_POOLER_CONNECTIONS", &conns)
        .env("FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("k1:9092,k2:9092"), "{stdout}");
    assert!(stdout.contains("server-a"), "{stdout}");
    assert!(stdout.contains("alice@127.0.0.1:21"), "{stdout}");
    assert!(stdout.contains(&storage.display().to_string()), "{stdout}");
    assert!(!stdout.contains("s3cr3t-pw"), "password shown: {stdout}");
    assert!(stdout.ends_with("configuration ok\n"), "{stdout}");
}

#[test]
fn invalid_files_exit_2_with_every_error_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "kafka:\n  max_retries: lots\npool:\n  max_sessions_per_pod: 0\napi: {prot: 1}\n",
    )
    .unwrap();
    let conns = dir.path().join("connections.ini");
    std::fs::write(&conns, "[a]\ntype = ftp\nhost = h\nuser = u\npass = hunter2\nport = 0\n[b]\ntype = local\nbase_path = rel\n").unwrap();
    let out = ftp_pooler()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .arg("--connections")
        .arg(&conns)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let c = cfg.display().to_string();
    let n = conns.display().to_string();
    for want in [
        format!("{c}: kafka.max_retries: expected a whole number >= 0, found \"lots\""),
        format!("{c}: api.prot: unknown key \"prot\" (did you mean \"port\"?)"),
        format!("{n}: [a] port: \"0\" is not a TCP port (1-65535)"),
        format!("{n}: [b] base_path: \"rel\" is not an absolute path"),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "missing {want:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("hunter2"));
    assert_eq!(
        lines.last(),
        Some(&"configuration invalid: 4 error(s)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_file_is_named() {
    let out = ftp_pooler()
        .args([
            "check-config",
            "--config",
            "/nonexistent/config.yaml",
            "--connections",
            "/nonexistent/connections.ini",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/config.yaml: cannot read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/connections.ini: cannot read"),
        "{stderr}"
    );
}

/// A connections file that is valid (a local connection in a temporary directory).
fn valid_connections(dir: &std::path::Path) -> std::path::PathBuf {
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let conns = dir.join("connections.ini");
    std::fs::write(
        &conns,
        format!(
            "[server-a]\ntype = ftp\nhost = 127.0.0.1\nuser = alice\npass = pw\n\n[local]\ntype = local\nbase_path = {}\n",
            storage.display()
        ),
    )
    .unwrap();
    conns
}

/// `check-config` on these files (no `cfg`: the built-in defaults), with `env` added.
fn check(
    cfg: Option<&std::path::Path>,
    conns: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = ftp_pooler();
    cmd.arg("check-config");
    if let Some(cfg) = cfg {
        cmd.arg("--config").arg(cfg);
    }
    cmd.arg("--connections")
        .arg(conns)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `check-config` and `run` on the same files: both exit 2 with the same errors.
fn check_and_run(cfg: &std::path::Path, conns: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut outs = Vec::new();
    for command in [
        vec!["check-config"],
        vec!["run", "--runtime-dir", "/nonexistent/never-created"],
    ] {
        let out = ftp_pooler()
            .args(&command)
            .arg("--config")
            .arg(cfg)
            .arg("--connections")
            .arg(conns)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        if command[0] == "run" {
            // The service logs in JSON (the default format): one object per error.
            stderr = stderr
                .lines()
                .map(|l| {
                    let v: serde_json::Value =
                        serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l:?}"));
                    assert_eq!(v["level"], "ERROR", "{l}");
                    format!("{}\n", v["message"].as_str().unwrap())
                })
                .collect();
        }
        outs.push(stderr);
    }
    assert_eq!(outs[0], outs[1], "run refuses with check-config's errors");
    outs.remove(0)
}

#[test]
fn the_sasl_ssl_example_with_a_missing_ca_file_is_refused_naming_ssl_ca_location() {
    let dir = tempfile::tempdir().unwrap();
    let conns = valid_connections(dir.path());
    let example = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/kafka-sasl-ssl.yaml"
    ));
    // The password comes from the environment instead of the example's file: the only
    // problem left is the CA file the example names.
    let env = [
        (
            "FTP_POOLER_KAFKA__CONSUMER_CONFIG__SASL_PASSWORD",
            "hunter2-secret",
        ),
        (
            "FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD",
            "hunter2-secret",
        ),
    ];
    let stderr = check_and_run(example, &conns, &env);
    let e = example.display().to_string();
    for map in ["consumer_config", "producer_config"] {
        let want = format!(
            "{e}: kafka.{map}: ssl.ca.location: cannot read /etc/ftp-pooler/kafka-ca.pem: No such file or directory (os error 2)"
        );
        assert!(
            stderr.lines().any(|l| l == want),
            "missing {want:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    assert!(
        stderr.ends_with("configuration invalid: 2 error(s)\n"),
        "{stderr}"
    );
}

#[test]
fn unknown_and_invalid_librdkafka_properties_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let conns = valid_connections(dir.path());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "kafka:\n  consumer_config: {sesion.timeout.ms: 10000}\n  producer_config: {compression.type: brotli, sasl.mechanism: NOT-A-MECHANISM, security.protocol: SASL_SSL}\n",
    )
    .unwrap();
    let stderr = check_and_run(&cfg, &conns, &[]);
    let c = cfg.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{c}: kafka.consumer_config: sesion.timeout.ms: No such configuration property"
        ))),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{c}: kafka.producer_config: compression.type: Invalid value"
        ))),
        "{stderr}"
    );
    assert_eq!(lines.len(), 3, "{stderr}");

    // Once the value is fixed, what only the whole configuration shows: the mechanism.
    std::fs::write(
        &cfg,
        "kafka:\n  producer_config: {sasl.mechanism: NOT-A-MECHANISM, security.protocol: SASL_SSL}\n",
    )
    .unwrap();
    let stderr = check_and_run(&cfg, &conns, &[]);
    assert!(
        stderr.starts_with(&format!("{c}: kafka.producer_config: "))
            && stderr.contains("sasl.mechanism"),
        "{stderr}"
    );
}

#[test]
fn secrets_come_from_files_and_the_environment_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let conns = valid_connections(dir.path());
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, "from-a-file-s3cret\n").unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kafka:\n  consumer_config: {{security.protocol: SASL_PLAINTEXT, sasl.mechanism: PLAIN, sasl.username: u, sasl.password: '${{file:{}}}'}}\n  producer_config: {{security.protocol: SASL_PLAINTEXT, sasl.mechanism: PLAIN, sasl.username: u, sasl.password: '${{env:KAFKA_PW}}'}}\n",
            secret.display()
        ),
    )
    .unwrap();
    let out = check(Some(&cfg), &conns, &[("KAFKA_PW", "from-the-env-s3cret")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sasl.password=***"), "{stdout}");
    assert!(stdout.contains("librdkafka:"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");

    // A reference to nothing is refused, naming the property and the variable.
    let out = check(Some(&cfg), &conns, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kafka.producer_config: sasl.password: the environment variable KAFKA_PW it names is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn the_version_names_librdkafka_and_its_features() {
    let out = ftp_pooler().arg("--version").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let features = stdout
        .lines()
        .find_map(|l| l.strip_prefix("librdkafka builtin.features "))
        .unwrap_or_else(|| panic!("{stdout}"));
    for f in [
        "ssl",
        "sasl_scram",
        "sasl_oauthbearer",
        "zstd",
        "lz4",
        "snappy",
        "gzip",
    ] {
        assert!(features.split(',').any(|x| x == f), "{f}: {stdout}");
    }
}

/// Active mode's keys show in the summary; with passive mode they are an error naming
/// the key.
#[test]
fn active_mode_keys_show_in_the_summary_and_fail_with_passive_mode() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let conns = dir.path().join("connections.ini");
    let local = format!("[local]\ntype = local\nbase_path = {}\n", storage.display());
    std::fs::write(
        &conns,
        format!("[nat]\ntype = ftp\nhost = h\npassive = false\nactive_address = 203.0.113.7\nactive_port_range = 50000-50100\n\n{local}"),
    )
    .unwrap();
    let out = check(None, &conns, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("passive=false active_address=203.0.113.7 active_port_range=50000-50100"),
        "{stdout}"
    );

    std::fs::write(
        &conns,
        format!("[p]\ntype = ftp\nhost = h\nactive_port_range = 50000-50100\n\n{local}"),
    )
    .unwrap();
    let out = check(None, &conns, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("connections.ini: [p] active_port_range: applies to active mode only"),
        "{stderr}"
    );
}

/// SFTP connections (issue 22): a missing key file, an unreadable known_hosts file, a
/// malformed fingerprint, a passphrase variable that is not set, no way to verify the
/// host: exit 2 naming each key; a valid one is summarised without its secrets.
#[test]
fn sftp_connections_are_checked_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "not read here").unwrap();
    let conns = dir.path().join("connections.ini");
    std::fs::write(
        &conns,
        format!(
            "[a]\ntype = sftp\nhost = h\nuser = u\nprivate_key_file = /no/such/key\nhost_key_fingerprint = SHA256:short\n\n\
             [b]\ntype = sftp\nhost = h\nuser = u\npassword = pw-b-secret\nknown_hosts_file = /no/such/known_hosts\n\n\
             [c]\ntype = sftp\nhost = h\nuser = u\nprivate_key_file = {}\nprivate_key_passphrase_env = FTP_POOLER_TEST_UNSET_PASSPHRASE\ninsecure_accept_any_host_key = true\n\n\
             [d]\ntype = sftp\nhost = h\nuser = u\npassword = pw\n\n\
             [e]\ntype = sftp\nhost = h\nuser = u\npassword = pw\ntls = explicit\nhost_key_fingerprint = SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n\n\
             [local]\ntype = local\nbase_path = {}\n",
            key.display(),
            storage.display()
        ),
    )
    .unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.yaml");
    let out = ftp_pooler()
        .args(["check-config", "--config", example])
        .env("FTP_POOLER_CONNECTIONS", &conns)
        .env_remove("FTP_POOLER_TEST_UNSET_PASSPHRASE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        "[a] private_key_file: cannot read /no/such/key",
        "[a] host_key_fingerprint: \"SHA256:short\" is not a SHA256 fingerprint",
        "[b] known_hosts_file: cannot read /no/such/known_hosts",
        "[c] private_key_passphrase_env: the environment variable \"FTP_POOLER_TEST_UNSET_PASSPHRASE\" is not set",
        "[d] known_hosts_file: missing",
        "[e] tls: unknown key",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("pw-b-secret"), "{stderr}");

    // A valid one: summarised, its password not shown.
    std::fs::write(
        &conns,
        format!(
            "[partner]\ntype = sftp\nhost = sftp.example.com\nuser = u\npassword = pw-secret\nhost_key_fingerprint = SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n\n[local]\ntype = local\nbase_path = {}\n",
            storage.display()
        ),
    )
    .unwrap();
    let out = ftp_pooler()
        .args(["check-config", "--config", example])
        .env("FTP_POOLER_CONNECTIONS", &conns)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sftp   u@sftp.example.com:22"), "{stdout}");
    assert!(!stdout.contains("pw-secret"), "{stdout}");
}
