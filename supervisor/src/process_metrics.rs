//! Process metrics of every stage process and of the supervisor itself, labelled by
//! `stage` (`supervisor`, `ingest`, `publish`, `transfer:<id>`), and whether each stage
//! is up (`ftp_stage_up`).
//!
//! The supervisor reads `/proc/<pid>` of each child it started (and of itself) at scrape
//! time, rather than each stage exporting its own: a stage that is hung, or too busy to
//! report, still shows its CPU, memory and descriptors, which is when they matter. The
//! names are the standard ones of Prometheus client libraries (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`, ...);
//! the `prometheus` crate's own process collector is not used because it measures one pid
//! with no labels and counts CPU in whole seconds. Invariants:
//! - a series exists only for a process that exists now: a stage in backoff has no
//!   `process_*` series (its `ftp_stage_up` is 0);
//! - `process_cpu_seconds_total` and `process_start_time_seconds` belong to the current
//!   process of a stage: after a restart the counter starts again from 0 (as for any
//!   restarted process) and the start time moves, which `changes()` can count;
//! - rendering ([`render`]) is pure; only [`sample`] reads `/proc`.

use std::fmt::Write as _;
use std::time::Instant;

use ftp_pooler_channel::StageState;

use crate::observed::{Observed, REPORT_STALE};

/// The `stage` label of the supervisor's own process.
pub const SUPERVISOR: &str = "supervisor";

/// One process, as read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open files; None when unlimited.
    pub max_fds: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub threads: u64,
}

/// What the scrape covers: each stage with its pid (when it has a process) and whether
/// it is up (running and reporting).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub stage: String,
    pub pid: Option<u32>,
    pub up: Option<bool>,
}

/// The supervisor and every stage it knows, from what it observed.
pub fn targets(o: &Observed, now: Instant) -> Vec<Target> {
    let mut v = vec![Target {
        stage: SUPERVISOR.to_string(),
        pid: Some(std::process::id()),
        up: None,
    }];
    for s in &o.stages {
        let reporting = o
            .details
            .get(&s.name)
            .is_some_and(|(at, _)| now.duration_since(*at) <= REPORT_STALE);
        let exists = !matches!(s.state, StageState::Backoff | StageState::Stopped);
        v.push(Target {
            stage: s.name.to_string(),
            pid: s.pid.filter(|_| exists),
            up: Some(s.state == StageState::Running && reporting),
        });
    }
    v
}

/// Reads `/proc/<pid>`; None when the process is gone (or not readable).
pub fn sample(pid: u32) -> Option<Sample> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = p.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let boot = procfs::boot_time_secs().ok()? as f64;
    let max_fds = match p.limits().ok().map(|l| l.max_open_files.soft_limit) {
        Some(procfs::process::LimitValue::Value(n)) => Some(n),
        _ => None,
    };
    Some(Sample {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss * procfs::page_size(),
        virtual_bytes: stat.vsize,
        open_fds: p.fd_count().ok()? as u64,
        max_fds,
        start_time_seconds: boot + stat.starttime as f64 / ticks,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
    })
}

/// Samples every target with a process and renders the whole text.
pub fn collect(targets: &[Target]) -> String {
    let samples: Vec<(String, Sample)> = targets
        .iter()
        .filter_map(|t| Some((t.stage.clone(), sample(t.pid?)?)))
        .collect();
    let up: Vec<(String, bool)> = targets
        .iter()
        .filter_map(|t| Some((t.stage.clone(), t.up?)))
        .collect();
    render(&samples, &up)
}

/// A label value in the text format (`\`, `"` and newlines escaped).
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The families in the Prometheus text format (pure).
pub fn render(samples: &[(String, Sample)], up: &[(String, bool)]) -> String {
    type Get = fn(&Sample) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 7] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            |s| Some(s.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            |s| Some(s.resident_bytes as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            |s| Some(s.virtual_bytes as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            |s| Some(s.open_fds as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            |s| s.max_fds.map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            |s| Some(s.start_time_seconds),
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            |s| Some(s.threads as f64),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let rows: Vec<(&str, f64)> = samples
            .iter()
            .filter_map(|(stage, s)| Some((stage.as_str(), get(s)?)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (stage, v) in rows {
            let _ = writeln!(out, "{name}{{stage=\"{}\"}} {v}", escape(stage));
        }
    }
    if !up.is_empty() {
        out.push_str("# HELP ftp_stage_up 1 when the stage's process is running and reporting to the supervisor, 0 otherwise\n# TYPE ftp_stage_up gauge\n");
        for (stage, up) in up {
            let _ = writeln!(
                out,
                "ftp_stage_up{{stage=\"{}\"}} {}",
                escape(stage),
                u8::from(*up)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu: f64, max_fds: Option<u64>) -> Sample {
        Sample {
            cpu_seconds: cpu,
            resident_bytes: 4096,
            virtual_bytes: 8192,
            open_fds: 12,
            max_fds,
            start_time_seconds: 1_700_000_000.5,
            threads: 3,
        }
    }

    #[test]
    fn every_family_is_labelled_by_stage() {
        let text = render(
            &[
                ("supervisor".into(), s(0.25, Some(1024))),
                ("transfer:a".into(), s(1.5, None)),
            ],
            &[("transfer:a".into(), true), ("ingest".into(), false)],
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total{stage=\"supervisor\"} 0.25\nprocess_cpu_seconds_total{stage=\"transfer:a\"} 1.5\n"), "{text}");
        assert!(text.contains("process_resident_memory_bytes{stage=\"transfer:a\"} 4096\n"));
        assert!(text.contains("process_open_fds{stage=\"supervisor\"} 12\n"));
        assert!(text.contains("process_start_time_seconds{stage=\"supervisor\"} 1700000000.5\n"));
        assert!(text.contains("process_threads{stage=\"transfer:a\"} 3\n"));
        // An unlimited soft limit has no series.
        assert!(text.contains("process_max_fds{stage=\"supervisor\"} 1024\n"));
        assert!(!text.contains("process_max_fds{stage=\"transfer:a\"}"));
        assert!(text.contains("# TYPE ftp_stage_up gauge\nftp_stage_up{stage=\"transfer:a\"} 1\nftp_stage_up{stage=\"ingest\"} 0\n"));
    }

    #[test]
    fn nothing_to_say_renders_nothing_and_labels_are_escaped() {
        assert_eq!(render(&[], &[]), "");
        let text = render(&[("a\"b\\c".into(), s(1.0, None))], &[]);
        assert!(
            text.contains(r#"process_threads{stage="a\"b\\c"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("/proc/self");
        assert!(me.resident_bytes > 0 && me.open_fds > 0 && me.threads > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(me.start_time_seconds <= now + 1.0 && me.start_time_seconds > now - 86_400.0);
        assert_eq!(sample(u32::MAX), None);
    }
}
