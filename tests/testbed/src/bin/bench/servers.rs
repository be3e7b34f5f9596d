//! Small files on other servers than the main scenario's vsftpd (issue 20):
//!
//! - `--only servers`: 4 KiB downloads and uploads on every FTP server kind of the test
//!   bed (vsftpd, pure-ftpd, proftpd, pyftpdlib), the service with 10 pre-warmed
//!   sessions against `lftp mirror --parallel=10` on the same server, in the same rounds;
//! - `--only ftps`: the same over explicit FTPS on vsftpd (TLS on control and data, data
//!   sessions resumed from the control's: `require_ssl_reuse=YES`), against lftp with
//!   `ftp:ssl-force` and `ftp:ssl-protect-data`. A second vsftpd with `debug_ssl` logs
//!   every TLS connection and whether it resumed a session, for one untimed run of each
//!   client: the full handshakes per file.
//!
//! vsftpd is the main scenario's server (4,000 passive ports); each other kind gets a
//! server of its own with [`PASSIVE_PORTS_EACH`], its own files and its own service
//! instance, dropped before the next. All directories written are named by the scenario.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ftp_pooler_testbed::service::{Service, Topics, Watcher};
use ftp_pooler_testbed::{broker, ca_file, FtpKind, FtpServer};

use super::{
    cpu_by_component, cpu_delta, cpu_times, lftp, lftp_profiled, log, median, paired_ratio,
    round_ratios, settle, small_downloads, small_uploads, task, timed_run, warm_up, Args, Bench,
    Row,
};

/// Passive ports of each server started here: fewer than the main server's 4,000, since
/// the test bed hands out each range once per process, from 12,000 ports in all, at
/// random places (1,500 each: no free range left for the third server). 600 ports
/// leave tens of TIME_WAIT sockets per port within a minute of 2,000-file rounds, not
/// the thousands of 64 ports.
pub(super) const PASSIVE_PORTS_EACH: u16 = 600;

/// A bench around `server`: fresh local storage and work directories.
pub(super) fn bench_on(server: FtpServer, exe: &Path) -> Bench {
    Bench {
        server,
        storage: tempfile::Builder::new()
            .prefix("bench-storage-")
            .tempdir()
            .unwrap(),
        work: tempfile::Builder::new().prefix("bench-").tempdir().unwrap(),
        exe: exe.to_path_buf(),
    }
}

/// Files per second of each round: the service's and lftp's, down and up.
#[derive(Default)]
struct Rates {
    down: Vec<f64>,
    lftp_down: Vec<f64>,
    up: Vec<f64>,
    lftp_up: Vec<f64>,
    /// The first round's CPU per download, by component (for the notes).
    cpu: String,
}

impl Rates {
    /// The two rows (downloads, uploads) of `what`, with `goal` for both.
    fn rows(&self, n: usize, what: &str, baseline: &str, goal: f64) -> [Row; 2] {
        let row = |dir: &str, ours: &[f64], base: &[f64], lftp_args: &str| Row {
            scenario: format!("{n} x 4 KiB {dir}, {what} (files/s)"),
            ours: format!("{:.0}", median(ours.to_vec())),
            baseline: format!(
                "lftp mirror {lftp_args}--parallel=10{baseline}: {:.0}",
                median(base.to_vec())
            ),
            ratio: paired_ratio(ours, base),
            goal: Some(goal),
        };
        [
            row("downloads", &self.down, &self.lftp_down, ""),
            row("uploads", &self.up, &self.lftp_up, "-R "),
        ]
    }

    /// Each round's ratios, for the notes.
    fn per_round(&self) -> String {
        format!(
            "downloads {}; uploads {}",
            round_ratios(&self.down, &self.lftp_down),
            round_ratios(&self.up, &self.lftp_up)
        )
    }
}

/// CPU over one run, by component (from /proc) and for the whole machine.
struct Cpu {
    components: HashMap<&'static str, f64>,
    busy: (f64, f64),
}

impl Cpu {
    fn start(port: u16, broker_port: &str) -> Cpu {
        Cpu {
            components: cpu_by_component(port, broker_port),
            busy: cpu_times(),
        }
    }

