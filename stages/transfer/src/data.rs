//! Data connections and what every transfer path shares: the passive data connection of
//! suppaftp's transfers (FTPS sessions: [`open_data`], [`retr`], [`stor`]), the size a
//! 150 reply announces and the check of a download against it ([`check_announced`]),
//! streaming to EOF and from the source, the reset after a download's EOF, and timed
//! I/O ([`data_io`], [`timed`]). Plain passive sessions ([`crate::plain`]) and active
//! mode ([`crate::active`]) open their data connections their own way and use the rest.
//!
//! Invariants: every read, write and reply is bounded by the session's operation
//! timeout; a download is complete only when its bytes match the size the server gave
//! (announced in its 150, or asked with SIZE), its data connection reached EOF and the
//! server replied 226.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_contract::ErrorCode;
use suppaftp::tokio::{AsyncDataStream, ImplAsyncFtpStream, TokioTlsStream, TransferStream};
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::session::Extended;
use crate::TransferError;

/// True when a reply to EPSV means "not supported" (switch to PASV).
pub(crate) fn epsv_refused(e: &FtpError) -> bool {
    matches!(e, FtpError::UnexpectedResponse(r) if matches!(crate::error::reply_code(r), 500..=502))
}

#[derive(Clone, Copy)]
pub(crate) enum DataCmd {
    Retr,
    Stor,
    /// APPE: an upload that continues a partial file ([`FtpSession::upload`]).
    Appe,
}

impl DataCmd {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            DataCmd::Retr => "RETR",
            DataCmd::Stor => "STOR",
            DataCmd::Appe => "APPE",
        }
    }
}

/// Opens a data transfer (RETR or STOR): EPSV, or PASV for good once the server has
/// refused EPSV (a 500-502 reply to it). Returns the stream and, for RETR, the size the
/// server announced in its 150 reply ("... (4096 bytes)", as vsftpd and proftpd say), if
/// it did.
pub(crate) async fn open_data<T>(
    f: &mut ImplAsyncFtpStream<T>,
    epsv: &mut Extended,
    cmd: DataCmd,
    path: &str,
    op: Duration,
) -> Result<(TransferStream<T>, Option<u64>), TransferError>
where
    T: TokioTlsStream + Send,
{
    loop {
        let opened = match cmd {
            DataCmd::Retr => timed(
                op,
                f.custom_data_command(
                    format!("RETR {path}"),
                    &[Status::AboutToSend, Status::AlreadyOpen],
                ),
            )
            .await
            .map(|(reply, stream)| {
                let text = String::from_utf8_lossy(&reply.body);
                (stream, announced_size(&text))
            }),
            DataCmd::Stor => timed(op, f.put_with_stream(path))
                .await
                .map(|stream| (stream, None)),
            DataCmd::Appe => timed(op, f.append_with_stream(path))
                .await
                .map(|stream| (stream, None)),
        };
        match opened {
            Err(Fail::Ftp(e)) if *epsv == Extended::Untried && epsv_refused(&e) => {
                *epsv = Extended::Refused;
                f.set_mode(Mode::Passive);
            }
            opened => {
                let opened = opened.map_err(|fail| fail.classify(cmd.verb(), op))?;
                if *epsv == Extended::Untried {
                    *epsv = Extended::Works;
                }
                return Ok(opened);
            }
        }
    }
}

/// Whether a connection's server announces a download's size in its 150 reply ("(4096
/// bytes)": vsftpd and proftpd do; pure-ftpd and pyftpdlib do not), learned from its
/// replies and shared by the connection's sessions: unknown, yes or no.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announces(Arc<std::sync::atomic::AtomicU8>);

impl Announces {
    /// Known to announce: no need to ask SIZE.
    pub(crate) fn known(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 1
    }

    pub(crate) fn learn(&self, announced: bool) {
        self.0
            .store(if announced { 1 } else { 2 }, Ordering::Relaxed);
    }
}

