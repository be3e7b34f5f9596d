//! The pipeline against a broker that requires SASL (SCRAM-SHA-512) over TLS: the test
//! bed's Tansu behind a real TLS server (stunnel) and the test bed's SASL front
//! (`ftp_pooler_testbed::sasl_front`: Tansu 0.6.0 keeps no SCRAM users, see
//! docs/KAFKA_SECURITY.md), advertising the TLS address. Every client of the test (topic
//! creation, producer, watcher, committed offsets) and the service speak SASL_SSL.

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::sasl_front::{OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET};
use ftp_pooler_testbed::scenario::{
    clean_run, clean_run_with_env, cpu_time, kill_stage_mid_run, tail, Scenario,
};
use ftp_pooler_testbed::service::Topics;
use ftp_pooler_testbed::{use_secured_broker, Security};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_every_task_gets_exactly_one_result_and_its_offset_committed() {
    use_secured_broker(Security::SaslSsl);
    clean_run(Path::new(EXE), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_a_killed_ingest_loses_nothing() {
    use_secured_broker(Security::SaslSsl);
    kill_stage_mid_run(Path::new(EXE), "ingest").await;
}

/// A wrong SASL password: `/ready` is 503 and says authentication; the log gets one event
/// per kind and retry interval, not one per reconnect; no process spins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_in_ready_without_a_log_flood_or_a_spin() {
    use_secured_broker(Security::SaslSsl);
    let sc = Scenario::new(Path::new(EXE), 10).await;
    let wrong = "not-the-password";
    let svc = sc.start_with_env(
        "",
        &[
            ("FTP_POOLER_KAFKA__CONSUMER_CONFIG__SASL_PASSWORD", wrong),
            ("FTP_POOLER_KAFKA__PRODUCER_CONFIG__SASL_PASSWORD", wrong),
        ],
    );
    let start = Instant::now();
    let body = loop {
        if let Ok((503, body)) = request(svc.api_port, "GET", "/ready").await {
            if body.contains("broker_authentication_failed") {
                break body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/ready never said authentication:\n{}",
            tail(&svc.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("/ready after {:?}: {body}", start.elapsed());
    assert!(!body.contains(wrong));

    // A window of 20 s: lines logged and CPU used by the service's processes.
    let mut pids: Vec<u32> = svc.stage_processes().into_keys().collect();
    pids.push(svc.pid());
    let lines_before = svc.log().lines().count();
    let cpu_before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let log = svc.log();
    let lines = log.lines().count() - lines_before;
    let cpu: Duration = pids.iter().map(|p| cpu_time(*p)).sum::<Duration>() - cpu_before;
    eprintln!("in {window:?}: {lines} log lines, {cpu:?} of CPU");
    assert!(!log.contains(wrong), "the password is in the log");
    // Three Kafka clients (consumer, probe, producer), a few kinds each, once per 30 s.
    assert!(
        lines <= 20,
        "{lines} lines in {window:?}:\n{}",
        tail(&log, 40)
    );
    assert!(
        cpu < Duration::from_secs(2),
        "{cpu:?} of CPU in {window:?}: a spin"
    );
    let (code, body) = request(svc.api_port, "GET", "/ready").await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("broker_authentication_failed"), "{body}");
}

/// OAUTHBEARER with librdkafka's own OIDC client (client credentials grant against the
/// test bed's token endpoint), the client secret from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_with_oauthbearer_oidc_every_task_gets_exactly_one_result() {
    let broker = use_secured_broker(Security::SaslSsl);
    let url = broker.token_url().expect("a SASL front");
    let mut env: Vec<(String, String)> =
        vec![("TEST_OAUTH_SECRET".into(), OAUTH_CLIENT_SECRET.into())];
    for map in ["CONSUMER", "PRODUCER"] {
        for (property, value) in [
            ("SASL_MECHANISM", "OAUTHBEARER"),
            ("SASL_OAUTHBEARER_METHOD", "oidc"),
            ("SASL_OAUTHBEARER_CLIENT_ID", OAUTH_CLIENT_ID),
            ("SASL_OAUTHBEARER_CLIENT_SECRET", "${env:TEST_OAUTH_SECRET}"),
            ("SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", url.as_str()),
        ] {
            env.push((
                format!("FTP_POOLER_KAFKA__{map}_CONFIG__{property}"),
                value.into(),
            ));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let before = broker.tokens_issued();
    clean_run_with_env(Path::new(EXE), 300, &env).await;
    // The test's own clients use SCRAM: every token went to the service.
    assert!(broker.tokens_issued() > before, "no token was fetched");
}

/// `ftp-pooler-client` takes the service's settings (config.yaml and environment) and
/// `-X` properties, checked by librdkafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_uses_the_services_settings_and_x_properties() {
    let broker = use_secured_broker(Security::SaslSsl);
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, topics.config_yaml("")).unwrap();
    let client = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ftp-pooler-client"));
        for (k, _) in std::env::vars() {
            if k.starts_with("FTP_POOLER_") {
                c.env_remove(k);
            }
        }
        c.stdin(std::process::Stdio::piped());
        c
    };
    let run = |mut c: std::process::Command, input: &str| {
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Produce with config.yaml: its input topic, its security.
    let mut c = client();
    c.arg("--config").arg(&yaml).arg("produce");
    let out = run(c, "{\"task_id\": \"client-1\"}\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0:0 client-1\n");

    // Read it back with -X properties only.
    let mut c = client();
    c.args(["--bootstrap", broker.bootstrap()]);
    for (k, v) in broker.properties() {
        c.arg("-X").arg(format!("{k}={v}"));
    }
    c.args([
        "watch",
        "--topic",
        &topics.tasks,
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("client-1"), "{stdout}");

    // A property librdkafka does not know: exit 2, named.
    let mut c = client();
    c.arg("--config")
        .arg(&yaml)
        .args(["-X", "sesion.timeout.ms=1", "produce"]);
    let out = run(c, "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sesion.timeout.ms"), "{stderr}");
}
