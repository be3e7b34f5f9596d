//! A link simulator: a user-space TCP proxy on 127.0.0.2 that puts a WAN between a
//! client and a test-bed server (this kernel has no netem).
//!
//! [`LinkProxy::start`] listens on `127.0.0.2:<free port>` and relays each connection to
//! the upstream server:
//!
//! - Each direction is delayed by RTT/2 ([`pipe`]: a reader stamps each chunk, a writer
//!   writes it when due), so a stream is delayed, not throttled to one chunk per RTT.
//! - The upstream connection is made 1.5 RTT after the client's: the server accepts it
//!   when it would behind a real three-way handshake, so a greeting arrives 2 RTT after
//!   connect() began, as on a WAN. (The client's connect() itself returns at once; a
//!   client that waits for the server to speak first cannot tell.)
//! - [`LinkSpec::bandwidth`] caps each direction of the whole link (shared by all its
//!   connections, control and data, as a WAN link is): chunks leave one after another at
//!   that rate ([`pipe::Pacer`]); they are read no faster, so the sender feels it.
//! - FTP-aware ([`LinkProxy::start`]): on the control channel each `227`/`229` reply opens
//!   a data listener on 127.0.0.2 relaying to the server's data address (same delay and
//!   cap) *before* the reply goes on, pointed at that listener (a 229: its port; a 227:
//!   address and port). Active mode too: a client's PORT/EPRT opens a listener on
//!   127.0.0.1 for the server to connect to, relaying to the address the client announced.
//! - Encrypted control channels (explicit FTPS after `234`, implicit FTPS) pass through
//!   untouched: the proxy cannot read their replies. For FTPS use
//!   [`LinkProxy::forward_ports`]: a relay from `127.0.0.2:p` to the server's `p` for each
//!   of its passive ports, so an EPSV reply (port only) lands on the link. A PASV reply
//!   names 127.0.0.1 and bypasses the link, unless the client uses the control
//!   connection's address (ftp-pooler does); active-mode FTPS is not relayed.
//!
//! The proxy runs on its own two-thread runtime (tests may block their own), stopped when
//! the [`LinkProxy`] is dropped; every relayed connection ends with it.
//!
//! Fidelity, measured on this 2-core machine (tests/testbed/tests/link_proxy.rs): see
//! docs/NOTES.md "Link simulator".

mod ftp;
mod pipe;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use ftp::{Lines, Passive, Segment};
use pipe::{Filter, Pacer, Tap, Way};
use tokio::sync::watch;

/// The address the proxy listens on (Linux routes all of 127/8 to lo).
pub const LINK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// How long a data listener waits for its one connection.
const DATA_ACCEPT: Duration = Duration::from_secs(30);

/// The link's round-trip time and bandwidth cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpec {
    pub rtt: Duration,
    /// Bytes per second in each direction, shared by all the link's connections; None:
    /// no cap.
    pub bandwidth: Option<u64>,
}

impl LinkSpec {
    /// A link of `rtt_ms` milliseconds round trip and no bandwidth cap.
    pub fn rtt_ms(rtt_ms: u64) -> LinkSpec {
        LinkSpec {
            rtt: Duration::from_millis(rtt_ms),
            bandwidth: None,
        }
    }

    /// The same link capped at `bytes_per_second` each way.
    pub fn with_bandwidth(self, bytes_per_second: u64) -> LinkSpec {
        LinkSpec {
            bandwidth: Some(bytes_per_second),
            ..self
        }
    }
}

/// The simulated link, shared by its connections.
struct Link {
    spec: LinkSpec,
    /// Client to server, server to client.
    up: Option<Arc<Pacer>>,
    down: Option<Arc<Pacer>>,
    /// Bytes relayed client to server, server to client (control and data).
    sent_up: Arc<AtomicU64>,
    sent_down: Arc<AtomicU64>,
    /// Bumped by [`LinkProxy::cut`]: every relayed connection ends.
    cut: watch::Sender<u64>,
}

