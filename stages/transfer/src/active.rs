//! Active-mode data connections (connections.ini `passive = false`): the client listens,
//! announces its listener with EPRT (falling back to PORT), and the server connects back.
//!
//! Owns: binding the data listener, the EPRT/PORT arguments, accepting the server's data
//! connection (with the TLS client handshake on FTPS sessions), and the RETR/STOR of one
//! active transfer. suppaftp's own active mode is not used: it announces with PORT only
//! (EPRT only for IPv6, with no fallback), binds no port range, announces no address
//! other than the listener's and cannot be told which address to bind.
//!
//! Invariants:
//! - a listener serves one transfer and is closed once the server has connected (or the
//!   transfer failed); it binds the control connection's local address, on a free port of
//!   `active_port_range` when set (port 0, any free port, otherwise); the server is told
//!   `active_address` when set, else the bound address; a port stays claimed by this
//!   process until its transfer ends ([`PortClaim`]), so no second listener takes a port
//!   whose data connection is still open;
//! - only a connection from the control connection's peer address is taken as the data
//!   connection: others are dropped (someone else could otherwise send or receive the
//!   file), and the wait ends with the transfer's timeout either way;
//! - EPRT first; a refusal (500-502, or 522 for an address family it does not take) moves
//!   the session to PORT for good (IPv4 only: an IPv6 address has no PORT form);
//! - every step (announce, transfer command, accept, TLS handshake, each data read or
//!   write, the final reply) is bounded by the session's operation timeout: a server that
//!   never connects back is a `TRANSFER_TIMEOUT`, a 425 a `CONNECTION_ERROR`; the caller
//!   poisons the session after any failure, as for passive transfers;
//! - FTPS data connections use the session's own TLS client configuration, so they resume
//!   the control connection's TLS session (servers that require reuse accept them).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_config::{FtpConnection, PortRange};
use ftp_pooler_contract::ErrorCode;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use suppaftp::tokio::{ImplAsyncFtpStream, TokioTlsStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::data::{announced_size, data_io, timed, Fail};
use crate::session::Extended;
use crate::TransferError;

/// A connection's active-mode settings (`passive = false`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveOptions {
    /// Announced to the server instead of the listener's address (NAT).
    pub address: Option<IpAddr>,
    /// The local ports listeners bind.
    pub ports: Option<PortRange>,
}

impl ActiveOptions {
    /// The connection's active-mode settings; None in passive mode.
    pub fn for_connection(conn: &FtpConnection) -> Option<ActiveOptions> {
        (!conn.passive).then_some(ActiveOptions {
            address: conn.active_address,
            ports: conn.active_port_range,
        })
    }
}

/// What an FTPS session's data connections need: the control connection's TLS client
/// configuration (its session cache) and the server's name.
#[derive(Clone)]
pub(crate) struct DataTls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// The EPRT argument for `addr` (RFC 2428): `|1|132.235.1.2|6275|`, `|2|::1|5282|`.
pub(crate) fn eprt_argument(addr: SocketAddr) -> String {
    let family = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{family}|{}|{}|", addr.ip(), addr.port())
}

/// The PORT argument for `addr` (RFC 959): `h1,h2,h3,h4,p1,p2`; None for IPv6.
pub(crate) fn port_argument(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            let (hi, lo) = (addr.port() >> 8, addr.port() & 0xff);
            Some(format!("{a},{b},{c},{d},{hi},{lo}"))
        }
        IpAddr::V6(_) => None,
    }
}

/// The order in which a port range is tried: all of it, once each, from `start`'s place
/// in it (a different place per transfer, so concurrent sessions rarely collide).
pub(crate) fn port_order(range: PortRange, start: usize) -> impl Iterator<Item = u16> {
    let len = range.len();
    (0..len).map(move |i| range.first() + ((start + i) % len) as u16)
}

/// A bound data listener, the address the server is told, and its claim on the port.
struct DataListener {
    listener: TcpListener,
    announced: SocketAddr,
    claim: PortClaim,
}

/// Local ports of this process's open active-mode data connections. `SO_REUSEADDR` lets
/// a listener bind a port whose earlier data connection is still open; a server that
/// connects from a fixed port (vsftpd's `connect_from_port_20`) would then open a second
/// connection with the same address pair, and fail. So a port stays claimed until its
/// transfer ends, and is skipped meanwhile.
static HELD: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A port in [`HELD`], released when dropped (at the end of its transfer).
pub(crate) struct PortClaim(u16);

