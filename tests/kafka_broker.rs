//! The project's Kafka code against a real Kafka-protocol broker (Tansu, or the cluster
//! named by FTP_POOLER_TEST_BOOTSTRAP): produce with acks=all and idempotence, consume in
//! a consumer group with manual commits, resume from the committed offsets, and route
//! results and DLQ records to their topics.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ftp_pooler_config::{KafkaSettings, Settings};
use ftp_pooler_contract::{DlqRecord, ErrorCode, InvalidMessage, TransferResult, TransferTask};
use ftp_pooler_publish::Publisher;
use ftp_pooler_testbed::{broker, unique, Broker};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

/// Settings for one test: its own topics and group on the shared broker.
async fn kafka_settings(partitions: i32) -> KafkaSettings {
    let b = broker();
    let mut k = Settings::default().kafka;
    k.bootstrap_servers = vec![b.bootstrap().to_string()];
    k.consumer_group = unique("group");
    k.input_topic = unique("tasks");
    k.result_topic = unique("results");
    k.fail_topic = unique("failures");
    k.dlq_topic = unique("dlq");
    // Tansu: group join takes about half the session timeout.
    k.consumer_config
        .insert("session.timeout.ms".into(), "6000".into());
    for t in [&k.input_topic, &k.result_topic, &k.fail_topic, &k.dlq_topic] {
        b.create_topic(t, partitions).await;
    }
    k
}

/// Receives `n` messages (or fails after `limit`).
async fn receive(
    consumer: &StreamConsumer,
    n: usize,
    limit: Duration,
) -> Vec<(i32, i64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages within {limit:?}", out.len()))
            .expect("stream open")
            .expect("no consumer error");
        out.push((
            msg.partition(),
            msg.offset(),
            msg.payload().unwrap_or_default().to_vec(),
            msg.key().map(<[u8]>::to_vec),
        ));
    }
    out
}

/// The group's committed offsets are exactly `expected` (partition -> next offset).
fn assert_committed(consumer: &StreamConsumer, topic: &str, expected: &BTreeMap<i32, i64>) {
    let partitions: Vec<i32> = expected.keys().copied().collect();
    let committed =
        ftp_pooler_ingest::committed(consumer, topic, &partitions, Duration::from_secs(10))
            .unwrap();
    for (p, next) in expected {
        assert_eq!(committed[p], Some(*next), "partition {p}");
    }
}

#[tokio::test]
async fn consumer_group_with_manual_commits_resumes_where_it_committed() {
    let k = kafka_settings(3).await;
    let publisher = Publisher::new(&k).unwrap();

    // Produce 60 tasks; the delivery reports say where each landed.
    let mut last = BTreeMap::<i32, i64>::new();
    for i in 0..60 {
        let task = TransferTask {
            task_id: format!("t{i}"),
            src_id: "ftp".into(),
            src_path: format!("/f{i}"),
            dst_id: "local".into(),
            dst_path: format!("/d{i}"),
            checksum: None,
        };
        let (p, o) = publisher
            .send(
                &k.input_topic,
                Some(task.task_id.as_bytes()),
                &task.to_json(),
                &id(0, i),
            )
            .await
            .unwrap();
        let e = last.entry(p).or_insert(o);
        *e = (*e).max(o);
    }
    assert!(last.len() > 1, "keys spread over partitions: {last:?}");

    // First member: read everything, commit only the first half of each partition.
    let consumer = ftp_pooler_ingest::subscribe(&k).unwrap();
    let got = receive(&consumer, 60, Duration::from_secs(60)).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|(_, _, payload, _)| TransferTask::parse(Some(payload)).unwrap().task_id)
        .collect();
    assert_eq!(ids.len(), 60);
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _, _) in &got {
        per_partition.entry(*p).or_default().push(*o);
    }
    let mut half = BTreeMap::new();
    let mut expect_rest = 0;
    for (p, offsets) in &per_partition {
        let mut offsets = offsets.clone();
        offsets.sort();
        let keep = offsets.len() / 2;
        half.insert(*p, offsets[keep - 1] + 1);
        expect_rest += offsets.len() - keep;
    }
    ftp_pooler_ingest::commit(&consumer, &k.input_topic, &half).unwrap();
    assert_committed(&consumer, &k.input_topic, &half);
    drop(consumer);

    // Second member of the same group: starts from the committed offsets.
    let consumer = ftp_pooler_ingest::subscribe(&k).unwrap();
    let rest = receive(&consumer, expect_rest, Duration::from_secs(60)).await;
    for (p, o, _, _) in &rest {
        assert!(
            *o >= half[p],
            "partition {p}: offset {o} was committed already"
        );
    }
    // Commit everything: the end offsets equal the producer's last offsets plus one.
    let end: BTreeMap<i32, i64> = last.iter().map(|(p, o)| (*p, o + 1)).collect();
    ftp_pooler_ingest::commit(&consumer, &k.input_topic, &end).unwrap();
    assert_committed(&consumer, &k.input_topic, &end);
}

