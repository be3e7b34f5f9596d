//! `--only resume`: a large file (`--resume-mib`, default 1024) down and up through the
//! link simulator (no delay, capped at `--resume-mbps` MB/s, default 200) in front of the
//! main scenario's vsftpd, the link cut at about 50 % and at about 90 % (issue 21).
//!
//! Each case runs three ways in the same round: the transfer uncut (the baseline), cut and
//! resumed (`transfer.resume: true`, the default), cut and sent again from zero
//! (`transfer.resume: false`). Reported: the bytes sent again over the link (the goal:
//! under 10 % of the file), and each way's time as a ratio to the uncut transfer. The
//! transfers run through the transfer engine (the stage's core: session pool, temporary
//! file, digest, size check, sync and rename), not through Kafka: what is measured is
//! the retry, not the pipeline around it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ftp_pooler_config::Settings;
use ftp_pooler_testbed::engine_bed::{temp_files, EngineBed};
use ftp_pooler_testbed::link::{LinkProxy, LinkSpec};

use super::{log, median, Args, Bench, Row};

/// The file's name on the server and in the local storage.
const FILE: &str = "resume.bin";

/// One way of running a case.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Uncut,
    Resumed,
    FromZero,
}

/// `--only resume`: see the module header. `bench` is the main scenario's (vsftpd).
pub(super) async fn resume(a: &Args, bench: &Bench, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let bytes = a.resume_mib * 1024 * 1024;
    let spec = LinkSpec::rtt_ms(0).with_bandwidth(a.resume_mbps * 1_000_000);
    let content = pattern(bytes);
    let src = bench.server.put(FILE, &content);
    age(&src);
    let mut lines = Vec::new();
    for upload in [false, true] {
        let dir = if upload { "upload" } else { "download" };
        for fraction in [0.5, 0.9] {
            let mut again = Vec::new();
            let mut ratios = (Vec::new(), Vec::new());
            for _ in 0..a.repeats.clamp(1, 3) {
                let mut times = [0.0f64; 3];
                for (i, way) in [Way::Uncut, Way::Resumed, Way::FromZero]
                    .into_iter()
                    .enumerate()
                {
                    let (secs, sent) = run(bench, spec, &content, upload, fraction, way).await;
                    times[i] = secs;
                    if way == Way::Resumed {
                        again.push(sent.saturating_sub(bytes) as f64 / bytes as f64);
                    }
                }
                ratios.0.push(times[1] / times[0]);
                ratios.1.push(times[2] / times[0]);
            }
            let (again, resumed, zero) = (median(again), median(ratios.0), median(ratios.1));
            let line = format!(
                "{} MiB {dir} cut at {:.0} %: {:.2} % of the file sent again; time {:.2}x the uncut transfer resumed, {:.2}x from zero",
                a.resume_mib,
                fraction * 100.0,
                again * 100.0,
                resumed,
                zero
            );
            log(&line);
            lines.push(line);
            rows.push(Row {
                scenario: format!(
                    "{} MiB {dir} cut at {:.0} % through a {} MB/s link: bytes sent again (share of the file)",
                    a.resume_mib,
                    fraction * 100.0,
                    a.resume_mbps
                ),
                ours: format!("{:.2} %", again * 100.0),
                baseline: format!(
                    "from zero (transfer.resume: false): {:.0} %; time to the uncut transfer: resumed {resumed:.2}x, from zero {zero:.2}x",
                    fraction * 100.0
                ),
                // The goal is a ceiling: 10 % of the file at most, as a ratio to it.
                ratio: 0.10 / again.max(1e-6),
                goal: Some(1.0),
            });
        }
    }
    std::fs::remove_file(&src).ok();
    notes.push(format!(
        "Resume (issue 21): a {} MiB file through the link simulator (no delay, capped at {} MB/s each way) in front of vsftpd, the link cut (every connection reset) once the temporary file holds 50 % or 90 % of it; the transfer engine's run, retry included, timed against the same transfer uncut in the same round, and against the retry from zero (`transfer.resume: false`). Bytes sent again: what crossed the link beyond the file's size (the 64 KiB overlap, what was in flight when cut, control traffic). The row's ratio is 10 % divided by that share (>= 1.0 meets the goal). {}.",
        a.resume_mib,
        a.resume_mbps,
        lines.join("; ")
    ));
}

/// One transfer of `content` (down from the server's `FILE`, or up to `in/FILE`) through
/// a fresh link, cut at `fraction` unless `way` is uncut; returns its seconds and the
/// bytes that crossed the link in the transfer's direction.
async fn run(
    bench: &Bench,
    spec: LinkSpec,
    content: &[u8],
    upload: bool,
    fraction: f64,
    way: Way,
) -> (f64, u64) {
    let link = LinkProxy::start(SocketAddr::from(([127, 0, 0, 1], bench.server.port)), spec);
    let mut settings = Settings::default();
    settings.kafka.max_retries = 3;
    settings.kafka.base_backoff_ms = 50;
    settings.kafka.max_backoff_ms = 200;
    settings.transfer.transfer_timeout_seconds = 900;
    settings.pool.prewarm_enabled = false;
    settings.transfer.resume = way != Way::FromZero;
    let section = bench.server.ini_section("a").replace(
        &format!("host = 127.0.0.1\nport = {}\n", bench.server.port),
        &format!(
            "host = {}\nport = {}\n",
            link.addr().ip(),
            link.addr().port()
        ),
    );
    let bed = EngineBed::new(settings, &section);
    let (task, watch) = if upload {
        std::fs::write(bed.local(FILE), content).unwrap();
        (
            bed.task("up", ("local", FILE), ("a", &format!("in/{FILE}"))),
            bench.server.root().to_path_buf(),
        )
    } else {
        (
            bed.task("down", ("a", FILE), ("local", FILE)),
            bed.storage.path().to_path_buf(),
        )
    };
    let engine = Arc::new(bed.engine("a"));
    let e = engine.clone();
    let t0 = Instant::now();
    let run = tokio::spawn(async move { e.run(&task.0, &task.1).await });
    if way != Way::Uncut {
        let at = (content.len() as f64 * fraction) as u64;
        while !run.is_finished() {
            let size = temp_files(&watch)
                .first()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            if size >= at {
                link.cut();
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let result = run.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(result.is_success(), "resume bench: {result:?}");
    let (up, down) = link.relayed();
    if upload {
        std::fs::remove_file(bench.server.root().join("in").join(FILE)).ok();
    }
    (secs, if upload { up } else { down })
}

/// `bytes` of content that differs from one MiB to the next.
fn pattern(bytes: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes as usize);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while (v.len() as u64) < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(bytes as usize);
    v
}

/// Sets a file's modification time a minute back (a source unchanged since well before).
fn age(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}
