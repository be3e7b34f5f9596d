//! `--only startup`: the time from starting `ftp-pooler run` to the first result read
//! back, for one task produced before the start (issue 20), with the ingest consumer a
//! static group member (the default) and a dynamic one (`kafka.static_membership:
//! false`). Each round has fresh topics and a fresh group, so every start is a first join.
//!
//! Broken down by what the service logs, as the bench sees it appear (polled every
//! 10 ms): every stage running (the supervisor's "all stages ready"), the pool's
//! sessions opened ("pre-warmed sessions"), ingest's first assignment ("partitions
//! assigned", the group join), and the result read back. The result watcher has read a
//! record of the result topic before the clock starts, so its own group join is not timed.

use std::time::{Duration, Instant};

use ftp_pooler_testbed::service::{Service, Topics, Watcher};
use serde_json::json;

use super::{chrono_like_micros, log, median, produce, task, Args, Bench};

/// Microseconds since midnight UTC (the clock of the results' timestamps).
fn micros_of_day() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_micros() % 86_400_000_000) as i64)
        .unwrap_or(0)
}

/// Seconds after the spawn at which each step was first seen.
#[derive(Default)]
struct Marks {
    ready: Vec<f64>,
    warm: Vec<f64>,
    assigned: Vec<f64>,
    /// The result's own timestamp (written by the transfer worker).
    written: Vec<f64>,
    result: Vec<f64>,
}

impl Marks {
    fn summary(&self) -> String {
        format!(
            "first result {:.2} s (every stage running {:.2} s, sessions pre-warmed {:.2} s, partitions assigned {:.2} s, the result's timestamp {:.2} s)",
            median(self.result.clone()),
            median(self.ready.clone()),
            median(self.warm.clone()),
            median(self.assigned.clone()),
            median(self.written.clone())
        )
    }
}

/// One start: the seconds at which each step showed.
async fn one(bench: &Bench, static_member: bool, r: usize, marks: &mut Marks) {
    let tag = format!(
        "startup-{}-{r}",
        if static_member { "static" } else { "dynamic" }
    );
    let topics = Topics::create(3).await;
    let watcher = Watcher::start(&topics).await;
    // The watcher reads before the clock starts (its own join is not the service's).
    let probe = format!("{tag}-probe");
    produce(
        &topics.results,
        &[(
            Some(probe.clone()),
            serde_json::to_vec(&json!({"task_id": probe})).unwrap(),
        )],
    )
    .await;
    watcher
        .wait_for(
            Duration::from_secs(60),
            "the watcher's first read",
            |s| s.by_task.contains_key(&probe),
            String::new,
        )
        .await;
    let id = format!("{tag}-task");
    produce(
        &topics.tasks,
        &[task(
            &id,
            ("ftp", "small/f00000.bin"),
            ("local", &format!("startup/{tag}.bin")),
        )],
    )
    .await;
    let yaml = bench.yaml(&topics, 10, true);
    let yaml = yaml.replacen(
        "pool:\n",
        &format!("  static_membership: {static_member}\npool:\n"),
        1,
    );
    assert!(yaml.contains("static_membership"), "{yaml}");
    let wall0 = micros_of_day();
    let t0 = Instant::now();
    let svc = Service::start(
        &bench.exe,
        &bench.work.path().join(&tag),
        &yaml,
        &bench.connections(),
    );
    let (mut ready, mut warm, mut assigned) = (None, None, None);
    let (result, stamp) = loop {
        let now = t0.elapsed().as_secs_f64();
        let text = svc.log();
        let seen = |what: &str, at: &mut Option<f64>| {
            if at.is_none()
                && text
                    .lines()
                    .any(|l| l.contains(what) && !l.contains("parts=[]"))
            {
                *at = Some(now);
            }
        };
        seen("all stages ready", &mut ready);
        seen("pre-warmed sessions", &mut warm);
        seen("partitions assigned", &mut assigned);
        if let Some(rec) = watcher.seen().by_task.get(&id) {
            assert_eq!(rec[0].value["status"], "success", "{}", rec[0].value);
            let stamp = rec[0].value["timestamp"]
                .as_str()
                .and_then(chrono_like_micros)
                .map(|us| (us - wall0) as f64 / 1e6);
            break (rec[0].at.duration_since(t0).as_secs_f64(), stamp);
        }
        assert!(now < 120.0, "{tag}: no result within 120 s:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(svc);
    let nan = f64::NAN;
    log(&format!(
        "{tag}: first result {result:.2} s after the spawn (every stage running {:.2} s, sessions pre-warmed {:.2} s, partitions assigned {:.2} s, the result's timestamp {:.2} s)",
        ready.unwrap_or(nan),
        warm.unwrap_or(nan),
        assigned.unwrap_or(nan),
        stamp.unwrap_or(nan)
    ));
    marks.written.extend(stamp);
    marks.result.push(result);
    marks.ready.extend(ready);
    marks.warm.extend(warm);
    marks.assigned.extend(assigned);
}

/// Runs the rounds, static and dynamic alternately; adds the figures to the notes.
pub(super) async fn startup(a: &Args, bench: &Bench, notes: &mut Vec<String>) {
    let (mut stat, mut dynamic) = (Marks::default(), Marks::default());
    for r in 0..a.repeats {
        one(bench, true, r, &mut stat).await;
        one(bench, false, r, &mut dynamic).await;
    }
    let goal = |m: &Marks| {
        if median(m.result.clone()) <= 5.0 {
            "met"
        } else {
            "not met"
        }
    };
    let line = format!(
        "Time from `ftp-pooler run` to the first result read back, one task produced before the start, fresh group (median of {} starts each; the steps as the service logs them): static member (the default) {}: goal <= 5 s {}; `kafka.static_membership: false` {}: goal <= 5 s {}. On Tansu 0.6.0 a static member's JoinGroup and SyncGroup answers each wait a fixed 3 s (docs/NOTES.md).",
        a.repeats,
        stat.summary(),
        goal(&stat),
        dynamic.summary(),
        goal(&dynamic)
    );
    log(&line);
    notes.push(line);
}