impl Link {
    /// The taps of a relay's two directions: near to far, far to near.
    fn taps(&self, side: Accepted) -> (Tap, Tap) {
        let tap = |bytes: &Arc<AtomicU64>| Tap {
            bytes: bytes.clone(),
            cut: self.cut.subscribe(),
        };
        match side {
            Accepted::Client => (tap(&self.sent_up), tap(&self.sent_down)),
            Accepted::Server => (tap(&self.sent_down), tap(&self.sent_up)),
        }
    }
}

/// Which end of a relay accepted: the client (passive data, control) or the server
/// (active data).
#[derive(Clone, Copy)]
enum Accepted {
    Client,
    Server,
}

/// A running link proxy; see the module header. Stopped when dropped.
pub struct LinkProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    link: Arc<Link>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LinkProxy {
    /// An FTP-aware link to the FTP server at `upstream` (control and data connections).
    pub fn start(upstream: SocketAddr, spec: LinkSpec) -> LinkProxy {
        Self::listen(upstream, spec, true)
    }

    /// A link to any TCP server at `upstream`, bytes relayed as they are (FTPS control
    /// channels: add [`LinkProxy::forward_ports`]).
    pub fn start_tcp(upstream: SocketAddr, spec: LinkSpec) -> LinkProxy {
        Self::listen(upstream, spec, false)
    }

    fn listen(upstream: SocketAddr, spec: LinkSpec, ftp: bool) -> LinkProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("link-proxy")
            .enable_all()
            .build()
            .expect("the link proxy's runtime");
        let link = Arc::new(Link {
            spec,
            up: spec.bandwidth.map(|b| Arc::new(Pacer::new(b))),
            down: spec.bandwidth.map(|b| Arc::new(Pacer::new(b))),
            sent_up: Arc::default(),
            sent_down: Arc::default(),
            cut: watch::channel(0).0,
        });
        let listener = bind(SocketAddrV4::new(LINK_IP, 0));
        let addr = listener.local_addr().expect("the link proxy's address");
        let l = link.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, l.clone(), Accepted::Client, ftp));
            }
        });
        LinkProxy {
            addr,
            upstream,
            link,
            runtime: Some(runtime),
        }
    }

    /// Also relays `127.0.0.2:p` to the upstream server's port `p`, for each `p` in
    /// `ports` (a server's passive ports: FTPS through the link), on the same link.
    /// Panics when one of them is taken on 127.0.0.2.
    pub fn forward_ports(self, ports: RangeInclusive<u16>) -> LinkProxy {
        let runtime = self.runtime.as_ref().expect("a running proxy");
        for port in ports {
            let listener = bind(SocketAddrV4::new(LINK_IP, port));
            let target = SocketAddr::new(self.upstream.ip(), port);
            let link = self.link.clone();
            runtime.spawn(async move {
                let listener = TcpListener::from_std(listener).expect("a tokio listener");
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, target, link.clone(), Accepted::Client, false));
                }
            });
        }
        self
    }

    /// Where clients connect: `127.0.0.2:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The link this proxy simulates.
    pub fn spec(&self) -> LinkSpec {
        self.link.spec
    }

    /// Cuts the link: every connection relayed now (control and data) ends at once, with
    /// a reset; new connections are relayed as before.
    pub fn cut(&self) {
        self.link.cut.send_modify(|n| *n += 1);
    }

    /// The bytes relayed so far, client to server and server to client (payload of
    /// control and data connections).
    pub fn relayed(&self) -> (u64, u64) {
        (
            self.link.sent_up.load(Ordering::Relaxed),
            self.link.sent_down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A non-blocking std listener on `addr` (bound at once, so its port is known).
fn bind(addr: SocketAddrV4) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("link proxy: bind {addr}: {e}"));
    l.set_nonblocking(true).expect("a non-blocking listener");
    l
}

