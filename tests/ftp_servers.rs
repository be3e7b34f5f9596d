//! The project's FTP code against real FTP servers: vsftpd, pyftpdlib, pure-ftpd and
//! proftpd, each plain and with explicit FTPS (vsftpd and proftpd require TLS session
//! reuse on the data channel); each in passive mode and in active mode (`passive = false`: EPRT,
//! the server connects back). Log in, upload, rename, size, download, delete; and the
//! failures that map to error codes.
//! Many transfers in a row on one plain session, on each server, check the data
//! connections opened ahead and the downloads pipelined with the next EPSV.
//! Two scripted (fake) servers show what no real one shows on demand: where a plain
//! upload's bytes go relative to the 150, and a refused upload of a large file.

use ftp_pooler_config::{FtpConnection, Secret, TlsMode, TransferSettings};
use ftp_pooler_contract::ErrorCode;
use ftp_pooler_testbed::{scripted_server, FtpKind, FtpServer};
use ftp_pooler_transfer::tls::TlsContext;
use ftp_pooler_transfer::{FtpSession, SessionOptions};
use sha2::{Digest, Sha256};

fn payload(len: usize, seed: u8) -> Vec<u8> {
    // Not text: CR/LF bytes would be mangled by an ASCII-mode transfer.
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

async fn session(server: &FtpServer) -> FtpSession {
    session_in(server, Data::Passive).await
}

/// How a session's data connections are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    Passive,
    Active,
}

async fn session_in(server: &FtpServer, data: Data) -> FtpSession {
    let mut conn = server.connection();
    conn.passive = data == Data::Passive;
    let tls = (conn.tls != TlsMode::None).then(|| TlsContext::for_connection(&conn).unwrap());
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    FtpSession::connect(&conn, tls.as_ref(), opts)
        .await
        .unwrap_or_else(|e| panic!("{} (tls={}) login: {e}", server.kind.name(), server.tls))
}

/// Upload to a temporary name in a new nested directory, rename into place, check SIZE,
/// download it back, and download a file placed on the server; all on one session.
async fn round_trip(kind: FtpKind, tls: bool) {
    round_trip_in(kind, tls, Data::Passive).await
}

async fn round_trip_in(kind: FtpKind, tls: bool, data: Data) {
    let server = FtpServer::start(kind, tls);
    let label = format!("{} tls={tls} {data:?}", kind.name());
    let mut s = session_in(&server, data).await;

    let up = payload(300_000, 7);
    s.mkdir_all("/in/deep/er").await.unwrap();
    let sent = s
        .upload(&mut up.as_slice(), "/in/deep/er/.file.bin.tmp")
        .await
        .unwrap();
    assert_eq!(sent, up.len() as u64, "{label}");
    s.rename("/in/deep/er/.file.bin.tmp", "/in/deep/er/file.bin")
        .await
        .unwrap();
    assert_eq!(
        s.size("/in/deep/er/file.bin").await.unwrap(),
        up.len() as u64,
        "{label}"
    );
    let on_disk = std::fs::read(server.root().join("in/deep/er/file.bin")).unwrap();
    assert_eq!(sha(&on_disk), sha(&up), "{label}: uploaded bytes");
    assert!(
        !server.root().join("in/deep/er/.file.bin.tmp").exists(),
        "{label}"
    );

    let mut back = Vec::new();
    let got = s.download("in/deep/er/file.bin", &mut back).await.unwrap(); // relative path
    assert_eq!(got, up.len() as u64, "{label}");
    assert_eq!(sha(&back), sha(&up), "{label}: downloaded bytes");

    let placed = payload(70_000, 99);
    server.put("/out/a.bin", &placed);
    for _ in 0..3 {
        let mut buf = Vec::new();
        s.download("/out/a.bin", &mut buf).await.unwrap();
        assert_eq!(sha(&buf), sha(&placed), "{label}: reused session downloads");
    }
    let mut empty = Vec::new();
    server.put("/out/empty", b"");
    assert_eq!(
        s.download("/out/empty", &mut empty).await.unwrap(),
        0,
        "{label}"
    );

    // A small file goes out whole, with its end, before the 150 (plain sessions).
    let small = payload(4096, 5);
    let small_sent = s
        .upload(&mut small.as_slice(), "/in/deep/er/small.tmp")
        .await
        .unwrap();
    assert_eq!(small_sent, 4096, "{label}");
    assert_eq!(
        std::fs::read(server.root().join("in/deep/er/small.tmp")).unwrap(),
        small,
        "{label}: small upload"
    );
    s.delete("/in/deep/er/small.tmp").await.unwrap();
    let empty_sent = s
        .upload(&mut [].as_slice(), "/in/deep/er/empty.tmp")
        .await
        .unwrap();
    assert_eq!(empty_sent, 0, "{label}");
    assert_eq!(s.size("/in/deep/er/empty.tmp").await.unwrap(), 0, "{label}");
    s.delete("/in/deep/er/empty.tmp").await.unwrap();

    s.delete("/in/deep/er/file.bin").await.unwrap();
    assert!(
        !server.root().join("in/deep/er/file.bin").exists(),
        "{label}"
    );
    // A failed RNFR (plain sessions pipeline RNFR and RNTO): nothing is renamed, the
    // server's refusal of the RNTO is read too, and the channel stays in step.
    let err = s
        .rename("/in/missing.tmp", "/in/missing.bin")
        .await
        .unwrap_err();
    assert!(!server.root().join("in/missing.bin").exists(), "{label}");
    assert!(!s.is_poisoned(), "{label}: {err}");
    assert_eq!(
        s.size("/out/a.bin").await.unwrap(),
        placed.len() as u64,
        "{label}: the next reply is the next command's"
    );
    s.noop().await.unwrap();
    assert!(!s.is_poisoned(), "{label}");
    s.quit().await;
}