    /// "machine 0.71 ms/file, 98 % busy (service 0.30, broker 0.12, ...)": the
    /// components' CPU per file since `start` (`lftp`: lftp's own, sampled by
    /// [`lftp_profiled`]); "the rest" is the machine's busy time not in any component
    /// (the server when it is not vsftpd, the kernel's softirqs, other processes).
    fn per_file(&self, port: u16, broker_port: &str, n: usize, lftp: &[(String, f64)]) -> String {
        let (busy, all) = cpu_times();
        let machine = (busy - self.busy.0) * 10.0 / n as f64;
        let share = 100.0 * (busy - self.busy.0) / (all - self.busy.1).max(1.0);
        let mut parts = cpu_delta(&self.components, &cpu_by_component(port, broker_port), n);
        parts.extend(lftp.iter().filter(|(c, _)| c == "lftp").cloned());
        let mut service = 0.0;
        let mut shown = Vec::new();
        for (c, ms) in &parts {
            if matches!(c.as_str(), "ingest" | "transfer" | "publish" | "supervisor") {
                service += ms;
            } else {
                shown.push(format!("{c} {ms:.3}"));
            }
        }
        if service > 0.0 {
            shown.insert(0, format!("the service's stages {service:.3}"));
        }
        let known: f64 = parts.iter().map(|(_, ms)| ms).sum();
        format!(
            "machine {machine:.3} ms/file, {share:.0} % busy ({}, the rest {:.3})",
            shown.join(", "),
            (machine - known).max(0.0)
        )
    }
}

