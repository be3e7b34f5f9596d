//! Digests end to end (issue 21), at the engine against real servers: every result
//! carries the digest of the bytes it moved (`transfer.checksum`, sha256 by default), a
//! task's expected digest is checked before the rename, and a mismatch is
//! CHECKSUM_MISMATCH, not retried, with no destination file and no temporary file left.
//! The service's results in Kafka carry the same field (tests/pipeline.rs).

use ftp_pooler_config::Settings;
use ftp_pooler_contract::{Checksum, ChecksumAlgorithm, ErrorCode};
use ftp_pooler_testbed::engine_bed::{data, run_all, temp_files, EngineBed};
use ftp_pooler_testbed::{FtpKind, FtpServer};
use md5::Digest as _;

fn bed(server: &FtpServer, checksum: &str) -> EngineBed {
    let mut settings = Settings::default();
    settings.kafka.max_retries = 3;
    settings.kafka.base_backoff_ms = 50;
    settings.kafka.max_backoff_ms = 200;
    settings.transfer.connect_timeout_seconds = 10;
    settings.pool.prewarm_enabled = false;
    settings.transfer.checksum = checksum.into();
    EngineBed::new(settings, &server.ini_section("a"))
}

fn sha256(bytes: &[u8]) -> Checksum {
    Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: format!("{:x}", sha2::Sha256::digest(bytes)),
    }
}

fn md5(bytes: &[u8]) -> Checksum {
    Checksum {
        algorithm: ChecksumAlgorithm::Md5,
        value: format!("{:x}", md5::Md5::digest(bytes)),
    }
}

#[tokio::test]
async fn every_result_carries_the_digest_of_its_bytes_down_and_up() {
    for kind in [FtpKind::Vsftpd, FtpKind::Pyftpdlib] {
        let server = FtpServer::start(kind, false);
        let bed = bed(&server, "sha256");
        let engine = bed.engine("a");
        let sizes = [0usize, 1, 4096, 300_000, 9_000_000];
        let mut tasks = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            server.put(&format!("d/f{i}"), &data(i, size));
            tasks.push(bed.task(
                &format!("down{i}"),
                ("a", &format!("d/f{i}")),
                ("local", &format!("d/f{i}")),
            ));
            std::fs::create_dir_all(bed.local("u")).unwrap();
            std::fs::write(bed.local(&format!("u/f{i}")), data(i + 100, size)).unwrap();
            tasks.push(bed.task(
                &format!("up{i}"),
                ("local", &format!("u/f{i}")),
                ("a", &format!("u/f{i}")),
            ));
        }
        let results = run_all(&engine, &tasks).await;
        for (i, &size) in sizes.iter().enumerate() {
            let down = &results[2 * i];
            assert!(down.is_success(), "{}: {down:?}", kind.name());
            assert_eq!(
                down.checksum,
                Some(sha256(&data(i, size))),
                "{} down {i}",
                kind.name()
            );
            let up = &results[2 * i + 1];
            assert!(up.is_success(), "{}: {up:?}", kind.name());
            assert_eq!(
                up.checksum,
                Some(sha256(&data(i + 100, size))),
                "{} up {i}",
                kind.name()
            );
            // What the server stored is what the digest says.
            let stored = std::fs::read(server.root().join(format!("u/f{i}"))).unwrap();
            assert_eq!(Some(sha256(&stored)), up.checksum);
        }
        let json: serde_json::Value = serde_json::from_slice(&results[0].to_json()).unwrap();
        assert_eq!(json["checksum"]["algorithm"], "sha256");
        assert_eq!(json["checksum"]["value"].as_str().unwrap().len(), 64);
    }
}

#[tokio::test]
async fn the_configured_algorithm_or_none_and_the_tasks_own_algorithm_wins() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    server.put("f", &data(1, 5000));
    for (name, want) in [
        ("md5", Some(ChecksumAlgorithm::Md5)),
        ("xxh3", Some(ChecksumAlgorithm::Xxh3)),
        ("none", None),
    ] {
        let bed = bed(&server, name);
        let engine = bed.engine("a");
        let (task, route) = bed.task(name, ("a", "f"), ("local", name));
        let r = engine.run(&task, &route).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.checksum.as_ref().map(|c| c.algorithm), want, "{name}");
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert!(
            json.get("checksum").is_some(),
            "the field is always present"
        );
        // A task that expects md5 gets md5, whatever the configuration says.
        let (mut task, route) = bed.task(
            &format!("{name}-md5"),
            ("a", "f"),
            ("local", &format!("{name}-md5")),
        );
        task.checksum = Some(md5(&data(1, 5000)));
        let r = engine.run(&task, &route).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.checksum, task.checksum, "{name}");
    }
    assert_eq!(
        md5(b"abc").value,
        "900150983cd24fb0d6963f7d28e17f72",
        "the test's own md5 is RFC 1321's"
    );
}