/// Many uploads and downloads in turn on one plain passive session, each checked byte for
/// byte: the data connections opened ahead (with an upload's SIZE, and with a download's
/// RETR on servers that hold commands during a transfer) carry the right file every time.
async fn transfers_in_a_row(kind: FtpKind, pipelines_downloads: bool) {
    let server = FtpServer::start(kind, false);
    let label = kind.name();
    let mut s = session(&server).await;
    assert_eq!(s.pipelines_downloads(), pipelines_downloads, "{label}");
    let files: Vec<Vec<u8>> = [0usize, 1, 4096, 70_000, 300_000, 5, 65_536, 1_000_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| payload(len, i as u8))
        .collect();
    for (i, data) in files.iter().enumerate() {
        let tmp = format!("/up/.f{i}.tmp");
        if i == 0 {
            s.mkdir_all("/up").await.unwrap();
        }
        s.upload(&mut data.as_slice(), &tmp).await.unwrap();
        assert_eq!(
            s.size(&tmp).await.unwrap(),
            data.len() as u64,
            "{label} {i}"
        );
        assert!(
            s.has_data_ahead(),
            "{label}: SIZE opened the next data connection"
        );
        s.rename(&tmp, &format!("/up/f{i}")).await.unwrap();
    }
    for round in 0..2 {
        for (i, data) in files.iter().enumerate() {
            let mut got = Vec::new();
            let n = s.download(&format!("/up/f{i}"), &mut got).await.unwrap();
            assert_eq!(n, data.len() as u64, "{label} round {round} file {i}");
            assert_eq!(sha(&got), sha(data), "{label} round {round} file {i}");
            assert!(!s.is_poisoned(), "{label}");
            assert_eq!(s.has_data_ahead(), pipelines_downloads, "{label}");
        }
    }
    // Downloads and uploads interleaved, the data connection ahead used by either.
    for (i, data) in files.iter().enumerate() {
        let mut got = Vec::new();
        s.download(&format!("/up/f{i}"), &mut got).await.unwrap();
        assert_eq!(sha(&got), sha(data), "{label} interleaved {i}");
        s.upload(&mut data.as_slice(), &format!("/up/g{i}"))
            .await
            .unwrap();
        assert_eq!(
            s.size(&format!("/up/g{i}")).await.unwrap(),
            data.len() as u64
        );
        let stored = std::fs::read(server.root().join(format!("up/g{i}"))).unwrap();
        assert_eq!(sha(&stored), sha(data), "{label} interleaved upload {i}");
    }
    assert!(
        s.pipelines_downloads() == pipelines_downloads && !s.is_poisoned(),
        "{label}"
    );
    s.noop().await.unwrap();
    s.quit().await;
}

#[tokio::test]
async fn vsftpd_transfers_in_a_row_with_data_connections_ahead() {
    transfers_in_a_row(FtpKind::Vsftpd, true).await;
}

#[tokio::test]
async fn pure_ftpd_transfers_in_a_row_with_data_connections_ahead() {
    transfers_in_a_row(FtpKind::PureFtpd, true).await;
}

#[tokio::test]
async fn proftpd_transfers_in_a_row_with_data_connections_ahead() {
    transfers_in_a_row(FtpKind::Proftpd, true).await;
}

/// pyftpdlib runs a command as soon as it arrives, and an EPSV during a download closes
/// that download's data connection: downloads are not pipelined there (uploads' SIZE is).
#[tokio::test]
async fn pyftpdlib_transfers_in_a_row_without_pipelined_downloads() {
    transfers_in_a_row(FtpKind::Pyftpdlib, false).await;
}

#[tokio::test]
async fn vsftpd_plain() {
    round_trip(FtpKind::Vsftpd, false).await;
}

