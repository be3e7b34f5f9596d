//! Issue 18: a new owner of a task partition finds in Kafka itself which of its tasks are
//! done. Against the test bed's broker (Tansu) and, end to end, the real service.
//!
//! - Recall reads the headers publish writes (task topic, partition, offset, group) from
//!   the result, failure and DLQ topics, on several partitions each, and keeps exactly
//!   the answers to our topic, group and partitions at or above the commit points.
//! - The scan's cost with 20,000 result records in the topics (figures in
//!   docs/NOTES.md): printed, and bounded.
//! - kill -9 of the whole service mid-run of 1,000 tasks, then a fresh start: the new
//!   ingest learns what is done, and (almost) nothing is run twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ftp_pooler_channel::MessageId;
use ftp_pooler_config::{KafkaSettings, Settings};
use ftp_pooler_contract::{
    Answers, DlqRecord, ErrorCode, InvalidMessage, TransferResult, TransferTask,
};
use ftp_pooler_kafka::recall::read::{recall, recall_recent};
use ftp_pooler_publish::Publisher;
use ftp_pooler_testbed::scenario::{mid_run, tail, wait_until, MidRun, RUN_LIMIT};
use ftp_pooler_testbed::service::produce;
use ftp_pooler_testbed::{broker, unique};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

/// Settings for one test: its own topics (`partitions` each) and group.
async fn kafka_settings(partitions: i32) -> KafkaSettings {
    let b = broker();
    let mut k = Settings::default().kafka;
    k.bootstrap_servers = vec![b.bootstrap().to_string()];
    for (key, v) in b.properties() {
        k.consumer_config.insert(key.clone(), v.clone());
        k.producer_config.insert(key.clone(), v.clone());
    }
    k.consumer_group = unique("group");
    k.input_topic = unique("tasks");
    k.result_topic = unique("results");
    k.fail_topic = unique("failures");
    k.dlq_topic = unique("dlq");
    for t in [&k.input_topic, &k.result_topic, &k.fail_topic, &k.dlq_topic] {
        b.create_topic(t, partitions).await;
    }
    k
}

fn id(partition: i32, offset: i64) -> MessageId {
    MessageId {
        generation: 1,
        partition,
        offset,
    }
}

fn task(i: usize) -> TransferTask {
    TransferTask::parse(Some(
        format!(
            r#"{{"task_id":"t-{i}","src_id":"a","src_path":"/x","dst_id":"b","dst_path":"/y"}}"#
        )
        .as_bytes(),
    ))
    .unwrap()
}