fn id(partition: i32, offset: i64) -> ftp_pooler_channel::MessageId {
    ftp_pooler_channel::MessageId {
        generation: 1,
        partition,
        offset,
    }
}

#[tokio::test]
async fn results_and_dlq_records_land_on_their_topics() {
    let k = kafka_settings(1).await;
    let publisher = Publisher::new(&k).unwrap();
    let task = TransferTask::parse(Some(
        br#"{"task_id":"ok-1","src_id":"a","src_path":"/x","dst_id":"b","dst_path":"/y"}"#,
    ))
    .unwrap();
    publisher
        .publish_result(&TransferResult::success(&task, 5, 1, 1), &id(0, 3))
        .await
        .unwrap();
    publisher
        .publish_result(
            &TransferResult::failure(&task, ErrorCode::FileNotFound, "550", 1, 1),
            &id(0, 4),
        )
        .await
        .unwrap();
    let raw = [0xffu8, 0x00, 0x7b];
    let dlq = DlqRecord::new(
        &k.input_topic,
        0,
        9,
        Some(b"key-9"),
        Some(&raw),
        &InvalidMessage("not valid JSON".into()),
    );
    publisher
        .publish_dlq(&dlq, Some(b"key-9"), &id(0, 9))
        .await
        .unwrap();
    publisher.flush(Duration::from_secs(5)).unwrap();

    let read = |topic: String| {
        let mut cfg = ftp_pooler_ingest::consumer_config(&k);
        cfg.set("group.id", unique("reader"));
        let c: StreamConsumer = cfg.create().unwrap();
        c.subscribe(&[topic.as_str()]).unwrap();
        c
    };
    let results = read(k.result_topic.clone());
    let got = receive(&results, 1, Duration::from_secs(60)).await;
    let r: TransferResult = serde_json::from_slice(&got[0].2).unwrap();
    assert!(r.is_success());
    assert_eq!(got[0].3.as_deref(), Some(&b"ok-1"[..]), "keyed by task_id");

    let failures = read(k.fail_topic.clone());
    let got = receive(&failures, 1, Duration::from_secs(60)).await;
    let r: TransferResult = serde_json::from_slice(&got[0].2).unwrap();
    assert_eq!(r.error_code, Some(ErrorCode::FileNotFound));
    assert_eq!(got[0].3.as_deref(), Some(&b"ok-1"[..]));

    let dead = read(k.dlq_topic.clone());
    let got = receive(&dead, 1, Duration::from_secs(60)).await;
    let d: DlqRecord = serde_json::from_slice(&got[0].2).unwrap();
    assert_eq!(
        d.original_value_bytes().unwrap(),
        raw,
        "the whole original value is kept"
    );
    assert_eq!(d.original_key.as_deref(), Some("key-9"));
    assert_eq!(
        got[0].3.as_deref(),
        Some(&b"key-9"[..]),
        "under the original key"
    );
}

#[test]
fn an_unreachable_broker_is_an_error_not_a_skip() {
    let port = ftp_pooler_testbed::free_port();
    let err = Broker::check_at(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
    assert!(!err.is_empty());
}
