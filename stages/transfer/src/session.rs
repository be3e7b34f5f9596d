//! One FTP session: a logged-in control connection (plain, explicit or implicit FTPS).
//!
//! A session is used by one task at a time. Every call is bounded by a timeout; any
//! failure that may have left the control channel out of step (a timeout, an I/O or TLS
//! error, any failed transfer) poisons the session, and a poisoned session refuses further
//! use: the pool discards it and opens a new one. Replies that leave the channel in step
//! (a 550 to SIZE, MKD or RNFR) do not poison it.
//!
//! Data connections are passive by default: EPSV first, falling back to PASV for good when
//! the server rejects EPSV; the address in a PASV reply is replaced by the control
//! connection's peer (servers behind NAT or in Kubernetes advertise addresses clients
//! cannot reach). Connections with `passive = false` use active mode instead (EPRT, then
//! PORT), in [`crate::active`]; everything else (poisoning, timeouts) is the same.
//!
//! Plain passive sessions speak their transfers by hand ([`crate::plain`]): pipelined
//! commands, the STOR with the file's first bytes before the 150, and the next data
//! connection opened ahead; over TLS (and in active mode) suppaftp's one command per round
//! trip, and an upload's data waits for the 150 and the handshake.
//!
//! A download ends with EOF on the data connection and the server's 226; when the 150
//! reply announced a size ("(4096 bytes)"), the bytes received must match it. A plain
//! data connection is reset after that EOF, so the server keeps no TIME_WAIT socket on
//! its passive ports ([`crate::data::reset_after_eof`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_config::{FtpConnection, Secret, TlsMode, TransferSettings};
use ftp_pooler_contract::ErrorCode;
use suppaftp::tokio::{
    AsyncFtpStream, AsyncRustlsConnector, AsyncRustlsFtpStream, ImplAsyncFtpStream,
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::active::{self, ActiveOptions, DataTls};
use crate::data::{check_announced, retr, stor, timed, Announces, DataCmd, Fail};
use crate::plain::{Ahead, Pipelining, Plain};
use crate::server_digest::ServerDigests;
use crate::tls::TlsContext;
use crate::TransferError;

/// Size of the buffer a session's transfers stream through (memory per session, whatever
/// the file size). 256 KiB rather than 64: a 1 GiB download went from about 0.85x to 1.2x
/// curl's rate with it (`docs/BENCHMARKS.md`). The buffer is allocated once per session, on
/// its first transfer, and its pages become resident only as large files touch them.
const CHUNK: usize = 256 * 1024;

/// Timeouts of one session, and what the sessions of one connection learned about its
/// server (shared by them: the options are cloned into each).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// TCP connect + greeting + TLS handshake + login.
    pub connect_timeout: Duration,
    /// Each command's reply, and each read or write of a data connection (a transfer that
    /// makes no progress for this long has stalled).
    pub op_timeout: Duration,
    /// Plain downloads end with a reset ([`crate::data::reset_after_eof`]) until a server answers a
    /// reset download with a failure: from then on, with a FIN.
    reset_data: Arc<AtomicBool>,
    /// Active mode (`passive = false`): how data listeners bind and what they announce.
    active: Option<ActiveOptions>,
    /// Whether downloads carry the next transfer's EPSV ([`crate::plain`]).
    pipelining: Pipelining,
    /// Whether the server announces a download's size in its 150 reply (else plain
    /// sessions ask SIZE with the RETR).
    announces: Announces,
    /// `transfer.verify_server_checksum`: learn at login (FEAT) which digests the server
    /// offers ([`crate::server_digest`]).
    pub(crate) verify_server_checksum: bool,
}

impl SessionOptions {
    /// An SFTP connection's: its own `timeout`, else `transfer.connect_timeout_seconds`.
    pub fn for_sftp(conn: &ftp_pooler_config::SftpConnection, transfer: &TransferSettings) -> Self {
        let secs = conn
            .timeout_seconds
            .unwrap_or(transfer.connect_timeout_seconds);
        SessionOptions {
            connect_timeout: Duration::from_secs(secs),
            op_timeout: Duration::from_secs(secs),
            reset_data: Arc::new(AtomicBool::new(true)),
            active: None,
            pipelining: Pipelining::default(),
            announces: Announces::default(),
            verify_server_checksum: false,
        }
    }

