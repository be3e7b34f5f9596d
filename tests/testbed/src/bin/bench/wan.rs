//! `--only wan`: small files through a simulated WAN link (issue 20).
//!
//! One FTP server of the test bed (`--wan-server`, default proftpd; its own 600 passive
//! ports and its own `--wan-files` files of 4 KiB, default 500) behind the test bed's
//! link simulator ([`LinkProxy`] on 127.0.0.2, plain FTP: it rewrites the 227/229 replies
//! and relays the data connections through the same link), one link per round-trip time
//! of `--wan-rtts` (default 10 and 50 ms). On each link, in the same rounds: the service
//! (10 sessions to the link's address, pre-warmed and a warm-up task done before the
//! clock) downloads and uploads the files, and so does `lftp mirror --parallel=10` /
//! `mirror -R --parallel=10` through the same link (its own logins and the directory
//! listing inside its time, as for every lftp figure of the bench).
//!
//! Besides the rates and their ratio, each run's files per second per session and the
//! round trips per file that implies (sessions / (files/s x RTT)): a client that sends
//! one command at a time cannot go below the round trips of its commands per file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::link::{LinkProxy, LinkSpec};
use ftp_pooler_testbed::service::{Service, Topics, Watcher};
use ftp_pooler_testbed::FtpServer;

use super::servers::{bench_on, PASSIVE_PORTS_EACH};
use super::{
    lftp_at, log, median, paired_ratio, round_ratios, settle, small_downloads, small_uploads,
    timed_run, warm_up, Args, Bench, Row,
};

/// Sessions of both clients: the service's pool (all pre-warmed) and lftp's `--parallel`.
const SESSIONS: u64 = 10;

/// A link to `server` (its control port on 127.0.0.1).
pub(super) fn link_to(server: &FtpServer, spec: LinkSpec) -> LinkProxy {
    LinkProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port)), spec)
}

/// `bench`'s connections.ini with its FTP connection (`ftp`) pointed at `link`: the
/// sessions' host is the link's address, so the data connections an EPSV reply announces
/// go through the link too.
fn connections_via(bench: &Bench, link: &LinkProxy) -> String {
    let direct = format!("host = 127.0.0.1\nport = {}\n", bench.server.port);
    let all = bench.connections();
    assert!(all.contains(&direct), "{all}");
    let at = link.addr();
    all.replacen(
        &direct,
        &format!("host = {}\nport = {}\n", at.ip(), at.port()),
        1,
    )
}

