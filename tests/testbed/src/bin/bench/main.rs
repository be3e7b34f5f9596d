//! `ftp-pooler-bench` (run by `scripts/bench`): the service against real baselines, side
//! by side, in one run on one machine, on the same vsftpd. Each scenario repeats and
//! reports medians; the report (`docs/BENCHMARKS.md`) and a chart (`docs/benchmarks.svg`)
//! are written from the figures of this run.
//!
//! Scenarios: small files down and up (service with 10 sessions vs `lftp mirror
//! --parallel=10`), pooled vs connect-per-task (`pool.reuse_sessions: false`), one large
//! file down and up (service vs `curl`), the transfer worker's peak RSS for a 64 MiB and a
//! large file, produce-to-result latency at a steady 100 tasks/s, and scale-out with 1, 2
//! and 3 instances in one group on 6 partitions; small files on every server kind of the
//! test bed and over explicit FTPS ([`servers`]); the time from start to the first
//! result ([`startup`]); small files through a simulated WAN link of 10 and 50 ms round
//! trip against lftp ([`wan`]), and a large file through a bandwidth-capped link, as a
//! ratio to the cap, curl beside it ([`capped`]); a large file whose link is cut at 50 %
//! and 90 %, resumed against sent again from zero ([`resume`]); SFTP small files and a
//! large file against OpenSSH's `sftp -b` ([`sftp`]). Not in the report: `--only ab --ab EXE`
//! compares two builds of the service (small uploads and downloads, alternating).
//! `--replot` draws the chart again from the report `--out` names ([`chart`]), and runs
//! nothing.

