//! SFTP connections (issue 22) at the engine, against the test bed's OpenSSH sshd (an
//! SFTP-only user chrooted to its root, files under `/files`): downloads and uploads with
//! the same guarantees as FTP (temporary name and rename, size checked, digest on the
//! result, nothing partial left), logins by password, by key and by passphrase-protected
//! key, host keys verified by fingerprint and by known_hosts, and the error codes: a
//! wrong host key is HOST_KEY_MISMATCH at once (no retry, nothing sent), a wrong password
//! AUTH_ERROR, a missing file FILE_NOT_FOUND, a server that stops answering mid-transfer
//! TRANSFER_TIMEOUT (retried on a fresh session).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftp_pooler_config::Settings;
use ftp_pooler_contract::{Checksum, ChecksumAlgorithm, ErrorCode};
use ftp_pooler_testbed::engine_bed::{data, temp_files, when_temp_reaches, EngineBed};
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

/// A connections.ini section `[s]` for `server` reached through `link` (the link
/// simulator, on 127.0.0.2), logging in by password, with the given `timeout`.
fn section_via(
    server: &SftpServer,
    link: &ftp_pooler_testbed::link::LinkProxy,
    timeout: u64,
) -> String {
    format!(
        "[s]\ntype = sftp\nhost = 127.0.0.2\nport = {}\nuser = {}\ntimeout = {timeout}\npassword = {}\nhost_key_fingerprint = {}\n",
        link.addr().port(),
        server.user(),
        server.password(),
        server.host_key_fingerprint()
    )
}

fn engine_bed(section: &str) -> EngineBed {
    engine_bed_retrying(section, 2)
}

