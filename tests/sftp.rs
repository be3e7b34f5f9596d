//! SFTP connections (issue 22) at the engine, against the test bed's OpenSSH sshd (an
//! SFTP-only user chrooted to its root, files under `/files`): downloads and uploads with
//! the same guarantees as FTP (temporary name and rename, size checked, digest on the
//! result, nothing partial left), logins by password, by key and by passphrase-protected
//! key, host keys verified by fingerprint and by known_hosts, and the error codes: a
//! wrong host key is HOST_KEY_MISMATCH at once (no retry, nothing sent), a wrong password
//! AUTH_ERROR, a missing file FILE_NOT_FOUND.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ftp_pooler_config::Settings;
use ftp_pooler_contract::{Checksum, ChecksumAlgorithm, ErrorCode};
use ftp_pooler_testbed::engine_bed::{data, temp_files, EngineBed};
use ftp_pooler_testbed::SftpServer;
use md5::Digest as _;

fn sha256(bytes: &[u8]) -> Checksum {
    Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: format!("{:x}", sha2::Sha256::digest(bytes)),
    }
}

/// A connections.ini section `[s]` for `server`, logging in and verifying as `extra` says.
fn section(server: &SftpServer, extra: &str) -> String {
    format!(
        "[s]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\ntimeout = 10\n{extra}",
        server.port,
        server.user()
    )
}

