//! The session pool and transfer engine (DESIGN.md sections 3 and 5) against real
//! servers (vsftpd and pyftpdlib): limits counted on the server side, refusals as one
//! connection too many, a server killed mid-transfer, idle timeouts, FTPS with TLS
//! session reuse, an EPSV-refusing server, local confinement, and a 2 GiB file through
//! the real service with the transfer worker's peak memory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_config::Settings;
use ftp_pooler_contract::{ErrorCode, TransferResult};
use ftp_pooler_testbed::engine_bed::{data, run_all, temp_files, EngineBed};
use ftp_pooler_testbed::{scripted_server, FtpKind, FtpServer};
use ftp_pooler_transfer::Engine;

/// Server-side view of a port: ESTABLISHED connections whose local port is the server's
/// control port, sampled every 2 ms from /proc/net/tcp.
struct ServerSide {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    peers: Arc<Mutex<HashSet<u16>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerSide {
    fn watch(port: u16) -> ServerSide {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let (s, m, p) = (stop.clone(), max.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut now = 0;
                for (local, remote) in tcp_sockets(ESTABLISHED) {
                    if port_of(&local) == port {
                        now += 1;
                        p.lock().unwrap().insert(port_of(&remote));
                    }
                }
                m.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        ServerSide {
            stop,
            max,
            peers,
            thread: Some(thread),
        }
    }

    /// (most connections at once, distinct connections seen)
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.max.load(Ordering::Relaxed),
            self.peers.lock().unwrap().len(),
        )
    }
}

/// A bed with `servers` as connections `a`, `b`, ... and `local`; `tweak` adjusts the
/// settings and the ftp sections.
fn bed(servers: &[&FtpServer], tweak: impl FnOnce(&mut Settings, &mut String)) -> EngineBed {
    let mut ini = String::new();
    for (i, s) in servers.iter().enumerate() {
        ini.push_str(&s.ini_section(&((b'a' + i as u8) as char).to_string()));
        ini.push('\n');
    }
    let mut settings = Settings::default();
    settings.kafka.max_retries = 5;
    settings.kafka.base_backoff_ms = 100;
    settings.kafka.max_backoff_ms = 1000;
    settings.transfer.transfer_timeout_seconds = 60;
    settings.transfer.connect_timeout_seconds = 10;
    settings.pool.prewarm_enabled = false;
    tweak(&mut settings, &mut ini);
    EngineBed::new(settings, &ini)
}

/// Puts `n` files of `size` bytes at `{dir}/f{i}.bin` on `server`, downloads each to the
/// same local path through `engine`, and checks that every task succeeded with the
/// server's bytes; returns the results.
async fn download_all(
    bed: &EngineBed,
    server: &FtpServer,
    engine: &Engine,
    dir: &str,
    n: usize,
    size: usize,
) -> Vec<TransferResult> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let path = format!("{dir}/f{i}.bin");
        server.put(&path, &data(i, size));
        tasks.push(bed.task(&format!("{dir}{i}"), ("a", &path), ("local", &path)));
    }
    let results = run_all(engine, &tasks).await;
    assert_success(&results);
    for i in 0..n {
        assert_eq!(
            std::fs::read(bed.local(&format!("{dir}/f{i}.bin"))).unwrap(),
            data(i, size)
        );
    }
    results
}

fn assert_success(results: &[TransferResult]) {
    for r in results {
        assert!(
            r.is_success(),
            "{}: {:?} {:?}",
            r.task_id,
            r.error_code,
            r.error_message
        );
    }
}

