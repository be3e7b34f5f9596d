//! A restarted ingest resumes at once (issue 18): after SIGKILL of the ingest stage in the
//! middle of a run, results flow again within [`RESUME_BOUND`].
//!
//! The bound a user sees is the time from the kill to the first result of work the new
//! ingest read: tasks produced at the kill wait that long for their results, whatever
//! the old ingest's in-flight jobs still deliver meanwhile. The largest gap between
//! consecutive results after the kill is printed beside it; it is shorter (the old
//! generation's running jobs finish and are published for a second or two after the
//! kill), so it would hide part of the stall and is not what the test asserts.
//!
//! The test bed's consumer has `session.timeout.ms` 6000; the ingest consumer is a
//! static member (`group.instance.id`), and Tansu 0.6.0 answers a static member's
//! JoinGroup and SyncGroup each after 3 s (docs/NOTES.md, "Kafka (Tansu)"), so the bound
//! has about 3 s of margin.

use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_testbed::scenario::{mid_run, tail, MidRun, RUN_LIMIT};
use ftp_pooler_testbed::service::{Seen, Service};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// After SIGKILL of ingest, results flow again within this (issue 18).
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// Lines of `log` where an ingest got a non-empty assignment.
fn assignments(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("partitions assigned") && !l.contains("parts=[]"))
        .count()
}

/// When the watcher read each record (results, failures, DLQ), in order.
fn arrivals(seen: &Seen) -> Vec<Instant> {
    let mut at: Vec<Instant> = seen
        .by_task
        .values()
        .flatten()
        .chain(seen.dlq.iter())
        .map(|r| r.at)
        .collect();
    at.sort();
    at
}

/// The largest gap between consecutive arrivals from `from` on (`from` itself counts as
/// an arrival), and where it ended.
fn largest_gap(arrivals: &[Instant], from: Instant) -> (Duration, Instant) {
    let mut last = from;
    let mut gap = (Duration::ZERO, from);
    for &a in arrivals.iter().filter(|&&a| a >= from) {
        if a - last > gap.0 {
            gap = (a - last, a);
        }
        last = a;
    }
    gap
}

/// Polls the service log until a new non-empty assignment appears; when it did.
async fn wait_new_assignment(svc: &Service, before: usize, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if assignments(&svc.log()) > before {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "no new assignment within {limit:?}:\n{}",
            tail(&svc.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_of_ingest_results_flow_again_within_10_s() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        pids,
        deliveries,
    } = mid_run(Path::new(EXE)).await;
    let before = assignments(&svc.log());
    let at_kill = watcher.seen().results();
    kill(Pid::from_raw(pids["ingest"] as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let assigned = wait_new_assignment(&svc, before, Duration::from_secs(60)).await;
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    let done = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrivals = arrivals(&seen);
    let first_new = *arrivals
        .iter()
        .find(|&&a| a >= assigned)
        .expect("results after the new assignment");
    let last_old = arrivals
        .iter()
        .rev()
        .find(|&&a| a < assigned)
        .map(|&a| a.saturating_duration_since(killed));
    let (gap, gap_end) = largest_gap(&arrivals, killed);
    let dupes = sc.verify(&watcher.seen());
    eprintln!(
        "SIGKILL ingest after {at_kill} results: partitions assigned to the new ingest after \
         {:.2} s, first result after that at {:.2} s (last result before it at {:?} after the \
         kill); largest gap between results {:.2} s (ending {:.2} s after the kill); every \
         result after {:.2} s; {dupes} duplicates",
        (assigned - killed).as_secs_f64(),
        (first_new - killed).as_secs_f64(),
        last_old,
        gap.as_secs_f64(),
        (gap_end - killed).as_secs_f64(),
        (done - killed).as_secs_f64(),
    );
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    assert_ne!(after["ingest"], pids["ingest"], "ingest was restarted");
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
    assert!(
        first_new - killed <= RESUME_BOUND,
        "results flowed again {:?} after the kill, over {RESUME_BOUND:?}:\n{}",
        first_new - killed,
        tail(&svc.log(), 60)
    );
}

#[test]
fn the_largest_gap_counts_from_the_kill() {
    let t0 = Instant::now();
    let s = |ms: u64| t0 + Duration::from_millis(ms);
    let arrivals = [s(0), s(100), s(1_000), s(1_500), s(7_500), s(7_600)];
    assert_eq!(
        largest_gap(&arrivals, s(50)),
        (Duration::from_millis(6_000), s(7_500))
    );
    assert_eq!(
        largest_gap(&arrivals, s(7_000)),
        (Duration::from_millis(500), s(7_500))
    );
    assert_eq!(largest_gap(&[], s(1)), (Duration::ZERO, s(1)));
}