    /// The connection's own `timeout`, else `transfer.connect_timeout_seconds`, for both.
    pub fn for_connection(conn: &FtpConnection, transfer: &TransferSettings) -> Self {
        let secs = conn
            .timeout_seconds
            .unwrap_or(transfer.connect_timeout_seconds);
        SessionOptions {
            connect_timeout: Duration::from_secs(secs),
            op_timeout: Duration::from_secs(secs),
            reset_data: Arc::new(AtomicBool::new(true)),
            active: ActiveOptions::for_connection(conn),
            pipelining: Pipelining::default(),
            announces: Announces::default(),
            verify_server_checksum: transfer.verify_server_checksum,
        }
    }
}

pub(crate) enum Ftp {
    Plain(AsyncFtpStream),
    Tls(AsyncRustlsFtpStream),
}

/// Runs `$body` with `$f` bound to the session's stream, whatever its TLS type.
macro_rules! with_ftp {
    ($session:expr, $f:ident => $body:expr) => {
        match &mut $session.ftp {
            $crate::session::Ftp::Plain($f) => $body,
            $crate::session::Ftp::Tls($f) => $body,
        }
    };
}
pub(crate) use with_ftp;

/// The session's use of RFC 2428's extended commands: EPSV in passive mode, EPRT in
/// active mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extended {
    /// Not tried yet: a refusal (500-502; for EPRT also 522) switches to PASV (or PORT)
    /// for good.
    Untried,
    Works,
    Refused,
}

pub struct FtpSession {
    pub(crate) ftp: Ftp,
    /// The login directory; relative remote paths resolve against it.
    home: String,
    extended: Extended,
    pub(crate) poisoned: bool,
    /// FTPS: what active-mode data connections need to resume the control's TLS session.
    data_tls: Option<DataTls>,
    pub(crate) opts: SessionOptions,
    /// The streaming buffer of this session's transfers (empty until the first one).
    buf: Vec<u8>,
    /// Plain passive sessions: the next transfer's data connection, opened ahead.
    ahead: Option<Ahead>,
    /// The server holds a command sent during a transfer until it ends (its greeting
    /// says which server it is: [`crate::plain::holds_commands`]).
    holds_commands: bool,
    /// The digests the server offers (FEAT at login; none unless
    /// `transfer.verify_server_checksum`).
    pub(crate) digests: ServerDigests,
    /// The offset of a REST the server accepted, for the next RETR (0: none).
    pub(crate) restart: u64,
}