/// 200 downloads and 200 uploads through one pool of 4.
async fn pool_of_four(kind: FtpKind) {
    let server = FtpServer::start(kind, false);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 4);
    let engine = bed.engine("a");
    let mut tasks = Vec::new();
    for i in 0..200 {
        server.put(&format!("pool/src/f{i}.bin"), &data(i, 1000 + i * 37));
        tasks.push(bed.task(
            &format!("d{i}"),
            ("a", &format!("pool/src/f{i}.bin")),
            ("local", &format!("down/f{i}.bin")),
        ));
        let up = bed.local(&format!("up/f{i}.bin"));
        std::fs::create_dir_all(up.parent().unwrap()).unwrap();
        std::fs::write(&up, data(i + 1000, 500 + i * 53)).unwrap();
        tasks.push(bed.task(
            &format!("u{i}"),
            ("local", &format!("up/f{i}.bin")),
            ("a", &format!("/pool/dst/f{i}.bin")),
        ));
    }
    let side = ServerSide::watch(server.port);
    let results = run_all(&engine, &tasks).await;
    let (max, distinct) = side.finish();
    assert_success(&results);
    for i in 0..200 {
        assert_eq!(
            std::fs::read(bed.local(&format!("down/f{i}.bin"))).unwrap(),
            data(i, 1000 + i * 37)
        );
        assert_eq!(
            std::fs::read(server.root().join(format!("pool/dst/f{i}.bin"))).unwrap(),
            data(i + 1000, 500 + i * 53)
        );
    }
    let stats = engine.pool().stats();
    eprintln!("{}: 400 tasks, pool of 4: at most {max} sessions on the server at once, {distinct} connections seen there, {} logins", kind.name(), stats.logins);
    assert!(max <= 4, "{max} sessions at once on the server");
    assert!(max >= 2, "the pool ran tasks in parallel");
    assert!(
        stats.logins <= 8 && distinct <= 8,
        "sessions are reused: {} logins, {distinct} server connections",
        stats.logins
    );
    assert!(temp_files(bed.storage.path()).is_empty() && temp_files(server.root()).is_empty());
}

#[tokio::test]
async fn vsftpd_400_tasks_through_a_pool_of_4_use_at_most_4_sessions() {
    pool_of_four(FtpKind::Vsftpd).await;
}

#[tokio::test]
async fn pyftpdlib_400_tasks_through_a_pool_of_4_use_at_most_4_sessions() {
    pool_of_four(FtpKind::Pyftpdlib).await;
}

#[tokio::test]
async fn a_server_allowing_two_connections_gets_fewer_sessions_and_no_task_fails() {
    let server = FtpServer::start_with(FtpKind::Vsftpd, false, &["max_per_ip=2"]);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 8);
    let engine = bed.engine("a");
    let results = download_all(&bed, &server, &engine, "lim", 150, 20_000).await;
    let stats = engine.pool().stats();
    let retried = results.iter().filter(|r| r.attempts > 1).count();
    eprintln!(
        "max_per_ip=2, pool of 8: {} refusals, cap now {}, {} logins, {retried} of 150 tasks needed a retry",
        stats.refused, stats.cap, stats.logins
    );
    assert!(stats.refused >= 1, "the server did refuse");
    // Halved on each refusal, then one up every 8 x cap successes: a fast run can win
    // back some of it before it ends, but not the whole of it.
    assert!(stats.cap < 8, "the limit came down: {stats:?}");
}

