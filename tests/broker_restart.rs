//! The broker dies mid-run (DESIGN.md section 3, guarantees 1 and 2; issue 7): SIGKILL
//! of the broker while the service works through 1,000 mixed tasks, a few seconds down,
//! then the broker starts again on its persistent storage (Tansu on a local S3 server,
//! `ftp_pooler_testbed::use_persistent_broker`). The service must reconnect on its own
//! (same supervisor), every task must get a result, files must be complete, and no
//! committed offset may pass a result that was not in Kafka.
//!
//! This test cannot run against an external cluster (`FTP_POOLER_TEST_BOOTSTRAP`): it
//! fails saying so.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_testbed::http::{get_json, request};
use ftp_pooler_testbed::scenario::{tail, Scenario, RUN_LIMIT};
use ftp_pooler_testbed::service::{Record, Seen, Topics, Watcher};
use ftp_pooler_testbed::{broker, use_persistent_broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// The broker stays down at least this long...
const MIN_OUTAGE: Duration = Duration::from_secs(4);
/// ...and until /ready says so, but no longer than this.
const MAX_OUTAGE: Duration = Duration::from_secs(12);

/// A consumer that reads the committed offsets of the scenario's group (it does not
/// join the group).
fn offsets_reader(topics: &Topics) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker().bootstrap())
        .set("group.id", &topics.group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// The committed offsets of the scenario's group, retried while the broker (just
/// restarted) does not answer yet.
async fn committed_offsets(
    reader: &BaseConsumer,
    topics: &Topics,
    limit: Duration,
) -> BTreeMap<i32, Option<i64>> {
    let start = Instant::now();
    let parts: Vec<i32> = (0..topics.partitions).collect();
    loop {
        match ftp_pooler_ingest::committed(reader, &topics.tasks, &parts, Duration::from_secs(5)) {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    start.elapsed() < limit,
                    "committed offsets of {}: {e}",
                    topics.group
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A producer for the markers, connected before it is needed.
async fn marker_producer(topics: &Topics) -> FutureProducer {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker().bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for topic in [&topics.results, &topics.failures, &topics.dlq] {
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    }
    producer
}

/// Appends one marker record (JSON, `"marker": true`, with a task id of its own) to every
/// partition of the result, failure and DLQ topics; returns each marker's offset. Every
/// record appended before the markers has a lower offset in its partition.
async fn markers(producer: &FutureProducer, topics: &Topics) -> HashMap<(String, i32), i64> {
    let mut sends = Vec::new();
    for topic in [&topics.results, &topics.failures, &topics.dlq] {
        for p in 0..topics.partitions {
            sends.push(async move {
                let id = format!("marker-{topic}-{p}");
                let value = serde_json::to_vec(&json!({"task_id": id, "marker": true})).unwrap();
                let d = producer
                    .send(
                        FutureRecord::<str, [u8]>::to(topic)
                            .partition(p)
                            .key(&id)
                            .payload(&value),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap_or_else(|(e, _)| panic!("marker to {topic}/{p}: {e}"));
                ((topic.to_string(), p), d.offset)
            });
        }
    }
    futures::future::join_all(sends).await.into_iter().collect()
}

/// What the service's REST API showed after the kill, polled every 200 ms.
#[derive(Default)]
struct ApiLog {
    /// /ready: (time since the kill, status, reason) at each change.
    ready: Vec<(Duration, u16, String)>,
    /// /stats: (time since the kill, results + failures + DLQ records Kafka acknowledged
    /// to publish) at each change.
    sent: Vec<(Duration, u64)>,
}

fn poll_api(api_port: u16, t_kill: Instant) -> (Arc<Mutex<ApiLog>>, tokio::task::JoinHandle<()>) {
    let log: Arc<Mutex<ApiLog>> = Arc::default();
    let l = log.clone();
    let task = tokio::spawn(async move {
        loop {
            let (status, reason) = match request(api_port, "GET", "/ready").await {
                Ok((s, body)) => {
                    let v: Value = serde_json::from_str(&body).unwrap_or(json!({"reason": body}));
                    let reason = v["reason"]
                        .as_str()
                        .or_else(|| v["status"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    (s, reason)
                }
                Err(e) => (0, e),
            };
            let sent = match request(api_port, "GET", "/stats").await {
                Ok((200, body)) => serde_json::from_str::<Value>(&body).ok().map(|v| {
                    ["results_sent", "failures_sent"]
                        .iter()
                        .map(|k| v["producer"][k].as_u64().unwrap_or(0))
                        .sum::<u64>()
                        + v["dlq"]["dlq_messages_sent"].as_u64().unwrap_or(0)
                }),
                _ => None,
            };
            let at = t_kill.elapsed();
            {
                let mut log = l.lock().unwrap();
                if log
                    .ready
                    .last()
                    .is_none_or(|(_, s, r)| (*s, r.as_str()) != (status, reason.as_str()))
                {
                    log.ready.push((at, status, reason));
                }
                if let Some(n) = sent {
                    if log.sent.last().is_none_or(|(_, m)| *m != n) {
                        log.sent.push((at, n));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (log, task)
}

/// What the watcher saw, without the markers (for `Scenario::verify`).
fn without_markers(seen: &Seen) -> Seen {
    let mut clean = seen.clone();
    clean.dlq.retain(|r| r.value["marker"] != true);
    clean
        .by_task
        .retain(|_, rs| rs.iter().all(|r| r.value["marker"] != true));
    clean
}

/// Whether `r` was appended before the marker of its partition (before the kill).
fn before_marker(r: &Record, marks: &HashMap<(String, i32), i64>) -> bool {
    r.offset < marks[&(r.topic.clone(), r.partition)]
}

/// Every message below the committed offset of its partition has its outcome (result,
/// failure or DLQ record) in Kafka below the marker of the outcome's partition. Returns
/// how many committed messages were checked.
fn check_committed_have_outcomes(
    sc: &Scenario,
    deliveries: &[(i32, i64)],
    committed: &BTreeMap<i32, Option<i64>>,
    marks: &HashMap<(String, i32), i64>,
    seen: &Seen,
) -> usize {
    let mut checked = 0;
    for (p, (part, off)) in sc.planned.iter().zip(deliveries) {
        let Some(Some(c)) = committed.get(part) else {
            continue;
        };
        if off >= c {
            continue;
        }
        checked += 1;
        let outcomes: Vec<&Record> = match &p.task_id {
            Some(id) => seen.by_task.get(id).into_iter().flatten().collect(),
            None => seen
                .dlq
                .iter()
                .filter(|r| {
                    r.value["original_partition"] == *part && r.value["original_offset"] == *off
                })
                .collect(),
        };
        assert!(
            outcomes.iter().any(|r| before_marker(r, marks)),
            "offset {part}:{off} ({:?}) was committed ({c}) before the kill, but its outcome \
             was not in Kafka then (outcomes at {:?})",
            p.task_id,
            outcomes
                .iter()
                .map(|r| (&r.topic, r.partition, r.offset))
                .collect::<Vec<_>>()
        );
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_run_the_service_reconnects_and_loses_nothing() {
    let t0 = Instant::now();
    // Tansu on S3 storage: topics, messages and committed offsets survive a SIGKILL.
    use_persistent_broker();
    // As scenario::mid_run, but the kill comes once the group has committed a fifth of
    // the messages (so a fifth of the results are in Kafka): the whole run takes a couple
    // of seconds and the watcher reads Tansu-on-S3 a second or more behind, so waiting for
    // a fifth of the results in the watcher kills the broker after the service is done.
    let sc = Scenario::new(Path::new(EXE), 1000).await;
    let watcher = Watcher::start(&sc.topics).await;
    let mut svc = sc.start("");
    let pids = svc.wait_ready(Duration::from_secs(60)).await;
    let supervisor = svc.pid();
    let reader = offsets_reader(&sc.topics);
    committed_offsets(&reader, &sc.topics, Duration::from_secs(10)).await;
    let producer = marker_producer(&sc.topics).await;
    // /ready is 200 once both Kafka stages have reported a reachable broker.
    let start = Instant::now();
    loop {
        let (s, v) = get_json(svc.api_port, "/ready").await;
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/ready before the fault: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = sc.produce().await;
    let fifth = sc.planned.len() / 5;
    let start = Instant::now();
    // Just before the kill: the committed offsets, then a marker in every outcome
    // partition (whatever was published before that commit is below its marker).
    let before = loop {
        let c = committed_offsets(&reader, &sc.topics, Duration::from_secs(10)).await;
        if c.values().flatten().sum::<i64>() >= fifth as i64 {
            break c;
        }
        assert!(
            start.elapsed() < RUN_LIMIT,
            "not {fifth} messages committed within {RUN_LIMIT:?} ({c:?}):\n{}",
            tail(&svc.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let t_fifth = Instant::now();
    let marks = markers(&producer, &sc.topics).await;
    drop(producer);
    let at_kill = watcher.seen().results();
    let finished_at_kill = svc.log().matches("task finished").count();
    let t_kill = Instant::now();
    broker().kill();
    let (api_log, api_task) = poll_api(svc.api_port, t_kill);

    // Down: at least MIN_OUTAGE, and until /ready reports the broker unreachable.
    let unready = || {
        api_log
            .lock()
            .unwrap()
            .ready
            .iter()
            .any(|(_, s, r)| *s == 503 && r == "broker_unreachable")
    };
    while t_kill.elapsed() < MIN_OUTAGE || (!unready() && t_kill.elapsed() < MAX_OUTAGE) {
        if let Some(status) = svc.try_wait() {
            panic!(
                "the supervisor exited ({status}) while the broker was down:\n{}",
                tail(&svc.log(), 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outage = t_kill.elapsed();
    let results_during_outage = watcher.seen().results() - at_kill;

    let t_start = Instant::now();
    broker().start_again();
    let t_restart = Instant::now();
    eprintln!(
        "SIGKILL of the broker {:?} after {} messages were committed ({finished_at_kill} \
         tasks finished at the kill; the watcher had read {at_kill} results then, \
         {results_during_outage} more after it); down for {outage:?}; started again and \
         answering in {:?}",
        t_kill - t_fifth,
        before.values().flatten().sum::<i64>(),
        t_restart - t_start
    );

    // Committed offsets survived the restart, and none passes an unpublished result.
    let after_restart = committed_offsets(&reader, &sc.topics, Duration::from_secs(30)).await;
    for (p, c) in &before {
        let a = after_restart.get(p).copied().flatten();
        assert!(
            a >= *c,
            "partition {p}: committed {c:?} before the kill, {a:?} after the restart (lost)"
        );
    }

    // Every task gets a result; the service reconnected by itself.
    sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    // (wait_all counts the DLQ markers as DLQ records: wait for the real ones too.)
    watcher
        .wait_for(
            RUN_LIMIT,
            "every DLQ record",
            |s| without_markers(s).dlq.len() >= sc.expected_dlq(),
            || tail(&svc.log(), 40),
        )
        .await;
    let t_done = t_restart.elapsed();
    // Linger: a late duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = watcher.seen();
    let checked = check_committed_have_outcomes(&sc, &deliveries, &before, &marks, &all);
    let seen = without_markers(&all);
    assert!(checked > 0, "nothing was committed before the kill");
    // Tasks whose result Kafka had before the kill (below the markers).
    let published_before_kill = sc
        .planned
        .iter()
        .filter_map(|p| p.task_id.as_ref())
        .filter(|id| seen.by_task[*id].iter().any(|r| before_marker(r, &marks)))
        .count();
    assert!(
        published_before_kill < sc.expected_results(),
        "every result was in Kafka before the kill: the fault came too late to test anything"
    );
    let dupes = sc.verify(&seen);
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;

    // The first result appended after the restart (above the marker of its partition),
    // as the watcher read it (the watcher too had to rejoin its group).
    let first_read = seen
        .by_task
        .values()
        .flatten()
        .filter(|r| {
            marks
                .get(&(r.topic.clone(), r.partition))
                .is_some_and(|m| r.offset > *m)
        })
        .map(|r| r.at)
        .min()
        .map(|at| at.saturating_duration_since(t_restart));
    assert!(
        first_read.is_some(),
        "no result was published after the restart"
    );

    // /ready: 503 broker_unreachable while the broker was down, 200 again after.
    let ready_limit = Instant::now() + Duration::from_secs(30);
    while !api_log
        .lock()
        .unwrap()
        .ready
        .iter()
        .any(|(at, s, _)| *at > outage && *s == 200)
    {
        let (s, v) = get_json(svc.api_port, "/ready").await;
        assert!(
            Instant::now() < ready_limit,
            "/ready is {s} {v} 30 s after all the results were in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api_task.abort();
    let api_log = std::mem::take(&mut *api_log.lock().unwrap());
    let restarted_at = t_restart - t_kill;
    let unready_at = api_log
        .ready
        .iter()
        .find(|(at, s, r)| *at < outage && *s == 503 && r == "broker_unreachable")
        .map(|(at, _, _)| *at);
    let ready_again_at = api_log
        .ready
        .iter()
        .find(|(at, s, _)| *at > outage && *s == 200)
        .map(|(at, _, _)| at.saturating_sub(restarted_at));
    // Publish's acknowledged sends (/stats, reported once a second): the first increase
    // after the restart is the first new result Kafka took.
    let sent_before = api_log
        .sent
        .iter()
        .filter(|(at, _)| *at <= restarted_at)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let first_acked = api_log
        .sent
        .iter()
        .find(|(at, n)| *at > restarted_at && *n > sent_before)
        .map(|(at, _)| at.saturating_sub(restarted_at));

    // The same supervisor, all stages running; which of them were restarted.
    assert!(
        svc.try_wait().is_none(),
        "the supervisor exited:\n{}",
        tail(&svc.log(), 40)
    );
    assert_eq!(svc.pid(), supervisor);
    let after = svc.wait_ready(Duration::from_secs(30)).await;
    let status = svc.status().await.expect("ctl status");
    let restarted: Vec<String> = status
        .iter()
        .filter(|s| s.restarts > 0 || pids.get(&s.name) != after.get(&s.name))
        .map(|s| format!("{} ({} restarts)", s.name, s.restarts))
        .collect();
    let mut duplicated: Vec<&str> = seen
        .by_task
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k.as_str())
        .collect();
    duplicated.sort_unstable();
    eprintln!(
        "broker restart: {} tasks, {} with results, {dupes} \
         duplicate results over {} tasks (first ones: {:?}); the watcher re-read {} records \
         after the restart and counted them once",
        sc.expected_results(),
        seen.by_task.len(),
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)],
        seen.reread
    );
    eprintln!(
        "at the kill, Kafka had the results of {published_before_kill} of {} tasks",
        sc.expected_results()
    );
    eprintln!(
        "committed before the kill {before:?} ({checked} messages, each with its outcome in \
         Kafka before the kill); right after the restart {after_restart:?}"
    );
    eprintln!(
        "after the restart: first new result acknowledged to publish within {first_acked:?} \
         (/stats, 1 s resolution), first read by the watcher after {first_read:?}; every \
         task had its result after {t_done:?}"
    );
    eprintln!(
        "/ready: 503 broker_unreachable {unready_at:?} after the kill; 200 again {ready_again_at:?} \
         after the restart; changes (time since the kill, status, reason): {:?}",
        api_log.ready
    );
    eprintln!(
        "supervisor pid {supervisor} unchanged; stages restarted: {restarted:?}; wall time {:?}",
        t0.elapsed()
    );
    assert!(
        unready_at.is_some(),
        "/ready never said 503 broker_unreachable while the broker was down ({outage:?}): {:?}",
        api_log.ready
    );
}