mod capped;
mod chart;
mod resume;
mod servers;
mod sftp;
mod sftp_others;
mod startup;
mod wan;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::broker;
use ftp_pooler_testbed::service::{Service, Topics, Watcher};
use ftp_pooler_testbed::{ftp_password, ftp_user, FtpKind, FtpServer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

struct Args {
    exe: PathBuf,
    out: PathBuf,
    chart: PathBuf,
    small: usize,
    repeats: usize,
    /// Rounds of the small-file scenario (the goal with the widest spread per round).
    small_repeats: usize,
    large_mib: u64,
    command: String,
    /// Scenarios to run (`--only small,large,...`); empty: all of them.
    only: Vec<String>,
    /// Where the files live (both sides), for the report (`scripts/bench` says).
    fs: String,
    /// `--ab EXE`: the `ab` scenario runs small uploads and downloads through this build
    /// and through `exe`, alternately, and logs the ratios (to judge a change of code).
    ab: Option<PathBuf>,
    /// `--replot`: only draw `chart` again from the report at `out`.
    replot: bool,
    /// `wan`: small files per round, the link's round trips (ms), the FTP server.
    wan_files: usize,
    wan_rtts: Vec<u64>,
    wan_server: FtpKind,
    /// `capped`: the file's size (MiB) and the link's cap (MB/s, 10^6 bytes per second).
    capped_mib: u64,
    capped_mbps: u64,
    /// `--only resume`: the file's MiB and the link's cap (MB/s).
    resume_mib: u64,
    resume_mbps: u64,
    /// `--only sftp`: small files per round, and the large file's MiB.
    sftp_files: usize,
    sftp_mib: u64,
}

impl Args {
    /// Whether scenario `name` runs: small, kafka, latency, large, pool, scale, servers,
    /// ftps, startup, wan, capped.
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

fn args() -> Args {
    let mut a = Args {
        exe: PathBuf::from("target/release/ftp-pooler"),
        out: PathBuf::from("docs/BENCHMARKS.md"),
        chart: PathBuf::from("docs/benchmarks.svg"),
        small: 2000,
        // Five: on two cores shared by a dozen processes a single round's ratio moves by
        // a fifth either way.
        repeats: 5,
        // Nine for the small files: their single rounds range from 0.8x to 1.3x lftp, and
        // the median of nine moves less than that of five.
        small_repeats: 9,
        large_mib: 1024,
        command: String::from("scripts/bench"),
        only: Vec::new(),
        fs: String::from("the system's temporary directory"),
        ab: None,
        replot: false,
        wan_files: 500,
        wan_rtts: vec![10, 50],
        wan_server: FtpKind::Proftpd,
        capped_mib: 1024,
        capped_mbps: 50,
        resume_mib: 1024,
        resume_mbps: 200,
        sftp_files: 1000,
        sftp_mib: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--exe" => a.exe = v().into(),
            "--out" => a.out = v().into(),
            "--chart" => a.chart = v().into(),
            "--small" => a.small = v().parse().expect("--small N"),
            "--repeats" => {
                a.repeats = v().parse().expect("--repeats N");
                a.small_repeats = a.repeats;
            }
            "--small-repeats" => a.small_repeats = v().parse().expect("--small-repeats N"),
            "--large-mib" => a.large_mib = v().parse().expect("--large-mib N"),
            "--command" => a.command = v(),
            "--only" => a.only = v().split(',').map(str::to_string).collect(),
            "--fs" => a.fs = v(),
            "--ab" => a.ab = Some(v().into()),
            "--replot" => a.replot = true,
            "--wan-files" => a.wan_files = v().parse().expect("--wan-files N"),
            "--wan-rtts" => {
                a.wan_rtts = v()
                    .split(',')
                    .map(|r| r.parse().expect("--wan-rtts MS,MS,..."))
                    .collect()
            }
            "--wan-server" => {
                let name = v();
                a.wan_server = *FtpKind::ALL
                    .iter()
                    .find(|k| k.name() == name)
                    .unwrap_or_else(|| {
                        panic!("--wan-server: vsftpd, proftpd, pure-ftpd or pyftpdlib, not {name}")
                    })
            }
            "--capped-mib" => a.capped_mib = v().parse().expect("--capped-mib N"),
            "--capped-mbps" => a.capped_mbps = v().parse().expect("--capped-mbps MB/s"),
            "--resume-mib" => a.resume_mib = v().parse().expect("--resume-mib N"),
            "--resume-mbps" => a.resume_mbps = v().parse().expect("--resume-mbps MB/s"),
            "--sftp-files" => a.sftp_files = v().parse().expect("--sftp-files N"),
            "--sftp-mib" => a.sftp_mib = v().parse().expect("--sftp-mib N"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of the rounds' ratios `ours[r] / base[r]`: each round runs the service and
/// its baseline back to back, on the same machine state, so their ratio moves less from
/// round to round than either rate does.
fn paired_ratio(ours: &[f64], base: &[f64]) -> f64 {
    median(ours.iter().zip(base).map(|(o, b)| o / b).collect())
}

/// The rounds' ratios, for the report ("1.21 0.89 ...").
fn round_ratios(ours: &[f64], base: &[f64]) -> String {
    ours.iter()
        .zip(base)
        .map(|(o, b)| format!("{:.2}", o / b))
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// With `BENCH_DEBUG`: the whole machine's CPU ticks and cross-CPU wake-ups at the start
/// of a run (not read otherwise).
struct Load {
    cpu: (f64, f64),
    ipis: [f64; 3],
    time_wait: usize,
}

impl Load {
    fn sample() -> Option<Load> {
        std::env::var_os("BENCH_DEBUG").is_some().then(|| Load {
            cpu: cpu_times(),
            ipis: ipis(),
            time_wait: time_wait(),
        })
    }

    /// How busy the CPUs were since the sample, and the cross-CPU wake-ups per file.
    fn since(&self, files: usize) -> String {
        let ((busy1, all1), (busy0, all0)) = (cpu_times(), self.cpu);
        let now = ipis();
        let per = |i: usize| (now[i] - self.ipis[i]) / files as f64;
        format!(
            "{} sockets in TIME_WAIT at the start; the machine's CPUs were {:.0} % busy during the run; {:.1} cross-CPU wake-ups per file ({:.1} rescheduling, {:.1} function-call interrupts, of which {:.1} TLB shootdowns)",
            self.time_wait,
            100.0 * (busy1 - busy0) / (all1 - all0).max(1.0),
            per(0) + per(1),
            per(0),
            per(1),
            per(2)
        )
    }
}

/// (busy, total) CPU ticks of the whole machine so far, from /proc/stat.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// With `BENCH_PERF=DIR`: a system-wide `perf record` of one timed run, to DIR/NAME.data
/// (stopped when dropped).
struct Perf(Option<std::process::Child>);

impl Perf {
    fn start(name: &str) -> Perf {
        let Some(dir) = std::env::var_os("BENCH_PERF") else {
            return Perf(None);
        };
        let out = PathBuf::from(dir).join(format!("{name}.data"));
        let child = Command::new("perf")
            .args(["record", "-a", "-g", "-F", "1999", "-q", "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(300));
        Perf(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = c.wait();
        }
    }
}

/// Sockets in TIME_WAIT on the machine (IPv4, /proc/net/tcp).
fn time_wait() -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("06"))
        .count()
}

/// Rescheduling, function-call and TLB-shootdown interrupts so far, all CPUs
/// (/proc/interrupts): how often one CPU woke a task on the other, or made it run a
/// function (a TLB shootdown is one: a multi-threaded process unmapped memory).
fn ipis() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let count = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.trim_start().split(':').next() == Some(name))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map_while(|x| x.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    [count("RES"), count("CAL"), count("TLB")]
}

/// Microseconds of the day from an RFC 3339 timestamp (enough for spans within a run).
fn chrono_like_micros(t: &str) -> Option<i64> {
    let time = t.split('T').nth(1)?;
    let hms = &time[..15];
    let h: i64 = hms[0..2].parse().ok()?;
    let m: i64 = hms[3..5].parse().ok()?;
    let s: i64 = hms[6..8].parse().ok()?;
    let us: i64 = hms[9..15].parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + us)
}

/// Writes every dirty page out before a timed run, so no run pays for the writeback of
/// the files an earlier one left (the service syncs its file system, and on ext4 a journal
/// commit also writes out other files' pending data; lftp and curl do not fsync).
fn settle() {
    let ok = Command::new("sync").status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "sync: {ok:?}");
}

fn log(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// One service instance for a scenario, with a warm-up task done.
struct Bench {
    server: FtpServer,
    storage: tempfile::TempDir,
    work: tempfile::TempDir,
    exe: PathBuf,
}

impl Bench {
    fn connections(&self) -> String {
        format!(
            "{}\n[local]\ntype = local\nbase_path = {}\n",
            self.server.ini_section("ftp"),
            self.storage.path().display()
        )
    }

    fn yaml(&self, topics: &Topics, sessions: u64, reuse: bool) -> String {
        let yaml = topics.config_yaml(&format!(
            "pool:\n  max_sessions_per_connection: {sessions}\n  prewarm_sessions_per_connection: {sessions}\n  reuse_sessions: {reuse}\ntransfer:\n  transfer_timeout_seconds: 900{}\nlogging:\n  level: INFO\n  format: text\n",
            experiment("BENCH_TRANSFER").map(|t| format!("\n  {t}")).unwrap_or_default()
        ));
        experiment_kafka(yaml)
    }

    /// The small files: `n` of 4 KiB on the server (`small/fNNNNN.bin`) and as many in the
    /// local storage (`up/fNNNNN.bin`).
    fn prepare_small(&self, n: usize) {
        log(&format!(
            "preparing {n} files of 4 KiB on each side ({})",
            self.server.kind.name()
        ));
        for i in 0..n {
            self.server
                .put(&format!("small/f{i:05}.bin"), &vec![(i % 251) as u8; 4096]);
            let up = self.storage.path().join(format!("up/f{i:05}.bin"));
            std::fs::create_dir_all(up.parent().unwrap()).unwrap();
            std::fs::write(up, vec![(i % 241) as u8; 4096]).unwrap();
        }
    }

    async fn start(&self, name: &str, topics: &Topics, sessions: u64, reuse: bool) -> Service {
        self.start_exe(&self.exe, name, topics, sessions, reuse)
            .await
    }

    async fn start_exe(
        &self,
        exe: &Path,
        name: &str,
        topics: &Topics,
        sessions: u64,
        reuse: bool,
    ) -> Service {
        let mut svc = Service::start(
            exe,
            &self.work.path().join(name),
            &self.yaml(topics, sessions, reuse),
            &self.connections(),
        );
        svc.wait_ready(Duration::from_secs(120)).await;
        svc
    }
}

/// One producer for the whole run (creating one per batch would be timed too).
fn producer() -> &'static FutureProducer {
    static P: std::sync::OnceLock<FutureProducer> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        ClientConfig::new()
            .set("bootstrap.servers", broker().bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .create()
            .expect("producer")
    })
}

async fn produce(topic: &str, tasks: &[(Option<String>, Vec<u8>)]) {
    let p = producer();
    let sends = tasks.iter().map(|(key, value)| async move {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(value.as_slice());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        p.send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    });
    futures::future::join_all(sends).await;
}

/// `n` tasks downloading the small files (`small/fNNNNN.bin` on the server) into the
/// local directory `dir`, with task ids `{id}-{i}`.
fn small_downloads(id: &str, dir: &str, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            task(
                &format!("{id}-{i}"),
                ("ftp", &format!("small/f{i:05}.bin")),
                ("local", &format!("{dir}/f{i:05}.bin")),
            )
        })
        .collect()
}

