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