impl PortClaim {
    /// Claims `port`; None when a data connection of this process holds it.
    fn take(port: u16) -> Option<PortClaim> {
        // The guard is released before a claim exists: a claim dropped while it is held
        // would lock it again.
        let inserted = HELD.lock().expect("held ports").insert(port);
        inserted.then(|| PortClaim(port))
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        HELD.lock().expect("held ports").remove(&self.0);
    }
}

/// Binds a data listener on `local`'s address (see the module's invariants).
fn bind(local: IpAddr, opts: &ActiveOptions) -> Result<DataListener, TransferError> {
    let failed = |e: std::io::Error| {
        TransferError::new(
            ErrorCode::ConnectionError,
            format!("active mode: cannot listen on {local}: {e}"),
        )
    };
    let listen = |port: u16| -> std::io::Result<TcpListener> {
        let socket = match local {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A port whose last data connection lingers in TIME_WAIT can listen again.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(local, port))?;
        socket.listen(1)
    };
    let (listener, claim) = match opts.ports {
        // The kernel's choice, unless a data connection of ours holds it (then again).
        None => {
            let mut tries = 0;
            loop {
                let l = listen(0).map_err(failed)?;
                let port = l.local_addr().map_err(failed)?.port();
                tries += 1;
                match PortClaim::take(port) {
                    Some(claim) => break (l, claim),
                    None if tries < 16 => continue,
                    None => {
                        return Err(TransferError::new(
                            ErrorCode::ConnectionError,
                            format!("active mode: no free port on {local}"),
                        ))
                    }
                }
            }
        }
        Some(range) => {
            let mut found = None;
            for port in port_order(range, fastrand::usize(..range.len())) {
                let Some(claim) = PortClaim::take(port) else {
                    continue;
                };
                match listen(port) {
                    Ok(l) => {
                        found = Some((l, claim));
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
            found.ok_or_else(|| {
                TransferError::new(
                    ErrorCode::ConnectionError,
                    format!("active mode: no free port in active_port_range {range} on {local}"),
                )
            })?
        }
    };
    let bound = listener.local_addr().map_err(failed)?;
    let announced = SocketAddr::new(opts.address.unwrap_or(bound.ip()), bound.port());
    Ok(DataListener {
        listener,
        announced,
        claim,
    })
}

/// True when a reply to EPRT means "use PORT" (not implemented, or not this family).
fn eprt_refused(e: &FtpError) -> bool {
    matches!(e, FtpError::UnexpectedResponse(r)
        if matches!(crate::error::reply_code(r), 500..=502 | 522))
}

/// Tells the server where to connect: EPRT, or PORT for good once EPRT was refused.
async fn announce<T>(
    f: &mut ImplAsyncFtpStream<T>,
    extended: &mut Extended,
    addr: SocketAddr,
    op: Duration,
) -> Result<(), TransferError>
where
    T: TokioTlsStream + Send,
{
    loop {
        let (name, line) = match *extended {
            Extended::Refused => {
                let arg = port_argument(addr).ok_or_else(|| {
                    TransferError::new(
                        ErrorCode::ConnectionError,
                        format!("active mode: the server refused EPRT, and PORT cannot announce the IPv6 address {addr}"),
                    )
                })?;
                ("PORT", format!("PORT {arg}"))
            }
            _ => ("EPRT", format!("EPRT {}", eprt_argument(addr))),
        };
        match timed(op, f.custom_command(line, &[Status::CommandOk])).await {
            Err(Fail::Ftp(e)) if *extended == Extended::Untried && eprt_refused(&e) => {
                *extended = Extended::Refused;
            }
            r => {
                r.map_err(|fail| fail.classify(name, op))?;
                if *extended == Extended::Untried {
                    *extended = Extended::Works;
                }
                return Ok(());
            }
        }
    }
}

/// A data connection, plain or TLS.
trait DataIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> DataIo for S {}

/// Waits for the server's data connection (from the control peer only), then secures it
/// when `tls` is given.
async fn accept(
    listener: TcpListener,
    peer: IpAddr,
    tls: Option<DataTls>,
    op: Duration,
) -> Result<Box<dyn DataIo>, TransferError> {
    let wait = async {
        loop {
            let (stream, from) = listener.accept().await?;
            if from.ip().to_canonical() == peer.to_canonical() {
                return Ok::<TcpStream, std::io::Error>(stream);
            }
            tracing::warn!(%from, "active mode: dropped a data connection from an address other than the server's");
        }
    };
    let tcp =
        TransferError::connecting("active mode: the server's data connection", op, wait).await?;
    drop(listener);
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(t) => {
            let handshake = TlsConnector::from(t.config).connect(t.name, tcp);
            let tls = TransferError::connecting(
                "active mode: data connection TLS handshake",
                op,
                handshake,
            )
            .await?;
            Ok(Box::new(tls))
        }
    }
}

/// Announces a listener, sends `cmd` ("RETR /a" or "STOR /a") and returns the server's
/// preliminary reply with its (secured) data connection. The reply is read while the
/// connection is awaited: servers differ in which comes first.
async fn open<T>(
    f: &mut ImplAsyncFtpStream<T>,
    extended: &mut Extended,
    active: &ActiveOptions,
    tls: Option<&DataTls>,
    cmd: &str,
    op: Duration,
) -> Result<(String, Box<dyn DataIo>, PortClaim), TransferError>
where
    T: TokioTlsStream + Send,
{
    let verb = &cmd[..4];
    let (local, peer) = {
        let control = f.get_ref().await;
        let addrs = control
            .local_addr()
            .and_then(|l| Ok((l, control.peer_addr()?)));
        addrs.map_err(|e| TransferError::new(ErrorCode::ConnectionError, format!("{verb}: {e}")))?
    };
    let DataListener {
        listener,
        announced,
        claim,
    } = bind(local.ip(), active)?;
    announce(f, extended, announced, op).await?;
    let accepting = accept(listener, peer.ip(), tls.cloned(), op);
    tokio::pin!(accepting);
    let mut data = None;
    let reply = {
        let preliminary = timed(
            op,
            f.custom_command(cmd, &[Status::AboutToSend, Status::AlreadyOpen]),
        );
        tokio::pin!(preliminary);
        loop {
            tokio::select! {
                r = &mut preliminary => break r.map_err(|fail| fail.classify(verb, op))?,
                d = &mut accepting, if data.is_none() => data = Some(d?),
            }
        }
    };
    let data = match data {
        Some(d) => d,
        None => accepting.await?,
    };
    Ok((
        String::from_utf8_lossy(&reply.body).into_owned(),
        data,
        claim,
    ))
}

/// Reads the transfer's final reply (226 or 250).
async fn finish<T>(
    f: &mut ImplAsyncFtpStream<T>,
    verb: &str,
    op: Duration,
) -> Result<(), TransferError>
where
    T: TokioTlsStream + Send,
{
    timed(
        op,
        f.read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]),
    )
    .await
    .map(|_| ())
    .map_err(|fail| fail.classify(verb, op))
}

