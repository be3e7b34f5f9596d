//! Plain (unencrypted) passive-mode transfers, spoken on the control socket by hand:
//! pipelined commands and data connections opened ahead of need.
//!
//! suppaftp sends one command per round trip. On a WAN link round trips decide the rate of
//! small files, so plain passive sessions write several commands at once where that is
//! safe, and read every reply in order:
//!
//! - **RNFR + RNTO** in one write ([`pipelined_rename`]): a failed RNFR makes the server
//!   refuse the RNTO, so nothing is renamed.
//! - **STOR + the file's first bytes** before the 150 ([`stor`]), on the servers that
//!   [`holds_commands`] (the others wait for the 150).
//! - **The next transfer's EPSV** rides on a command the session sends anyway, and its data
//!   connection is opened at once, in the background ([`Ahead`]): so a transfer starts with
//!   its data connection already there, and costs its own round trip only.
//!   - on every plain passive session, with the SIZE that checks an upload ([`size`]):
//!     no transfer is running, so every server takes it;
//!   - with the RETR of a download ([`retr`]) only on servers that hold a command sent
//!     during a transfer until the transfer has ended: vsftpd, pure-ftpd and proftpd do
//!     ([`holds_commands`], known by their greeting). pyftpdlib does not: it runs the EPSV
//!     at once, which closes the data connection of the download in progress. Should a
//!     server answer out of order, its connection's sessions stop pipelining downloads
//!     ([`Pipelining`]) and the session is discarded; the download itself stands or falls
//!     by its own replies.
//!
//!   An upload is then STOR+data, SIZE+EPSV, RNFR+RNTO: three round trips instead of five;
//!   a download on those servers RETR+EPSV and the data connection's handshake: two
//!   instead of three (measured through the test bed's link simulator:
//!   docs/BENCHMARKS.md).
//!
//! Invariants: a data connection opened ahead is used for the next transfer only if it is
//! younger than [`AHEAD_MAX_AGE`] (servers time idle data connections out: pyftpdlib after
//! 30 s) and its connect succeeded; otherwise the transfer asks for a fresh one, and the
//! server drops the old one when it answers the new EPSV. Every command's reply is read,
//! in order, before the session is handed back; a reply that is not the expected one
//! poisons the session (the caller).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftp_pooler_contract::limits::excerpt;
use ftp_pooler_contract::ErrorCode;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::Response;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::data::{
    announced_size, data_io, epsv_refused, read_to_eof, reset_after_eof, send_rest, timed,
    Announces, Fail,
};
use crate::session::Extended;
use crate::TransferError;

/// A data connection opened ahead is not used after this long: servers close idle data
/// connections (pyftpdlib after 30 s) or their passive listeners.
pub(crate) const AHEAD_MAX_AGE: Duration = Duration::from_secs(10);

/// Whether the sessions of one connection pipeline a download's RETR with the next EPSV
/// (shared by them, like the other things a connection's sessions learn of its server).
#[derive(Debug, Clone, Default)]
pub struct Pipelining {
    /// Set once a server answered a pipelined EPSV out of order: never again.
    refused: Arc<AtomicBool>,
}

impl Pipelining {
    fn allowed(&self) -> bool {
        !self.is_refused()
    }

    pub(crate) fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, why: &str) {
        if !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                why,
                "the server does not take a command sent during a download; downloads no longer carry the next EPSV"
            );
        }
    }
}

/// True for servers known, by their greeting, to hold a command that arrives during a
/// transfer until the transfer has ended (checked against each in tests/ftp_servers.rs):
/// vsftpd ("220 (vsFTPd 3.0.3)"), pure-ftpd ("220---------- Welcome to Pure-FTPd") and
/// proftpd ("220 ProFTPD Server ..."). Unknown servers (and a custom banner) are not
/// pipelined across a transfer.
pub(crate) fn holds_commands(greeting: &str) -> bool {
    let g = greeting.to_ascii_lowercase();
    ["vsftpd", "pure-ftpd", "proftpd"]
        .iter()
        .any(|name| g.contains(name))
}