#[tokio::test]
async fn vsftpd_explicit_ftps_with_required_session_reuse() {
    round_trip(FtpKind::Vsftpd, true).await;
}

#[tokio::test]
async fn pyftpdlib_plain() {
    round_trip(FtpKind::Pyftpdlib, false).await;
}

#[tokio::test]
async fn pyftpdlib_explicit_ftps() {
    round_trip(FtpKind::Pyftpdlib, true).await;
}

#[tokio::test]
async fn pure_ftpd_plain() {
    round_trip(FtpKind::PureFtpd, false).await;
}

#[tokio::test]
async fn pure_ftpd_explicit_ftps() {
    round_trip(FtpKind::PureFtpd, true).await;
}

#[tokio::test]
async fn proftpd_plain() {
    round_trip(FtpKind::Proftpd, false).await;
}

#[tokio::test]
async fn vsftpd_active_plain() {
    round_trip_in(FtpKind::Vsftpd, false, Data::Active).await;
}

#[tokio::test]
async fn vsftpd_active_explicit_ftps_with_required_session_reuse() {
    round_trip_in(FtpKind::Vsftpd, true, Data::Active).await;
}

#[tokio::test]
async fn pyftpdlib_active_plain() {
    round_trip_in(FtpKind::Pyftpdlib, false, Data::Active).await;
}

#[tokio::test]
async fn pyftpdlib_active_explicit_ftps() {
    round_trip_in(FtpKind::Pyftpdlib, true, Data::Active).await;
}

#[tokio::test]
async fn pure_ftpd_active_plain() {
    round_trip_in(FtpKind::PureFtpd, false, Data::Active).await;
}

#[tokio::test]
async fn pure_ftpd_active_explicit_ftps() {
    round_trip_in(FtpKind::PureFtpd, true, Data::Active).await;
}

#[tokio::test]
async fn proftpd_active_plain() {
    round_trip_in(FtpKind::Proftpd, false, Data::Active).await;
}

#[tokio::test]
async fn proftpd_explicit_ftps_with_required_session_reuse() {
    round_trip(FtpKind::Proftpd, true).await;
}

#[tokio::test]
async fn proftpd_active_explicit_ftps_with_required_session_reuse() {
    round_trip_in(FtpKind::Proftpd, true, Data::Active).await;
}

/// In active mode too, a refused transfer (550) discards the session and writes nothing.
#[tokio::test]
async fn active_missing_file_is_file_not_found() {
    for kind in FtpKind::ALL {
        let server = FtpServer::start(kind, false);
        let mut s = session_in(&server, Data::Active).await;
        let mut sink = Vec::new();
        let err = s.download("/no/such/file", &mut sink).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FileNotFound, "{}: {err}", kind.name());
        assert!(sink.is_empty());
        assert!(s.is_poisoned());
    }
}

#[tokio::test]
async fn wrong_password_is_auth_error() {
    for kind in FtpKind::ALL {
        let server = FtpServer::start(kind, false);
        let mut conn = server.connection();
        conn.password = ftp_pooler_config::Secret::new("wrong-password");
        let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
        let err = FtpSession::connect(&conn, None, opts).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::AuthError, "{}: {err}", kind.name());
        assert!(!err.message.contains("wrong-password"), "{}", err.message);
    }
}

#[tokio::test]
async fn missing_file_is_file_not_found_and_keeps_nothing() {
    for kind in FtpKind::ALL {
        let server = FtpServer::start(kind, false);
        let mut s = session(&server).await;
        let mut sink = Vec::new();
        let err = s.download("/no/such/file", &mut sink).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FileNotFound, "{}: {err}", kind.name());
        assert!(sink.is_empty());
        // A failed transfer discards its session; a 550 to SIZE does not.
        assert!(s.is_poisoned());
        let mut s = session(&server).await;
        let err = s.size("/no/such/file").await.unwrap_err();
        assert!(!s.is_poisoned());
        assert!(
            matches!(err.code, ErrorCode::FileNotFound),
            "{}: {err}",
            kind.name()
        );
    }
}

#[tokio::test]
async fn untrusted_certificate_fails_unless_insecure_is_chosen() {
    let server = FtpServer::start(FtpKind::Vsftpd, true);
    let mut conn = server.connection();
    conn.tls_ca_file = None; // the test CA is not among the system roots
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    let ctx = TlsContext::for_connection(&conn).unwrap();
    let err = FtpSession::connect(&conn, Some(&ctx), opts.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ConnectionError, "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");

    conn.tls_insecure = true;
    let ctx = TlsContext::for_connection(&conn).unwrap();
    let mut s = FtpSession::connect(&conn, Some(&ctx), opts).await.unwrap();
    server.put("/x", b"hello");
    let mut buf = Vec::new();
    s.download("/x", &mut buf).await.unwrap();
    assert_eq!(buf, b"hello");
}

