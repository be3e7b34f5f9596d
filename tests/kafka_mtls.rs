//! The pipeline against a broker that requires a client certificate (mutual TLS: stunnel
//! with `requireCert` and the test CA in front of the test bed's Tansu).

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::request;
use ftp_pooler_testbed::scenario::{clean_run, kill_stage_mid_run, tail, Scenario};
use ftp_pooler_testbed::{use_secured_broker, Security};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_every_task_gets_exactly_one_result_and_its_offset_committed() {
    use_secured_broker(Security::MutualTls);
    clean_run(Path::new(EXE), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_a_killed_ingest_loses_nothing() {
    use_secured_broker(Security::MutualTls);
    kill_stage_mid_run(Path::new(EXE), "ingest").await;
}

/// With a client certificate the broker does not trust, the service is refused, and
/// `/ready` says it is TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_certificate_shows_in_ready_as_tls() {
    use_secured_broker(Security::MutualTls);
    let sc = Scenario::new(Path::new(EXE), 1).await;
    // The certificate and key of another (self-made, untrusted) client.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=stranger", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let svc = sc.start_with_env(
        "",
        &[
            (
                "FTP_POOLER_KAFKA__CONSUMER_CONFIG__SSL_CERTIFICATE_LOCATION",
                &cert,
            ),
            ("FTP_POOLER_KAFKA__CONSUMER_CONFIG__SSL_KEY_LOCATION", &key),
            (
                "FTP_POOLER_KAFKA__PRODUCER_CONFIG__SSL_CERTIFICATE_LOCATION",
                &cert,
            ),
            ("FTP_POOLER_KAFKA__PRODUCER_CONFIG__SSL_KEY_LOCATION", &key),
        ],
    );
    let start = Instant::now();
    loop {
        if let Ok((503, body)) = request(svc.api_port, "GET", "/ready").await {
            if body.contains("broker_tls_failed") || body.contains("broker_authentication_failed") {
                eprintln!("/ready after {:?}: {body}", start.elapsed());
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/ready never named the refusal:\n{}",
            tail(&svc.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