/// A data connection to the server's passive port, opened ahead of the transfer that will
/// use it. The connect runs in the background; dropping this closes it.
pub(crate) struct Ahead {
    addr: SocketAddr,
    connecting: JoinHandle<std::io::Result<TcpStream>>,
    since: Instant,
}

impl Ahead {
    fn open(addr: SocketAddr) -> Ahead {
        let connect = async move {
            let stream = TcpStream::connect(addr).await?;
            // Unused, it ends with a reset: a FIN from either side would leave a TIME_WAIT
            // socket, and the server's (had it closed first, at a QUIT or a new EPSV) would
            // sit on its passive port (see `reset_after_eof`). [`Ahead::take`] restores an
            // orderly close for the transfer.
            stream.set_zero_linger()?;
            Ok(stream)
        };
        Ahead {
            addr,
            connecting: tokio::spawn(connect),
            since: Instant::now(),
        }
    }

    /// Too old to be used ([`AHEAD_MAX_AGE`]).
    pub(crate) fn is_stale(&self) -> bool {
        self.since.elapsed() > AHEAD_MAX_AGE
    }

    /// The connection, if it is young enough and connected within `op`.
    async fn take(self, op: Duration) -> Option<TcpStream> {
        if self.is_stale() {
            return None;
        }
        let addr = self.addr;
        match tokio::time::timeout(op, &mut { self }.connecting).await {
            // SO_LINGER off again: an orderly close (deprecated in tokio because a
            // linger time blocks on drop; off never does).
            #[allow(deprecated)]
            Ok(Ok(Ok(stream))) => stream.set_linger(None).ok().map(|()| stream),
            Ok(Ok(Err(e))) => {
                tracing::debug!(%addr, error = %e, "data connection opened ahead failed; asking for another");
                None
            }
            _ => None,
        }
    }
}

impl Drop for Ahead {
    /// Closes the connection (with a reset, if it connected) or stops its connect.
    fn drop(&mut self) {
        self.connecting.abort();
    }
}

/// The session state this module works with.
pub(crate) struct Plain<'a> {
    pub f: &'a mut AsyncFtpStream,
    pub epsv: &'a mut Extended,
    pub ahead: &'a mut Option<Ahead>,
    pub op: Duration,
}

impl Plain<'_> {
    /// The data connection of the next transfer: the one opened ahead, or a fresh one
    /// (EPSV, or PASV once EPSV was refused).
    async fn data_connection(&mut self, what: &str) -> Result<TcpStream, TransferError> {
        if let Some(ahead) = self.ahead.take() {
            if let Some(stream) = ahead.take(self.op).await {
                return Ok(stream);
            }
        }
        let addr = passive_address(self.f, self.epsv, self.op).await?;
        let data = TransferError::connecting(
            &format!("{what} data connection to {addr}"),
            self.op,
            TcpStream::connect(addr),
        )
        .await?;
        Ok(data)
    }

    /// The passive command that asks for the next data connection.
    fn passive_command(&self) -> &'static str {
        match *self.epsv {
            Extended::Refused => "PASV\r\n",
            _ => "EPSV\r\n",
        }
    }

    /// Reads the reply to a pipelined EPSV (or PASV) and opens its data connection ahead.
    async fn read_ahead(&mut self, reply: Option<Response>) -> Result<(), TransferError> {
        let (cmd, status) = match *self.epsv {
            Extended::Refused => ("PASV", Status::PassiveMode),
            _ => ("EPSV", Status::ExtendedPassiveMode),
        };
        let reply = match reply {
            Some(r) => r,
            None => timed(self.op, self.f.read_response_in(&[status]))
                .await
                .map_err(|fail| fail.classify(cmd, self.op))?,
        };
        let addr = reply_address(self.f, cmd, &reply).await?;
        *self.ahead = Some(Ahead::open(addr));
        Ok(())
    }
}