impl std::fmt::Debug for FtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpSession")
            .field("home", &self.home)
            .field("extended", &self.extended)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl FtpSession {
    /// Connects, secures (per the connection's `tls`), logs in, and sets binary type.
    /// `tls` must be given for FTPS connections.
    pub async fn connect(
        conn: &FtpConnection,
        tls: Option<&TlsContext>,
        opts: SessionOptions,
    ) -> Result<FtpSession, TransferError> {
        let deadline = opts.connect_timeout;
        let secs = deadline.as_secs_f64();
        let (ftp, data_tls) = timeout(deadline, open(conn, tls)).await.map_err(|_| {
            TransferError::new(
                ErrorCode::ConnectionError,
                format!(
                    "connect {}:{}: no answer within {secs:.0} s",
                    conn.host, conn.port
                ),
            )
        })??;
        let mut session = FtpSession {
            ftp,
            home: String::from("/"),
            extended: Extended::Untried,
            poisoned: false,
            data_tls,
            opts,
            buf: Vec::new(),
            ahead: None,
            holds_commands: false,
            digests: ServerDigests::default(),
            restart: 0,
        };
        let user = conn.user.clone();
        let password: Secret = conn.password.clone();
        let implicit = conn.tls == TlsMode::Implicit;
        let login = async {
            with_ftp!(session, f => f.login(user.as_str(), password.expose()).await)
                .map_err(|e| TransferError::ftp("login", e))?;
            if implicit {
                // suppaftp sends PBSZ/PROT only for explicit TLS; data must be private here
                // too. After login: vsftpd forgets a PROT P given before it.
                for cmd in ["PBSZ 0", "PROT P"] {
                    with_ftp!(session, f => f.custom_command(cmd, &[Status::CommandOk]).await)
                        .map_err(|e| TransferError::ftp(cmd, e))?;
                }
            }
            with_ftp!(session, f => f.transfer_type(FileType::Binary).await)
                .map_err(|e| TransferError::ftp("TYPE I", e))?;
            let home =
                with_ftp!(session, f => f.pwd().await).map_err(|e| TransferError::ftp("PWD", e))?;
            session.holds_commands = with_ftp!(session, f => f.get_welcome_msg())
                .is_some_and(crate::plain::holds_commands);
            if session.opts.verify_server_checksum {
                session.digests = crate::verify::features(&mut session).await?;
            }
            with_ftp!(session, f => {
                f.set_mode(Mode::ExtendedPassive);
                f.set_passive_nat_workaround(true);
            });
            Ok::<String, TransferError>(home)
        };
        match timeout(deadline, login).await {
            Ok(Ok(home)) => {
                session.home = home;
                Ok(session)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransferError::new(
                ErrorCode::ConnectionError,
                format!(
                    "login to {}:{}: no answer within {secs:.0} s",
                    conn.host, conn.port
                ),
            )),
        }
    }

    /// True once a failure may have left the session unusable: discard it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether this session's downloads carry the next transfer's EPSV (a plain passive
    /// session on a server that holds commands during a transfer; [`crate::plain`]).
    pub fn pipelines_downloads(&self) -> bool {
        matches!(self.ftp, Ftp::Plain(_))
            && self.opts.active.is_none()
            && self.holds_commands
            && !self.opts.pipelining.is_refused()
    }

    /// Whether the next transfer's data connection is already open (or opening).
    pub fn has_data_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// The login directory.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// A remote path as sent to the server ([`crate::local::remote_path`]).
    pub fn remote_path(&self, path: &str) -> Result<String, TransferError> {
        crate::local::remote_path(&self.home, path)
    }

    /// NOOP: proves the session alive. An idle session's data connection opened ahead is
    /// closed once stale, rather than left to the server's idle timeout (pyftpdlib ends
    /// the whole session when an idle data connection times out).
    pub async fn noop(&mut self) -> Result<(), TransferError> {
        self.guard("NOOP")?;
        if self.ahead.as_ref().is_some_and(Ahead::is_stale) {
            self.ahead = None;
        }
        let r = with_ftp!(self, f => timed(self.opts.op_timeout, f.noop()).await);
        self.settle("NOOP", r, true)
    }

    /// SIZE of a remote file, in bytes. A plain passive session without a data
    /// connection ahead sends the next EPSV with it and opens that connection
    /// ([`crate::plain::size`]): an upload's SIZE check is followed by a rename and, in a
    /// busy pool, the session's next transfer.
    pub async fn size(&mut self, path: &str) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("SIZE")?;
        let op = self.opts.op_timeout;
        if let (Ftp::Plain(f), None) = (&mut self.ftp, &self.opts.active) {
            let mut p = Plain {
                f,
                epsv: &mut self.extended,
                ahead: &mut self.ahead,
                op,
            };
            let (size, next) = crate::plain::size(&mut p, &path).await;
            if let Err(e) = next {
                tracing::debug!(error = %e, "no data connection ahead; the session is discarded");
                self.poisoned = true;
            }
            return size;
        }
        let r = with_ftp!(self, f => timed(op, f.size(path.as_str())).await);
        self.settle("SIZE", r, false).map(|n| n as u64)
    }

    /// RNFR/RNTO. On a plain connection both go in one write
    /// ([`crate::plain::pipelined_rename`]).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), TransferError> {
        let (from, to) = (self.remote_path(from)?, self.remote_path(to)?);
        self.guard("RNFR/RNTO")?;
        let op = self.opts.op_timeout;
        let r = match &mut self.ftp {
            Ftp::Plain(f) => timed(op, crate::plain::pipelined_rename(f, &from, &to)).await,
            Ftp::Tls(f) => timed(op, f.rename(from.as_str(), to.as_str())).await,
        };
        self.settle("RNFR/RNTO", r, false)
    }

    /// DELE.
    pub async fn delete(&mut self, path: &str) -> Result<(), TransferError> {
        let path = self.remote_path(path)?;
        self.guard("DELE")?;
        let r = with_ftp!(self, f => timed(self.opts.op_timeout, f.rm(path.as_str())).await);
        self.settle("DELE", r, false)
    }

    /// Creates `dir` and its missing parents (MKD each level; "exists" replies are fine).
    pub async fn mkdir_all(&mut self, dir: &str) -> Result<(), TransferError> {
        let dir = self.remote_path(dir)?;
        self.guard("MKD")?;
        let mut prefix = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            let r =
                with_ftp!(self, f => timed(self.opts.op_timeout, f.mkdir(prefix.as_str())).await);
            match self.settle("MKD", r, false) {
                Ok(()) => {}
                // 550/521: exists (or not allowed here: the upload that follows will say).
                Err(_) if !self.poisoned => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// RETR `path` into `out`, streaming; returns the bytes written. Any failure poisons.
    pub async fn download<W: AsyncWrite + Unpin>(
        &mut self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("RETR")?;
        let offset = std::mem::take(&mut self.restart);
        let op = self.opts.op_timeout;
        self.ensure_buffer();
        let reset = &self.opts.reset_data;
        let tls = self.data_tls.as_ref();
        let r = match &self.opts.active {
            Some(a) => {
                with_ftp!(self, f => active::retr(f, &mut self.extended, a, tls, &path, out, op, &mut self.buf).await)
                    .map(|(n, announced)| (n, announced, false))
            }
            None => match &mut self.ftp {
                Ftp::Plain(f) => {
                    let mut p = Plain {
                        f,
                        epsv: &mut self.extended,
                        ahead: &mut self.ahead,
                        op,
                    };
                    let pipelining = self.holds_commands.then_some(&self.opts.pipelining);
                    let announces = &self.opts.announces;
                    match crate::plain::retr(&mut p, pipelining, reset, &path, offset, announces, out, &mut self.buf)
                        .await
                    {
                        // Checked against the size, announced or asked, already.
                        Ok((n, Ok(()))) => Ok((n, None, true)),
                        Ok((n, Err(e))) => {
                            tracing::debug!(error = %e, "no data connection ahead; the session is discarded");
                            self.poisoned = true;
                            return Ok(n);
                        }
                        Err(e) => Err(e),
                    }
                }
                Ftp::Tls(f) => retr(f, &mut self.extended, reset, &path, out, op, &mut self.buf)
                    .await
                    .map(|(n, announced)| (n, announced, false)),
            },
        };
        let (total, announced, checked) = match r {
            Ok(r) => r,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        if checked {
            return Ok(total);
        }
        // A size the 150 did not announce is asked: a download cut short with a 226 all
        // the same is found out.
        let size = match announced {
            Some(n) => Some(n),
            None => {
                let r = with_ftp!(self, f => timed(op, f.size(path.as_str())).await);
                match r {
                    Ok(n) => Some(n as u64),
                    Err(Fail::Ftp(FtpError::UnexpectedResponse(_))) => None,
                    Err(fail) => {
                        self.poisoned = true;
                        return Err(fail.classify("SIZE", op));
                    }
                }
            }
        };
        check_announced(&path, size, total, offset).inspect_err(|_| self.poisoned = true)
    }

    /// STOR `in` to `path`, streaming; returns the bytes sent. Any failure poisons.
    pub async fn upload<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        self.store(input, path, DataCmd::Stor).await
    }

    /// APPE `in` to `path`: continues the file (a resumed upload). As [`Self::upload`].
    pub async fn append<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        self.store(input, path, DataCmd::Appe).await
    }

    async fn store<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
        cmd: DataCmd,
    ) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard(cmd.verb())?;
        self.restart = 0;
        let op = self.opts.op_timeout;
        self.ensure_buffer();
        let tls = self.data_tls.as_ref();
        let r = match &self.opts.active {
            Some(a) => {
                with_ftp!(self, f => active::stor(f, &mut self.extended, a, tls, input, &path, cmd.verb(), op, &mut self.buf).await)
            }
            None => match &mut self.ftp {
                Ftp::Plain(f) => {
                    let mut p = Plain {
                        f,
                        epsv: &mut self.extended,
                        ahead: &mut self.ahead,
                        op,
                    };
                    crate::plain::stor(
                        &mut p,
                        self.holds_commands,
                        input,
                        &path,
                        cmd.verb(),
                        &mut self.buf,
                    )
                    .await
                }
                Ftp::Tls(f) => {
                    stor(f, &mut self.extended, input, &path, cmd, op, &mut self.buf).await
                }
            },
        };
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// QUIT, politely; the session is gone either way.
    pub async fn quit(mut self) {
        if !self.poisoned {
            let _ = with_ftp!(self, f => timed(self.opts.op_timeout, f.quit()).await);
        }
    }

    /// Allocates the session's streaming buffer on first use.
    fn ensure_buffer(&mut self) {
        if self.buf.len() != CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
    }

    /// Refuses any command on a poisoned session.
    fn guard(&self, op: &str) -> Result<(), TransferError> {
        if self.poisoned {
            Err(TransferError::new(
                ErrorCode::ConnectionError,
                format!("{op}: session is no longer usable"),
            ))
        } else {
            Ok(())
        }
    }

    /// Maps a timed call's outcome, poisoning the session when the channel may be out of
    /// step: always after a timeout or an I/O error, after an unexpected reply only when
    /// `poison_on_reply`.
    fn settle<T>(
        &mut self,
        op: &str,
        r: Result<T, Fail>,
        poison_on_reply: bool,
    ) -> Result<T, TransferError> {
        r.map_err(|fail| {
            if poison_on_reply || !matches!(fail, Fail::Ftp(FtpError::UnexpectedResponse(_))) {
                self.poisoned = true;
            }
            fail.classify(op, self.opts.op_timeout)
        })
    }
}