#[tokio::test]
async fn a_server_killed_mid_transfer_and_restarted_leaves_no_partial_file() {
    // pyftpdlib serves from one process: killing it cuts every transfer.
    let mut server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = bed(&[&server], |s, _| {
        s.pool.max_sessions_per_connection = 4;
        // This test is about the pool and partial files; the breaker has its own.
        s.circuit_breaker.failure_threshold = 1000;
    });
    let engine = bed.engine("a");
    const SIZE: usize = 48 * 1024 * 1024;
    let mut tasks = Vec::new();
    for i in 0..4 {
        server.put(&format!("big/f{i}.bin"), &data(i, SIZE));
        tasks.push(bed.task(
            &format!("k{i}"),
            ("a", &format!("big/f{i}.bin")),
            ("local", &format!("big/f{i}.bin")),
        ));
        let up = bed.local(&format!("out/u{i}.bin"));
        std::fs::create_dir_all(up.parent().unwrap()).unwrap();
        std::fs::write(&up, data(i + 10, SIZE)).unwrap();
        tasks.push(bed.task(
            &format!("u{i}"),
            ("local", &format!("out/u{i}.bin")),
            ("a", &format!("up/u{i}.bin")),
        ));
    }
    let run = run_all(&engine, &tasks);
    let chaos = async {
        // Kill once data is flowing both ways: temporary files with bytes on each side.
        let start = Instant::now();
        let growing = |root: &Path| {
            temp_files(root)
                .iter()
                .any(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        };
        while !(growing(bed.storage.path()) && growing(server.root())) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no transfers started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.stop();
        let partial: Vec<PathBuf> = (0..4)
            .map(|i| bed.local(&format!("big/f{i}.bin")))
            .chain((0..4).map(|i| server.root().join(format!("up/u{i}.bin"))))
            .filter(|p| p.exists() && std::fs::metadata(p).unwrap().len() != SIZE as u64)
            .collect();
        assert!(partial.is_empty(), "partial destination files: {partial:?}");
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.restart();
    };
    let (results, ()) = tokio::join!(run, chaos);
    assert_success(&results);
    let retried = results.iter().filter(|r| r.attempts > 1).count();
    eprintln!(
        "server killed mid-transfer: {retried} of 8 tasks retried, all succeeded; pool: {:?}",
        engine.pool().stats()
    );
    assert!(retried >= 2);
    for i in 0..4 {
        assert!(
            std::fs::read(bed.local(&format!("big/f{i}.bin"))).unwrap() == data(i, SIZE),
            "f{i} differs"
        );
        assert!(
            std::fs::read(server.root().join(format!("up/u{i}.bin"))).unwrap()
                == data(i + 10, SIZE),
            "u{i} differs"
        );
    }
    assert!(
        temp_files(bed.storage.path()).is_empty(),
        "local temporary files left"
    );
    assert!(
        temp_files(server.root()).is_empty(),
        "remote temporary files left"
    );
    assert!(
        engine.pool().stats().discarded >= 1,
        "dead sessions were discarded"
    );
}

#[tokio::test]
async fn pre_warmed_sessions_are_open_before_the_first_task() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 4);
    let engine = bed.engine("a");
    let side = ServerSide::watch(server.port);
    let opened = engine.pool().prewarm(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (max, seen) = side.finish();
    assert_eq!(opened, 2);
    let stats = engine.pool().stats();
    assert_eq!(
        (stats.open, stats.idle, stats.busy, stats.disconnected),
        (2, 2, 0, 2),
        "{stats:?}"
    );
    assert_eq!(
        max, 2,
        "two sessions on the server ({seen} connections seen, pool {stats:?})"
    );
    server.put("w.bin", b"w");
    let (t, r) = bed.task("w", ("a", "w.bin"), ("local", "w.bin"));
    assert!(engine.run(&t, &r).await.is_success());
    assert_eq!(
        engine.pool().stats().logins,
        2,
        "the task used a pre-warmed session"
    );
}

#[tokio::test]
async fn a_session_idle_past_the_server_timeout_is_replaced_not_reported() {
    let server = FtpServer::start_with(FtpKind::Vsftpd, false, &["idle_session_timeout=2"]);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 2);
    let engine = bed.engine("a");
    server.put("idle/f.bin", b"idle");
    let (t1, r1) = bed.task("i1", ("a", "idle/f.bin"), ("local", "idle/1.bin"));
    assert!(engine.run(&t1, &r1).await.is_success());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (t2, r2) = bed.task("i2", ("a", "idle/f.bin"), ("local", "idle/2.bin"));
    let r = engine.run(&t2, &r2).await;
    assert!(r.is_success(), "{:?}", r.error_message);
    assert_eq!(r.attempts, 1, "the stale session was replaced before use");
    assert_eq!(engine.pool().stats().logins, 2);
}