/// SIZE of a remote file; on a session without a data connection ahead, the next EPSV goes
/// in the same write and its data connection is opened ahead. A failure of the EPSV part
/// leaves the SIZE answered: it is returned as `Err` in the second place, and the caller
/// discards the session.
pub(crate) async fn size(
    p: &mut Plain<'_>,
    path: &str,
) -> (Result<u64, TransferError>, Result<(), TransferError>) {
    let op = p.op;
    let ahead = p.ahead.is_none();
    let mut lines = format!("SIZE {path}\r\n");
    if ahead {
        lines.push_str(p.passive_command());
    }
    if let Err(fail) = timed(op, send_raw(p.f, &lines)).await {
        let e = fail.classify("SIZE", op);
        return (Err(e.clone()), Err(e));
    }
    let size = match timed(op, p.f.read_response_in(&[Status::File])).await {
        Ok(reply) => {
            let text = String::from_utf8_lossy(&reply.body);
            text.get(4..)
                .and_then(|n| n.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    TransferError::new(
                        ErrorCode::ConnectionError,
                        format!("SIZE: no number in {:?}", excerpt(&text, 200)),
                    )
                })
        }
        Err(fail @ Fail::Ftp(FtpError::UnexpectedResponse(_))) => Err(fail.classify("SIZE", op)),
        Err(fail) => {
            let e = fail.classify("SIZE", op);
            return (Err(e.clone()), Err(e));
        }
    };
    let next = if ahead {
        p.read_ahead(None).await
    } else {
        Ok(())
    };
    (size, next)
}

/// RETR `path` into `out` on a plain passive session; returns the bytes received, and
/// whether the next EPSV was pipelined and answered (`Err`: the download stands, the
/// session must go). With `pipelining` allowed (a server that [`holds_commands`]), the
/// next transfer's EPSV goes with the RETR.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn retr<W>(
    p: &mut Plain<'_>,
    pipelining: Option<&Pipelining>,
    reset: &AtomicBool,
    path: &str,
    offset: u64,
    announces: &Announces,
    out: &mut W,
    buf: &mut [u8],
) -> Result<(u64, Result<(), TransferError>), TransferError>
where
    W: AsyncWrite + Unpin,
{
    let op = p.op;
    let data = p.data_connection("RETR").await?;
    let _ = data.set_nodelay(true);
    let pipelined = pipelining.filter(|p| p.allowed());
    // A server not known to announce the size in its 150 is asked it, in the same write:
    // a download cut short with a 226 all the same is then found out.
    let ask_size = !announces.known();
    let mut lines = String::new();
    if ask_size {
        lines.push_str(&format!("SIZE {path}\r\n"));
    }
    lines.push_str(&format!("RETR {path}\r\n"));
    if pipelined.is_some() {
        lines.push_str(p.passive_command());
    }
    timed(op, send_raw(p.f, &lines))
        .await
        .map_err(|fail| fail.classify("RETR", op))?;
    let size = if ask_size {
        match timed(op, p.f.read_response_in(&[Status::File])).await {
            Ok(reply) => String::from_utf8_lossy(&reply.body)
                .get(4..)
                .and_then(|n| n.trim().parse::<u64>().ok()),
            // No size (550: the RETR's own reply says what is wrong).
            Err(Fail::Ftp(FtpError::UnexpectedResponse(_))) => None,
            Err(fail) => return Err(fail.classify("SIZE", op)),
        }
    } else {
        None
    };
    let opened = timed(
        op,
        p.f.read_response_in(&[Status::AboutToSend, Status::AlreadyOpen]),
    )
    .await
    .map_err(|fail| fail.classify("RETR", op))?;
    let announced = announced_size(&String::from_utf8_lossy(&opened.body));
    announces.learn(announced.is_some());
    let received = receive(p, pipelined, reset, data, out, buf).await;
    if received.is_err() {
        if let Some(pl) = pipelined {
            // A failed transfer with an EPSV in flight: do not risk the next one too.
            pl.refuse("a download with a pipelined EPSV failed");
        }
    }
    let (total, early) = received?;
    crate::data::check_announced(path, announced.or(size), total, offset)?;
    let next = match pipelined {
        None => Ok(()),
        Some(_) => p.read_ahead(early).await,
    };
    Ok((total, next))
}