/// `n` tasks uploading the local small files (`up/fNNNNN.bin`) into the remote directory
/// `dir`, with task ids `{id}-{i}`.
fn small_uploads(id: &str, dir: &str, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            task(
                &format!("{id}-{i}"),
                ("local", &format!("up/f{i:05}.bin")),
                ("ftp", &format!("{dir}/f{i:05}.bin")),
            )
        })
        .collect()
}

fn task(id: &str, src: (&str, &str), dst: (&str, &str)) -> (Option<String>, Vec<u8>) {
    (
        Some(id.to_string()),
        serde_json::to_vec(&json!({"task_id": id, "src_id": src.0, "src_path": src.1, "dst_id": dst.0, "dst_path": dst.1})).unwrap(),
    )
}

/// Produces `tasks` and waits for all their results; returns the seconds from the first
/// produce to the last result read.
async fn timed_run(topics: &Topics, watcher: &Watcher, tasks: &[(Option<String>, Vec<u8>)]) -> f64 {
    timed_run_detail(topics, watcher, tasks).await.0
}

/// As [`timed_run`], with the mean `duration_ms` the results report (time inside the
/// transfer worker: session, FTP commands, data, sync, rename).
async fn timed_run_detail(
    topics: &Topics,
    watcher: &Watcher,
    tasks: &[(Option<String>, Vec<u8>)],
) -> (f64, f64) {
    let ids: Vec<String> = tasks.iter().filter_map(|t| t.0.clone()).collect();
    watcher.forget();
    let t0 = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_micros() % 86_400_000_000) as i64)
        .unwrap_or(0);
    produce(&topics.tasks, tasks).await;
    let produced = t0.elapsed().as_secs_f64();
    let load = Load::sample();
    let seen = watcher
        .wait_for(
            Duration::from_secs(1800),
            "bench run",
            |s| ids.iter().all(|i| s.by_task.contains_key(i)),
            String::new,
        )
        .await;
    let failed: Vec<&String> = ids
        .iter()
        .filter(|i| seen.by_task[*i][0].value["status"] != "success")
        .collect();
    assert!(
        failed.is_empty(),
        "failed tasks: {:?} e.g. {}",
        failed.len(),
        seen.by_task[failed[0]][0].value
    );
    let last = ids.iter().map(|i| seen.by_task[i][0].at).max().unwrap();
    if let Some(load) = load {
        log(&format!("debug: {}", load.since(ids.len())));
        let ts: Vec<i64> = ids
            .iter()
            .filter_map(|i| seen.by_task[i][0].value["timestamp"].as_str())
            .filter_map(chrono_like_micros)
            .collect();
        let (lo, hi) = (
            ts.iter().min().copied().unwrap_or(0),
            ts.iter().max().copied().unwrap_or(0),
        );
        let first_seen = ids.iter().map(|i| seen.by_task[i][0].at).min().unwrap();
        let mut early: Vec<(i64, f64)> = ids
            .iter()
            .filter_map(|i| {
                let v = &seen.by_task[i][0].value;
                Some((
                    chrono_like_micros(v["timestamp"].as_str()?)? - wall0,
                    v["duration_ms"].as_f64()?,
                ))
            })
            .collect();
        early.sort_by_key(|e| e.0);
        log(&format!(
            "debug: the first results, created (ms after produce start) / duration_ms: {}",
            early
                .iter()
                .take(12)
                .map(|(at, d)| format!("{:.1}/{d:.1}", *at as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        log(&format!(
            "debug: produced in {produced:.3} s; first of {} results created {:.3} s after produce start, the last {:.3} s later; first read {:.3} s after produce start, last {:.3} s",
            ids.len(),
            (lo - wall0) as f64 / 1e6,
            (hi - lo) as f64 / 1e6,
            first_seen.duration_since(t0).as_secs_f64(),
            last.duration_since(t0).as_secs_f64()
        ));
    }
    let mean_ms = ids
        .iter()
        .map(|i| {
            seen.by_task[i][0].value["duration_ms"]
                .as_f64()
                .unwrap_or(0.0)
        })
        .sum::<f64>()
        / ids.len() as f64;
    (last.duration_since(t0).as_secs_f64(), mean_ms)
}

/// `--only ab --ab EXE`: small uploads and downloads through `bench.exe` (A) and `EXE`
/// (B), each with its own topics and 10 pre-warmed sessions, in alternating order
/// (A first in even rounds); logs B/A per round and the medians. For judging a change
/// of code: the two builds share every round's machine state.
async fn ab(bench: &Bench, b_exe: &Path, n: usize, repeats: usize) {
    let b_exe = std::fs::canonicalize(b_exe).expect("the --ab binary");
    let mut sides = Vec::new();
    for (tag, exe) in [("a", bench.exe.clone()), ("b", b_exe)] {
        let topics = Topics::create(3).await;
        let watcher = Watcher::start(&topics).await;
        let svc = bench
            .start_exe(&exe, &format!("ab-{tag}"), &topics, 10, true)
            .await;
        warm_up(&topics, &watcher, &bench.server, &format!("ab-{tag}")).await;
        sides.push((tag, topics, watcher, svc));
    }
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for r in 0..repeats {
        let mut rate = [[0.0f64; 2]; 2];
        for (dir, rates) in rate.iter_mut().enumerate() {
            let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for &side in &order {
                let (tag, topics, watcher, _) = &sides[side];
                let tasks = if dir == 0 {
                    small_uploads(&format!("ab{tag}-u{r}"), &format!("/ab-up/{tag}/{r}"), n)
                } else {
                    small_downloads(&format!("ab{tag}-d{r}"), &format!("ab-down/{tag}/{r}"), n)
                };
                settle();
                rates[side] = n as f64 / timed_run(topics, watcher, &tasks).await;
            }
        }
        log(&format!(
            "ab round {r}: up A {:.0}/s B {:.0}/s (B/A {:.3}), down A {:.0}/s B {:.0}/s (B/A {:.3})",
            rate[0][0],
            rate[0][1],
            rate[0][1] / rate[0][0],
            rate[1][0],
            rate[1][1],
            rate[1][1] / rate[1][0]
        ));
        up.push(rate[0][1] / rate[0][0]);
        down.push(rate[1][1] / rate[1][0]);
    }
    log(&format!(
        "ab: median B/A uploads {:.3}, downloads {:.3} ({repeats} rounds)",
        median(up),
        median(down)
    ));
}

async fn warm_up(topics: &Topics, watcher: &Watcher, server: &FtpServer, tag: &str) {
    server.put("warm.bin", b"warm");
    timed_run(
        topics,
        watcher,
        &[task(
            &format!("warm-{tag}"),
            ("ftp", "warm.bin"),
            ("local", &format!("warm/{tag}.bin")),
        )],
    )
    .await;
}

fn lftp(server: &FtpServer, script: &str) -> f64 {
    lftp_at(SocketAddr::from(([127, 0, 0, 1], server.port)), script)
}

/// As [`lftp`], to the FTP server (or link) at `addr`.
fn lftp_at(addr: SocketAddr, script: &str) -> f64 {
    let t0 = Instant::now();
    let out = Command::new("lftp")
        .arg("-u")
        .arg(format!("{},{}", ftp_user(), ftp_password()))
        .arg("-e")
        .arg(format!(
            "set net:max-retries 1; set ftp:passive-mode on; set xfer:clobber on; {script}; quit"
        ))
        .arg(format!("ftp://{addr}"))
        .output()
        .expect("lftp (scripts/testbed/install.sh installs it)");
    assert!(
        out.status.success(),
        "lftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed().as_secs_f64()
}

fn curl(args: &[&str]) -> f64 {
    let t0 = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed().as_secs_f64()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs lftp as [`lftp`] does and returns, with its seconds, the CPU per file of every
/// component over the run. lftp's own CPU must be read before it exits: a thread samples
/// it every 20 ms (so its share is slightly low).
fn lftp_profiled(
    server: &FtpServer,
    broker_port: &str,
    script: &str,
    files: usize,
) -> (f64, Vec<(String, f64)>) {
    let cpu0 = cpu_by_component(server.port, broker_port);
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (st, lc, port, bp) = (
            stop.clone(),
            last.clone(),
            server.port,
            broker_port.to_string(),
        );
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let now = cpu_by_component(port, &bp);
                if now.contains_key("lftp") {
                    *lc.lock().unwrap() = Some(now);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let load = Load::sample();
    let s = lftp(server, script);
    if let Some(load) = load {
        log(&format!("debug: lftp: {}", load.since(files)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let profile = match last.lock().unwrap().take() {
        Some(after) => cpu_delta(&cpu0, &after, files),
        None => Vec::new(),
    };
    (s, profile)
}

/// Logs one run's CPU per file, by component.
fn log_profile(what: &str, profile: &[(String, f64)]) {
    log(&format!(
        "{what} CPU per file (ms): {}",
        profile
            .iter()
            .map(|(c, ms)| format!("{c} {ms:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

/// CPU time (ms) used so far by each component's live processes, from /proc.
fn cpu_by_component(ftp_port: u16, broker_port: &str) -> HashMap<&'static str, f64> {
    let tick_ms = 10.0; // USER_HZ = 100
    by_component(ftp_port, broker_port, |pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (u, s): (f64, f64) = (f[11].parse().unwrap_or(0.0), f[12].parse().unwrap_or(0.0));
        Some((u + s) * tick_ms)
    })
}

/// Context switches (voluntary and not) so far of each component's live processes,
/// all threads, from /proc: how often each one sleeps and wakes, per file.
fn switches_by_component(ftp_port: u16, broker_port: &str) -> HashMap<&'static str, f64> {
    by_component(ftp_port, broker_port, |pid| {
        let mut n = 0.0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches")
                    || line.starts_with("nonvoluntary_ctxt_switches")
                {
                    n += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                }
            }
        }
        Some(n)
    })
}

/// Logs each component's context switches per file since `before`.
fn log_switches(
    what: &str,
    before: &HashMap<&'static str, f64>,
    ftp_port: u16,
    broker_port: &str,
    files: usize,
) {
    let per_file = cpu_delta(before, &switches_by_component(ftp_port, broker_port), files);
    log(&format!(
        "{what} context switches per file: {}",
        per_file
            .iter()
            .map(|(c, k)| format!("{c} {k:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

/// Sums `measure(pid)` over the live processes of each component of a run.
fn by_component(
    ftp_port: u16,
    broker_port: &str,
    measure: impl Fn(u32) -> Option<f64>,
) -> HashMap<&'static str, f64> {
    let mut out: HashMap<&'static str, f64> = HashMap::new();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let component = if pid == me {
            "client (producer + result reader)"
        } else if cmd.starts_with("ftp-pooler stage ingest") {
            "ingest"
        } else if cmd.starts_with("ftp-pooler stage transfer") {
            "transfer"
        } else if cmd.starts_with("ftp-pooler stage publish") {
            "publish"
        } else if cmd.contains("ftp-pooler run") {
            "supervisor"
        } else if cmd.contains("tansu broker") && cmd.contains(broker_port) {
            "broker (Tansu)"
        } else if cmd.contains("vsftpd") && cmd.contains(&format!("listen_port={ftp_port}")) {
            "vsftpd"
        } else if cmd.starts_with("lftp") {
            "lftp"
        } else {
            continue;
        };
        if let Some(v) = measure(pid) {
            *out.entry(component).or_default() += v;
        }
    }
    out
}

fn cpu_delta(
    before: &HashMap<&'static str, f64>,
    after: &HashMap<&'static str, f64>,
    tasks: usize,
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| {
            (
                k.to_string(),
                (a - before.get(k).copied().unwrap_or(0.0)).max(0.0) / tasks as f64,
            )
        })
        .filter(|(_, ms)| *ms > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    v
}

fn sparse(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(bytes).unwrap();
}

struct Row {
    scenario: String,
    ours: String,
    baseline: String,
    ratio: f64,
    goal: Option<f64>,
}

/// The bench's vsftpd gets 4,000 passive ports, as a busy production server would: with
/// the test bed's 64, the TIME_WAIT sockets lftp's downloads leave on them (60 s each)
/// made every later passive bind scan thousands of sockets, a cost that each run paid
/// for the runs before it (docs/BENCHMARKS.md).
const PASSIVE_PORTS: u16 = 4000;
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if a.replot {
        let md = std::fs::read_to_string(&a.out).expect("the report to replot");
        let (bars, scale) = chart::from_report(&md);
        std::fs::write(&a.chart, chart::svg(&bars, &scale)).unwrap();
        return;
    }
    let bench = Bench {
        server: FtpServer::start(FtpKind::Vsftpd, false).with_passive_ports(PASSIVE_PORTS),
        storage: tempfile::Builder::new()
            .prefix("bench-storage-")
            .tempdir()
            .unwrap(),
        work: tempfile::Builder::new().prefix("bench-").tempdir().unwrap(),
        exe: std::fs::canonicalize(&a.exe).expect("the release binary (cargo build --release)"),
    };
    let url = |p: &str| {
        format!(
            "ftp://{}:{}@127.0.0.1:{}/{p}",
            ftp_user(),
            ftp_password(),
            bench.server.port
        )
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let n = a.small;

    bench.prepare_small(n);

    if let Some(b_exe) = a.ab.clone().filter(|_| a.wants("ab")) {
        ab(&bench, &b_exe, n, a.repeats).await;
    }

    // 1 and 2: small files, pooled (10 sessions), vs lftp --parallel=10; uploads too.
    let topics = Topics::create(3).await;
    let watcher = Watcher::start(&topics).await;
    let svc = bench.start("pooled", &topics, 10, true).await;
    warm_up(&topics, &watcher, &bench.server, "pooled").await;
    let (mut down, mut up, mut lftp_down, mut lftp_up) = (vec![], vec![], vec![], vec![]);
    // lftp with the guarantee the service gives (a temporary name, then a rename; no
    // fsync, no size check): beside the goal's plain lftp, to show what the guarantee costs.
    let (mut lftp_tmp_down, mut lftp_tmp_up) = (vec![], vec![]);
    let mut in_worker = vec![];
    let broker_port = broker().bootstrap().rsplit(':').next().unwrap().to_string();
    let mut profile: Vec<(String, f64)> = Vec::new();
    let mut profile_lftp: Vec<(String, f64)> = Vec::new();
    let reps = |name: &str| if a.wants(name) { a.repeats } else { 0 };
    for r in 0..if a.wants("small") { a.small_repeats } else { 0 } {
        let tasks = small_downloads(&format!("d{r}"), &format!("down/{r}"), n);
        settle();
        let cpu0 = cpu_by_component(bench.server.port, &broker_port);
        let sw0 = switches_by_component(bench.server.port, &broker_port);
        let (s, mean_ms) = timed_run_detail(&topics, &watcher, &tasks).await;
        let round_profile = cpu_delta(&cpu0, &cpu_by_component(bench.server.port, &broker_port), n);
        log_profile(&format!("round {r}"), &round_profile);
        log_switches(
            &format!("round {r}"),
            &sw0,
            bench.server.port,
            &broker_port,
            n,
        );
        if r == 0 {
            profile = round_profile;
        }
        in_worker.push(mean_ms);
        down.push(n as f64 / s);
        let dir = bench.storage.path().join(format!("lftp-down/{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        settle();
        let (s, lftp_profile) = lftp_profiled(
            &bench.server,
            &broker_port,
            &format!("mirror --parallel=10 /small {}", dir.display()),
            n,
        );
        log_profile(&format!("round {r} lftp"), &lftp_profile);
        if r == 0 {
            profile_lftp = lftp_profile;
        }
        lftp_down.push(n as f64 / s);
        let dir = bench.storage.path().join(format!("lftp-tmp-down/{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        settle();
        let s = lftp(
            &bench.server,
            &format!(
                "set xfer:use-temp-file yes; mirror --parallel=10 /small {}",
                dir.display()
            ),
        );
        lftp_tmp_down.push(n as f64 / s);
        let tasks = small_uploads(&format!("u{r}"), &format!("/svc-up/{r}"), n);
        settle();
        let cpu0 = cpu_by_component(bench.server.port, &broker_port);
        let sw0 = switches_by_component(bench.server.port, &broker_port);
        let perf = Perf::start(&format!("up-{r}"));
        let s = timed_run(&topics, &watcher, &tasks).await;
        drop(perf);
        let up_profile = cpu_delta(&cpu0, &cpu_by_component(bench.server.port, &broker_port), n);
        log_profile(&format!("round {r} uploads"), &up_profile);
        log_switches(
            &format!("round {r} uploads"),
            &sw0,
            bench.server.port,
            &broker_port,
            n,
        );
        up.push(n as f64 / s);
        settle();
        let perf = Perf::start(&format!("lftp-up-{r}"));
        let (s, lftp_profile) = lftp_profiled(
            &bench.server,
            &broker_port,
            &format!(
                "mirror -R --parallel=10 {} /lftp-up/{r}",
                bench.storage.path().join("up").display()
            ),
            n,
        );
        drop(perf);
        log_profile(&format!("round {r} lftp uploads"), &lftp_profile);
        lftp_up.push(n as f64 / s);
        settle();
        let s = lftp(
            &bench.server,
            &format!(
                "set xfer:use-temp-file yes; mirror -R --parallel=10 {} /lftp-tmp-up/{r}",
                bench.storage.path().join("up").display()
            ),
        );
        lftp_tmp_up.push(n as f64 / s);
        log(&format!(
            "small files round {r}: down {:.0}/s vs lftp {:.0}/s (temporary names {:.0}/s), up {:.0}/s vs lftp {:.0}/s (temporary names {:.0}/s)",
            down[r], lftp_down[r], lftp_tmp_down[r], up[r], lftp_up[r], lftp_tmp_up[r]
        ));
    }
    let (down_m, lftp_down_m, up_m, lftp_up_m) = (
        median(down.clone()),
        median(lftp_down.clone()),
        median(up.clone()),
        median(lftp_up.clone()),
    );
    let (lftp_tmp_down_m, lftp_tmp_up_m) =
        (median(lftp_tmp_down.clone()), median(lftp_tmp_up.clone()));
    let fmt_profile = |p: &[(String, f64)]| {
        let total: f64 = p.iter().map(|(_, ms)| ms).sum();
        format!(
            "{:.2} ms of CPU per file: {}",
            total,
            p.iter()
                .map(|(c, ms)| format!("{c} {ms:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if a.wants("small") {
        notes.push(format!(
            "Profile, small downloads through the service: {}.",
            fmt_profile(&profile)
        ));
        notes.push(format!("Profile, the same files through lftp: {} (lftp's share sampled every 20 ms, so slightly low).", fmt_profile(&profile_lftp)));
        log(&format!("profile: service {}", fmt_profile(&profile)));
        log(&format!("profile: lftp {}", fmt_profile(&profile_lftp)));
        let worker_ms = median(in_worker);
        notes.push(format!(
        "Small downloads: a task spends {worker_ms:.2} ms (median of the runs' means) inside the transfer worker, from taking a job slot to its result: waiting for one of the 10 sessions (the worker runs up to 80 jobs at once), EPSV, RETR, the group commit (a sync of its data, the rename, a sync of the rename)."
    ));
        rows.push(Row {
            scenario: format!("{n} x 4 KiB downloads, 10 sessions (files/s)"),
            ours: format!("{down_m:.0}"),
            baseline: format!("lftp mirror --parallel=10: {lftp_down_m:.0}"),
            ratio: paired_ratio(&down, &lftp_down),
            goal: Some(1.0),
        });
        rows.push(Row {
            scenario: format!("{n} x 4 KiB uploads, 10 sessions (files/s)"),
            ours: format!("{up_m:.0}"),
            baseline: format!("lftp mirror -R --parallel=10: {lftp_up_m:.0}"),
            ratio: paired_ratio(&up, &lftp_up),
            goal: Some(1.0),
        });
        rows.push(Row {
            scenario: format!("{n} x 4 KiB downloads, same guarantee as the service's (files/s)"),
            ours: format!("{down_m:.0}"),
            baseline: format!("lftp, xfer:use-temp-file yes: {lftp_tmp_down_m:.0}"),
            ratio: paired_ratio(&down, &lftp_tmp_down),
            goal: None,
        });
        rows.push(Row {
            scenario: format!("{n} x 4 KiB uploads, same guarantee as the service's (files/s)"),
            ours: format!("{up_m:.0}"),
            baseline: format!("lftp -R, xfer:use-temp-file yes: {lftp_tmp_up_m:.0}"),
            ratio: paired_ratio(&up, &lftp_tmp_up),
            goal: None,
        });
        notes.push(format!(
            "Small files, each round's ratio to plain lftp: downloads {}; uploads {}. The ratio of the medians of the rates, as reported before session 7: downloads {:.2}x, uploads {:.2}x.",
            round_ratios(&down, &lftp_down),
            round_ratios(&up, &lftp_up),
            down_m / lftp_down_m,
            up_m / lftp_up_m
        ));
    }

    // 6 (profile): the Kafka path alone, with no FTP: tasks that fail validation
    // (both sides local) go ingest -> publish -> result topic.
    let mut kafka_only = Vec::new();
    for r in 0..reps("kafka") {
        let tasks: Vec<_> = (0..n)
            .map(|i| task(&format!("k{r}-{i}"), ("local", "x"), ("local", "y")))
            .collect();
        let ids: Vec<String> = tasks.iter().filter_map(|t| t.0.clone()).collect();
        watcher.forget();
        let t0 = Instant::now();
        produce(&topics.tasks, &tasks).await;
        let seen = watcher
            .wait_for(
                Duration::from_secs(600),
                "kafka-only run",
                |s| ids.iter().all(|i| s.by_task.contains_key(i)),
                String::new,
            )
            .await;
        let last = ids.iter().map(|i| seen.by_task[i][0].at).max().unwrap();
        kafka_only.push(n as f64 / last.duration_since(t0).as_secs_f64());
        log(&format!(
            "kafka path alone round {r}: {:.0} tasks/s",
            kafka_only[r]
        ));
    }
    let kafka_only_m = median(kafka_only);
    if a.wants("kafka") {
        notes.push(format!(
        "Profile, the Kafka path alone (invalid tasks: produce -> ingest -> publish -> result read back, no FTP): {kafka_only_m:.0} tasks/s; small downloads end to end: {down_m:.0} files/s."
    ));
    }

    // 4: latency at a steady 100 tasks/s.
    let mut lat = Vec::new();
    let secs = if a.wants("latency") { 10usize } else { 0 };
    let mut sent: HashMap<String, Instant> = HashMap::new();
    // Wall-clock time of each produce, to split a task's latency at its result's
    // timestamp and `duration_ms` (the worker's clock: same machine).
    let mut sent_wall: HashMap<String, f64> = HashMap::new();
    for t in 0..secs {
        let tick = Instant::now();
        let batch: Vec<_> = (0..10)
            .flat_map(|k| (0..10).map(move |j| (k, j)))
            .map(|(k, j)| {
                let i = (t * 100 + k * 10 + j) % n;
                task(
                    &format!("l{t}-{k}-{j}"),
                    ("ftp", &format!("small/f{i:05}.bin")),
                    ("local", &format!("lat/{t}/{k}-{j}.bin")),
                )
            })
            .collect();
        // 10 bursts of 10 per second.
        for chunk in batch.chunks(10) {
            let at = Instant::now();
            produce(&topics.tasks, chunk).await;
            let wall = unix_now();
            for c in chunk {
                sent.insert(c.0.clone().unwrap(), at);
                sent_wall.insert(c.0.clone().unwrap(), wall);
            }
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(at.elapsed())).await;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    let seen = watcher
        .wait_for(
            Duration::from_secs(120),
            "latency run",
            |s| sent.keys().all(|k| s.by_task.contains_key(k)),
            String::new,
        )
        .await;
    // Each task's latency in three parts: produce -> the worker takes its job (the
    // broker, ingest's fetch, the pipeline), the job in the worker (`duration_ms`: a
    // session, the transfer, the group commit), the result's creation -> read back
    // (publish's produce, the broker, the reader's fetch).
    let (mut before, mut inside, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for (id, at) in &sent {
        let total = seen.by_task[id][0].at.duration_since(*at).as_secs_f64() * 1000.0;
        lat.push(total);
        let value = &seen.by_task[id][0].value;
        let created = value["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros() as f64 / 1e6);
        let (Some(created), Some(ms)) = (created, value["duration_ms"].as_f64()) else {
            continue;
        };
        let produced = sent_wall[id];
        let job = (created - produced) * 1000.0 - ms;
        before.push(job);
        inside.push(ms);
        after.push(total - job - ms);
    }
    let split = if inside.is_empty() {
        String::new()
    } else {
        format!(
            " Medians of its parts: produce to the worker taking the job {:.1} ms, in the worker {:.1} ms, result created to read back {:.1} ms (p99 of each: {:.1}, {:.1}, {:.1}).",
            percentile(before.clone(), 50.0),
            percentile(inside.clone(), 50.0),
            percentile(after.clone(), 50.0),
            percentile(before, 99.0),
            percentile(inside, 99.0),
            percentile(after, 99.0)
        )
    };
    let (p50, p99) = (percentile(lat.clone(), 50.0), percentile(lat, 99.0));
    if a.wants("latency") {
        log(&format!(
            "latency at 100 tasks/s: p50 {p50:.1} ms, p99 {p99:.1} ms"
        ));
        notes.push(format!("Produce-to-result latency at a steady 100 tasks/s ({} tasks over {secs} s): **p50 {p50:.1} ms, p99 {p99:.1} ms** (from the producer's send to the watcher reading the result).{split}", secs * 100));
    }

    // 3: one large file, service vs curl; RSS for 64 MiB and the large file.
    let large = a.large_mib * 1024 * 1024;
    sparse(&bench.server.root().join("large.bin"), large);
    sparse(&bench.server.root().join("medium.bin"), 64 * 1024 * 1024);
    let pid_of = |svc: &Service| -> u32 {
        svc.stage_processes()
            .into_iter()
            .find(|(_, c)| c == "ftp-pooler stage transfer ftp")
            .map(|(p, _)| p)
            .expect("worker")
    };
    let (mut big_down, mut big_up, mut curl_down, mut curl_up) = (vec![], vec![], vec![], vec![]);
    let mut rss = Vec::new();
    if a.wants("large") {
        // Untimed: the first large write of a run pays the kernel's reclaim of page
        // cache for both sides (seen: the first round at a third of the others).
        let scratch = bench.storage.path().join("warm-large.bin");
        curl(&["-o", scratch.to_str().unwrap(), &url("large.bin")]);
        std::fs::remove_file(scratch).ok();
    }
    for r in 0..reps("large") {
        // A fresh worker: its peak RSS is this file's.
        svc.restart_stage("transfer:ftp").await;
        let worker = pid_of(&svc);
        if r == 0 {
            timed_run(
                &topics,
                &watcher,
                &[task(
                    "medium-0",
                    ("ftp", "medium.bin"),
                    ("local", "medium.bin"),
                )],
            )
            .await;
            rss.push(("64 MiB download".to_string(), peak_rss_kib(worker)));
            svc.restart_stage("transfer:ftp").await;
        }
        let worker = pid_of(&svc);
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("big-d{r}"),
                ("ftp", "large.bin"),
                ("local", "large.bin"),
            )],
        )
        .await;
        big_down.push(large as f64 / 1e6 / s);
        settle();
        let s = timed_run(
            &topics,
            &watcher,
            &[task(
                &format!("big-u{r}"),
                ("local", "large.bin"),
                ("ftp", "/svc-large.bin"),
            )],
        )
        .await;
        big_up.push(large as f64 / 1e6 / s);
        if r == 0 {
            rss.push((
                format!("{} MiB download + upload", a.large_mib),
                peak_rss_kib(worker),
            ));
        }
        let dest = bench.storage.path().join("curl-large.bin");
        settle();
        let s = curl(&["-o", dest.to_str().unwrap(), &url("large.bin")]);
        curl_down.push(large as f64 / 1e6 / s);
        settle();
        let s = curl(&["-T", dest.to_str().unwrap(), &url("curl-large.bin")]);
        curl_up.push(large as f64 / 1e6 / s);
        std::fs::remove_file(&dest).ok();
        std::fs::remove_file(bench.storage.path().join("large.bin")).ok();
        std::fs::remove_file(bench.server.root().join("svc-large.bin")).ok();
        std::fs::remove_file(bench.server.root().join("curl-large.bin")).ok();
        log(&format!(
            "large file round {r}: down {:.0} MB/s vs curl {:.0}, up {:.0} vs curl {:.0}",
            big_down[r], curl_down[r], big_up[r], curl_up[r]
        ));
    }
    let (bd, cd, bu, cu) = (
        median(big_down.clone()),
        median(curl_down.clone()),
        median(big_up.clone()),
        median(curl_up.clone()),
    );
    if a.wants("large") {
        rows.push(Row {
            scenario: format!("{} MiB download (MB/s)", a.large_mib),
            ours: format!("{bd:.0}"),
            baseline: format!("curl: {cd:.0}"),
            ratio: paired_ratio(&big_down, &curl_down),
            goal: Some(0.9),
        });
        rows.push(Row {
            scenario: format!("{} MiB upload (MB/s)", a.large_mib),
            ours: format!("{bu:.0}"),
            baseline: format!("curl -T: {cu:.0}"),
            ratio: paired_ratio(&big_up, &curl_up),
            goal: Some(0.9),
        });
        let rss_line = rss
            .iter()
            .map(|(w, k)| format!("{w}: {:.1} MiB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join("; ");
        log(&format!("worker peak RSS: {rss_line}"));
        notes.push(format!("Transfer worker peak RSS (VmHWM of a fresh worker process): {rss_line}. Flat: it does not grow with the file size."));
    }
    drop(svc);

    // 2: connect-per-task.
    if a.wants("pool") {
        let topics_np = Topics::create(3).await;
        let watcher_np = Watcher::start(&topics_np).await;
        let svc_np = bench.start("per-task", &topics_np, 10, false).await;
        warm_up(&topics_np, &watcher_np, &bench.server, "per-task").await;
        let mut np = Vec::new();
        for r in 0..a.repeats {
            let tasks = small_downloads(&format!("np{r}"), &format!("np/{r}"), n);
            settle();
            let s = timed_run(&topics_np, &watcher_np, &tasks).await;
            np.push(n as f64 / s);
            log(&format!("connect-per-task round {r}: {:.0}/s", np[r]));
        }
        let np_m = median(np);
        rows.push(Row {
            scenario: format!("{n} x 4 KiB downloads, pooled vs a login per task (files/s)"),
            ours: format!("{down_m:.0}"),
            baseline: format!("connect-per-task: {np_m:.0}"),
            ratio: down_m / np_m,
            goal: Some(5.0),
        });
        drop(svc_np);
    }

    // 5: scale-out, 1-3 instances on 6 partitions.
    let mut scale = Vec::new();
    for k in (1..=3usize).filter(|_| a.wants("scale")) {
        let t6 = Topics::create(6).await;
        let w6 = Watcher::start(&t6).await;
        let mut svcs = Vec::new();
        for i in 0..k {
            svcs.push(bench.start(&format!("scale{k}-{i}"), &t6, 10, true).await);
        }
        // Every instance has partitions before the clock starts.
        let start = Instant::now();
        while !svcs.iter().all(|s| {
            s.log()
                .lines()
                .any(|l| l.contains("partitions assigned") && !l.contains("parts=[]"))
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "instances did not all get partitions"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tasks = small_downloads(&format!("s{k}"), &format!("scale/{k}"), n);
        settle();
        let s = timed_run(&t6, &w6, &tasks).await;
        scale.push((k, n as f64 / s));
        log(&format!(
            "scale-out {k} instance(s): {:.0} files/s",
            n as f64 / s
        ));
    }
    if !scale.is_empty() {
        notes.push(format!(
        "Scale-out, one consumer group on a 6-partition topic, all instances on this 2-core machine ({n} x 4 KiB downloads, 10 sessions each): {}.",
        scale.iter().map(|(k, f)| format!("{k} instance(s): {f:.0} files/s")).collect::<Vec<_>>().join(", ")
    ));
    }

    if a.wants("servers") {
        servers::every_kind(&a, &bench, &mut rows, &mut notes).await;
    }
    if a.wants("ftps") {
        servers::ftps(&a, &bench.exe, &mut rows, &mut notes).await;
    }
    if a.wants("startup") {
        startup::startup(&a, &bench, &mut notes).await;
    }
    if a.wants("wan") {
        wan::wan(&a, &bench.exe, &mut rows, &mut notes).await;
    }
    if a.wants("capped") {
        capped::capped(&a, &bench, &mut rows, &mut notes).await;
    }
    if a.wants("resume") {
        resume::resume(&a, &bench, &mut rows, &mut notes).await;
    }
    if a.wants("sftp") {
        sftp::sftp(&a, &bench, &mut rows, &mut notes).await;
    }

    write_report(&a, &rows, &notes, &scale);
    log(&format!(
        "wrote {} and {}",
        a.out.display(),
        a.chart.display()
    ));
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {:.0} GiB RAM, Linux {}",
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn write_report(a: &Args, rows: &[Row], notes: &[String], scale: &[(usize, f64)]) {
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(&format!(
        "Produced by `{}` on {} (UTC).\n\n",
        a.command,
        chrono_now()
    ));
    md.push_str(&format!("- Machine: {}\n", machine()));
    for name in ["BENCH_TRANSFER", "BENCH_CONSUMER", "BENCH_PRODUCER"] {
        if let Some(v) = experiment(name) {
            md.push_str(&format!(
                "- Experiment: {name}=`{v}` (not the service's defaults)\n"
            ));
        }
    }
    let others = if a.wants("servers") {
        "; in the per-server rows also pure-ftpd and proftpd (unpacked from their Debian packages) and pyftpdlib (the test bed's venv)"
    } else {
        ""
    };
    let link = if a.wants("wan") || a.wants("capped") || a.wants("resume") {
        "; the rows through a link reach it through the test bed's link simulator on 127.0.0.2"
    } else {
        ""
    };
    md.push_str(&format!("- ftp-pooler {} (release build); broker Tansu 0.6 (the test bed's); FTP server vsftpd (Debian package){others}, all on 127.0.0.1{link}\n", env!("CARGO_PKG_VERSION")));
    md.push_str(&format!(
        "- Files, the FTP server's and the local ones, of the service and of the baselines alike: {}\n",
        a.fs
    ));
    md.push_str(&format!(
        "- Baselines: {}; {}\n",
        version("lftp", "--version"),
        version("curl", "--version")
    ));
    md.push_str(&format!("- Each figure is the median of {} runs ({} for the small files) in this one process, and each ratio beside a baseline run in the same rounds the median of the rounds' ratios (the service and its baseline run back to back in every round); the service figures run end to end (produce to Kafka -> ingest -> transfer -> publish -> result read back), with the service's default settings but for the pool (10 sessions, pre-warmed) and the transfer timeout: logs at INFO (one event per task), every downloaded file on the device before its rename, and the rename before its result (`transfer.fsync: group`, the default: one syncfs for every file that finished meanwhile).\n\n", a.repeats, a.small_repeats));
    md.push_str("| scenario | ftp-pooler | baseline | ratio | goal |\n|---|---|---|---|---|\n");
    for r in rows {
        let goal = r
            .goal
            .map(|g| {
                let ok = if r.ratio >= g { "met" } else { "not met" };
                format!(">= {g:.1}x: {ok}")
            })
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {} | {:.2}x | {} |\n",
            r.scenario, r.ours, r.baseline, r.ratio, goal
        ));
    }
    md.push('\n');
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push_str(&format!(
        "\n![ratios]({})\n",
        a.chart.file_name().unwrap().to_string_lossy()
    ));
    if let Ok(extra) = std::fs::read_to_string("docs/BENCHMARKS.notes.md") {
        md.push('\n');
        md.push_str(&extra);
    }
    std::fs::create_dir_all(a.out.parent().unwrap_or(Path::new("."))).ok();
    std::fs::File::create(&a.out)
        .unwrap()
        .write_all(md.as_bytes())
        .unwrap();
    std::fs::write(&a.chart, chart::svg(&bars(rows), scale)).unwrap();
}

fn bars(rows: &[Row]) -> Vec<chart::Bar> {
    rows.iter()
        .map(|r| chart::Bar {
            scenario: r.scenario.clone(),
            ratio: r.ratio,
            goal: r.goal,
        })
        .collect()
}

fn chrono_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// An experiment's setting from the environment (not in the report's runs): a
/// `transfer:` key (`BENCH_TRANSFER="fsync: per_file"`), or librdkafka properties for the
/// service's consumer or producer (`BENCH_CONSUMER="fetch.wait.max.ms: 10"`,
/// `BENCH_PRODUCER="linger.ms: 0"`). The report's header names them when set.
fn experiment(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The service's config with the `BENCH_CONSUMER` / `BENCH_PRODUCER` properties added.
fn experiment_kafka(yaml: String) -> String {
    let mut yaml = yaml;
    if let Some(c) = experiment("BENCH_CONSUMER") {
        yaml = yaml.replacen(
            "consumer_config: {",
            &format!("consumer_config: {{{c}, "),
            1,
        );
    }
    if let Some(p) = experiment("BENCH_PRODUCER") {
        let sep = if yaml.contains("producer_config: {}") {
            ""
        } else {
            ", "
        };
        yaml = yaml.replacen(
            "producer_config: {",
            &format!("producer_config: {{{p}{sep}"),
            1,
        );
    }
    yaml
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