#[tokio::test]
async fn explicit_ftps_with_tls_session_reuse_required_downloads_and_uploads() {
    // The test bed's FTPS vsftpd has require_ssl_reuse=YES.
    let server = FtpServer::start(FtpKind::Vsftpd, true);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 2);
    let engine = bed.engine("a");
    let mut tasks = Vec::new();
    for i in 0..10 {
        server.put(&format!("tls/f{i}.bin"), &data(i, 70_000));
        tasks.push(bed.task(
            &format!("d{i}"),
            ("a", &format!("tls/f{i}.bin")),
            ("local", &format!("tls/f{i}.bin")),
        ));
        tasks.push(bed.task(
            &format!("u{i}"),
            ("local", &format!("tls/f{i}.bin")),
            ("a", &format!("tls/back/f{i}.bin")),
        ));
    }
    // Downloads first, then the uploads of what came down.
    let (downs, ups): (Vec<_>, Vec<_>) = tasks
        .into_iter()
        .partition(|(t, _)| t.task_id.starts_with('d'));
    assert_success(&run_all(&engine, &downs).await);
    assert_success(&run_all(&engine, &ups).await);
    for i in 0..10 {
        assert_eq!(
            std::fs::read(server.root().join(format!("tls/back/f{i}.bin"))).unwrap(),
            data(i, 70_000)
        );
    }
    assert!(engine.pool().stats().logins <= 2);
}

#[tokio::test]
async fn a_server_refusing_epsv_is_used_through_pasv() {
    let server = FtpServer::start_with(FtpKind::Pyftpdlib, false, &["noepsv"]);
    let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 1);
    let engine = bed.engine("a");
    server.put("p/f.bin", &data(1, 10_000));
    let tasks = vec![
        bed.task("d", ("a", "p/f.bin"), ("local", "p/f.bin")),
        bed.task("d2", ("a", "p/f.bin"), ("local", "p/g.bin")),
    ];
    assert_success(&run_all(&engine, &tasks).await);
    let (t, r) = bed.task("u", ("local", "p/f.bin"), ("a", "p/up.bin"));
    assert!(engine.run(&t, &r).await.is_success());
    assert_eq!(
        std::fs::read(server.root().join("p/up.bin")).unwrap(),
        data(1, 10_000)
    );
    assert_eq!(
        engine.pool().stats().logins,
        1,
        "the EPSV refusal does not cost the session"
    );
}

#[tokio::test]
async fn local_paths_cannot_leave_the_base_path() {
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let outside = tempfile::tempdir().unwrap();
    let bed = bed(&[&server], |_, _| {});
    std::fs::create_dir_all(bed.local("in")).unwrap();
    std::os::unix::fs::symlink(outside.path(), bed.local("in/escape")).unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), bed.local("in/secret-link")).unwrap();
    server.put("x.bin", b"payload");
    let engine = bed.engine("a");
    let outside_escape = format!("/../../..{}/dropped", outside.path().display());
    let cases = [
        bed.task("p1", ("a", "x.bin"), ("local", "../../etc/passwd")),
        bed.task("p2", ("a", "x.bin"), ("local", outside_escape.as_str())),
        bed.task("p3", ("a", "x.bin"), ("local", "in/escape/dropped")),
        bed.task("p4", ("a", "x.bin"), ("local", "in/secret-link")),
        bed.task("p5", ("local", "in/secret-link"), ("a", "stolen.bin")),
        bed.task("p6", ("local", "in/escape/secret"), ("a", "stolen2.bin")),
    ];
    for (t, r) in &cases {
        let res = engine.run(t, r).await;
        assert_eq!(
            res.error_code,
            Some(ErrorCode::PathNotAllowed),
            "{}: {:?}",
            t.task_id,
            res.error_message
        );
        assert_eq!(res.attempts, 1, "not retried");
    }
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secret"], "nothing written outside");
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"secret"
    );
    assert!(
        !server.root().join("stolen.bin").exists() && !server.root().join("stolen2.bin").exists()
    );
    // `/etc/passwd` means <base_path>/etc/passwd.
    let (t, r) = bed.task("p7", ("a", "x.bin"), ("local", "/etc/passwd"));
    assert!(engine.run(&t, &r).await.is_success());
    assert_eq!(std::fs::read(bed.local("etc/passwd")).unwrap(), b"payload");
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_while_a_server_is_down() {
    let mut server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = bed(&[&server], |s, _| {
        s.kafka.max_retries = 0;
        s.circuit_breaker.failure_threshold = 3;
        s.circuit_breaker.timeout_seconds = 2;
        s.circuit_breaker.success_threshold = 1;
    });
    server.put("cb/f.bin", b"cb");
    let engine = bed.engine("a");
    server.stop();
    let mut messages = Vec::new();
    for i in 0..6 {
        let (t, r) = bed.task(&format!("c{i}"), ("a", "cb/f.bin"), ("local", "cb/f.bin"));
        let res = engine.run(&t, &r).await;
        assert_eq!(res.error_code, Some(ErrorCode::ConnectionError));
        messages.push(res.error_message.unwrap());
    }
    assert!(
        messages[..3].iter().all(|m| !m.contains("circuit breaker")),
        "{messages:?}"
    );
    assert!(
        messages[3..].iter().all(|m| m.contains("circuit breaker")),
        "{messages:?}"
    );
    assert_eq!(
        engine.breaker_state(),
        ftp_pooler_transfer::BreakerState::Open
    );
    server.restart();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (t, r) = bed.task("c-after", ("a", "cb/f.bin"), ("local", "cb/f.bin"));
    assert!(
        engine.run(&t, &r).await.is_success(),
        "half-open lets a call through"
    );
    assert_eq!(
        engine.breaker_state(),
        ftp_pooler_transfer::BreakerState::Closed
    );
}