/// A download after its 150: the data to EOF, then the 226. Returns the bytes received
/// and, if the server answered the pipelined EPSV during the transfer, that reply.
async fn receive<W>(
    p: &mut Plain<'_>,
    pipelined: Option<&Pipelining>,
    reset: &AtomicBool,
    mut data: TcpStream,
    out: &mut W,
    buf: &mut [u8],
) -> Result<(u64, Option<Response>), TransferError>
where
    W: AsyncWrite + Unpin,
{
    let op = p.op;
    let total = read_to_eof(&mut data, out, op, buf).await?;
    let was_reset = reset.load(Ordering::Relaxed);
    if was_reset {
        reset_after_eof(&data);
    }
    drop(data);
    out.flush()
        .await
        .map_err(|e| TransferError::local_io("write destination", &e))?;
    let done = [Status::ClosingDataConnection, Status::RequestedFileActionOk];
    let mut early = None;
    let mut finished = timed(
        op,
        p.f.read_response_in(&[
            Status::ClosingDataConnection,
            Status::RequestedFileActionOk,
            Status::ExtendedPassiveMode,
            Status::PassiveMode,
        ]),
    )
    .await;
    if let Ok(r) = &finished {
        if matches!(r.status, Status::ExtendedPassiveMode | Status::PassiveMode) {
            if pipelined.is_none() {
                return Err(TransferError::new(
                    ErrorCode::ConnectionError,
                    "RETR: a passive-mode reply where the 226 was due",
                ));
            }
            // The EPSV was answered during the transfer: this server does not hold it.
            if let Some(pl) = pipelined {
                pl.refuse("an EPSV sent with a RETR was answered before the RETR's 226");
            }
            early = finished.ok();
            finished = timed(op, p.f.read_response_in(&done)).await;
        }
    }
    if finished.is_err() && was_reset && reset.swap(false, Ordering::Relaxed) {
        // A server that reads its data connection to the end before it replies may take
        // the reset for a failed transfer: close with a FIN from now on (the retry too).
        tracing::warn!("the server failed a download whose data connection was reset after EOF; closing data connections with a FIN from now on");
    }
    finished.map_err(|fail| fail.classify("RETR", op))?;
    Ok((total, early))
}