/// `rounds` rounds on `bench`'s server of: the service's downloads, lftp's, the service's
/// uploads, lftp's (`lftp_set`: lftp settings before the mirror, e.g. for TLS).
async fn rounds(
    bench: &Bench,
    topics: &Topics,
    watcher: &Watcher,
    tag: &str,
    lftp_set: &str,
    n: usize,
    rounds: usize,
) -> Rates {
    let mut rates = Rates::default();
    let port = bench.server.port;
    let bp = broker().bootstrap().rsplit(':').next().unwrap().to_string();
    for r in 0..rounds {
        let tasks = small_downloads(&format!("{tag}-d{r}"), &format!("{tag}-down/{r}"), n);
        settle();
        let cpu = Cpu::start(port, &bp);
        rates
            .down
            .push(n as f64 / timed_run(topics, watcher, &tasks).await);
        let svc_cpu = cpu.per_file(port, &bp, n, &[]);
        let dir = bench.storage.path().join(format!("{tag}-lftp-down/{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        settle();
        let cpu = Cpu::start(port, &bp);
        let (s, lftp_profile) = lftp_profiled(
            &bench.server,
            &bp,
            &format!("{lftp_set}mirror --parallel=10 /small {}", dir.display()),
            n,
        );
        rates.lftp_down.push(n as f64 / s);
        let line = format!(
            "{tag} round {r} downloads, CPU: the service's run {svc_cpu}; lftp's {}",
            cpu.per_file(port, &bp, n, &lftp_profile)
        );
        log(&line);
        if r == 0 {
            rates.cpu = line;
        }
        let tasks = small_uploads(&format!("{tag}-u{r}"), &format!("/{tag}-svc-up/{r}"), n);
        settle();
        rates
            .up
            .push(n as f64 / timed_run(topics, watcher, &tasks).await);
        settle();
        let s = lftp(
            &bench.server,
            &format!(
                "{lftp_set}mirror -R --parallel=10 {} /{tag}-lftp-up/{r}",
                bench.storage.path().join("up").display()
            ),
        );
        rates.lftp_up.push(n as f64 / s);
        log(&format!(
            "{tag} round {r}: down {:.0}/s vs lftp {:.0}/s, up {:.0}/s vs lftp {:.0}/s",
            rates.down[r], rates.lftp_down[r], rates.up[r], rates.lftp_up[r]
        ));
    }
    rates
}

/// `--only servers`: the small files on every server kind, plain FTP (`main` is the
/// main scenario's bench, on vsftpd, its small files in place).
pub(super) async fn every_kind(
    a: &Args,
    main: &Bench,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let n = a.small;
    let (mut per_round, mut cpu) = (Vec::new(), Vec::new());
    for kind in [
        FtpKind::Vsftpd,
        FtpKind::PureFtpd,
        FtpKind::Proftpd,
        FtpKind::Pyftpdlib,
    ] {
        let name = kind.name();
        let own;
        let bench = if kind == main.server.kind {
            main
        } else {
            own = bench_on(
                FtpServer::start(kind, false).with_passive_ports(PASSIVE_PORTS_EACH),
                &main.exe,
            );
            own.prepare_small(n);
            &own
        };
        let topics = Topics::create(3).await;
        let watcher = Watcher::start(&topics).await;
        let svc = bench.start(name, &topics, 10, true).await;
        warm_up(&topics, &watcher, &bench.server, name).await;
        // No AUTH TLS attempt: these servers serve plain FTP only.
        let rates = rounds(
            bench,
            &topics,
            &watcher,
            name,
            "set ftp:ssl-allow no; ",
            n,
            a.small_repeats,
        )
        .await;
        drop(svc);
        rows.extend(rates.rows(n, &format!("{name}, 10 sessions"), "", 1.0));
        per_round.push(format!("{name}: {}", rates.per_round()));
        cpu.push(rates.cpu.clone());
    }
    notes.push(format!(
        "Small files on every server kind of the test bed (vsftpd: the main scenario's server, with 4,000 passive ports; the others each with {PASSIVE_PORTS_EACH}; a service instance of their own), each round's ratio to lftp: {}.",
        per_round.join("; ")
    ));
    notes.push(format!(
        "CPU per file of the first round's downloads on each server kind, as /proc counts it (ms; \"the rest\" is the machine's busy time in no listed process: the FTP server when it is not vsftpd, the kernel's softirqs, anything else on the machine): {}.",
        cpu.join("; ")
    ));
}

/// TLS connections a vsftpd with `debug_ssl=YES` logged in `log` so far: (all, full
/// handshakes, i.e. not resumed).
fn tls_connections(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("SSL version:"))
        .collect();
    let full = all.iter().filter(|l| l.contains("not reused")).count();
    (all.len(), full)
}

/// `--only ftps`: the small files over explicit FTPS on vsftpd, and the full TLS
/// handshakes per file of each client.
pub(super) async fn ftps(a: &Args, exe: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let n = a.small;
    let bench = bench_on(
        FtpServer::start(FtpKind::Vsftpd, true).with_passive_ports(PASSIVE_PORTS_EACH),
        exe,
    );
    bench.prepare_small(n);
    // The counting server: vsftpd logging each TLS connection (untimed runs only; the
    // test bed's 64 passive ports).
    let log_dir = tempfile::Builder::new()
        .prefix("bench-tls-log-")
        .tempdir()
        .unwrap();
    let tls_log = log_dir.path().join("vsftpd.log");
    let counting = FtpServer::start_with(
        FtpKind::Vsftpd,
        true,
        &[&format!("xferlog={}", tls_log.display()), "debug_ssl=YES"],
    );
    for i in 0..n {
        counting.put(&format!("small/f{i:05}.bin"), &vec![(i % 251) as u8; 4096]);
    }
    let topics = Topics::create(3).await;
    let watcher = Watcher::start(&topics).await;
    let connections = format!("{}{}", bench.connections(), counting.ini_section("ftplog"));
    let mut svc = Service::start(
        &bench.exe,
        &bench.work.path().join("ftps"),
        &bench.yaml(&topics, 10, true),
        &connections,
    );
    svc.wait_ready(Duration::from_secs(120)).await;
    warm_up(&topics, &watcher, &bench.server, "ftps").await;
    let ca = ca_file();
    let lftp_set = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; ",
        ca.display()
    );
    let rates = rounds(
        &bench,
        &topics,
        &watcher,
        "ftps",
        &lftp_set,
        n,
        a.small_repeats,
    )
    .await;

    // The count: the service's sessions to the counting server were opened (pre-warmed)
    // at its start; then one run of n downloads through it, then lftp's.
    let (at_start, full_at_start) = tls_connections(&tls_log);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            task(
                &format!("ftps-count-{i}"),
                ("ftplog", &format!("small/f{i:05}.bin")),
                ("local", &format!("count/f{i:05}.bin")),
            )
        })
        .collect();
    timed_run(&topics, &watcher, &tasks).await;
    let (after_svc, full_after_svc) = tls_connections(&tls_log);
    let dir = bench.storage.path().join("lftp-count");
    std::fs::create_dir_all(&dir).unwrap();
    lftp(
        &counting,
        &format!("{lftp_set}mirror --parallel=10 /small {}", dir.display()),
    );
    let (after_lftp, full_after_lftp) = tls_connections(&tls_log);
    drop(svc);
    let count = format!(
        "the service: {} TLS connections for {n} downloads, {} of them full handshakes ({:.4} per file), plus {full_at_start} full handshakes of its {at_start} pre-warmed sessions' logins at start; lftp: {} TLS connections, {} full handshakes ({:.4} per file, its logins included)",
        after_svc - at_start,
        full_after_svc - full_at_start,
        (full_after_svc - full_at_start) as f64 / n as f64,
        after_lftp - after_svc,
        full_after_lftp - full_after_svc,
        (full_after_lftp - full_after_svc) as f64 / n as f64,
    );
    log(&format!("ftps: {count}"));
    rows.extend(rates.rows(
        n,
        "explicit FTPS (vsftpd), 10 sessions",
        ", ftp:ssl-force, ftp:ssl-protect-data",
        1.5,
    ));
    notes.push(format!(
        "Small files over explicit FTPS (vsftpd, TLS on control and data, `require_ssl_reuse=YES`), each round's ratio to lftp: {}. TLS handshakes, counted on a second vsftpd with `debug_ssl=YES` (one untimed run of each client; its log says of every TLS connection whether it resumed a session): {count}.",
        rates.per_round()
    ));
}