#[tokio::test]
async fn a_server_that_never_greets_is_a_connection_error_after_the_connect_timeout() {
    // A real TCP listener that accepts and stays silent (a hung server).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = bed(&[&server], |s, ini| {
        s.kafka.max_retries = 0;
        s.transfer.connect_timeout_seconds = 1;
        *ini = ini.replace(
            &format!("port = {}", server.port),
            &format!("port = {port}"),
        );
    });
    let engine = bed.engine("a");
    let (t, r) = bed.task("hung", ("a", "x.bin"), ("local", "x.bin"));
    let t0 = Instant::now();
    let res = engine.run(&t, &r).await;
    assert_eq!(
        res.error_code,
        Some(ErrorCode::ConnectionError),
        "{:?}",
        res.error_message
    );
    assert!(res.error_message.unwrap().contains("no answer within 1 s"));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stalled_data_connection_is_a_transfer_timeout_and_leaves_no_temp_file() {
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = bed(&[&server], |s, ini| {
        s.kafka.max_retries = 0;
        *ini = ini.replace("[a]\n", "[a]\ntimeout = 2\n");
    });
    server.put("stall/big.bin", &data(3, 64 * 1024 * 1024));
    let engine = bed.engine("a");
    let (t, r) = bed.task("stall", ("a", "stall/big.bin"), ("local", "stall/big.bin"));
    let pid = nix::unistd::Pid::from_raw(server.pid().unwrap() as i32);
    let stall = async {
        let start = Instant::now();
        while !temp_files(bed.storage.path())
            .iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no transfer started"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    };
    let (res, ()) = tokio::join!(engine.run(&t, &r), stall);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(
        res.error_code,
        Some(ErrorCode::TransferTimeout),
        "{:?}",
        res.error_message
    );
    assert!(res.retryable);
    assert!(
        temp_files(bed.storage.path()).is_empty(),
        "temporary file left"
    );
    assert!(
        !bed.local("stall/big.bin").exists(),
        "no partial destination"
    );
}

#[tokio::test]
async fn without_reuse_every_task_logs_in() {
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = bed(&[&server], |s, _| {
        s.pool.max_sessions_per_connection = 4;
        s.pool.reuse_sessions = false;
    });
    let engine = bed.engine("a");
    download_all(&bed, &server, &engine, "nr", 20, 100).await;
    let stats = engine.pool().stats();
    assert_eq!(stats.logins, 20, "{stats:?}");
    assert_eq!(stats.idle, 0);
}

#[tokio::test]
async fn per_file_fsync_commits_every_download() {
    // `transfer.fsync: per_file` (every other test runs the default group commit).
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let bed = bed(&[&server], |s, _| {
        s.pool.max_sessions_per_connection = 4;
        s.transfer.fsync = "per_file".into();
    });
    let engine = bed.engine("a");
    download_all(&bed, &server, &engine, "pf", 20, 5000).await;
    assert!(
        temp_files(bed.storage.path()).is_empty(),
        "temporary file left"
    );
}

/// A bed whose connection `a` is the scripted server on `port` (`server` only lends its
/// connection section), with `retries` retries 10 ms apart.
fn scripted_bed(port: u16, server: &FtpServer, retries: u64) -> EngineBed {
    bed(&[server], |s, ini| {
        s.kafka.max_retries = retries;
        s.kafka.base_backoff_ms = 10;
        *ini = ini.replace(
            &format!("port = {}", server.port),
            &format!("port = {port}"),
        );
    })
}

#[tokio::test]
async fn a_download_shorter_than_the_server_announced_fails_and_leaves_nothing() {
    let port = scripted_server(|_, control, data| {
        use std::io::Write;
        let (mut data, _) = data.accept().unwrap();
        control
            .write_all(b"150 Opening BINARY mode data connection for x (4096 bytes).\r\n")
            .unwrap();
        data.write_all(&[7u8; 10]).unwrap();
        "226 Transfer complete.\r\n".to_string()
    });
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = scripted_bed(port, &server, 0);
    let engine = bed.engine("a");
    let (t, r) = bed.task("short", ("a", "x.bin"), ("local", "x.bin"));
    let res = engine.run(&t, &r).await;
    assert_eq!(res.error_code, Some(ErrorCode::IoError), "{res:?}");
    let message = res.error_message.unwrap();
    assert!(
        message.contains("the server announced 4096 bytes and sent 10"),
        "{message}"
    );
    assert!(!bed.local("x.bin").exists(), "no partial destination");
    assert!(
        temp_files(bed.storage.path()).is_empty(),
        "temporary file left"
    );
}

#[tokio::test]
async fn a_server_that_fails_reset_downloads_gets_a_fin_from_then_on() {
    // A server that reads its data connection to the end before it replies, and takes
    // a reset for a failed transfer (426).
    let port = scripted_server(|_, control, data| {
        use std::io::{Read, Write};
        let (mut data, _) = data.accept().unwrap();
        control.write_all(b"150 here it comes\r\n").unwrap();
        data.write_all(b"0123456789").unwrap();
        data.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        match data.read_to_end(&mut rest) {
            Ok(_) => "226 Transfer complete.\r\n".to_string(),
            Err(_) => "426 Failure reading network stream.\r\n".to_string(),
        }
    });
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = scripted_bed(port, &server, 2);
    let engine = bed.engine("a");
    let (t, r) = bed.task("strict1", ("a", "x.bin"), ("local", "x1.bin"));
    let first = engine.run(&t, &r).await;
    assert_eq!(
        first.status,
        ftp_pooler_contract::Status::Success,
        "{first:?}"
    );
    assert_eq!(
        first.attempts, 2,
        "the reset attempt failed, the retry closed with a FIN"
    );
    let (t, r) = bed.task("strict2", ("a", "x.bin"), ("local", "x2.bin"));
    let second = engine.run(&t, &r).await;
    assert_eq!(
        second.status,
        ftp_pooler_contract::Status::Success,
        "{second:?}"
    );
    assert_eq!(second.attempts, 1, "no reset any more");
    assert_eq!(std::fs::read(bed.local("x2.bin")).unwrap(), b"0123456789");
}

/// Sockets in TIME_WAIT whose local port is in `ports` (the server's side: the test bed's
/// passive ports lie outside the kernel's ephemeral range, so no client socket has them),
/// as (local, remote) address pairs.
fn time_wait_on(ports: &std::ops::RangeInclusive<u16>) -> HashSet<(String, String)> {
    tcp_sockets(TIME_WAIT)
        .into_iter()
        .filter(|(local, _)| ports.contains(&port_of(local)))
        .collect()
}

/// The kernel's codes of two TCP states in /proc/net/tcp.
const ESTABLISHED: &str = "01";
const TIME_WAIT: &str = "06";

/// The (local, remote) addresses, as /proc/net/tcp and tcp6 write them, of every socket
/// of this network namespace in `state`.
fn tcp_sockets(state: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 4 && f[3] == state {
                found.push((f[1].to_string(), f[2].to_string()));
            }
        }
    }
    found
}