/// A service (10 sessions) whose connection `ftp` reaches `bench`'s server through
/// `link`: ready, its sessions pre-warmed (as its log says), one warm-up task done.
pub(super) async fn service_via(
    bench: &Bench,
    link: &LinkProxy,
    name: &str,
    topics: &Topics,
    watcher: &Watcher,
) -> Service {
    let mut svc = Service::start(
        &bench.exe,
        &bench.work.path().join(name),
        &bench.yaml(topics, SESSIONS, true),
        &connections_via(bench, link),
    );
    svc.wait_ready(Duration::from_secs(120)).await;
    let t0 = Instant::now();
    let warm = loop {
        let text = svc.log();
        if let Some(line) = text.lines().find(|l| l.contains("pre-warmed sessions")) {
            break line.to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name}: sessions not pre-warmed within 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    log(&format!("{name}: {}", warm.trim()));
    warm_up(topics, watcher, &bench.server, name).await;
    svc
}

/// "6.1 files/s per session, 3.28 RTT per file" for `rate` files/s over [`SESSIONS`]
/// through a link of `rtt_ms` (no round trips at 0 ms).
fn per_session(rate: f64, rtt_ms: u64) -> String {
    let each = rate / SESSIONS as f64;
    if rtt_ms == 0 {
        format!("{each:.1} files/s per session")
    } else {
        format!(
            "{each:.1} files/s per session, {:.2} RTT per file",
            round_trips(rate, rtt_ms)
        )
    }
}

/// The round trips per file `rate` files/s over [`SESSIONS`] sessions imply.
fn round_trips(rate: f64, rtt_ms: u64) -> f64 {
    SESSIONS as f64 / (rate * rtt_ms as f64 / 1000.0)
}

/// Files per second of each round: the service's and lftp's, down and up.
#[derive(Default)]
struct Rates {
    down: Vec<f64>,
    lftp_down: Vec<f64>,
    up: Vec<f64>,
    lftp_up: Vec<f64>,
}

/// The rounds on one link: the service's downloads, lftp's, the service's uploads,
/// lftp's.
async fn rounds(
    bench: &Bench,
    link: &LinkProxy,
    topics: &Topics,
    watcher: &Watcher,
    tag: &str,
    n: usize,
    rounds: usize,
) -> Rates {
    let rtt = link.spec().rtt.as_millis() as u64;
    // No AUTH TLS attempt: plain FTP (the servers' setting in servers.rs).
    let lftp_set = "set ftp:ssl-allow no; ";
    let mut rates = Rates::default();
    for r in 0..rounds {
        let tasks = small_downloads(&format!("{tag}-d{r}"), &format!("{tag}-down/{r}"), n);
        settle();
        rates
            .down
            .push(n as f64 / timed_run(topics, watcher, &tasks).await);
        let dir = bench.storage.path().join(format!("{tag}-lftp-down/{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        settle();
        let s = lftp_at(
            link.addr(),
            &format!(
                "{lftp_set}mirror --parallel={SESSIONS} /small {}",
                dir.display()
            ),
        );
        rates.lftp_down.push(n as f64 / s);
        let tasks = small_uploads(&format!("{tag}-u{r}"), &format!("/{tag}-svc-up/{r}"), n);
        settle();
        rates
            .up
            .push(n as f64 / timed_run(topics, watcher, &tasks).await);
        settle();
        let s = lftp_at(
            link.addr(),
            &format!(
                "{lftp_set}mirror -R --parallel={SESSIONS} {} /{tag}-lftp-up/{r}",
                bench.storage.path().join("up").display()
            ),
        );
        rates.lftp_up.push(n as f64 / s);
        log(&format!(
            "{tag} round {r}: down {:.0}/s ({}) vs lftp {:.0}/s ({}); up {:.0}/s ({}) vs lftp {:.0}/s ({})",
            rates.down[r],
            per_session(rates.down[r], rtt),
            rates.lftp_down[r],
            per_session(rates.lftp_down[r], rtt),
            rates.up[r],
            per_session(rates.up[r], rtt),
            rates.lftp_up[r],
            per_session(rates.lftp_up[r], rtt),
        ));
    }
    rates
}

/// `--only wan`: see the module header.
pub(super) async fn wan(a: &Args, exe: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let n = a.wan_files;
    let name = a.wan_server.name();
    let bench = bench_on(
        FtpServer::start(a.wan_server, false).with_passive_ports(PASSIVE_PORTS_EACH),
        exe,
    );
    bench.prepare_small(n);
    let mut detail = Vec::new();
    for &rtt in &a.wan_rtts {
        let link = link_to(&bench.server, LinkSpec::rtt_ms(rtt));
        let topics = Topics::create(3).await;
        let watcher = Watcher::start(&topics).await;
        let tag = format!("wan{rtt}");
        let svc = service_via(&bench, &link, &tag, &topics, &watcher).await;
        let rates = rounds(&bench, &link, &topics, &watcher, &tag, n, a.repeats).await;
        drop(svc);
        drop(link);
        let goal = (rtt == 50).then_some(1.5);
        let row = |dir: &str, ours: &[f64], base: &[f64], lftp_args: &str| Row {
            scenario: format!(
                "{n} x 4 KiB {dir} through a {rtt} ms link, {name}, {SESSIONS} sessions (files/s)"
            ),
            ours: format!("{:.0}", median(ours.to_vec())),
            baseline: format!(
                "lftp mirror {lftp_args}--parallel={SESSIONS}: {:.0}",
                median(base.to_vec())
            ),
            ratio: paired_ratio(ours, base),
            goal,
        };
        rows.push(row("downloads", &rates.down, &rates.lftp_down, ""));
        rows.push(row("uploads", &rates.up, &rates.lftp_up, "-R "));
        let m = |v: &[f64]| per_session(median(v.to_vec()), rtt);
        detail.push(format!(
            "{rtt} ms: downloads, the service {} and lftp {} (each round's ratio {}); uploads, the service {} and lftp {} (each round's ratio {})",
            m(&rates.down),
            m(&rates.lftp_down),
            round_ratios(&rates.down, &rates.lftp_down),
            m(&rates.up),
            m(&rates.lftp_up),
            round_ratios(&rates.up, &rates.lftp_up),
        ));
    }
    let line = format!(
        "Small files through the test bed's link simulator (a user-space proxy on 127.0.0.2 that delays each direction by RTT/2 and makes each upstream connection 1.5 RTT after the client's, as a TCP handshake would; it relays the data connections of the 227/229 replies through the same link), {name} behind it with {PASSIVE_PORTS_EACH} passive ports, {n} x 4 KiB files each way: the service with {SESSIONS} sessions to the link's address (logged in and a warm-up task done before the clock) against `lftp mirror --parallel={SESSIONS}` through the same link (its logins and its directory listing in its time). Median rates per session and the round trips per file they imply ({SESSIONS} / (files/s x RTT); the fewer, the closer a client is to the floor of the commands it waits for per file): {}.",
        detail.join("; ")
    );
    log(&line);
    notes.push(line);
}