#[tokio::test]
async fn an_expected_digest_that_differs_fails_once_and_puts_nothing_in_place() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let bed = bed(&server, "sha256");
    let engine = bed.engine("a");
    server.put("src.bin", &data(7, 70_000));
    std::fs::write(bed.local("up.bin"), data(8, 70_000)).unwrap();
    let wrong = sha256(b"something else");

    let (mut down, route) = bed.task("down", ("a", "src.bin"), ("local", "dst.bin"));
    down.checksum = Some(wrong.clone());
    let r = engine.run(&down, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::ChecksumMismatch), "{r:?}");
    assert!(
        !r.retryable,
        "the source is not what the producer expected: not retried"
    );
    assert_eq!(r.attempts, 1);
    assert_eq!(r.checksum, None);
    assert!(!bed.local("dst.bin").exists(), "no destination file");
    assert!(
        temp_files(bed.storage.path()).is_empty(),
        "no temporary file"
    );

    let (mut up, route) = bed.task("up", ("local", "up.bin"), ("a", "in/up.bin"));
    up.checksum = Some(wrong);
    let r = engine.run(&up, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::ChecksumMismatch), "{r:?}");
    assert_eq!(r.attempts, 1);
    assert!(
        !server.root().join("in/up.bin").exists(),
        "no remote destination"
    );
    assert!(
        temp_files(server.root()).is_empty(),
        "no remote temporary file"
    );

    // The right digest (either case in the task) passes.
    let (mut down, route) = bed.task("down-ok", ("a", "src.bin"), ("local", "dst.bin"));
    let mut right = sha256(&data(7, 70_000));
    right.value = right.value.to_ascii_uppercase();
    down.checksum =
        Some(Checksum::from_task_field(&serde_json::to_value(&right).unwrap()).unwrap());
    let r = engine.run(&down, &route).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        std::fs::read(bed.local("dst.bin")).unwrap(),
        data(7, 70_000)
    );
}

/// The server's own digest (issue 21, item 3): what each server of the test bed offers,
/// asked through a session. proftpd with mod_digest and the test bed's pyftpdlib offer
/// HASH and the X commands; vsftpd, pure-ftpd and stock pyftpdlib offer none.
#[tokio::test]
async fn each_server_gives_its_digest_where_it_offers_one() {
    use ftp_pooler_config::TransferSettings;
    use ftp_pooler_transfer::{FtpSession, SessionOptions};
    let content = data(3, 300_000);
    for (kind, options, offers) in [
        (FtpKind::Proftpd, &["digests"][..], true),
        (FtpKind::Pyftpdlib, &["digests"][..], true),
        (FtpKind::Proftpd, &[][..], false),
        (FtpKind::Vsftpd, &[][..], false),
        (FtpKind::PureFtpd, &[][..], false),
        (FtpKind::Pyftpdlib, &[][..], false),
    ] {
        let server = FtpServer::start_with(kind, false, options);
        server.put("d/f.bin", &content);
        let conn = server.connection();
        let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
        let mut s = FtpSession::connect(&conn, None, opts).await.unwrap();
        let label = format!("{} {options:?}", kind.name());
        for want in [sha256(&content), md5(&content)] {
            assert_eq!(s.offers_digest(want.algorithm), offers, "{label}");
            let got = s
                .server_checksum("d/f.bin", want.algorithm, content.len() as u64)
                .await
                .unwrap();
            assert_eq!(got, offers.then(|| want.clone()), "{label}");
            // Twice: HASH's algorithm is selected once, then kept.
            let again = s
                .server_checksum("/d/f.bin", want.algorithm, content.len() as u64)
                .await
                .unwrap();
            assert_eq!(again, got, "{label}");
        }
        // A missing file is no digest and leaves the session usable.
        let missing = s
            .server_checksum("d/none.bin", ChecksumAlgorithm::Sha256, 0)
            .await
            .unwrap();
        assert_eq!(missing, None, "{label}");
        assert!(!s.is_poisoned(), "{label}");
        assert!(!s.offers_digest(ChecksumAlgorithm::Xxh3), "{label}");
        s.noop().await.unwrap();
    }
}

/// With an honest server's digest both ways the transfers pass; a server whose digest
/// never matches fails them with CHECKSUM_MISMATCH, retried (`retryable: true`, every
/// attempt spent), and puts nothing in place on either side.
#[tokio::test]
async fn a_server_digest_that_differs_is_a_retried_mismatch_and_nothing_is_put_in_place() {
    for (kind, options, honest) in [
        (FtpKind::Proftpd, "digests", true),
        (FtpKind::Pyftpdlib, "digests", true),
        (FtpKind::Pyftpdlib, "lie", false),
    ] {
        let label = format!("{} {options}", kind.name());
        let server = FtpServer::start_with(kind, false, &[options]);
        for checksum in ["sha256", "md5"] {
            let bed = bed(&server, checksum);
            let engine = bed.engine("a");
            let down_data = data(11, 2_000_000);
            let up_data = data(12, 2_000_000);
            server.put("src.bin", &down_data);
            std::fs::write(bed.local("up.bin"), &up_data).unwrap();
            let (down, route) = bed.task("down", ("a", "src.bin"), ("local", "dst.bin"));
            let r = engine.run(&down, &route).await;
            let (up, up_route) = bed.task("up", ("local", "up.bin"), ("a", "in/up.bin"));
            let u = engine.run(&up, &up_route).await;
            if honest {
                assert!(r.is_success(), "{label} {checksum}: {r:?}");
                assert_eq!(std::fs::read(bed.local("dst.bin")).unwrap(), down_data);
                assert!(u.is_success(), "{label} {checksum}: {u:?}");
                assert_eq!(
                    std::fs::read(server.root().join("in/up.bin")).unwrap(),
                    up_data
                );
                continue;
            }
            for (r, what) in [(&r, "download"), (&u, "upload")] {
                assert_eq!(
                    r.error_code,
                    Some(ErrorCode::ChecksumMismatch),
                    "{label} {checksum} {what}: {r:?}"
                );
                assert!(r.retryable, "{label} {what}: the server's digest: retried");
                assert_eq!(r.attempts, 4, "{label} {what}: 1 + max_retries");
            }
            assert!(!bed.local("dst.bin").exists(), "{label}: no destination");
            assert!(
                !server.root().join("in/up.bin").exists(),
                "{label}: no remote destination"
            );
            assert!(temp_files(bed.storage.path()).is_empty(), "{label}");
            assert!(temp_files(server.root()).is_empty(), "{label}");
        }
    }
}