/// The port of an address as /proc/net/tcp writes it ("0100007F:1F90").
fn port_of(addr: &str) -> u16 {
    u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap()
}

#[tokio::test]
async fn plain_downloads_leave_no_time_wait_on_the_servers_passive_ports() {
    // The server closes a download's data connection first; the session resets it after
    // EOF so that the server's socket does not linger 60 s in TIME_WAIT (session.rs).
    // Every server of the test bed takes the reset for what it is: a 226 each time.
    // The transfer stage's debug lines go to the test's output, shown if it fails: why a
    // session went (a retried attempt, or a pipelined EPSV left unanswered) is said there
    // only. (It failed once in a clean-clone CI on proftpd, 5 logins, not reproduced.)
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter("ftp_pooler_transfer=debug")
            .with_test_writer()
            .finish(),
    );
    for kind in FtpKind::ALL {
        let server = FtpServer::start(kind, false);
        let bed = bed(&[&server], |s, _| s.pool.max_sessions_per_connection = 4);
        let engine = bed.engine("a");
        // The ports may still hold TIME_WAIT sockets of an earlier server (they last
        // 60 s): only new ones count.
        let ports = server.passive_ports();
        let before = time_wait_on(&ports);
        download_all(&bed, &server, &engine, "tw", 100, 3000).await;
        let new: Vec<_> = time_wait_on(&ports).difference(&before).cloned().collect();
        assert!(
            new.is_empty(),
            "{}: new TIME_WAIT sockets on {ports:?}: {new:?}",
            kind.name()
        );
        // A failed download (a server that took the reset badly) costs its session.
        let stats = engine.pool().stats();
        assert!(
            stats.logins <= 4,
            "{}: {} logins for 4 sessions: a session was lost ({stats:?})",
            kind.name(),
            stats.logins
        );
    }
}

