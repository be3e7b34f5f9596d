//! The link simulator's fidelity (ftp_pooler_testbed::link), against real FTP servers
//! and a plain blocking FTP client written here, so every round trip is the test's own.
//!
//! The tests take turns ([`SERIAL`]): they measure time, and run on two shared cores.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::link::{LinkProxy, LinkSpec, LINK_IP};
use ftp_pooler_testbed::{ftp_password, ftp_user, FtpKind, FtpServer};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A control connection, one command at a time.
struct Control {
    read: BufReader<TcpStream>,
    write: TcpStream,
}

impl Control {
    /// Connects and reads the greeting.
    fn connect(addr: SocketAddr) -> (Control, String) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Control {
            read: BufReader::new(s.try_clone().unwrap()),
            write: s,
        };
        let greeting = c.reply();
        (c, greeting)
    }

    /// The last line of the next reply (a multi-line reply read whole).
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.read.read_line(&mut line).unwrap() > 0,
                "control closed"
            );
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return line.trim_end().to_string();
            }
        }
    }

    fn send(&mut self, command: &str) {
        self.write
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
    }

    /// Sends `command`, returns the reply, which must start with `code`. A transfer's
    /// preliminary reply may be `125` (the data connection is already open: pyftpdlib says
    /// so when the client's connect came first) where `150` is asked for.
    fn cmd(&mut self, command: &str, code: &str) -> String {
        self.send(command);
        let r = self.reply();
        let ok = r.starts_with(code) || (code == "150" && r.starts_with("125"));
        assert!(ok, "{command}: {r}");
        r
    }

    fn login(&mut self) {
        self.cmd(&format!("USER {}", ftp_user()), "331");
        self.cmd(&format!("PASS {}", ftp_password()), "230");
        self.cmd("TYPE I", "200");
    }

    /// EPSV or PASV, connect, RETR `path`: the bytes, which came from the link's address.
    fn retr(&mut self, passive: &str, path: &str) -> Vec<u8> {
        let reply = self.cmd(passive, if passive == "EPSV" { "229" } else { "227" });
        let addr = data_address(&reply, self.write.peer_addr().unwrap());
        assert_eq!(addr.ip(), LINK_IP, "{reply}: not pointed at the link");
        let mut data = TcpStream::connect(addr).unwrap();
        self.cmd(&format!("RETR {path}"), "150");
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        let done = self.reply();
        assert!(done.starts_with("226"), "after RETR: {done}");
        bytes
    }
}

/// The data address of a 229 (port, with the control peer's address) or 227 reply.
fn data_address(reply: &str, control_peer: SocketAddr) -> SocketAddr {
    let inner = &reply[reply.find('(').unwrap() + 1..reply.rfind(')').unwrap()];
    if reply.starts_with("229") {
        SocketAddr::new(control_peer.ip(), inner.trim_matches('|').parse().unwrap())
    } else {
        let n: Vec<u8> = inner.split(',').map(|p| p.parse().unwrap()).collect();
        let port = u16::from(n[4]) << 8 | u16::from(n[5]);
        SocketAddr::from(([n[0], n[1], n[2], n[3]], port))
    }
}

fn upstream(server: &FtpServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median NOOP round trip over `n`, through a link of `rtt_ms`.
fn noop_median(server: &FtpServer, rtt_ms: u64, n: usize) -> Duration {
    let proxy = LinkProxy::start(upstream(server), LinkSpec::rtt_ms(rtt_ms));
    let (mut c, _) = Control::connect(proxy.addr());
    c.login();
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.cmd("NOOP", "200");
            t.elapsed()
        })
        .collect();
    median(times)
}

#[test]
fn a_noop_round_trip_takes_one_rtt() {
    let _turn = serial();
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let at_50 = noop_median(&server, 50, 15);
    let at_0 = noop_median(&server, 0, 15);
    eprintln!(
        "NOOP median: {:.2} ms at RTT 50 ms, {:.2} ms at RTT 0",
        ms(at_50),
        ms(at_0)
    );
    assert!(
        (Duration::from_millis(50)..Duration::from_millis(55)).contains(&at_50),
        "NOOP at RTT 50 ms: {at_50:?}"
    );
    assert!(at_0 < Duration::from_millis(3), "NOOP at RTT 0: {at_0:?}");
}