/// RETR `path` in active mode into `out`; returns the bytes written and the size the 150
/// reply announced, if it did (the caller checks them).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn retr<T, W>(
    f: &mut ImplAsyncFtpStream<T>,
    extended: &mut Extended,
    active: &ActiveOptions,
    tls: Option<&DataTls>,
    path: &str,
    out: &mut W,
    op: Duration,
    buf: &mut [u8],
) -> Result<(u64, Option<u64>), TransferError>
where
    T: TokioTlsStream + Send,
    W: AsyncWrite + Unpin,
{
    // `_claim` holds the port until the data connection is gone (end of this call).
    let (reply, mut data, _claim) =
        open(f, extended, active, tls, &format!("RETR {path}"), op).await?;
    let announced = announced_size(&reply);
    let mut total = 0u64;
    loop {
        let n = data_io("RETR", op, data.read(buf)).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| TransferError::local_io("write destination", &e))?;
        total += n as u64;
    }
    out.flush()
        .await
        .map_err(|e| TransferError::local_io("write destination", &e))?;
    drop(data);
    finish(f, "RETR", op).await?;
    Ok((total, announced))
}

/// STOR (or APPE: `verb`) `input` to `path` in active mode; returns the bytes sent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stor<T, R>(
    f: &mut ImplAsyncFtpStream<T>,
    extended: &mut Extended,
    active: &ActiveOptions,
    tls: Option<&DataTls>,
    input: &mut R,
    path: &str,
    verb: &str,
    op: Duration,
    buf: &mut [u8],
) -> Result<u64, TransferError>
where
    T: TokioTlsStream + Send,
    R: AsyncRead + Unpin,
{
    let (_, mut data, _claim) =
        open(f, extended, active, tls, &format!("{verb} {path}"), op).await?;
    let mut total = 0u64;
    loop {
        let n = input
            .read(buf)
            .await
            .map_err(|e| TransferError::local_io("read source", &e))?;
        if n == 0 {
            break;
        }
        data_io(verb, op, data.write_all(&buf[..n])).await?;
        total += n as u64;
    }
    // The end of the file: EOF (after TLS's close_notify) on the data connection.
    data_io(verb, op, data.shutdown()).await?;
    if tls.is_some() {
        // The server may have sent what we never read (TLS 1.3 session tickets): closing
        // with unread data resets the connection, and the reset can overtake the
        // close_notify and fail the upload (vsftpd: "426 Failure reading network
        // stream"). Wait for the server to close its side first, as suppaftp does.
        let _ = timeout(op, async {
            let mut rest = [0u8; 512];
            while let Ok(n) = data.read(&mut rest).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    drop(data);
    finish(f, verb, op).await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_claimed_once_until_its_transfer_ends() {
        // A port no other test claims (they bind ranges of 20000-30000 or port 0).
        let a = PortClaim::take(1999).expect("free");
        assert!(
            PortClaim::take(1999).is_none(),
            "held by an open data connection"
        );
        drop(a);
        assert!(
            PortClaim::take(1999).is_some(),
            "released at the end of its transfer"
        );
    }

    #[test]
    fn eprt_and_port_arguments() {
        let v4: SocketAddr = "132.235.1.2:6275".parse().unwrap();
        assert_eq!(eprt_argument(v4), "|1|132.235.1.2|6275|");
        assert_eq!(port_argument(v4).unwrap(), "132,235,1,2,24,131");
        let v6: SocketAddr = "[1080::8:800:200c:417a]:5282".parse().unwrap();
        assert_eq!(eprt_argument(v6), "|2|1080::8:800:200c:417a|5282|");
        assert_eq!(port_argument(v6), None);
        let edge: SocketAddr = "10.0.0.1:65535".parse().unwrap();
        assert_eq!(port_argument(edge).unwrap(), "10,0,0,1,255,255");
    }

    #[test]
    fn a_port_range_is_tried_whole_once_from_any_start() {
        let range = PortRange::new(50000, 50003).unwrap();
        let order: Vec<u16> = port_order(range, 2).collect();
        assert_eq!(order, [50002, 50003, 50000, 50001]);
        assert_eq!(
            port_order(range, 0).collect::<Vec<_>>(),
            [50000, 50001, 50002, 50003]
        );
        let one = PortRange::new(60000, 60000).unwrap();
        assert_eq!(port_order(one, 0).collect::<Vec<_>>(), [60000]);
        let top = PortRange::new(65534, 65535).unwrap();
        assert_eq!(port_order(top, 1).collect::<Vec<_>>(), [65535, 65534]);
    }

    #[tokio::test]
    async fn a_listener_binds_the_range_and_announces_the_configured_address() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let plain = bind(local, &ActiveOptions::default()).unwrap();
        assert_eq!(plain.announced.ip(), local);
        assert_ne!(plain.announced.port(), 0);

        let first = tokio_free_range();
        let range = PortRange::new(first, first + 1).unwrap();
        let opts = ActiveOptions {
            address: Some("203.0.113.7".parse().unwrap()),
            ports: Some(range),
        };
        let a = bind(local, &opts).unwrap();
        assert_eq!(a.announced.ip().to_string(), "203.0.113.7");
        assert!(range.contains(a.announced.port()));
        assert_eq!(a.listener.local_addr().unwrap().ip(), local);
        let b = bind(local, &opts).unwrap();
        assert!(range.contains(b.announced.port()));
        assert_ne!(a.announced.port(), b.announced.port());
        let err = bind(local, &opts).err().unwrap();
        assert_eq!(err.code, ErrorCode::ConnectionError);
        assert!(err.message.contains("no free port"), "{err}");
    }

    /// Two consecutive free ports above the ephemeral range's usual start.
    fn tokio_free_range() -> u16 {
        for first in (20000..30000).step_by(7) {
            let a = std::net::TcpListener::bind(("127.0.0.1", first));
            let b = std::net::TcpListener::bind(("127.0.0.1", first + 1));
            if a.is_ok() && b.is_ok() {
                return first;
            }
        }
        panic!("no two consecutive free ports in 20000-30000");
    }

    #[test]
    fn only_refusals_of_eprt_move_to_port() {
        use suppaftp::types::Response;
        let reply = |status: Status, body: &str| {
            FtpError::UnexpectedResponse(Response::new(status, body.as_bytes().to_vec()))
        };
        assert!(eprt_refused(&reply(Status::NotImplemented, "502 no")));
        assert!(eprt_refused(&reply(Status::BadCommand, "500 what")));
        assert!(eprt_refused(&reply(
            Status::Unknown,
            "522 Network protocol not supported, use (1)"
        )));
        assert!(!eprt_refused(&reply(Status::NotLoggedIn, "530 log in")));
        assert!(!eprt_refused(&reply(Status::NotAvailable, "421 bye")));
    }
}