/// Relays one accepted connection to `target` through `link`, reading the FTP control
/// channel when `ftp`.
async fn relay(near: TcpStream, target: SocketAddr, link: Arc<Link>, side: Accepted, ftp: bool) {
    let accepted = Instant::now();
    let rtt = link.spec.rtt;
    let _ = near.set_nodelay(true);
    let (near_read, near_write) = near.into_split();
    let (to_far, far_write) = tokio::sync::oneshot::channel();
    let (near_to_far, far_to_near) = match side {
        Accepted::Client => (link.up.clone(), link.down.clone()),
        Accepted::Server => (link.down.clone(), link.up.clone()),
    };
    let out = Way {
        delay: rtt / 2,
        pacer: near_to_far,
        not_before: accepted + rtt,
    };
    let (out_tap, back_tap) = link.taps(side);
    let filter = ftp.then(|| commands(link.clone(), target));
    tokio::spawn(pipe::run(
        near_read,
        async move { far_write.await.ok() },
        out,
        filter,
        out_tap,
    ));
    tokio::time::sleep_until(accepted + rtt * 3 / 2).await;
    let Ok(far) = TcpStream::connect(target).await else {
        return; // the client's connection closes: no server
    };
    let _ = far.set_nodelay(true);
    let (far_read, far_write) = far.into_split();
    if to_far.send(far_write).is_err() {
        return;
    }
    let back = Way {
        delay: rtt / 2,
        pacer: far_to_near,
        not_before: accepted,
    };
    let filter = ftp.then(|| replies(link.clone(), target.ip()));
    pipe::run(
        far_read,
        async move { Some(near_write) },
        back,
        filter,
        back_tap,
    )
    .await;
}

/// The filter of a control channel's replies: a 227/229 opens a data relay first.
fn replies(link: Arc<Link>, server: std::net::IpAddr) -> Filter {
    let mut lines = Lines::default();
    Box::new(move |bytes| {
        let mut out = Vec::new();
        for segment in lines.feed(bytes) {
            match segment {
                Segment::Raw(b) => out.extend(b),
                Segment::Line(line) => {
                    let data = match ftp::passive_reply(&line) {
                        Some(Passive::Pasv(a)) => Some(SocketAddr::V4(a)),
                        Some(Passive::Epsv(port)) => Some(SocketAddr::new(server, port)),
                        None => None,
                    };
                    match data {
                        Some(target) => {
                            let at = data_relay(&link, LINK_IP, target, Accepted::Client);
                            out.extend(ftp::rewrite_passive(&line, at));
                        }
                        None => out.extend_from_slice(&line),
                    }
                    if ftp::is_auth_reply(&line) {
                        lines.go_raw();
                    }
                }
            }
        }
        out
    })
}

/// The filter of a control channel's commands: a PORT/EPRT opens a data relay the server
/// connects to (on the server's side of the link: its own address).
fn commands(link: Arc<Link>, server: SocketAddr) -> Filter {
    let mut lines = Lines::default();
    let near_server = match server {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    Box::new(move |bytes| {
        let mut out = Vec::new();
        for segment in lines.feed(bytes) {
            match segment {
                Segment::Raw(b) => out.extend(b),
                Segment::Line(line) => match ftp::active_command(&line) {
                    Some(client) => {
                        let target = SocketAddr::V4(client);
                        let at = data_relay(&link, near_server, target, Accepted::Server);
                        out.extend(ftp::rewrite_active(&line, at));
                    }
                    None => out.extend_from_slice(&line),
                },
            }
        }
        out
    })
}

/// Opens a listener on `ip` for one data connection (within [`DATA_ACCEPT`]), relayed to
/// `target`; returns its address. Called from the proxy's runtime.
fn data_relay(link: &Arc<Link>, ip: Ipv4Addr, target: SocketAddr, side: Accepted) -> SocketAddrV4 {
    let listener = bind(SocketAddrV4::new(ip, 0));
    let at = match listener.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        other => panic!("link proxy: a data listener on {ip}: {other:?}"),
    };
    let link = link.clone();
    tokio::spawn(async move {
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        if let Ok(Ok((conn, _))) = tokio::time::timeout(DATA_ACCEPT, listener.accept()).await {
            relay(conn, target, link, side, false).await;
        }
    });
    at
}