/// The phases of a session through a link of `rtt_ms`: greeting, login (USER, PASS,
/// TYPE), EPSV + RETR and PASV + RETR of `small.bin` (4 KiB).
fn session_phases(server: &FtpServer, rtt_ms: u64, content: &[u8]) -> [Duration; 4] {
    let proxy = LinkProxy::start(upstream(server), LinkSpec::rtt_ms(rtt_ms));
    let t = Instant::now();
    let (mut c, greeting) = Control::connect(proxy.addr());
    assert!(greeting.starts_with("220"), "{greeting}");
    let greeted = t.elapsed();
    c.login();
    let logged_in = t.elapsed();
    assert_eq!(c.retr("EPSV", "small.bin"), content);
    let epsv = t.elapsed();
    assert_eq!(c.retr("PASV", "small.bin"), content);
    let total = t.elapsed();
    [greeted, logged_in - greeted, epsv - logged_in, total - epsv]
}

/// What a 50 ms link adds to a session: the greeting 2 RTT (the handshake, then the
/// 220), the login 3 (USER, PASS, TYPE), each EPSV or PASV + RETR of 4 KiB 3 (the reply,
/// the data connection's handshake, the data): 11 RTT. The server's own time (vsftpd
/// takes 40 ms to log in and to open a transfer) is measured through a link of RTT 0.
fn a_session_takes_eleven_round_trips_more(kind: FtpKind) {
    let server = FtpServer::start(kind, false);
    let content: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    server.put("small.bin", &content);
    let rtt = Duration::from_millis(50);
    // The fastest of three sessions, phase by phase: a busy machine (CI, other builds)
    // only ever adds time, so the minimum is what the link and the server take.
    let fastest = |rtt_ms: u64| {
        let runs: Vec<[Duration; 4]> = (0..3)
            .map(|_| session_phases(&server, rtt_ms, &content))
            .collect();
        std::array::from_fn::<Duration, 4, _>(|i| runs.iter().map(|r| r[i]).min().unwrap())
    };
    let own = fastest(0);
    let wan = fastest(50);
    let total = |p: &[Duration; 4]| p.iter().sum::<Duration>();
    eprintln!(
        "{}: phases at RTT 0 {:?} ms, at RTT 50 {:?} ms: the link added {:.2} RTT",
        kind.name(),
        own.map(|d| ms(d).round()),
        wan.map(|d| ms(d).round()),
        (total(&wan).as_secs_f64() - total(&own).as_secs_f64()) / rtt.as_secs_f64()
    );
    let added_rtts = (total(&wan).as_secs_f64() - total(&own).as_secs_f64()) / rtt.as_secs_f64();
    assert!(
        (10.0..13.0).contains(&added_rtts),
        "{}: the link added {added_rtts:.2} RTT to the session, not 11",
        kind.name()
    );
    if kind == FtpKind::Vsftpd {
        // vsftpd's own pauses (about 40 ms to log in and to open a transfer) shift between
        // phases with the timing of its peer's packets: only the whole session is checked.
        return;
    }
    let names = ["greeting", "login", "EPSV+RETR", "PASV+RETR"];
    for (i, rtts) in [2u32, 3, 3, 3].into_iter().enumerate() {
        let added = ms(wan[i]) - ms(own[i]);
        let want = ms(rtt * rtts);
        // The server's own time varies by a few ms (vsftpd's login by 15).
        assert!(
            added > want - 15.0 && added < want + 20.0,
            "{}: the link added {added:.1} ms to the {}, not {rtts} RTT ({want} ms)",
            kind.name(),
            names[i]
        );
    }
}

#[test]
fn a_small_download_takes_the_round_trips_of_a_wan_pyftpdlib() {
    let _turn = serial();
    a_session_takes_eleven_round_trips_more(FtpKind::Pyftpdlib);
}

#[test]
fn a_small_download_takes_the_round_trips_of_a_wan_vsftpd() {
    let _turn = serial();
    a_session_takes_eleven_round_trips_more(FtpKind::Vsftpd);
}

