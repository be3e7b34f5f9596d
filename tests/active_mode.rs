//! Active mode (`passive = false`, DESIGN.md section 9) through the transfer engine: many
//! concurrent uploads and downloads on each real server kind, plain and explicit FTPS
//! (pyftpdlib's active mode hung about one transfer in ten with concurrent sessions before
//! the test bed guarded it); and, on scripted servers, what no real server does on
//! demand: a server that never connects back (a retried `TRANSFER_TIMEOUT` or
//! `CONNECTION_ERROR`, no partial or temporary file), `active_port_range` and
//! `active_address` as the server sees them, and the fallback from EPRT to PORT. And the
//! whole service (`ftp-pooler run`, Kafka in and out) with its connections in active mode.

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_config::TransferSettings;
use ftp_pooler_config::{FtpConnection, PortRange, Secret, Settings, TlsMode};
use ftp_pooler_contract::{ErrorCode, Status};
use ftp_pooler_testbed::engine_bed::{data, run_all, temp_files, EngineBed};
use ftp_pooler_testbed::{
    announced_address, free_port_range, scripted_active_server, FtpKind, FtpServer,
};
use ftp_pooler_transfer::{FtpSession, SessionOptions};

/// A bed with connection `a` (`section`, in active mode) and a local storage.
fn active_bed(section: &str, sessions: u64, retries: u64) -> EngineBed {
    let mut settings = Settings::default();
    settings.kafka.max_retries = retries;
    settings.kafka.base_backoff_ms = 50;
    settings.kafka.max_backoff_ms = 200;
    settings.transfer.transfer_timeout_seconds = 60;
    settings.transfer.connect_timeout_seconds = 10;
    settings.pool.prewarm_enabled = false;
    settings.pool.max_sessions_per_connection = sessions;
    EngineBed::new(settings, &format!("{section}passive = false\n"))
}

/// `FILES` uploads, then `FILES` downloads of what was uploaded, all at once on 4 active
/// sessions; each on its first attempt, every byte compared, no temporary file left on
/// either side.
async fn concurrent_round_trips(kind: FtpKind, tls: bool) {
    const FILES: usize = 60;
    let server = FtpServer::start(kind, tls);
    let label = format!("{} tls={tls}", kind.name());
    let bed = active_bed(&server.ini_section("a"), 4, 2);
    let engine = bed.engine("a");
    let size = |i: usize| [0, 1, 4096, 70_000, 300_000][i % 5];
    let mut ups = Vec::new();
    for i in 0..FILES {
        let path = format!("up/{i}.bin");
        std::fs::create_dir_all(bed.local("up")).unwrap();
        std::fs::write(bed.local(&path), data(i, size(i))).unwrap();
        ups.push(bed.task(
            &format!("u{i}"),
            ("local", &path),
            ("a", &format!("/in/{i}.bin")),
        ));
    }
    let started = Instant::now();
    for r in run_all(&engine, &ups).await {
        assert_eq!(r.status, Status::Success, "{label}: {r:?}");
        // A hung transfer would succeed on its retry: it must not have needed one.
        assert_eq!(r.attempts, 1, "{label}: {r:?}");
    }
    for i in 0..FILES {
        let on_server = std::fs::read(server.root().join(format!("in/{i}.bin"))).unwrap();
        assert!(on_server == data(i, size(i)), "{label}: uploaded file {i}");
    }
    let downs: Vec<_> = (0..FILES)
        .map(|i| {
            bed.task(
                &format!("d{i}"),
                ("a", &format!("/in/{i}.bin")),
                ("local", &format!("down/{i}.bin")),
            )
        })
        .collect();
    for r in run_all(&engine, &downs).await {
        assert_eq!(r.status, Status::Success, "{label}: {r:?}");
        // A hung transfer would succeed on its retry: it must not have needed one.
        assert_eq!(r.attempts, 1, "{label}: {r:?}");
    }
    for i in 0..FILES {
        let got = std::fs::read(bed.local(&format!("down/{i}.bin"))).unwrap();
        assert!(got == data(i, size(i)), "{label}: downloaded file {i}");
    }
    assert!(temp_files(bed.storage.path()).is_empty(), "{label}");
    assert!(temp_files(server.root()).is_empty(), "{label}");
    eprintln!(
        "{label}: {} active transfers on 4 sessions in {:?}",
        2 * FILES,
        started.elapsed()
    );
}