/// Produces `n` records to `topic`, each with `headers(i)` and the timestamp `ts(i)`
/// (ms), keyed `k-i`; returns the partitions they landed on.
async fn produce_with_headers(
    topic: &str,
    n: usize,
    headers: impl Fn(usize) -> Option<Answers>,
    ts: impl Fn(usize) -> Option<i64>,
) -> BTreeSet<i32> {
    let producer: FutureProducer = broker()
        .client_config()
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let sends = (0..n).map(|i| {
        let key = format!("k-{i}");
        let mut h = OwnedHeaders::new();
        for (name, value) in headers(i).map(|a| a.headers()).into_iter().flatten() {
            h = h.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let producer = &producer;
        let ts = ts(i);
        async move {
            let mut r = FutureRecord::to(topic).key(&key).payload("{}").headers(h);
            if let Some(t) = ts {
                r = r.timestamp(t);
            }
            producer
                .send(r, Duration::from_secs(30))
                .await
                .unwrap()
                .partition
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

fn commit(k: &KafkaSettings, points: &BTreeMap<i32, i64>) {
    let consumer: rdkafka::consumer::BaseConsumer =
        ftp_pooler_ingest::consumer_config(k).create().unwrap();
    ftp_pooler_ingest::commit(&consumer, &k.input_topic, points).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_finds_the_answers_to_our_partitions_on_every_result_topic_and_nothing_else() {
    let k = kafka_settings(3).await;
    // 60 tasks over the 3 partitions.
    let payloads: Vec<(Option<String>, Vec<u8>)> = (0..60)
        .map(|i| (Some(format!("key-{i}")), b"{}".to_vec()))
        .collect();
    let tasks = produce(&k.input_topic, &payloads).await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, o) in &tasks {
        let e = ends.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
    assert_eq!(ends.len(), 3, "tasks on every partition: {ends:?}");
    // Partition 0 committed at 5, partition 1 never, partition 2 at its end.
    commit(&k, &BTreeMap::from([(0, 5), (2, ends[&2])]));

    // What publish writes (its own headers): results, failures and DLQ records for some
    // tasks of each partition, above and below the commit points.
    let publisher = Publisher::new(&k).unwrap();
    let mut landed = BTreeSet::new();
    let mut want: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for (i, &(p, o)) in tasks.iter().enumerate() {
        if i % 3 == 2 {
            continue; // not done yet
        }
        let t = task(i);
        let key = format!("key-{i}");
        let d = match i % 4 {
            0 => {
                publisher
                    .publish_result(&TransferResult::success(&t, 1, 1, 1), &id(p, o))
                    .await
            }
            1 => {
                let failed = TransferResult::failure(&t, ErrorCode::FileNotFound, "550", 1, 1);
                publisher.publish_result(&failed, &id(p, o)).await
            }
            _ => {
                let invalid = InvalidMessage("not JSON".into());
                let dlq = DlqRecord::new(
                    &k.input_topic,
                    p,
                    o,
                    Some(key.as_bytes()),
                    Some(b"x"),
                    &invalid,
                );
                publisher
                    .publish_dlq(&dlq, Some(key.as_bytes()), &id(p, o))
                    .await
            }
        }
        .unwrap();
        landed.insert(((i % 4).min(2), d.0));
        let from = match p {
            0 => 5,
            1 => 0,
            _ => i64::MAX,
        };
        if o >= from {
            want.entry(p).or_default().insert(o);
        }
    }
    publisher.flush(Duration::from_secs(10)).unwrap();
    assert!(
        landed.len() >= 6,
        "records on several partitions of each topic: {landed:?}"
    );
    // Records that are no facts: another task topic, another group, no headers.
    let other = |topic: &str, group: &str, p: i32, o: i64| Answers {
        topic: topic.into(),
        group: group.into(),
        partition: p,
        offset: o,
    };
    let (topic, group) = (k.input_topic.clone(), k.consumer_group.clone());
    produce_with_headers(
        &k.result_topic,
        20,
        |i| Some(other("elsewhere", &group, 0, 30 + i as i64)),
        |_| None,
    )
    .await;
    produce_with_headers(
        &k.fail_topic,
        20,
        |i| Some(other(&topic, "another-group", 1, i as i64)),
        |_| None,
    )
    .await;
    produce_with_headers(&k.dlq_topic, 20, |_| None, |_| None).await;

    let (facts, report) = recall(&k, &[0, 1, 2]).unwrap();
    eprintln!("recall: {report:?}");
    let got: BTreeMap<i32, BTreeSet<i64>> = facts
        .0
        .iter()
        .map(|(p, set)| {
            let offsets = set.ranges().flat_map(|(a, b)| a..=b).collect();
            (*p, offsets)
        })
        .collect();
    assert_eq!(got, want);
    assert!(!report.bounded);
    assert_eq!(report.partitions, 9);
    assert_eq!(
        report.facts,
        want.values().map(|s| s.len() as u64).sum::<u64>()
    );
    // Every record is recent (within the margin), so every one is read.
    assert_eq!(report.records, 40 + 60);
}

/// What a publish that starts reads: answers of our group written in the window (and at or
/// above the commit points), not older ones, not another group's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_recent_finds_what_was_written_in_the_window_above_the_commit_points() {
    let k = kafka_settings(2).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (topic, group) = (k.input_topic.clone(), k.consumer_group.clone());
    // i = 0..10: partition i % 2, offset 100 + i; 0..4 an hour old, 4..8 now, 8 now but
    // another group's, 9 now but below partition 1's commit point.
    produce_with_headers(
        &k.fail_topic,
        10,
        |i| {
            Some(Answers {
                topic: topic.clone(),
                group: if i == 8 {
                    "other".into()
                } else {
                    group.clone()
                },
                partition: (i % 2) as i32,
                offset: if i == 9 { 5 } else { 100 + i as i64 },
            })
        },
        |i| Some(if i < 4 { now - 3_600_000 } else { now }),
    )
    .await;
    commit(&k, &BTreeMap::from([(1, 50)]));
    let (facts, report) = recall_recent(&k, now - 10_000).unwrap();
    eprintln!("recall_recent: {report:?}");
    let got: BTreeSet<(i32, i64)> = facts
        .0
        .iter()
        .flat_map(|(&p, set)| {
            set.ranges()
                .flat_map(move |(a, b)| (a..=b).map(move |o| (p, o)))
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([(0, 104), (1, 105), (0, 106), (1, 107)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_over_20000_result_records_is_bounded_and_measured() {
    let k = kafka_settings(3).await;
    let tasks = produce(&k.input_topic, &[(Some("a".into()), b"{}".to_vec())]).await;
    let (p, o) = tasks[0];
    let now = chrono_now_ms();
    // 20,000 results spread over the last 10 hours (one every 1.8 s), the last 1,000 of
    // them answering tasks of ours: the task at the commit point is 5 minutes old.
    let n = 20_000;
    let answers = |i: usize| {
        Some(Answers {
            topic: k.input_topic.clone(),
            group: k.consumer_group.clone(),
            partition: p,
            offset: o + 1 + i as i64,
        })
    };
    let t0 = Instant::now();
    produce_with_headers(&k.result_topic, n, answers, |i| {
        Some(now - (n - i) as i64 * 1_800)
    })
    .await;
    eprintln!("produced {n} results in {:?}", t0.elapsed());
    // Commit point: the task; its timestamp is now (it was just produced), so results of
    // the last minute (CLOCK_MARGIN) are read, and a chunk more.
    commit(&k, &BTreeMap::from([(p, o)]));
    let (facts, report) = recall(&k, &[p]).unwrap();
    eprintln!("recall, 20,000 results over 10 h, margin 60 s: {report:?}");
    assert!(!report.bounded);
    // Against Kafka a few chunks would be read; against Tansu, whose end offsets are far
    // too low, the forward read from them reads (nearly) everything: see recall.rs.
    assert!(report.records >= 2_000, "{report:?}");
    assert!(
        (30..=40).contains(&facts.count()),
        "the last minute's results (one every 1.8 s): {report:?}"
    );

    // The worst case: all 20,000 within the margin (written just now).
    let k2 = kafka_settings(3).await;
    let tasks = produce(&k2.input_topic, &[(Some("a".into()), b"{}".to_vec())]).await;
    let (p, o) = tasks[0];
    let answers = |i: usize| {
        Some(Answers {
            topic: k2.input_topic.clone(),
            group: k2.consumer_group.clone(),
            partition: p,
            offset: o + i as i64,
        })
    };
    produce_with_headers(&k2.result_topic, n, answers, |_| None).await;
    commit(&k2, &BTreeMap::from([(p, o)]));
    let t0 = Instant::now();
    let (facts, report) = recall(&k2, &[p]).unwrap();
    eprintln!(
        "recall, 20,000 results all within the margin: {report:?} ({:?} in all)",
        t0.elapsed()
    );
    assert!(!report.bounded);
    assert_eq!(report.records, n as u64);
    assert_eq!(facts.count(), n as u64);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `key=value` of the recall log lines of a service log: (facts, records, elapsed_ms).
fn recall_lines(log: &str) -> Vec<(u64, u64, u64)> {
    let field = |l: &str, k: &str| -> u64 {
        l.split(&format!("{k}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains("recall: done tasks"))
        .map(|l| {
            (
                field(l, "facts"),
                field(l, "records"),
                field(l, "elapsed_ms"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_whole_service_then_a_restart_runs_almost_nothing_twice() {
    let MidRun {
        sc,
        watcher,
        mut svc,
        deliveries,
        ..
    } = mid_run(Path::new(EXE)).await;
    // Well into the run, so many results are above the commit points.
    watcher
        .wait_for(
            RUN_LIMIT,
            "400 results",
            |s| s.results() >= 400,
            || tail(&svc.log(), 40),
        )
        .await;
    let supervisor = svc.pid();
    let stages = svc.stage_processes();
    assert_eq!(stages.len(), 4, "{stages:?}");
    svc.kill_all();
    let at_kill = watcher.seen().results();
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false)
    };
    let pids: Vec<u32> = stages.keys().copied().chain([supervisor]).collect();
    wait_until(Duration::from_secs(5), "every process is gone", || {
        !pids.iter().any(alive)
    })
    .await;
    let before = recall_lines(&svc.log()).len();
    svc.spawn();
    svc.wait_ready(Duration::from_secs(60)).await;
    let seen = sc.wait_all(&watcher, &svc, RUN_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dupes = sc.verify(&watcher.seen());
    let recalls = recall_lines(&svc.log())[before..].to_vec();
    let learnt: u64 = recalls.iter().map(|r| r.0).sum();
    eprintln!(
        "kill -9 of the whole service after {at_kill} results: {} tasks, {} results, \
         {dupes} duplicates; recall after the restart (facts, records, ms): {recalls:?}",
        sc.expected_results(),
        seen.results(),
    );
    assert!(!recalls.is_empty(), "the new ingest recalled");
    assert!(learnt > 0, "results above the commit points were found");
    // Only a result on its way to Kafka at the kill could be written twice: the new
    // ingest reads what is in Kafka before it reads a task.
    assert!(dupes <= 5, "{dupes} duplicates");
    sc.wait_committed(&deliveries, Duration::from_secs(30))
        .await;
}
