//! The pipeline against a broker that requires SASL (SCRAM-SHA-512) over TLS: the test
//! bed's Tansu behind a real TLS server (stunnel) and the test bed's SASL front
//! (`ftp_pooler_testbed::sasl_front`: Tansu 0.6.0 keeps no SCRAM users, see
//! docs/KAFKA_SECURITY.md), advertising the TLS address. Every client of the test (topic
//! creation, producer, watcher, committed offsets) and the service speak SASL_SSL.

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::scenario::{clean_run, cpu_time, kill_stage_mid_run, tail, Scenario};
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
