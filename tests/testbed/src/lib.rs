//! ftp-pooler-testbed: real servers for the tests, on 127.0.0.1 and free ports.
//!
//! - [`broker()`]: one Tansu broker per test binary (shared; tests use unique topic and
//!   group names from [`unique`]), or the external cluster named by
//!   `FTP_POOLER_TEST_BOOTSTRAP` (so the suite runs against real Apache Kafka too).
//!   A test binary that kills the broker calls [`use_persistent_broker`] first: its Tansu
//!   keeps its data in a local S3 server and survives [`Broker::kill`] /
//!   [`Broker::start_again`].
//! - [`service`]: the real service (`ftp-pooler run`) as a child process, with the
//!   Kafka side of a client (produce tasks, watch results, committed offsets).
//! - [`FtpServer::start`]: a vsftpd, pyftpdlib, pure-ftpd or proftpd server, plain or
//!   explicit FTPS, accepting passive and active mode, with its own root directory, owned
//!   by the test and stopped when dropped. [`FtpServer::start_logging_transfers`] adds
//!   the server's transfer log (vsftpd and pyftpdlib), read by [`xferlog`].
//! - [`SftpServer::start`]: OpenSSH's sshd serving SFTP only, password and key logins,
//!   the test bed's host key, the user's files under `/files` of a chroot ([`sftp`]).
//!
//! - [`scripted_server`]: a fake FTP server, for behaviours no real server shows on
//!   demand (a short download, a refused upload); unit-level only.
//!   [`scripted_active_server`] does the same for active mode (a server that never
//!   connects back, one that refuses EPRT), and records what the client announced.
//! - [`link`]: a link simulator (this kernel has no netem): a TCP proxy on 127.0.0.2 that
//!   delays each direction by RTT/2, can cap bandwidth, and relays FTP data connections
//!   (227/229 replies, PORT/EPRT) or, for FTPS, a server's passive ports.
//! - [`promql`]: the metric names a PromQL expression reads (monitoring/'s rules and
//!   dashboard against a real scrape).
//!
//! Servers run through `scripts/testbed/serve` (the same script the dev stack uses), as
//! children of one long-lived spawner thread with `PR_SET_PDEATHSIG`, so they die with the
//! test process even when it is killed. Nothing here skips: a server that is not installed
//! or not reachable panics with what to do (`scripts/testbed/install.sh`).

pub mod engine_bed;
pub mod http;
mod kafka;
pub mod link;
mod process;
pub mod promql;
pub mod sasl_front;
pub mod scenario;
pub mod service;
pub mod sftp;
pub mod two_servers;
pub mod xferlog;

pub use kafka::{
    broker, use_persistent_broker, use_secured_broker, Broker, Security, SASL_PASSWORD, SASL_USER,
};
pub use process::{
    free_port, free_port_range, release_port_range, unique, workspace_root, ServerProcess,
};
pub use sftp::{
    ssh_client_key, ssh_client_key_encrypted, SftpServer, SFTP_FILES_DIR, SSH_KEY_PASSPHRASE,
};

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ftp_pooler_config::{FtpConnection, Secret, TlsMode};

/// The FTP server programs of the test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpKind {
    Vsftpd,
    Pyftpdlib,
    /// Unpacked from its Debian package by the install script.
    PureFtpd,
    /// Unpacked from its Debian package by the install script, with its TLS module
    /// (proftpd-mod-crypto); FTPS over TLS 1.2, session reuse required.
    Proftpd,
}

impl FtpKind {
    pub const ALL: [FtpKind; 4] = [
        FtpKind::Vsftpd,
        FtpKind::Pyftpdlib,
        FtpKind::PureFtpd,
        FtpKind::Proftpd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FtpKind::Vsftpd => "vsftpd",
            FtpKind::Pyftpdlib => "pyftpdlib",
            FtpKind::PureFtpd => "pure-ftpd",
            FtpKind::Proftpd => "proftpd",
        }
    }

    /// Whether the server runs as the FTP test user, which must own its files (all but
    /// pyftpdlib, which runs as the test's own user).
    fn runs_as_ftp_user(self) -> bool {
        self != FtpKind::Pyftpdlib
    }
}