#[tokio::test]
async fn plain_login_to_a_tls_only_server_is_refused() {
    for kind in [FtpKind::Vsftpd, FtpKind::PureFtpd] {
        let server = FtpServer::start(kind, true);
        let mut conn = server.connection();
        conn.tls = TlsMode::None;
        let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
        let err = FtpSession::connect(&conn, None, opts).await.unwrap_err();
        assert!(
            matches!(err.code, ErrorCode::AuthError | ErrorCode::ConnectionError),
            "{}: {err}",
            kind.name()
        );
    }
}

#[tokio::test]
async fn a_dead_server_is_a_connection_error_and_poisons_the_session() {
    let mut server = FtpServer::start(FtpKind::Pyftpdlib, false);
    let mut s = session(&server).await;
    server.stop();
    let mut buf = Vec::new();
    let err = s.download("/x", &mut buf).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConnectionError, "{err}");
    assert!(s.is_poisoned());
    let refused = s.noop().await.unwrap_err();
    assert!(refused.message.contains("no longer usable"), "{refused}");
    let conn = server.connection();
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    let err = FtpSession::connect(&conn, None, opts).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConnectionError, "{err}");
}

#[tokio::test]
async fn remote_paths_cannot_inject_commands() {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let mut s = session(&server).await;
    let mut buf = Vec::new();
    let err = s.download("/a\r\nDELE /b", &mut buf).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PathNotAllowed);
    assert!(!s.is_poisoned());
}

#[tokio::test]
async fn vsftpd_implicit_ftps() {
    let server = FtpServer::start_implicit();
    let conn = server.connection();
    assert_eq!(conn.tls, TlsMode::Implicit);
    let ctx = TlsContext::for_connection(&conn).unwrap();
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    let mut s = FtpSession::connect(&conn, Some(&ctx), opts).await.unwrap();
    let data = payload(50_000, 3);
    s.upload(&mut data.as_slice(), "/i.tmp").await.unwrap();
    s.rename("/i.tmp", "/i.bin").await.unwrap();
    let mut back = Vec::new();
    s.download("/i.bin", &mut back).await.unwrap();
    assert_eq!(sha(&back), sha(&data));
}

/// A session on a scripted server (plain, 10 s timeouts).
async fn scripted_session(port: u16) -> FtpSession {
    let conn = FtpConnection {
        host: "127.0.0.1".into(),
        port,
        user: "anyone".into(),
        password: Secret::new("any"),
        passive: true,
        active_address: None,
        active_port_range: None,
        timeout_seconds: Some(10),
        tls: TlsMode::None,
        tls_ca_file: None,
        tls_insecure: false,
        max_sessions: None,
    };
    let opts = SessionOptions::for_connection(&conn, &TransferSettings::default());
    FtpSession::connect(&conn, None, opts).await.unwrap()
}

/// A plain upload of a small file sends the command, the bytes and their end together:
/// the server finds the whole file on the data connection before it sends its 150 (one
/// round trip fewer than waiting for the 150). Fails if the client waits for the 150.
#[tokio::test]
async fn a_small_plain_upload_is_on_the_wire_before_the_150() {
    let port = scripted_server(|verb, control, data| {
        use std::io::{Read, Write};
        assert_eq!(verb, "STOR");
        let (mut data, _) = data.accept().unwrap();
        data.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let mut got = Vec::new();
        let ended = data.read_to_end(&mut got).is_ok();
        control.write_all(b"150 Ok to send data.\r\n").unwrap();
        if ended && got == payload(4096, 3) {
            "226 Transfer complete.\r\n".into()
        } else {
            format!(
                "451 only {} bytes, ended={ended}, before the 150\r\n",
                got.len()
            )
        }
    });
    let mut s = scripted_session(port).await;
    let up = payload(4096, 3);
    let sent = s.upload(&mut up.as_slice(), "/f.tmp").await;
    assert_eq!(sent.unwrap(), 4096);
    assert!(!s.is_poisoned());
}

/// Bytes go ahead of the 150 only while the socket takes them without waiting: a server
/// that refuses the STOR of a large file (and never reads its data connection) gets its
/// refusal read at once, not a transfer stalled until the timeout.
#[tokio::test]
async fn a_refused_large_plain_upload_fails_with_the_refusal_not_a_stall() {
    let port = scripted_server(|_, _, data| {
        // Keep the data listener open, and never accept: the client's bytes pile up.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(30));
            drop(data);
        });
        "553 Could not create file.\r\n".into()
    });
    let mut s = scripted_session(port).await;
    let up = payload(16 << 20, 4);
    let err = s.upload(&mut up.as_slice(), "/big.tmp").await.unwrap_err();
    assert_ne!(err.code, ErrorCode::TransferTimeout, "{err}");
    assert!(err.message.contains("553"), "{err}");
    assert!(s.is_poisoned());
}
