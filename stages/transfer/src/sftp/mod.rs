//! One SFTP session (issue 22): an SSH connection (russh) with the SFTP subsystem on a
//! channel (russh-sftp), logged in, its host key verified (the SSH side: `login`).
//!
//! The host key is checked in the key exchange, before anything of ours is sent: against
//! the connection's `known_hosts_file` (OpenSSH's format, `[host]:port` entries too) or
//! its `host_key_fingerprint` (`SHA256:...`); a key that differs fails with
//! HOST_KEY_MISMATCH (not retried) and no password or key signature goes out.
//! `insecure_accept_any_host_key` accepts any key and warns at every connect. Then the
//! password or the private key (OpenSSH format; its passphrase given by the connection).
//!
//! The same operations as an FTP session ([`crate::remote::Session`]): reads and writes
//! stream through russh-sftp's pipelined file handles; the size is the file's stat; a
//! rename is `posix-rename@openssh.com` where the server offers it (it replaces the
//! destination atomically; asked on a second channel, which russh-sftp's session does not
//! expose), else a plain rename, which SFTP v3 refuses when the destination exists: the
//! destination is then removed first (not atomic: a reader may find no file for a moment).
//! REST is a read offset; APPE an open with APPEND; MDTM the stat's mtime.
//!
//! Invariants: every request is bounded by the session's operation timeout; a status the
//! server answers (no such file, permission denied, failure) leaves the session usable;
//! anything else (a timeout, a closed channel or connection) poisons it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ftp_pooler_config::SftpConnection;
use ftp_pooler_contract::ErrorCode;
use russh::client::Handle;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::{RawSftpSession, SftpSession as Sftp};
use russh_sftp::protocol::{OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::{SessionOptions, TransferError};

mod login;
use login::{open_raw, open_sftp, Verifier};

/// The streaming buffer of a transfer.
const CHUNK: usize = 256 * 1024;

/// An SFTP error as the contract's code, and whether it leaves the session in step (a
/// status the server answered).
pub(super) fn sftp_error(what: &str, e: SftpError) -> (TransferError, bool) {
    let (code, in_step) = match &e {
        SftpError::Status(s) => (
            match s.status_code {
                StatusCode::NoSuchFile => ErrorCode::FileNotFound,
                StatusCode::PermissionDenied => ErrorCode::PermissionDenied,
                _ => ErrorCode::UnknownError,
            },
            true,
        ),
        SftpError::Timeout => (ErrorCode::TransferTimeout, false),
        _ => (ErrorCode::ConnectionError, false),
    };
    (TransferError::new(code, format!("{what}: {e}")), in_step)
}

pub struct SftpSession {
    /// The SSH connection, shared by the sessions [`Self::open_channel`] made on it.
    handle: Arc<Handle<Verifier>>,
    sftp: Sftp,
    /// A second SFTP channel for extended requests (posix-rename), opened at the first
    /// rename; with the server's extensions.
    raw: Option<(RawSftpSession, HashMap<String, String>)>,
    /// The login directory (relative paths resolve against it).
    home: String,
    poisoned: bool,
    opts: SessionOptions,
    /// The read offset of the next download ([`Self::rest`]).
    restart: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SftpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpSession")
            .field("home", &self.home)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl SftpSession {
    /// Connects, verifies the host key, logs in and opens the SFTP subsystem.
    pub async fn connect(
        conn: &SftpConnection,
        opts: SessionOptions,
    ) -> Result<SftpSession, TransferError> {
        let limit = opts.connect_timeout;
        let handle = login::login(conn, limit).await?;
        let sftp = tokio::time::timeout(limit, open_sftp(&handle))
            .await
            .map_err(|_| TransferError::timeout("SFTP subsystem", limit.as_secs_f64()))??;
        sftp.set_timeout(opts.op_timeout.as_secs().max(1));
        let home = tokio::time::timeout(limit, sftp.canonicalize("."))
            .await
            .map_err(|_| TransferError::timeout("SFTP realpath", limit.as_secs_f64()))?
            .map_err(|e| sftp_error("SFTP realpath", e).0)?;
        Ok(SftpSession {
            handle: Arc::new(handle),
            sftp,
            raw: None,
            home,
            poisoned: false,
            opts,
            restart: 0,
            buf: Vec::new(),
        })
    }

    /// Another session on this one's SSH connection: a channel of its own with the SFTP
    /// subsystem. Not what the pool does (one connection per session, docs/NOTES.md);
    /// here to measure the difference (`scripts/bench --only sftp`).
    pub async fn open_channel(&self) -> Result<SftpSession, TransferError> {
        let limit = self.opts.connect_timeout;
        let sftp = tokio::time::timeout(limit, open_sftp(&self.handle))
            .await
            .map_err(|_| TransferError::timeout("SFTP subsystem", limit.as_secs_f64()))??;
        sftp.set_timeout(self.opts.op_timeout.as_secs().max(1));
        Ok(SftpSession {
            handle: self.handle.clone(),
            sftp,
            raw: None,
            home: self.home.clone(),
            poisoned: false,
            opts: self.opts.clone(),
            restart: 0,
            buf: Vec::new(),
        })
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn home(&self) -> &str {
        &self.home
    }

    /// A remote path as sent to the server ([`crate::local::remote_path`]).
    pub fn remote_path(&self, path: &str) -> Result<String, TransferError> {
        crate::local::remote_path(&self.home, path)
    }

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

    /// Proves the session alive (a realpath of the login directory).
    pub async fn noop(&mut self) -> Result<(), TransferError> {
        self.guard("NOOP")?;
        let home = self.home.clone();
        let sftp = &self.sftp;
        let r = tokio::time::timeout(self.opts.op_timeout, sftp.canonicalize(home)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => {
                self.poisoned = true;
                Err(TransferError::new(
                    ErrorCode::ConnectionError,
                    "SFTP session no longer answers",
                ))
            }
        }
    }

    /// Closes the channel, and the connection when no other session shares it.
    pub async fn quit(self) {
        let _ = self.sftp.close().await;
        if Arc::strong_count(&self.handle) > 1 {
            return;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
    }

    pub async fn size(&mut self, path: &str) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("stat")?;
        let md = req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "stat",
            self.sftp.metadata(path),
        )
        .await?;
        md.size.ok_or_else(|| {
            TransferError::new(ErrorCode::UnknownError, "stat: the server gives no size")
        })
    }

    pub async fn mdtm(&mut self, path: &str) -> Result<Option<SystemTime>, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("stat")?;
        match req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "stat",
            self.sftp.metadata(path),
        )
        .await
        {
            Ok(md) => Ok(md
                .mtime
                .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(t)))),
            Err(_) if !self.poisoned => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&mut self, path: &str) -> Result<(), TransferError> {
        let path = self.remote_path(path)?;
        self.guard("remove")?;
        req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "remove",
            self.sftp.remove_file(path),
        )
        .await
    }

    /// Creates `dir` and its missing parents.
    pub async fn mkdir_all(&mut self, dir: &str) -> Result<(), TransferError> {
        let dir = self.remote_path(dir)?;
        self.guard("mkdir")?;
        let mut prefix = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            // An error the server answered: the directory exists (OpenSSH says
            // "failure"), or is not ours to make (the upload will say).
            let made = req(
                &mut self.poisoned,
                self.opts.op_timeout,
                "mkdir",
                self.sftp.create_dir(prefix.clone()),
            )
            .await;
            if made.is_err() && self.poisoned {
                return Err(TransferError::new(
                    ErrorCode::ConnectionError,
                    format!("mkdir {prefix}: session lost"),
                ));
            }
        }
        Ok(())
    }

    /// Renames `from` to `to`, replacing `to`: posix-rename where offered.
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), TransferError> {
        let (from, to) = (self.remote_path(from)?, self.remote_path(to)?);
        self.guard("rename")?;
        if self.raw.is_none() {
            let limit = self.opts.op_timeout;
            match tokio::time::timeout(limit, open_raw(&self.handle)).await {
                Ok(Ok(raw)) => self.raw = Some(raw),
                Ok(Err(e)) => tracing::debug!(error = %e, "no second SFTP channel: plain rename"),
                Err(_) => {
                    self.poisoned = true;
                    return Err(TransferError::timeout("SFTP channel", limit.as_secs_f64()));
                }
            }
        }
        if let Some((raw, exts)) = &self.raw {
            if exts
                .get("posix-rename@openssh.com")
                .is_some_and(|v| v == "1")
            {
                let mut data = Vec::new();
                for s in [&from, &to] {
                    data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    data.extend_from_slice(s.as_bytes());
                }
                let fut = raw.extended("posix-rename@openssh.com", data);
                return match req(
                    &mut self.poisoned,
                    self.opts.op_timeout,
                    "posix-rename",
                    fut,
                )
                .await?
                {
                    Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
                    Packet::Status(s) => Err(sftp_error("posix-rename", SftpError::Status(s)).0),
                    _ => {
                        self.poisoned = true;
                        Err(TransferError::new(
                            ErrorCode::ConnectionError,
                            "posix-rename: an unexpected reply",
                        ))
                    }
                };
            }
        }
        match req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "rename",
            self.sftp.rename(from.clone(), to.clone()),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if self.poisoned || e.code != ErrorCode::UnknownError => Err(e),
            Err(_) => {
                // SFTP v3: the destination exists. Not atomic (see the module header).
                let _ = req(
                    &mut self.poisoned,
                    self.opts.op_timeout,
                    "remove",
                    self.sftp.remove_file(to.clone()),
                )
                .await;
                self.guard("rename")?;
                req(
                    &mut self.poisoned,
                    self.opts.op_timeout,
                    "rename",
                    self.sftp.rename(from, to),
                )
                .await
            }
        }
    }

    /// The next download reads from `offset`.
    pub async fn rest(&mut self, offset: u64) -> Result<bool, TransferError> {
        self.guard("REST")?;
        self.restart = offset;
        Ok(true)
    }

    /// Reads `path` into `out` (from the offset of [`Self::rest`]); returns the bytes
    /// written. The bytes plus the offset must make the file's size as the open handle's
    /// stat gave it (a file cut short is an IO_ERROR). Any failure poisons.
    pub async fn download<W: AsyncWrite + Unpin>(
        &mut self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("read")?;
        let offset = std::mem::take(&mut self.restart);
        if self.buf.len() != CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
        let op = self.opts.op_timeout;
        let mut file = req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "open",
            self.sftp.open(path.clone()),
        )
        .await?;
        let size = req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "fstat",
            file.metadata(),
        )
        .await?
        .size;
        let r = async {
            if offset > 0 {
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| io_error("seek", e))?;
            }
            let mut total = 0u64;
            loop {
                let n = tokio::time::timeout(op, file.read(&mut self.buf))
                    .await
                    .map_err(|_| TransferError::timeout("read (stalled)", op.as_secs_f64()))?
                    .map_err(|e| io_error("read", e))?;
                if n == 0 {
                    break;
                }
                out.write_all(&self.buf[..n])
                    .await
                    .map_err(|e| TransferError::local_io("write destination", &e))?;
                total += n as u64;
            }
            out.flush()
                .await
                .map_err(|e| TransferError::local_io("write destination", &e))?;
            let _ = tokio::time::timeout(op, file.shutdown()).await;
            match size {
                Some(size) if size != total + offset => Err(TransferError::new(
                    ErrorCode::IoError,
                    format!(
                        "read {path}: the file has {size} bytes, {} arrived",
                        total + offset
                    ),
                )),
                _ => Ok(total),
            }
        }
        .await;
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Writes `input` to `path` (created or truncated); returns the bytes sent.
    pub async fn upload<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        self.write(input, path, flags).await
    }

    /// Appends `input` to `path` (a resumed upload); returns the bytes sent.
    pub async fn append<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
    ) -> Result<u64, TransferError> {
        let flags = OpenFlags::WRITE | OpenFlags::APPEND;
        self.write(input, path, flags).await
    }

    async fn write<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        path: &str,
        flags: OpenFlags,
    ) -> Result<u64, TransferError> {
        let path = self.remote_path(path)?;
        self.guard("write")?;
        self.restart = 0;
        if self.buf.len() != CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
        let op = self.opts.op_timeout;
        let mut file = req(
            &mut self.poisoned,
            self.opts.op_timeout,
            "open",
            self.sftp.open_with_flags(path, flags),
        )
        .await?;
        let r = async {
            let mut total = 0u64;
            loop {
                let n = input
                    .read(&mut self.buf)
                    .await
                    .map_err(|e| TransferError::local_io("read source", &e))?;
                if n == 0 {
                    break;
                }
                tokio::time::timeout(op, file.write_all(&self.buf[..n]))
                    .await
                    .map_err(|_| TransferError::timeout("write (stalled)", op.as_secs_f64()))?
                    .map_err(|e| io_error("write", e))?;
                total += n as u64;
            }
            // Waits for every write's acknowledgement, then closes: errors surface here.
            tokio::time::timeout(op, file.shutdown())
                .await
                .map_err(|_| TransferError::timeout("close", op.as_secs_f64()))?
                .map_err(|e| io_error("close", e))?;
            Ok(total)
        }
        .await;
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

/// Runs one request within `limit`; poisons the session (`poisoned`) unless the server
/// answered it with a status.
async fn req<T>(
    poisoned: &mut bool,
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, SftpError>>,
) -> Result<T, TransferError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let (e, in_step) = sftp_error(what, e);
            if !in_step {
                *poisoned = true;
            }
            Err(e)
        }
        Err(_) => {
            *poisoned = true;
            Err(TransferError::timeout(what, limit.as_secs_f64()))
        }
    }
}

/// An I/O error of a remote file handle (russh-sftp wraps the server's status in it).
fn io_error(what: &str, e: std::io::Error) -> TransferError {
    let code = match e.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        std::io::ErrorKind::NotFound => ErrorCode::FileNotFound,
        std::io::ErrorKind::TimedOut => ErrorCode::TransferTimeout,
        _ => ErrorCode::ConnectionError,
    };
    TransferError::new(code, format!("{what}: {e}"))
}