/// The test account on every FTP server (see scripts/testbed/env.sh).
pub fn ftp_user() -> String {
    std::env::var("FTP_POOLER_TEST_FTP_USER").unwrap_or_else(|_| "ftptest".into())
}

/// The test account's password (a fixture, not a secret).
pub fn ftp_password() -> String {
    std::env::var("FTP_POOLER_TEST_FTP_PASSWORD").unwrap_or_else(|_| "ftptest-pw".into())
}

/// The test bed's folder (binaries, venv, certificates).
pub fn testbed_dir() -> PathBuf {
    std::env::var_os("FTP_POOLER_TESTBED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".testbed"))
}

/// The test CA that signed the FTPS servers' certificate.
pub fn ca_file() -> PathBuf {
    let ca = testbed_dir().join("certs/ca.pem");
    assert!(
        ca.exists(),
        "{} is missing: run scripts/testbed/install.sh",
        ca.display()
    );
    ca
}

/// A running FTP server with its own root directory; stopped when dropped.
pub struct FtpServer {
    pub kind: FtpKind,
    pub port: u16,
    pub tls: bool,
    /// Implicit FTPS (TLS from the first byte; vsftpd only).
    pub implicit: bool,
    /// The first of the server's passive ports (since its last start), and how many.
    pasv: u16,
    pasv_count: u16,
    root: tempfile::TempDir,
    process: Option<ServerProcess>,
    extra: Vec<String>,
    /// Holds the transfer log (`transfers.log`), kept across restarts; None: no log.
    xferlog: Option<tempfile::TempDir>,
}

impl FtpServer {
    /// Starts `kind` (explicit FTPS only, when `tls`) and waits for its 220 greeting.
    pub fn start(kind: FtpKind, tls: bool) -> FtpServer {
        Self::start_with(kind, tls, &[])
    }

    /// vsftpd serving implicit FTPS (TLS from the first byte).
    pub fn start_implicit() -> FtpServer {
        Self::start_with(FtpKind::Vsftpd, true, &["implicit_ssl=YES"])
    }

    /// As [`FtpServer::start`], with extra server options: vsftpd's (`max_per_ip=2`,
    /// `idle_session_timeout=2`, ...), pyftpdlib's `noepsv` (EPSV answered with 500),
    /// `digests` (HASH, XSHA256, XMD5), `lie` (every digest wrong) or `truncate=N` (every
    /// RETR cut after N bytes, still 226), `norest` (REST refused), proftpd's `digests`
    /// (mod_digest) or `restart` (APPE allowed: `AllowStoreRestart on`).
    pub fn start_with(kind: FtpKind, tls: bool, vsftpd_options: &[&str]) -> FtpServer {
        Self::start_full(kind, tls, vsftpd_options, false)
    }

    /// As [`FtpServer::start`], the server writing a transfer log (vsftpd and pyftpdlib
    /// only): see [`FtpServer::transfers`].
    pub fn start_logging_transfers(kind: FtpKind, tls: bool) -> FtpServer {
        Self::start_full(kind, tls, &[], true)
    }

    fn start_full(kind: FtpKind, tls: bool, vsftpd_options: &[&str], log: bool) -> FtpServer {
        let allowed = |o: &&str| match kind {
            FtpKind::Vsftpd => true,
            FtpKind::Pyftpdlib => {
                ["noepsv", "norest", "digests", "lie"].contains(o) || o.starts_with("truncate=")
            }
            FtpKind::Proftpd => ["digests", "restart"].contains(o),
            FtpKind::PureFtpd => false,
        };
        assert!(
            vsftpd_options.iter().all(allowed),
            "options {vsftpd_options:?} not for {}: see scripts/testbed/serve",
            kind.name()
        );
        assert!(
            !log || matches!(kind, FtpKind::Vsftpd | FtpKind::Pyftpdlib),
            "transfer logs: vsftpd and pyftpdlib only"
        );
        let root = tempfile::Builder::new()
            .prefix(&format!("ftp-root-{}-", kind.name()))
            .tempdir()
            .expect("temp dir for the FTP root");
        let mut server = FtpServer {
            kind,
            port: 0,
            tls,
            implicit: vsftpd_options.contains(&"implicit_ssl=YES"),
            pasv: 0,
            pasv_count: 64,
            root,
            process: None,
            extra: vsftpd_options.iter().map(|s| s.to_string()).collect(),
            xferlog: log.then(|| {
                tempfile::Builder::new()
                    .prefix("ftp-xferlog-")
                    .tempdir()
                    .expect("temp dir for the transfer log")
            }),
        };
        server.restart();
        server
    }

    /// (Re)starts the server, on the same port as before (a free one the first time).
    pub fn restart(&mut self) {
        self.stop();
        if self.port == 0 {
            self.port = free_port();
        }
        // Enough passive ports for thousands of small transfers a second (a data port
        // lingers in TIME_WAIT after each one).
        if self.pasv != 0 {
            release_port_range(self.pasv, self.pasv_count);
        }
        let pasv = free_port_range(self.pasv_count);
        self.pasv = pasv;
        let mut args: Vec<String> = vec![
            self.kind.name().into(),
            self.port.to_string(),
            pasv.to_string(),
            (pasv + self.pasv_count - 1).to_string(),
            self.root.path().display().to_string(),
        ];
        if self.tls {
            args.push("tls".into());
        }
        if let Some(dir) = &self.xferlog {
            args.push(format!(
                "xferlog={}",
                dir.path().join("transfers.log").display()
            ));
        }
        args.extend(self.extra.iter().cloned());
        let name = format!("{}:{}", self.kind.name(), self.port);
        let process = ServerProcess::serve(&name, &args);
        // An implicit-TLS server greets only after the handshake: wait for its port.
        wait_for_greeting(self.port, &process, Duration::from_secs(20), !self.implicit);
        if self.kind.runs_as_ftp_user() {
            chown_to_ftp_user(self.root.path());
        }
        self.process = Some(process);
    }

    /// Kills the server (SIGKILL); its root directory stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The server's process id (the vsftpd master; pyftpdlib serves from one process).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid())
    }

    /// The server's passive (data) ports.
    pub fn passive_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.pasv..=self.pasv + self.pasv_count - 1
    }

    /// Restarts the server with `count` passive ports instead of 64.
    pub fn with_passive_ports(mut self, count: u16) -> FtpServer {
        self.stop();
        if self.pasv != 0 {
            release_port_range(self.pasv, self.pasv_count);
            self.pasv = 0;
        }
        self.pasv_count = count;
        self.restart();
        self
    }

    /// Every transfer in the server's transfer log so far, complete or cut, across
    /// restarts; empty for a server started without one.
    pub fn transfers(&self) -> Vec<xferlog::Transfer> {
        let Some(dir) = &self.xferlog else {
            return Vec::new();
        };
        let log = std::fs::read_to_string(dir.path().join("transfers.log")).unwrap_or_default();
        xferlog::parse(&log, self.root())
    }

    /// The server's root directory on disk (its "/").
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Writes a file under the root (parents created), readable and replaceable by the
    /// FTP user.
    pub fn put(&self, rel: &str, data: &[u8]) -> PathBuf {
        let path = self.root.path().join(rel.trim_start_matches('/'));
        let parent = path.parent().expect("a file path has a parent");
        std::fs::create_dir_all(parent).expect("create dirs under the FTP root");
        std::fs::write(&path, data).expect("write a file under the FTP root");
        if self.kind.runs_as_ftp_user() {
            let mut dir = parent;
            while dir.starts_with(self.root.path()) {
                chown_to_ftp_user(dir);
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
            chown_to_ftp_user(&path);
        }
        path
    }

    /// The connection settings a client uses for this server (CA-verified when TLS).
    pub fn connection(&self) -> FtpConnection {
        FtpConnection {
            host: "127.0.0.1".into(),
            port: self.port,
            user: ftp_user(),
            password: Secret::new(ftp_password()),
            passive: true,
            active_address: None,
            active_port_range: None,
            timeout_seconds: Some(10),
            tls: match (self.tls, self.implicit) {
                (false, _) => TlsMode::None,
                (true, false) => TlsMode::Explicit,
                (true, true) => TlsMode::Implicit,
            },
            tls_ca_file: self.tls.then(ca_file),
            tls_insecure: false,
            max_sessions: None,
        }
    }

    /// A `connections.ini` section for this server.
    pub fn ini_section(&self, id: &str) -> String {
        let mut s = format!(
            "[{id}]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\n",
            self.port,
            ftp_user(),
            ftp_password()
        );
        if self.tls {
            let mode = if self.implicit {
                "implicit"
            } else {
                "explicit"
            };
            s.push_str(&format!(
                "tls = {mode}\ntls_ca_file = {}\n",
                ca_file().display()
            ));
        }
        s
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.stop();
        if self.pasv != 0 {
            release_port_range(self.pasv, self.pasv_count);
        }
    }
}