/// Connects and secures the control connection; for FTPS, also returns what the data
/// connections of active mode need (the same TLS configuration: its session cache).
async fn open(
    conn: &FtpConnection,
    tls: Option<&TlsContext>,
) -> Result<(Ftp, Option<DataTls>), TransferError> {
    let addr = format!("{}:{}", conn.host, conn.port);
    let refused = |e: FtpError| TransferError::ftp(&format!("connect {addr}"), e);
    let connector = || {
        let ctx = tls.ok_or_else(|| {
            TransferError::new(
                ErrorCode::UnknownError,
                "FTPS connection without a TLS context",
            )
        })?;
        let config = Arc::new(ctx.client_config());
        let name = rustls::pki_types::ServerName::try_from(conn.host.clone()).map_err(|e| {
            TransferError::new(
                ErrorCode::ConnectionError,
                format!("TLS server name {:?}: {e}", conn.host),
            )
        })?;
        let data = DataTls {
            config: config.clone(),
            name,
        };
        let connector =
            AsyncRustlsConnector::from(suppaftp::tokio_rustls::TlsConnector::from(config));
        Ok::<_, TransferError>((connector, data))
    };
    match conn.tls {
        TlsMode::None => {
            let tcp = tcp(&addr).await?;
            let ftp = AsyncFtpStream::connect_with_stream(tcp)
                .await
                .map_err(refused)?;
            Ok((Ftp::Plain(ftp), None))
        }
        TlsMode::Explicit => {
            let tcp = tcp(&addr).await?;
            let ftp = ImplAsyncFtpStream::connect_with_stream(tcp)
                .await
                .map_err(refused)?;
            let (connector, data) = connector()?;
            let ftp = ftp
                .into_secure(connector, &conn.host)
                .await
                .map_err(|e| TransferError::ftp("AUTH TLS", e))?;
            Ok((Ftp::Tls(ftp), Some(data)))
        }
        TlsMode::Implicit => {
            let (connector, data) = connector()?;
            let ftp =
                ImplAsyncFtpStream::connect_secure_implicit(addr.as_str(), connector, &conn.host)
                    .await
                    .map_err(refused)?;
            Ok((Ftp::Tls(ftp), Some(data)))
        }
    }
}

async fn tcp(addr: &str) -> Result<TcpStream, TransferError> {
    let s = TcpStream::connect(addr).await.map_err(|e| {
        TransferError::new(ErrorCode::ConnectionError, format!("connect {addr}: {e}"))
    })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}