/// STOR on a plain session; with `early_data` (a server that [`holds_commands`]), the
/// file's first bytes go ahead of the server's 150. Without it the data waits for the
/// 150: pyftpdlib closes a data connection that was open before the STOR if bytes reach
/// it before the STOR does, as they may when the connection was opened ahead.
///
/// With `early_data`, the file's first bytes are sent ahead of the server's 150:
/// the command, as much of the file as the kernel takes at once (a small file whole,
/// with its FIN) go out together, and the 150 and the 226 are then read together: one
/// round trip fewer per upload than suppaftp's STOR, which waits for the 150 before it
/// sends a byte. The data connection is the one opened ahead, when there is one.
///
/// Safe: nothing ahead of the 150 waits. Data is written only while the socket takes it
/// without blocking, so a server that refuses the STOR (and never reads the connection)
/// cannot stall us; the rest of a large file waits for the 150, as before. The bytes a
/// server receives before it accepts the data connection sit in its kernel's queue, and
/// it reads them, as any others, once the STOR has opened its file; a refused STOR's
/// bytes are never read. The replies are read in order whatever happens, and any failure
/// poisons the session (the caller).
pub(crate) async fn stor<R>(
    p: &mut Plain<'_>,
    early_data: bool,
    input: &mut R,
    path: &str,
    verb: &str,
    buf: &mut [u8],
) -> Result<u64, TransferError>
where
    R: AsyncRead + Unpin,
{
    let op = p.op;
    let mut data = p.data_connection(verb).await?;
    let _ = data.set_nodelay(true);
    let f = &mut *p.f;
    timed(op, send_raw(f, &format!("{verb} {path}\r\n")))
        .await
        .map_err(|fail| fail.classify(verb, op))?;
    let preliminary = [Status::AboutToSend, Status::AlreadyOpen];
    let read = |e: std::io::Error| TransferError::local_io("read source", &e);
    let written = |e: std::io::Error| {
        TransferError::new(ErrorCode::ConnectionError, format!("{verb} data: {e}"))
    };
    // Ahead of the 150 (servers that take it): whole chunks, while the socket takes them
    // without waiting. Without `early_data` nothing goes ahead, and all of the file
    // follows the 150.
    let mut total = 0u64;
    let mut rest = 0..0;
    let mut all_out = false;
    if early_data {
        loop {
            let n = input.read(buf).await.map_err(read)?;
            if n == 0 {
                all_out = true;
                break;
            }
            total += n as u64;
            let mut off = 0;
            while off < n {
                match data.try_write(&buf[off..n]) {
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(written(e)),
                }
            }
            if off < n {
                rest = off..n;
                break;
            }
        }
    }
    if all_out {
        // All of it is out: close, so the server sees EOF, before the 150 is even read.
        let shut = data.shutdown().await;
        drop(data);
        timed(op, f.read_response_in(&preliminary))
            .await
            .map_err(|fail| fail.classify(verb, op))?;
        shut.map_err(written)?;
    } else {
        // A file larger than what the socket took at once (or a server that gets no
        // data ahead): the rest once the server has accepted the STOR.
        timed(op, f.read_response_in(&preliminary))
            .await
            .map_err(|fail| fail.classify(verb, op))?;
        data_io(verb, op, data.write_all(&buf[rest])).await?;
        total += send_rest(input, &mut data, op, buf).await?;
        data_io(verb, op, data.shutdown()).await?;
        drop(data);
    }
    timed(
        op,
        f.read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]),
    )
    .await
    .map_err(|fail| fail.classify(verb, op))?;
    Ok(total)
}

/// RNFR and RNTO in one write, then both replies: one round trip (and one wake-up of the
/// server) instead of two, on every upload. Safe to pipeline: if RNFR fails, the server
/// refuses the RNTO (503, "RNFR required first") and nothing is renamed; both replies
/// are read either way, so the channel stays in step. The paths were checked for CR, LF
/// and NUL by [`crate::FtpSession::remote_path`].
pub(crate) async fn pipelined_rename(
    f: &mut AsyncFtpStream,
    from: &str,
    to: &str,
) -> Result<(), FtpError> {
    send_raw(f, &format!("RNFR {from}\r\nRNTO {to}\r\n")).await?;
    let from_reply = f.read_response_in(&[Status::RequestFilePending]).await;
    if let Err(FtpError::ConnectionError(_)) = from_reply {
        return from_reply.map(|_| ());
    }
    // Some non-compliant servers (e.g. bftpd) reply 200 instead of 250, as suppaftp allows.
    let to_reply = f
        .read_response_in(&[Status::RequestedFileActionOk, Status::CommandOk])
        .await;
    from_reply?;
    to_reply.map(|_| ())
}

/// Writes command lines straight to a plain control socket, without reading a reply:
/// suppaftp sends one command per round trip. The caller reads every reply. Paths in
/// `lines` were checked for CR, LF and NUL by [`crate::FtpSession::remote_path`].
pub(crate) async fn send_raw(f: &mut AsyncFtpStream, lines: &str) -> Result<(), FtpError> {
    let control = f.get_ref().await;
    let mut sent = 0;
    while sent < lines.len() {
        control
            .writable()
            .await
            .map_err(FtpError::ConnectionError)?;
        match control.try_write(&lines.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(FtpError::ConnectionError(e)),
        }
    }
    Ok(())
}