/// The bytes a download received, checked against the size its 150 reply announced (if
/// it did): a server that announces one size and sends another (a download cut short
/// with a 226 all the same) fails the attempt (IO_ERROR, retried). After a REST, servers
/// announce either the whole file or what remains of it: both pass.
pub(crate) fn check_announced(
    path: &str,
    announced: Option<u64>,
    total: u64,
    offset: u64,
) -> Result<u64, TransferError> {
    match announced {
        Some(size) if size != total && size != total + offset => Err(TransferError::new(
            ErrorCode::IoError,
            format!("RETR {path}: the server announced {size} bytes and sent {total}"),
        )),
        _ => Ok(total),
    }
}

/// The byte count of a 150 reply such as "150 Opening BINARY mode data connection for
/// f.bin (4096 bytes).": the number in the last "(N bytes)".
pub(crate) fn announced_size(reply: &str) -> Option<u64> {
    let end = reply.rfind(" bytes)")?;
    let start = reply[..end].rfind('(')? + 1;
    reply[start..end].parse().ok()
}

/// RETR through suppaftp (TLS sessions); returns the bytes written and the size the 150
/// reply announced, if it did (the caller checks them).
pub(crate) async fn retr<T, W>(
    f: &mut ImplAsyncFtpStream<T>,
    epsv: &mut Extended,
    reset: &AtomicBool,
    path: &str,
    out: &mut W,
    op: Duration,
    buf: &mut [u8],
) -> Result<(u64, Option<u64>), TransferError>
where
    T: TokioTlsStream + Send,
    W: AsyncWrite + Unpin,
{
    let (mut stream, announced) = open_data(f, epsv, DataCmd::Retr, path, op).await?;
    let total = read_to_eof(&mut stream, out, op, buf).await?;
    let mut was_reset = false;
    if let AsyncDataStream::Tcp(tcp) = stream.get_ref() {
        if reset.load(Ordering::Relaxed) {
            reset_after_eof(tcp);
            was_reset = true;
        }
    }
    out.flush()
        .await
        .map_err(|e| TransferError::local_io("write destination", &e))?;
    let finished = timed(op, stream.finish()).await;
    if finished.is_err() && was_reset && reset.swap(false, Ordering::Relaxed) {
        // A server that reads its data connection to the end before it replies may take
        // the reset for a failed transfer: close with a FIN from now on (the retry too).
        tracing::warn!(path, "the server failed a download whose data connection was reset after EOF; closing data connections with a FIN from now on");
    }
    finished.map_err(|fail| fail.classify("RETR", op))?;
    Ok((total, announced))
}

/// Streams a download's data connection into `out` until EOF; returns the bytes. The
/// caller ends the connection ([`reset_after_eof`]) and flushes `out`.
pub(crate) async fn read_to_eof<R, W>(
    data: &mut R,
    out: &mut W,
    op: Duration,
    buf: &mut [u8],
) -> Result<u64, TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let n = data_io("RETR", op, data.read(buf)).await?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| TransferError::local_io("write destination", &e))?;
        total += n as u64;
    }
}

/// STOR through suppaftp (TLS sessions): the data goes after the 150 and the data
/// connection's handshake.
pub(crate) async fn stor<T, R>(
    f: &mut ImplAsyncFtpStream<T>,
    epsv: &mut Extended,
    input: &mut R,
    path: &str,
    cmd: DataCmd,
    op: Duration,
    buf: &mut [u8],
) -> Result<u64, TransferError>
where
    T: TokioTlsStream + Send,
    R: AsyncRead + Unpin,
{
    let (mut stream, _) = open_data(f, epsv, cmd, path, op).await?;
    let total = send_rest(input, &mut stream, op, buf).await?;
    timed(op, stream.finish())
        .await
        .map_err(|fail| fail.classify(cmd.verb(), op))?;
    Ok(total)
}