/// The time from RETR to its 226, for `path` through `spec`.
fn retr_time(server: &FtpServer, spec: LinkSpec, path: &str, size: usize) -> Duration {
    let proxy = LinkProxy::start(upstream(server), spec);
    let (mut c, _) = Control::connect(proxy.addr());
    c.login();
    let reply = c.cmd("EPSV", "229");
    let mut data = TcpStream::connect(data_address(&reply, proxy.addr())).unwrap();
    let t = Instant::now();
    c.cmd(&format!("RETR {path}"), "150");
    let mut n = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match data.read(&mut buf).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    let done = c.reply();
    let took = t.elapsed();
    assert!(done.starts_with("226"), "{done}");
    assert_eq!(n, size);
    took
}

#[test]
fn the_delay_does_not_serialise_throughput_and_the_cap_paces_it() {
    let _turn = serial();
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let size = 32 << 20;
    server.put("bulk.bin", &vec![7u8; size]);
    let rtt = Duration::from_millis(50);
    // One 64 KiB chunk per RTT would be 1.3 MB/s: 25 s.
    let free = retr_time(&server, LinkSpec::rtt_ms(50), "bulk.bin", size);
    let rate = 20_000_000;
    let capped = retr_time(
        &server,
        LinkSpec::rtt_ms(50).with_bandwidth(rate),
        "bulk.bin",
        size,
    );
    let want = rtt + Duration::from_secs_f64(size as f64 / rate as f64);
    eprintln!(
        "32 MiB RETR at RTT 50 ms: {:.0} ms uncapped ({:.0} MB/s), {:.0} ms at 20 MB/s \
         (expected {:.0} ms)",
        ms(free),
        size as f64 / free.as_secs_f64() / 1e6,
        ms(capped),
        ms(want)
    );
    assert!(free < Duration::from_millis(1500), "uncapped: {free:?}");
    assert!(
        capped.as_secs_f64() > want.as_secs_f64() * 0.9
            && capped.as_secs_f64() < want.as_secs_f64() * 1.1,
        "capped at 20 MB/s: {capped:?}, expected {want:?}"
    );
}

/// Active mode: the client's EPRT is pointed at a relay on the server's side, which the
/// server connects to; the data crosses the link (the RETR takes at least 2 RTT: the
/// server's handshake through the link, then the data).
#[test]
fn active_mode_data_connections_cross_the_link() {
    let _turn = serial();
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    server.put("small.bin", b"active through the link");
    let proxy = LinkProxy::start(upstream(&server), LinkSpec::rtt_ms(50));
    let (mut c, _) = Control::connect(proxy.addr());
    c.login();
    for command in ["EPRT |1|127.0.0.1|{}|", "PORT 127,0,0,1,{}"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let arg = if command.starts_with("EPRT") {
            port.to_string()
        } else {
            format!("{},{}", port >> 8, port & 0xff)
        };
        c.cmd(&command.replace("{}", &arg), "200");
        let t = Instant::now();
        c.cmd("RETR small.bin", "150");
        let (mut data, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"active through the link");
        assert!(c.reply().starts_with("226"));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "{command}: RETR in {took:?}"
        );
    }
}

/// FTPS cannot be read: a blind link for the control channel and a relay per passive
/// port (`forward_ports`). Shown here with clear text, to read what crossed: the EPSV
/// reply names the server's own port, reached on the link's address.
#[test]
fn forwarded_passive_ports_carry_data_connections_unread() {
    let _turn = serial();
    let server = FtpServer::start(FtpKind::Pyftpdlib, false).with_passive_ports(4);
    server.put("small.bin", b"through a forwarded port");
    let proxy = LinkProxy::start_tcp(upstream(&server), LinkSpec::rtt_ms(20))
        .forward_ports(server.passive_ports());
    let (mut c, _) = Control::connect(proxy.addr());
    c.login();
    let reply = c.cmd("EPSV", "229");
    let addr = data_address(&reply, proxy.addr());
    assert!(server.passive_ports().contains(&addr.port()), "{reply}");
    let mut data = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    c.cmd("RETR small.bin", "150");
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"through a forwarded port");
    assert!(c.reply().starts_with("226"));
    // The RETR's round trip, on a link of 20 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(20),
        "{:?}",
        t.elapsed()
    );
}