/// The data address of a plain session's next transfer: EPSV, or PASV for good once the
/// server has refused EPSV; the port with the control connection's peer address (as
/// suppaftp's NAT workaround does for PASV).
async fn passive_address(
    f: &mut AsyncFtpStream,
    epsv: &mut Extended,
    op: Duration,
) -> Result<SocketAddr, TransferError> {
    loop {
        let (cmd, status) = match *epsv {
            Extended::Refused => ("PASV", Status::PassiveMode),
            _ => ("EPSV", Status::ExtendedPassiveMode),
        };
        let reply = match timed(op, f.custom_command(cmd, &[status])).await {
            Err(Fail::Ftp(e)) if *epsv == Extended::Untried && epsv_refused(&e) => {
                *epsv = Extended::Refused;
                f.set_mode(Mode::Passive);
                continue;
            }
            r => r.map_err(|fail| fail.classify(cmd, op))?,
        };
        if *epsv == Extended::Untried {
            *epsv = Extended::Works;
        }
        return reply_address(f, cmd, &reply).await;
    }
}

/// The data address a 229 or 227 reply names: its port, with the control connection's
/// peer address.
async fn reply_address(
    f: &mut AsyncFtpStream,
    cmd: &str,
    reply: &Response,
) -> Result<SocketAddr, TransferError> {
    let text = String::from_utf8_lossy(&reply.body);
    let port = passive_port(&text).ok_or_else(|| {
        TransferError::new(
            ErrorCode::ConnectionError,
            format!("{cmd}: no port in the reply {:?}", excerpt(&text, 200)),
        )
    })?;
    let mut addr = f
        .get_ref()
        .await
        .peer_addr()
        .map_err(|e| TransferError::new(ErrorCode::ConnectionError, format!("{cmd}: {e}")))?;
    addr.set_port(port);
    Ok(addr)
}

/// The port of an EPSV reply ("229 Entering Extended Passive Mode (|||6446|)", any
/// delimiter, RFC 2428) or of a PASV reply ("227 Entering Passive Mode
/// (127,0,0,1,25,46)").
fn passive_port(reply: &str) -> Option<u16> {
    let inner = &reply[reply.find('(')? + 1..];
    let inner = &inner[..inner.find(')')?];
    let mut chars = inner.chars();
    if let Some(d) = chars.next().filter(|c| !c.is_ascii_digit()) {
        let rest = inner.strip_prefix(d.to_string().repeat(3).as_str())?;
        return rest.strip_suffix(d)?.parse().ok();
    }
    let parts: Vec<u16> = inner
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [_, _, _, _, hi, lo] if hi < 256 && lo < 256 => Some(hi * 256 + lo),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{holds_commands, passive_port};

    #[test]
    fn the_port_of_an_epsv_or_pasv_reply() {
        let epsv = "229 Entering Extended Passive Mode (|||6446|)";
        assert_eq!(passive_port(epsv), Some(6446));
        assert_eq!(passive_port("229 EPSV ok (!!!40001!)"), Some(40001));
        let pasv = "227 Entering Passive Mode (127,0,0,1,25,46).";
        assert_eq!(passive_port(pasv), Some(25 * 256 + 46));
        for bad in [
            "229 Entering Extended Passive Mode",
            "229 (|||port|)",
            "229 (||6446|)",
            "227 Entering Passive Mode (127,0,0,1,25)",
            "227 Entering Passive Mode (127,0,0,1,256,1)",
        ] {
            assert_eq!(passive_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn servers_that_hold_commands_during_a_transfer_are_known_by_their_greeting() {
        for greeting in [
            "220 (vsFTPd 3.0.3)",
            "220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------",
            "220 ProFTPD Server (ftp-pooler test bed) [127.0.0.1]",
        ] {
            assert!(holds_commands(greeting), "{greeting}");
        }
        for greeting in ["220 pyftpdlib 2.2.0 ready.", "220 Welcome", ""] {
            assert!(!holds_commands(greeting), "{greeting}");
        }
    }
}