/// As [`engine_bed`], with `retries` retries of a failed attempt.
fn engine_bed_retrying(section: &str, retries: u64) -> EngineBed {
    let mut settings = Settings::default();
    settings.kafka.max_retries = retries;
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
        // Tests only: any host key (the worker warns at every connect).
        format!(
            "password = {}\ninsecure_accept_any_host_key = true\n",
            server.password()
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

/// The pipeline's guarantees hold for SFTP (the service end to end, Kafka in and out):
/// the SFTP connection's transfer worker is killed (SIGKILL) mid-run; every task still
/// gets its result, every file is whole where it landed, and no temporary file is left
/// on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sftp_worker_loses_nothing_and_leaves_nothing_partial() {
    use ftp_pooler_testbed::engine_bed::TEMP_SUFFIX;
    use ftp_pooler_testbed::service::{files_ending_with, produce, Service, Topics, Watcher};
    const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
    const N: usize = 120;
    let server = SftpServer::start();
    let storage = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = format!(
        "{}\n[local]\ntype = local\nbase_path = {}\n",
        section(
            &server,
            &format!(
                "password = {}\nhost_key_fingerprint = {}\nmax_sessions = 4\n",
                server.password(),
                server.host_key_fingerprint()
            )
        ),
        storage.path().display()
    );
    let size = |i: usize| {
        if i.is_multiple_of(10) {
            4_000_000
        } else {
            20_000
        }
    };
    let mut payloads = Vec::new();
    for i in 0..N {
        let id = format!("sftp-{i}");
        let task = if i % 2 == 0 {
            server.put(&format!("out/f{i}"), &data(i, size(i)));
            serde_json::json!({"task_id": id, "src_id": "s", "src_path": format!("/files/out/f{i}"),
                "dst_id": "local", "dst_path": format!("down/f{i}")})
        } else {
            std::fs::create_dir_all(storage.path().join("up")).unwrap();
            std::fs::write(storage.path().join(format!("up/f{i}")), data(i, size(i))).unwrap();
            serde_json::json!({"task_id": id, "src_id": "local", "src_path": format!("up/f{i}"),
                "dst_id": "s", "dst_path": format!("/files/in/f{i}")})
        };
        payloads.push((Some(id), serde_json::to_vec(&task).unwrap()));
    }
    let topics = Topics::create(2).await;
    let watcher = Watcher::start(&topics).await;
    let mut svc = Service::start(Path::new(EXE), dir.path(), &topics.config_yaml(""), &ini);
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    produce(&topics.tasks, &payloads).await;
    watcher
        .wait_for(
            Duration::from_secs(60),
            "some results",
            |s| s.results() >= 20,
            || svc.log(),
        )
        .await;
    let victim = pids["transfer:s"];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = watcher
        .wait_for(
            Duration::from_secs(120),
            "a result for every task",
            |s| s.by_task.len() >= N,
            || svc.log(),
        )
        .await;
    for i in 0..N {
        let id = format!("sftp-{i}");
        let results = &seen.by_task[&id];
        assert!(
            results.iter().all(|r| r.value["status"] == "success"),
            "{id}: {:?}",
            results.iter().map(|r| &r.value).collect::<Vec<_>>()
        );
        let landed = if i % 2 == 0 {
            storage.path().join(format!("down/f{i}"))
        } else {
            server.root().join(format!("in/f{i}"))
        };
        assert!(
            std::fs::read(&landed).unwrap() == data(i, size(i)),
            "{id} is whole"
        );
    }
    eprintln!(
        "SIGKILL of transfer:s after 20+ results: {N} tasks, {} results, {} duplicates",
        seen.results(),
        seen.duplicates()
    );
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    assert_ne!(after["transfer:s"], victim, "restarted");
    // The pool's routes and metrics show the SFTP connection as any other.
    let (code, health) = ftp_pooler_testbed::http::get_json(svc.api_port, "/pool/health").await;
    assert_eq!(code, 200);
    assert!(health.get("s").is_some(), "{health}");
    let (code, conns) = ftp_pooler_testbed::http::get_json(svc.api_port, "/pool/connections").await;
    assert_eq!(code, 200);
    assert!(conns.to_string().contains("\"type\":\"sftp\""), "{conns}");
    let (_, metrics) = ftp_pooler_testbed::http::request(svc.metrics_port, "GET", "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("ftp_sessions_total{connection_id=\"s\"}"),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let temps = loop {
        let mut temps = files_ending_with(storage.path(), TEMP_SUFFIX);
        temps.extend(files_ending_with(&server.root(), TEMP_SUFFIX));
        if temps.is_empty() || Instant::now() >= deadline {
            break temps;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

/// Resume over SFTP (issue 21 for issue 22): a 16 MiB download and upload through the link
/// simulator, the link cut at half way; the retry continues from where the cut left it
/// (a read offset; an append), the file is whole and its digest the whole file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sftp_transfer_resumes() {
    use ftp_pooler_testbed::link::{LinkProxy, LinkSpec};
    const SIZE: usize = 16 << 20;
    let server = SftpServer::start();
    let content = data(9, SIZE);
    let src = server.put("big.bin", &content);
    let f = std::fs::File::options().write(true).open(&src).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    for upload in [false, true] {
        let link = LinkProxy::start_tcp(
            std::net::SocketAddr::from(([127, 0, 0, 1], server.port)),
            LinkSpec::rtt_ms(0).with_bandwidth(16 << 20),
        );
        let bed = engine_bed(&section_via(&server, &link, 10));
        let (task, watch) = if upload {
            std::fs::write(bed.local("up.bin"), &content).unwrap();
            (
                bed.task("up", ("local", "up.bin"), ("s", "/files/in/up.bin")),
                server.root(),
            )
        } else {
            (
                bed.task("down", ("s", "/files/big.bin"), ("local", "big.bin")),
                bed.storage.path().to_path_buf(),
            )
        };
        let engine = Arc::new(bed.engine("s"));
        let e = engine.clone();
        let run = tokio::spawn(async move { e.run(&task.0, &task.1).await });
        let cut = when_temp_reaches(&run, &watch, SIZE as u64 / 2, || link.cut()).await;
        let r = run.await.unwrap();
        assert!(cut, "upload {upload}: ended before the cut: {r:?}");
        assert!(r.is_success(), "upload {upload}: {r:?}");
        assert_eq!(r.attempts, 2, "{r:?}");
        assert_eq!(r.checksum, Some(sha256(&content)));
        let landed = if upload {
            server.root().join("in/up.bin")
        } else {
            bed.local("big.bin")
        };
        assert!(std::fs::read(landed).unwrap() == content);
        let (up, down) = link.relayed();
        let moved = if upload { up } else { down };
        let again = moved.saturating_sub(SIZE as u64);
        eprintln!("sftp upload {upload}: {again} bytes sent again of {SIZE}");
        assert!(again < SIZE as u64 / 10, "{again} bytes sent again");
        assert_eq!(engine.resumes.get(), 1, "resumed once");
    }
}

/// The processes below `pid` (children, their children, ...), from /proc.
fn descendants(pid: u32) -> Vec<i32> {
    let mut parents = vec![pid as i32];
    let mut found = Vec::new();
    while let Some(parent) = parents.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": the comm may hold spaces; the rest follows ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(parent) {
                found.push(child);
                parents.push(child);
            }
        }
    }
    found
}

/// A server that stops answering mid-transfer (its session processes frozen with SIGSTOP;
/// sshd's listener goes on) fails the attempt with TRANSFER_TIMEOUT after the connection's
/// `timeout`, retryable, and leaves nothing partial in place; with retries left, the next
/// attempt logs in afresh (the frozen session is discarded) and the transfer succeeds.
/// Both ways: a read request and a write that get no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sftp_server_is_a_transfer_timeout_and_the_retry_succeeds() {
    use ftp_pooler_testbed::link::{LinkProxy, LinkSpec};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    const SIZE: usize = 8 << 20;
    let server = SftpServer::start();
    let content = data(4, SIZE);
    server.put("stall.bin", &content);
    for upload in [false, true] {
        for retries in [0, 2] {
            // Paced (8 MiB/s) so that the freeze comes mid-transfer.
            let link = LinkProxy::start_tcp(
                std::net::SocketAddr::from(([127, 0, 0, 1], server.port)),
                LinkSpec::rtt_ms(0).with_bandwidth(8 << 20),
            );
            let bed = engine_bed_retrying(&section_via(&server, &link, 2), retries);
            let name = format!("s{}{retries}", if upload { "u" } else { "d" });
            let (task, watch, landed) = if upload {
                std::fs::write(bed.local("up.bin"), &content).unwrap();
                (
                    bed.task(
                        &name,
                        ("local", "up.bin"),
                        ("s", &format!("/files/{name}.bin")),
                    ),
                    server.root(),
                    server.root().join(format!("{name}.bin")),
                )
            } else {
                (
                    bed.task(
                        &name,
                        ("s", "/files/stall.bin"),
                        ("local", &format!("{name}.bin")),
                    ),
                    bed.storage.path().to_path_buf(),
                    bed.local(&format!("{name}.bin")),
                )
            };
            let engine = Arc::new(bed.engine("s"));
            let e = engine.clone();
            let t0 = Instant::now();
            let run = tokio::spawn(async move { e.run(&task.0, &task.1).await });
            let mut frozen = Vec::new();
            when_temp_reaches(&run, &watch, SIZE as u64 / 4, || {
                frozen = descendants(server.pid().unwrap());
                for &p in &frozen {
                    kill(Pid::from_raw(p), Signal::SIGSTOP).ok();
                }
            })
            .await;
            let r = run.await.unwrap();
            let took = t0.elapsed();
            for &p in &frozen {
                kill(Pid::from_raw(p), Signal::SIGCONT).ok();
            }
            let what = format!("upload {upload}, {retries} retries");
            assert!(!frozen.is_empty(), "{what}: ended before the freeze: {r:?}");
            assert!(took >= Duration::from_secs(2), "{what}: {took:?} {r:?}");
            if retries == 0 {
                assert_eq!(
                    r.error_code,
                    Some(ErrorCode::TransferTimeout),
                    "{what}: {r:?}"
                );
                assert!(r.retryable, "{what}: {r:?}");
                assert_eq!(r.attempts, 1);
                assert!(took < Duration::from_secs(10), "{what}: {took:?}");
                assert!(!landed.exists(), "{what}: a partial file in place");
                let temps = temp_files(&watch);
                assert!(temps.is_empty(), "{what}: temporary files left: {temps:?}");
            } else {
                assert!(r.is_success(), "{what}: {r:?}");
                assert_eq!(r.attempts, 2, "{what}: {r:?}");
                assert_eq!(r.checksum, Some(sha256(&content)));
                assert!(std::fs::read(&landed).unwrap() == content, "{what}");
                assert!(
                    temp_files(&watch).is_empty(),
                    "{what}: temporary files left"
                );
            }
            eprintln!(
                "{what}: {:?} after {took:?}, {} attempts",
                r.error_code, r.attempts
            );
        }
    }
}