#[tokio::test]
async fn vsftpd_concurrent_active_transfers() {
    concurrent_round_trips(FtpKind::Vsftpd, false).await;
    concurrent_round_trips(FtpKind::Vsftpd, true).await;
}

#[tokio::test]
async fn pyftpdlib_concurrent_active_transfers() {
    concurrent_round_trips(FtpKind::Pyftpdlib, false).await;
    concurrent_round_trips(FtpKind::Pyftpdlib, true).await;
}

#[tokio::test]
async fn pure_ftpd_concurrent_active_transfers() {
    concurrent_round_trips(FtpKind::PureFtpd, false).await;
    concurrent_round_trips(FtpKind::PureFtpd, true).await;
}

#[tokio::test]
async fn proftpd_concurrent_active_transfers() {
    concurrent_round_trips(FtpKind::Proftpd, false).await;
    concurrent_round_trips(FtpKind::Proftpd, true).await;
}

/// A connections.ini section for a scripted server (plain, `timeout` seconds).
fn scripted_section(port: u16, timeout: u64) -> String {
    format!("[a]\ntype = ftp\nhost = 127.0.0.1\nport = {port}\nuser = u\npass = p\ntimeout = {timeout}\n")
}

/// A server that accepts EPRT and the RETR (150) but never connects back: each attempt
/// times out waiting for the data connection; the task fails after its retries with a
/// retryable `TRANSFER_TIMEOUT`, and no partial or temporary file is left. A server that
/// says so (425 instead of 150) fails the same way with `CONNECTION_ERROR`.
#[tokio::test]
async fn a_server_that_never_connects_back_fails_retryably_and_leaves_no_file() {
    let silent = scripted_active_server(false, |_, control, _| {
        use std::io::Write;
        control
            .write_all(b"150 Opening data connection.\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_secs(4));
        "425 Could not open data connection.\r\n".into()
    });
    let bed = active_bed(&scripted_section(silent.port, 1), 2, 2);
    let engine = bed.engine("a");
    let task = bed.task("t1", ("a", "/remote/f.bin"), ("local", "in/f.bin"));
    let r = engine.run(&task.0, &task.1).await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert_eq!(r.error_code, Some(ErrorCode::TransferTimeout), "{r:?}");
    assert!(r.retryable, "{r:?}");
    assert_eq!(r.attempts, 3, "one attempt and two retries: {r:?}");
    assert!(!bed.local("in/f.bin").exists());
    assert!(temp_files(bed.storage.path()).is_empty());
    assert_eq!(
        silent.announcements().len(),
        3,
        "{:?}",
        silent.announcements()
    );

    let refusing = scripted_active_server(false, |_, _, _| {
        "425 Could not open data connection.\r\n".into()
    });
    let bed = active_bed(&scripted_section(refusing.port, 5), 2, 2);
    let engine = bed.engine("a");
    std::fs::create_dir_all(bed.local("out")).unwrap();
    std::fs::write(bed.local("out/f.bin"), data(1, 5000)).unwrap();
    for task in [
        bed.task("t2", ("a", "/remote/f.bin"), ("local", "in/f.bin")),
        bed.task("t3", ("local", "out/f.bin"), ("a", "/remote/g.bin")),
    ] {
        let r = engine.run(&task.0, &task.1).await;
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert_eq!(r.error_code, Some(ErrorCode::ConnectionError), "{r:?}");
        assert!(r.retryable && r.attempts == 3, "{r:?}");
    }
    assert!(!bed.local("in/f.bin").exists());
    assert!(temp_files(bed.storage.path()).is_empty());
    assert_eq!(
        std::fs::read(bed.local("out/f.bin")).unwrap(),
        data(1, 5000)
    );
}

/// A session on a scripted server, in active mode with these settings.
async fn active_session(port: u16, address: Option<&str>, ports: Option<PortRange>) -> FtpSession {
    let conn = FtpConnection {
        host: "127.0.0.1".into(),
        port,
        user: "anyone".into(),
        password: Secret::new("any"),
        passive: false,
        active_address: address.map(|a| a.parse().unwrap()),
        active_port_range: ports,
        timeout_seconds: Some(5),
        tls: TlsMode::None,
        tls_ca_file: None,
        tls_insecure: false,
        max_sessions: None,
    };
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    FtpSession::connect(&conn, None, opts).await.unwrap()
}

/// The scripted servers' RETR: connect to the announced port on 127.0.0.1 (whatever
/// address was announced: a NAT in front of the client), send 1000 bytes.
fn serve_retr(verb: &str, control: &mut std::net::TcpStream, to: std::net::SocketAddr) -> String {
    use std::io::Write;
    assert_eq!(verb, "RETR");
    let mut data = std::net::TcpStream::connect(("127.0.0.1", to.port())).unwrap();
    control.write_all(b"150 Here it comes.\r\n").unwrap();
    data.write_all(&[7u8; 1000]).unwrap();
    drop(data);
    "226 Done.\r\n".into()
}

/// `active_port_range`: every listener the server is told of is in the range (several
/// transfers, one session), and `active_address` is what the server is told, while the
/// listener is bound on the control connection's own address.
#[tokio::test]
async fn the_server_is_told_a_port_of_the_range_and_the_configured_address() {
    let server = scripted_active_server(false, serve_retr);
    let first = free_port_range(3);
    let range = PortRange::new(first, first + 2).unwrap();
    let mut s = active_session(server.port, Some("127.0.0.9"), Some(range)).await;
    for _ in 0..8 {
        let mut buf = Vec::new();
        assert_eq!(s.download("/f", &mut buf).await.unwrap(), 1000);
        assert_eq!(buf, [7u8; 1000]);
    }
    let told = server.announcements();
    assert_eq!(told.len(), 8, "{told:?}");
    for line in &told {
        assert!(line.starts_with("EPRT |1|127.0.0.9|"), "{line}");
        let addr = announced_address(line).unwrap();
        assert!(range.contains(addr.port()), "{line} outside {range}");
    }
    assert!(!s.is_poisoned());
}

/// A server that refuses EPRT gets PORT, and the session remembers: one EPRT, then PORT
/// only.
#[tokio::test]
async fn a_server_refusing_eprt_gets_port_for_the_rest_of_the_session() {
    let server = scripted_active_server(true, serve_retr);
    let mut s = active_session(server.port, None, None).await;
    for _ in 0..3 {
        let mut buf = Vec::new();
        assert_eq!(s.download("/f", &mut buf).await.unwrap(), 1000);
    }
    let told = server.announcements();
    assert_eq!(told.len(), 4, "{told:?}");
    assert!(told[0].starts_with("EPRT |1|127.0.0.1|"), "{told:?}");
    for line in &told[1..] {
        assert!(line.starts_with("PORT 127,0,0,1,"), "{told:?}");
        assert!(announced_address(line).unwrap().port() >= 1024);
    }
}

/// The real service, its two FTP connections (vsftpd and pyftpdlib) in active mode: 400
/// mixed tasks through Kafka, exactly one result each, every file's bytes, no temporary
/// file, offsets committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_in_active_mode_gives_every_task_exactly_one_result() {
    use ftp_pooler_testbed::scenario::{clean_run_of, Scenario};
    let mut sc = Scenario::new(Path::new(env!("CARGO_BIN_EXE_ftp-pooler")), 400).await;
    sc.active = true;
    assert!(sc.connections_ini().contains("passive = false"));
    clean_run_of(&sc, &[]).await;
}
