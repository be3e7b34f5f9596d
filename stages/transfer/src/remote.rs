//! A server of either kind: how to reach it ([`Remote`]) and one logged-in session on it
//! ([`Session`]: FTP/FTPS or SFTP), with the one set of operations the engine and the pool
//! use. The engine's guarantees (temporary name, size check, rename, digests, resume)
//! are written once against [`Session`]; each kind maps them to its protocol.
//!
//! Invariants: a session is used by one task at a time; a poisoned session (a timeout, an
//! I/O failure, anything that may have left it out of step) refuses further use and is
//! discarded by the pool, whatever its kind.

use std::time::SystemTime;

use ftp_pooler_config::{Connection, ConnectionKind, FtpConnection, SftpConnection};
use ftp_pooler_contract::{Checksum, ChecksumAlgorithm, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::sftp::SftpSession;
use crate::tls::TlsContext;
use crate::{FtpSession, SessionOptions, TransferError};

/// How to reach a server.
#[derive(Clone)]
pub enum Remote {
    Ftp {
        conn: FtpConnection,
        tls: Option<TlsContext>,
    },
    Sftp(SftpConnection),
}

impl Remote {
    /// The server of connection `c`; an FTPS connection's TLS set up (its CA file read).
    pub fn for_connection(c: &Connection) -> Result<Remote, TransferError> {
        let invalid = |m: String| TransferError::new(ErrorCode::InvalidConfig, m);
        match &c.kind {
            ConnectionKind::Ftp(conn) => {
                let tls = match conn.tls {
                    ftp_pooler_config::TlsMode::None => None,
                    _ => Some(TlsContext::for_connection(conn).map_err(invalid)?),
                };
                Ok(Remote::Ftp {
                    conn: conn.clone(),
                    tls,
                })
            }
            ConnectionKind::Sftp(conn) => Ok(Remote::Sftp(conn.clone())),
            ConnectionKind::Local(_) => Err(invalid(format!("{:?} is not a server", c.id))),
        }
    }

    /// The options of its sessions (timeouts, and what its sessions learn of it).
    pub fn session_options(
        &self,
        transfer: &ftp_pooler_config::TransferSettings,
    ) -> SessionOptions {
        match self {
            Remote::Ftp { conn, .. } => SessionOptions::for_connection(conn, transfer),
            Remote::Sftp(conn) => SessionOptions::for_sftp(conn, transfer),
        }
    }
}

/// One logged-in session of either kind.
pub enum Session {
    Ftp(FtpSession),
    Sftp(SftpSession),
}

/// Runs `$body` with `$s` bound to the session, whatever its kind.
macro_rules! either {
    ($session:expr, $s:ident => $body:expr) => {
        match $session {
            Session::Ftp($s) => $body,
            Session::Sftp($s) => $body,
        }
    };
}

impl Session {
    /// Connects and logs in.
    pub async fn connect(remote: &Remote, opts: SessionOptions) -> Result<Session, TransferError> {
        match remote {
            Remote::Ftp { conn, tls } => FtpSession::connect(conn, tls.as_ref(), opts)
                .await
                .map(Session::Ftp),
            Remote::Sftp(conn) => SftpSession::connect(conn, opts).await.map(Session::Sftp),
        }
    }

    pub fn is_poisoned(&self) -> bool {
        either!(self, s => s.is_poisoned())
    }

    pub fn remote_path(&self, path: &str) -> Result<String, TransferError> {
        either!(self, s => s.remote_path(path))
    }

    pub async fn noop(&mut self) -> Result<(), TransferError> {
        either!(self, s => s.noop().await)
    }

    pub async fn quit(self) {
        either!(self, s => s.quit().await)
    }

    pub async fn size(&mut self, path: &str) -> Result<u64, TransferError> {
        either!(self, s => s.size(path).await)
    }

    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), TransferError> {
        either!(self, s => s.rename(from, to).await)
    }

    pub async fn delete(&mut self, path: &str) -> Result<(), TransferError> {
        either!(self, s => s.delete(path).await)
    }

    pub async fn mkdir_all(&mut self, dir: &str) -> Result<(), TransferError> {
        either!(self, s => s.mkdir_all(dir).await)
    }

    /// The file's bytes into `out` (from the offset of an accepted [`Self::rest`]).
    pub async fn download<W: AsyncWrite + Unpin>(
        &mut self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, TransferError> {
        either!(self, s => s.download(path, out).await)
    }

    pub async fn upload<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        either!(self, s => s.upload(input, path).await)
    }

    pub async fn append<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        either!(self, s => s.append(input, path).await)
    }

    /// The next download starts at `offset`; false when the server cannot.
    pub async fn rest(&mut self, offset: u64) -> Result<bool, TransferError> {
        either!(self, s => s.rest(offset).await)
    }

    pub async fn mdtm(&mut self, path: &str) -> Result<Option<SystemTime>, TransferError> {
        either!(self, s => s.mdtm(path).await)
    }

    pub fn offers_digest(&self, algorithm: ChecksumAlgorithm) -> bool {
        match self {
            Session::Ftp(s) => s.offers_digest(algorithm),
            Session::Sftp(_) => false,
        }
    }

    pub async fn server_checksum(
        &mut self,
        path: &str,
        algorithm: ChecksumAlgorithm,
        bytes: u64,
    ) -> Result<Option<Checksum>, TransferError> {
        match self {
            Session::Ftp(s) => s.server_checksum(path, algorithm, bytes).await,
            Session::Sftp(_) => Ok(None),
        }
    }
}