fn chown_to_ftp_user(path: &Path) {
    let user = nix::unistd::User::from_name(&ftp_user())
        .expect("look up the FTP test user")
        .unwrap_or_else(|| {
            panic!(
                "no system user {}: run scripts/testbed/install.sh",
                ftp_user()
            )
        });
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), ftp_user()));
}

/// Waits until the server on `port` answers with its `220` greeting (or, when not
/// `greets`, just accepts connections).
fn wait_for_greeting(port: u16, process: &ServerProcess, limit: Duration, greets: bool) {
    wait_for_line(port, process, limit, greets.then_some("220"))
}

/// Waits until the server on `port` sends a first line starting with `prefix` (sshd's
/// `SSH-2.0-`).
pub(crate) fn wait_for_banner(port: u16, process: &ServerProcess, limit: Duration, prefix: &str) {
    wait_for_line(port, process, limit, Some(prefix))
}

/// Waits until the server on `port` accepts connections and, with `prefix`, sends a
/// first line starting with it.
fn wait_for_line(port: u16, process: &ServerProcess, limit: Duration, prefix: Option<&str>) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Some(status) = process.exited() {
            panic!(
                "{} exited ({status}) before greeting; its output:\n{}",
                process.name(),
                process.output()
            );
        }
        match (TcpStream::connect(("127.0.0.1", port)), prefix) {
            (Ok(_), None) => return,
            (Ok(s), Some(prefix)) => {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut line = String::new();
                match BufReader::new(s).read_line(&mut line) {
                    Ok(_) if line.starts_with(prefix) => return,
                    Ok(_) => last = format!("greeting {line:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            (Err(e), _) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} gave no {} greeting on 127.0.0.1:{port} within {limit:?} (last: {last}); output:\n{}",
        process.name(),
        prefix.unwrap_or("(connection)"),
        process.output()
    );
}

/// A scripted FTP server (a fake, for behaviours no test-bed server shows on demand): it
/// logs anyone in, answers EPSV with a fresh listener, and answers each RETR or STOR
/// with `on_transfer(verb, control, listener)`, which may accept the data connection (or
/// not), writes any preliminary reply and data, and returns the final reply. Any other
/// command gets "200 ok". Returns its port.
pub fn scripted_server(
    on_transfer: fn(&str, &mut TcpStream, std::net::TcpListener) -> String,
) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for control in listener.incoming() {
            let Ok(mut control) = control else { return };
            std::thread::spawn(move || {
                let mut lines = BufReader::new(control.try_clone().unwrap());
                let mut data = None;
                // Greets as vsftpd does: the client sends an upload's first bytes before the
                // 150 only to servers it knows to take them (it reads the greeting).
                control
                    .write_all(b"220 (vsFTPd 3.0.3) scripted\r\n")
                    .unwrap();
                let mut line = String::new();
                while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let reply = match verb.as_str() {
                        "USER" => "331 password\r\n".to_string(),
                        "PASS" => "230 in\r\n".to_string(),
                        "PWD" => "257 \"/\"\r\n".to_string(),
                        "EPSV" => {
                            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                            let p = l.local_addr().unwrap().port();
                            data = Some(l);
                            format!("229 Entering Extended Passive Mode (|||{p}|)\r\n")
                        }
                        "RETR" | "STOR" => on_transfer(&verb, &mut control, data.take().unwrap()),
                        "QUIT" => "221 bye\r\n".to_string(),
                        _ => "200 ok\r\n".to_string(),
                    };
                    if control.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

/// A scripted FTP server for active mode (see [`scripted_active_server`]).
pub struct ScriptedActive {
    pub port: u16,
    announced: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedActive {
    /// Every EPRT and PORT command received so far, as sent ("EPRT |1|127.0.0.1|5000|").
    pub fn announcements(&self) -> Vec<String> {
        self.announced.lock().unwrap().clone()
    }
}

/// The address an EPRT or PORT command announces (`EPRT |1|h|p|`, `PORT h1,..,h4,p1,p2`).
pub fn announced_address(command: &str) -> Option<std::net::SocketAddr> {
    let (verb, arg) = command.trim().split_once(' ')?;
    match verb.to_ascii_uppercase().as_str() {
        "EPRT" => {
            let d = arg.chars().next()?;
            let parts: Vec<&str> = arg.trim_matches(d).split(d).collect();
            match parts[..] {
                [_, ip, port] => Some(std::net::SocketAddr::new(
                    ip.parse().ok()?,
                    port.parse().ok()?,
                )),
                _ => None,
            }
        }
        "PORT" => {
            let n: Vec<u8> = arg
                .split(',')
                .map(|p| p.trim().parse().ok())
                .collect::<Option<_>>()?;
            match n[..] {
                [a, b, c, d, hi, lo] => Some(std::net::SocketAddr::from((
                    [a, b, c, d],
                    u16::from(hi) * 256 + u16::from(lo),
                ))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A scripted FTP server for active mode (a fake, for behaviours no test-bed server shows
/// on demand: one that never connects back, or that refuses EPRT). It logs anyone in,
/// records every EPRT/PORT command and answers it with "200 ok" (EPRT with "500 unknown
/// command" when `refuse_eprt`), and answers each RETR or STOR with
/// `on_transfer(verb, control, announced)`: `announced` is the last address announced,
/// which the handler may connect to (or not); it writes any preliminary reply and data,
/// and returns the final reply. Any other command gets "200 ok".
pub fn scripted_active_server(
    refuse_eprt: bool,
    on_transfer: fn(&str, &mut TcpStream, std::net::SocketAddr) -> String,
) -> ScriptedActive {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let announced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = announced.clone();
    std::thread::spawn(move || {
        for control in listener.incoming() {
            let Ok(mut control) = control else { return };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(control.try_clone().unwrap());
                let mut target = None;
                control.write_all(b"220 fake\r\n").unwrap();
                let mut line = String::new();
                while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let reply = match verb.as_str() {
                        "USER" => "331 password\r\n".to_string(),
                        "PASS" => "230 in\r\n".to_string(),
                        "PWD" => "257 \"/\"\r\n".to_string(),
                        "EPRT" | "PORT" => {
                            record.lock().unwrap().push(line.trim().to_string());
                            if verb == "EPRT" && refuse_eprt {
                                "500 unknown command\r\n".to_string()
                            } else {
                                target = announced_address(&line);
                                "200 ok\r\n".to_string()
                            }
                        }
                        "RETR" | "STOR" => match target.take() {
                            Some(addr) => on_transfer(&verb, &mut control, addr),
                            None => "425 use PORT or EPRT first\r\n".to_string(),
                        },
                        "QUIT" => "221 bye\r\n".to_string(),
                        _ => "200 ok\r\n".to_string(),
                    };
                    if control.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    ScriptedActive { port, announced }
}