fn engine_bed(section: &str) -> EngineBed {
    let mut settings = Settings::default();
    settings.kafka.max_retries = 2;
    settings.kafka.base_backoff_ms = 50;
    settings.kafka.max_backoff_ms = 100;
    settings.pool.prewarm_enabled = false;
    EngineBed::new(settings, section)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_both_ways_with_every_login_and_host_key_check() {
    let server = SftpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).unwrap();
    let passphrase = dir.path().join("passphrase");
    std::fs::write(
        &passphrase,
        format!("{}\n", ftp_pooler_testbed::SSH_KEY_PASSPHRASE),
    )
    .unwrap();
    let logins = [
        format!(
            "password = {}\nhost_key_fingerprint = {}\n",
            server.password(),
            server.host_key_fingerprint()
        ),
        format!(
            "private_key_file = {}\nknown_hosts_file = {}\n",
            server.client_key().display(),
            known_hosts.display()
        ),
        format!(
            "private_key_file = {}\nprivate_key_passphrase_file = {}\nhost_key_fingerprint = {}\n",
            server.client_key_encrypted().display(),
            passphrase.display(),
            server.host_key_fingerprint()
        ),
    ];
    for (n, login) in logins.iter().enumerate() {
        let bed = engine_bed(&section(&server, login));
        let engine = bed.engine("s");
        let sizes = [0usize, 1, 70_000, 3_000_000];
        let mut tasks = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            server.put(&format!("out{n}/f{i}"), &data(i, size));
            tasks.push(bed.task(
                &format!("down{n}-{i}"),
                ("s", &format!("files/out{n}/f{i}")),
                ("local", &format!("d/f{i}")),
            ));
            std::fs::create_dir_all(bed.local("u")).unwrap();
            std::fs::write(bed.local(&format!("u/f{i}")), data(i + 50, size)).unwrap();
            tasks.push(bed.task(
                &format!("up{n}-{i}"),
                ("local", &format!("u/f{i}")),
                ("s", &format!("/files/in{n}/sub/f{i}")),
            ));
        }
        let results = ftp_pooler_testbed::engine_bed::run_all(&engine, &tasks).await;
        for (i, &size) in sizes.iter().enumerate() {
            let down = &results[2 * i];
            assert!(down.is_success(), "login {n}: {down:?}");
            assert_eq!(down.bytes_transferred, size as u64);
            assert_eq!(down.checksum, Some(sha256(&data(i, size))));
            assert_eq!(
                std::fs::read(bed.local(&format!("d/f{i}"))).unwrap(),
                data(i, size)
            );
            let up = &results[2 * i + 1];
            assert!(up.is_success(), "login {n}: {up:?}");
            assert_eq!(up.checksum, Some(sha256(&data(i + 50, size))));
            assert_eq!(
                std::fs::read(server.root().join(format!("in{n}/sub/f{i}"))).unwrap(),
                data(i + 50, size)
            );
        }
        // Uploading over an existing file replaces it (posix-rename).
        std::fs::write(bed.local("u/f1"), b"replaced").unwrap();
        let (task, route) = bed.task("again", ("local", "u/f1"), ("s", "/files/in0/sub/f1"));
        let r = engine.run(&task, &route).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(
            std::fs::read(server.root().join("in0/sub/f1")).unwrap(),
            b"replaced"
        );
        assert!(temp_files(&server.root()).is_empty(), "login {n}");
        assert!(temp_files(bed.storage.path()).is_empty(), "login {n}");
        let stats = engine.pool().stats();
        assert!(stats.logins >= 1 && stats.logins <= 10, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_fails_fast_and_other_failures_have_their_codes() {
    let server = SftpServer::start();
    server.put("here.bin", b"here");
    // A fingerprint that is not the server's: HOST_KEY_MISMATCH, once, not retried.
    let wrong = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    assert_ne!(wrong, server.host_key_fingerprint());
    let bed = engine_bed(&section(
        &server,
        &format!(
            "password = {}\nhost_key_fingerprint = {wrong}\n",
            server.password()
        ),
    ));
    let engine = bed.engine("s");
    let (task, route) = bed.task("hk", ("s", "files/here.bin"), ("local", "here.bin"));
    let t0 = Instant::now();
    let r = engine.run(&task, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::HostKeyMismatch), "{r:?}");
    assert!(!r.retryable);
    assert_eq!(r.attempts, 1);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "fast: {:?}",
        t0.elapsed()
    );
    assert!(!bed.local("here.bin").exists());
    // The server saw no login attempt: no password went out.
    let log = server.output();
    assert!(
        !log.contains("Failed password") && !log.contains("Accepted"),
        "{log}"
    );
    // A known_hosts file that does not list the server: the same.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("known_hosts");
    std::fs::write(
        &other,
        format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", server.port),
    )
    .unwrap();
    let bed2 = engine_bed(&section(
        &server,
        &format!(
            "password = {}\nknown_hosts_file = {}\n",
            server.password(),
            other.display()
        ),
    ));
    let r = bed2.engine("s").run(&task, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::HostKeyMismatch), "{r:?}");

    // A wrong password: AUTH_ERROR, not retried.
    let bed3 = engine_bed(&section(
        &server,
        &format!(
            "password = not-the-password\nhost_key_fingerprint = {}\n",
            server.host_key_fingerprint()
        ),
    ));
    let r = bed3.engine("s").run(&task, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::AuthError), "{r:?}");
    assert_eq!(r.attempts, 1);

    // A missing file: FILE_NOT_FOUND; nowhere to write: PERMISSION_DENIED.
    let bed4 = engine_bed(&section(
        &server,
        &format!(
            "password = {}\nhost_key_fingerprint = {}\n",
            server.password(),
            server.host_key_fingerprint()
        ),
    ));
    let engine = Arc::new(bed4.engine("s"));
    let (task, route) = bed4.task("nf", ("s", "files/nothing.bin"), ("local", "n.bin"));
    let r = engine.run(&task, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::FileNotFound), "{r:?}");
    std::fs::write(bed4.local("up.bin"), b"x").unwrap();
    let (task, route) = bed4.task("pd", ("local", "up.bin"), ("s", "/not-writable.bin"));
    let r = engine.run(&task, &route).await;
    assert_eq!(r.error_code, Some(ErrorCode::PermissionDenied), "{r:?}");
    assert!(!r.retryable);
    assert!(temp_files(bed4.storage.path()).is_empty());
}