/// Two runs of the same task at once (a task produced twice, or delivered again while
/// its first run goes on) share its temporary name: the second waits until the first is
/// done with it (renamed into place), then runs in full. Without that, the second's
/// create truncated the file the first was about to rename into place.
#[tokio::test]
async fn two_runs_of_one_task_at_once_take_turns_with_its_temporary_file() {
    static IN_RETR: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    let port = scripted_server(|_, control, data| {
        use std::io::Write;
        let now = IN_RETR.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        let (mut data, _) = data.accept().unwrap();
        control
            .write_all(b"150 Opening BINARY mode data connection for x (8 bytes).\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        data.write_all(b"01234567").unwrap();
        drop(data);
        IN_RETR.fetch_sub(1, Ordering::SeqCst);
        "226 Transfer complete.\r\n".to_string()
    });
    let server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let bed = scripted_bed(port, &server, 0);
    let engine = bed.engine("a");
    let (t, r) = bed.task("twice", ("a", "x.bin"), ("local", "x.bin"));
    let (first, second) = tokio::join!(engine.run(&t, &r), engine.run(&t, &r));
    assert!(
        first.is_success() && second.is_success(),
        "{first:?} {second:?}"
    );
    assert_eq!(
        MOST.load(Ordering::SeqCst),
        1,
        "the second run waited for the first"
    );
    assert_eq!(std::fs::read(bed.local("x.bin")).unwrap(), b"01234567");
    assert!(temp_files(bed.storage.path()).is_empty());
}