/// Streams the rest of `input` to an upload's data connection; returns the bytes sent.
pub(crate) async fn send_rest<R, W>(
    input: &mut R,
    out: &mut W,
    op: Duration,
    buf: &mut [u8],
) -> Result<u64, TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let n = input
            .read(buf)
            .await
            .map_err(|e| TransferError::local_io("read source", &e))?;
        if n == 0 {
            return Ok(total);
        }
        data_io("STOR", op, out.write_all(&buf[..n])).await?;
        total += n as u64;
    }
}

/// Ends a plain download's data connection, at EOF, with a reset instead of a FIN.
///
/// The server closed first (EOF is how stream mode ends a file), so a FIN from us would
/// leave the server's socket 60 s in TIME_WAIT on its passive port. At thousands of files
/// per second that is 100,000 sockets the server's kernel scans on every passive-port
/// bind: in `scripts/bench`, vsftpd's CPU per file doubled within a minute, most of it in
/// `bind` (docs/BENCHMARKS.md), and a server with a small passive range can fail its
/// binds ("500 OOPS: vsf_sysutil_bind"). A reset after EOF loses nothing (every byte up
/// to the server's FIN has arrived, and the 226 still decides success) and frees the
/// server's socket at once. `connect(AF_UNSPEC)` is the socket API's disconnect: it sends
/// the reset without closing the descriptor that tokio and suppaftp still own; the
/// orderly shutdown that suppaftp's `finish` then attempts fails quietly, as it may for a
/// download. TLS data connections keep their orderly close (close_notify). Should a
/// server answer a reset download with a failure (one that reads its data connection to
/// the end before it replies might), the connection's sessions stop resetting
/// ([`SessionOptions`]) and the retry closes with a FIN.
pub(crate) fn reset_after_eof(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed sockaddr with family AF_UNSPEC is a valid argument, and the
    // descriptor stays open (owned by `tcp`) for the duration of the call.
    unsafe {
        let mut addr: libc::sockaddr = std::mem::zeroed();
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        let _ = libc::connect(
            tcp.as_raw_fd(),
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// A read or write of a data connection: an I/O error is a `CONNECTION_ERROR`, no
/// progress within `limit` a stalled transfer (`TRANSFER_TIMEOUT`).
pub(crate) async fn data_io<T>(
    what: &str,
    limit: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, TransferError> {
    match timeout(limit, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TransferError::new(
            ErrorCode::ConnectionError,
            format!("{what} data: {e}"),
        )),
        Err(_) => Err(TransferError::timeout(
            &format!("{what} data (stalled)"),
            limit.as_secs_f64(),
        )),
    }
}

/// How a timed FTP call failed.
pub(crate) enum Fail {
    Ftp(FtpError),
    Timeout,
}

impl Fail {
    pub(crate) fn classify(self, op: &str, limit: Duration) -> TransferError {
        match self {
            Fail::Ftp(e) => TransferError::ftp(op, e),
            Fail::Timeout => TransferError::timeout(op, limit.as_secs_f64()),
        }
    }
}

/// Runs an FTP future with a timeout.
pub(crate) async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, FtpError>>,
) -> Result<T, Fail> {
    match timeout(limit, fut).await {
        Ok(r) => r.map_err(Fail::Ftp),
        Err(_) => Err(Fail::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::announced_size;

    #[test]
    fn the_150_reply_announces_the_size_when_the_server_says_it() {
        let vsftpd = "150 Opening BINARY mode data connection for d/f1 (4096 bytes).";
        assert_eq!(announced_size(vsftpd), Some(4096));
        // The last "(N bytes)" counts, whatever the file is called.
        let odd = "150 Opening BINARY mode data connection for x (5 bytes) (0 bytes).";
        assert_eq!(announced_size(odd), Some(0));
        assert_eq!(
            announced_size("150 File status okay. About to open data connection."),
            None
        );
        assert_eq!(
            announced_size("150 Opening data connection (many bytes)."),
            None
        );
    }
}
