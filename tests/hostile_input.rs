//! Hostile messages on `ftp-tasks` (issue 7, item 5): every one ends in the DLQ (with its
//! original value and key kept whole) or on the failure topic with the right error code,
//! and the service neither crashes nor stalls: no stage restarts, a plain task produced
//! after them all still succeeds, and the committed offsets reach the end of every
//! partition.
//!
//! With a Kafka message size limit under those values, the records are cut visibly
//! instead (second test). Large malformed messages pile up in ingest only up to its byte
//! bound while publish cannot take them (third test, guarantee 4).
//!
//! Against the real service, the test bed's broker and vsftpd.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use ftp_pooler_testbed::scenario::{paused_tracked, tail, TEMP_SUFFIX};
use ftp_pooler_testbed::service::{committed, files_ending_with, SmallStack};
use ftp_pooler_testbed::{broker, FtpKind, FtpServer};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");
const MIB: usize = 1024 * 1024;

/// What a hostile message must end as.
#[derive(Debug, Clone)]
enum Outcome {
    /// A DLQ record whose original value (decoded) is the payload and whose error message
    /// contains this text.
    Dlq(&'static str),
    /// A result on the failure topic with this code, for this task_id.
    Failed(String, &'static str),
    /// A success for this task_id, and the local file at this path (under base_path).
    Copied(String, String),
}

struct Case {
    name: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    outcome: Outcome,
}

fn task(id: &str, src_id: &str, src_path: &str, dst_id: &str, dst_path: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "task_id": id, "src_id": src_id, "src_path": src_path,
        "dst_id": dst_id, "dst_path": dst_path,
    }))
    .unwrap()
}

fn dlq(name: &'static str, value: Vec<u8>, why: &'static str) -> Case {
    Case {
        name,
        key: Some(name.as_bytes().to_vec()),
        value: Some(value),
        outcome: Outcome::Dlq(why),
    }
}

fn failed(name: &'static str, value: Vec<u8>, id: &str, code: &'static str) -> Case {
    Case {
        name,
        key: Some(id.as_bytes().to_vec()),
        value: Some(value),
        outcome: Outcome::Failed(id.to_string(), code),
    }
}

fn copied(name: &'static str, value: Vec<u8>, id: &str, local: &str) -> Case {
    Case {
        name,
        key: Some(id.as_bytes().to_vec()),
        value: Some(value),
        outcome: Outcome::Copied(id.to_string(), local.to_string()),
    }
}

fn cases() -> Vec<Case> {
    let big_text = "A".repeat(10 * MIB).into_bytes();
    let big_binary: Vec<u8> = (0..10 * MIB).map(|i| (i % 251) as u8 | 0x80).collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let mut deep_field = br#"{"task_id":"h-deep-field","src_id":"#.to_vec();
    deep_field.extend_from_slice(&deep);
    deep_field.extend_from_slice(br#","src_path":"a","dst_id":"local","dst_path":"b"}"#);
    let mut big_note = serde_json::from_slice::<Value>(&task(
        "h-big-unknown-field",
        "a",
        "src/ok.bin",
        "local",
        "/hostile/big-note.bin",
    ))
    .unwrap();
    big_note["note"] = Value::String("n".repeat(10 * MIB));
    let hangul_256: String = "가".repeat(256);
    let hangul_257: String = "가".repeat(257);
    vec![
        dlq("not-json", b"this is not json".to_vec(), "not valid JSON"),
        dlq("empty-value", Vec::new(), "not valid JSON"),
        dlq("bom", b"\xef\xbb\xbf{\"task_id\":\"x\"}".to_vec(), "not valid JSON"),
        dlq("truncated-json", br#"{"task_id": "h-trunc", "src_id": "#.to_vec(), "not valid JSON"),
        dlq("array", b"[1,2,3]".to_vec(), "not a JSON object"),
        dlq("number", b"42".to_vec(), "not a JSON object"),
        dlq("string", br#""a task""#.to_vec(), "not a JSON object"),
        dlq("json-null", b"null".to_vec(), "not a JSON object"),
        dlq("missing-fields", br#"{"task_id":"h-missing"}"#.to_vec(), "missing required field"),
        dlq(
            "wrong-type-path",
            br#"{"task_id":"h-type","src_id":"a","src_path":7,"dst_id":"local","dst_path":"x"}"#
                .to_vec(),
            "must be a string",
        ),
        dlq(
            "wrong-type-id",
            br#"{"task_id":["x"],"src_id":"a","src_path":"p","dst_id":"local","dst_path":"x"}"#
                .to_vec(),
            "task_id must be a string",
        ),
        dlq(
            "null-field",
            br#"{"task_id":"h-null","src_id":null,"src_path":"p","dst_id":"local","dst_path":"x"}"#
                .to_vec(),
            "is null",
        ),
        dlq(
            "empty-field",
            br#"{"task_id":"h-empty","src_id":"a","src_path":"  ","dst_id":"local","dst_path":"x"}"#
                .to_vec(),
            "is empty",
        ),
        dlq("deep-nesting", deep, "not valid JSON"),
        dlq(
            "checksum-unknown-algorithm",
            br#"{"task_id":"h-crc","src_id":"a","src_path":"p","dst_id":"local","dst_path":"x","checksum":{"algorithm":"crc32","value":"00000000"}}"#
                .to_vec(),
            "checksum.algorithm",
        ),
        dlq(
            "checksum-short-value",
            br#"{"task_id":"h-short","src_id":"a","src_path":"p","dst_id":"local","dst_path":"x","checksum":{"algorithm":"sha256","value":"abc"}}"#
                .to_vec(),
            "checksum.value must be 64 hex digits",
        ),
        dlq("deep-field", deep_field, "not valid JSON"),
        dlq("ten-mib-text", big_text, "not valid JSON"),
        dlq("ten-mib-binary", big_binary, "not UTF-8"),
        dlq(
            "non-utf8-in-json",
            b"{\"task_id\":\"h-\xff\xfe\",\"src_id\":\"a\"}".to_vec(),
            "not UTF-8",
        ),
        dlq(
            "huge-task-id",
            task(&"t".repeat(MIB), "a", "src/ok.bin", "local", "/x"),
            "characters long",
        ),
        dlq(
            "task-id-257-chars",
            task(&hangul_257, "a", "src/ok.bin", "local", "/x"),
            "characters long",
        ),
        // Not UTF-8 in the key: the DLQ keeps it (base64).
        Case {
            name: "binary-key",
            key: Some(vec![0xff, 0x00, 0xfe, b'k']),
            value: Some(b"{oops".to_vec()),
            outcome: Outcome::Dlq("not valid JSON"),
        },
        // A message without a value (a tombstone).
        Case {
            name: "no-value",
            key: Some(b"no-value".to_vec()),
            value: None,
            outcome: Outcome::Dlq("no value"),
        },
        failed(
            "expected-checksum-differs",
            {
                let mut t: Value = serde_json::from_slice(&task(
                    "h-sum",
                    "a",
                    "src/ok.bin",
                    "local",
                    "/hostile/sum.bin",
                ))
                .unwrap();
                t["checksum"] = json!({"algorithm": "sha256", "value": "0".repeat(64)});
                serde_json::to_vec(&t).unwrap()
            },
            "h-sum",
            "CHECKSUM_MISMATCH",
        ),
        failed(
            "unknown-src-id",
            task("h-unknown-src", "nope", "src/ok.bin", "local", "/x"),
            "h-unknown-src",
            "INVALID_CONFIG",
        ),
        failed(
            "unknown-dst-id",
            task("h-unknown-dst", "local", "/x", "../../etc", "/x"),
            "h-unknown-dst",
            "INVALID_CONFIG",
        ),
        failed(
            "both-ftp",
            task("h-both-ftp", "a", "src/ok.bin", "a", "copy.bin"),
            "h-both-ftp",
            "INVALID_CONFIG",
        ),
        failed(
            "dotdot-local",
            task("h-dotdot", "a", "src/ok.bin", "local", "/../../../etc/h-dotdot"),
            "h-dotdot",
            "PATH_NOT_ALLOWED",
        ),
        failed(
            "dotdot-local-upload",
            task("h-dotdot-up", "local", "../../../etc/passwd", "a", "stolen"),
            "h-dotdot-up",
            "PATH_NOT_ALLOWED",
        ),
        failed(
            "nul-in-local-path",
            task("h-nul", "a", "src/ok.bin", "local", "/hostile/a\u{0}b"),
            "h-nul",
            "PATH_NOT_ALLOWED",
        ),
        failed(
            "crlf-in-remote-path",
            task("h-crlf", "a", "src/ok.bin\r\nDELE src/ok.bin", "local", "/hostile/crlf"),
            "h-crlf",
            "PATH_NOT_ALLOWED",
        ),
        failed(
            "ten-mib-remote-path",
            task("h-long-remote", "a", &"r/".repeat(5 * MIB), "local", "/hostile/long"),
            "h-long-remote",
            "PATH_NOT_ALLOWED",
        ),
        failed(
            "ten-mib-local-path",
            task("h-long-local", "a", "src/ok.bin", "local", &"l/".repeat(5 * MIB)),
            "h-long-local",
            "PATH_NOT_ALLOWED",
        ),
        copied(
            "control-chars-in-local-name",
            task("h-ctl", "a", "src/ok.bin", "local", "/hostile/\u{1}\u{1b}[31mred\t.bin"),
            "h-ctl",
            "hostile/\u{1}\u{1b}[31mred\t.bin",
        ),
        copied(
            "dotdot-inside-base",
            task("h-inside", "a", "src/ok.bin", "local", "/hostile/x/../inside.bin"),
            "h-inside",
            "hostile/inside.bin",
        ),
        copied(
            "task-id-256-chars",
            task(&hangul_256, "a", "src/ok.bin", "local", "/hostile/hangul.bin"),
            &hangul_256,
            "hostile/hangul.bin",
        ),
        copied(
            "ten-mib-unknown-field",
            serde_json::to_vec(&big_note).unwrap(),
            "h-big-unknown-field",
            "hostile/big-note.bin",
        ),
    ]
}

async fn produce_raw(topic: &str, cases: &[Case]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker().bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.max.bytes", (64 * MIB).to_string())
        .create()
        .expect("producer");
    let mut out = Vec::new();
    for c in cases {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).partition(0);
        if let Some(k) = &c.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &c.value {
            record = record.payload(v.as_slice());
        }
        let d = producer
            .send(record, Duration::from_secs(60))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {}: {e}", c.name));
        out.push((d.partition, d.offset));
    }
    out
}

fn decode(v: &Value, field: &str) -> Option<Vec<u8>> {
    let text = v[field].as_str()?;
    match v[format!("{field}_encoding")].as_str() {
        Some("base64") => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64"),
        ),
        _ => Some(text.as_bytes().to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_end_in_the_dlq_or_as_failures_and_the_service_keeps_going() {
    hostile_run(None).await;
}

/// With librdkafka's default 1 MB limit (as a Kafka broker's default would be), the
/// records of the 10 MiB messages cannot be written whole: they are cut, say so (full size
/// and SHA-256 of the value; `truncated` on results) and the partition does not stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_kafka_size_limit_are_cut_visibly_instead_of_stalling() {
    hostile_run(Some(1_000_000)).await;
}

async fn hostile_run(limit: Option<usize>) {
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let payload: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    server.put("src/ok.bin", &payload);
    let storage = tempfile::Builder::new()
        .prefix("storage-")
        .tempdir()
        .unwrap();
    let limit_env = limit.map(|l| l.to_string());
    let env: Vec<(&str, &str)> = limit_env
        .iter()
        .map(|l| {
            (
                "FTP_POOLER_KAFKA__PRODUCER_CONFIG__MESSAGE_MAX_BYTES",
                l.as_str(),
            )
        })
        .collect();
    let mut stack = SmallStack::start(Path::new(EXE), server, storage.path(), &env).await;
    let (topics, watcher) = (stack.topics.clone(), &stack.watcher);

    let cases = cases();
    let mut deliveries = produce_raw(&topics.tasks, &cases).await;
    // After every hostile message, a plain task: the service did not stall.
    let last = Case {
        name: "plain-after",
        key: Some(b"h-plain-after".to_vec()),
        value: Some(task(
            "h-plain-after",
            "a",
            "src/ok.bin",
            "local",
            "/hostile/after.bin",
        )),
        outcome: Outcome::Copied("h-plain-after".into(), "hostile/after.bin".into()),
    };
    deliveries.extend(produce_raw(&topics.tasks, std::slice::from_ref(&last)).await);
    let cases: Vec<Case> = cases.into_iter().chain([last]).collect();

    let want_dlq = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Dlq(_)))
        .count();
    let ids: Vec<String> = cases
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Failed(id, _) | Outcome::Copied(id, _) => Some(id.clone()),
            Outcome::Dlq(_) => None,
        })
        .collect();
    let seen = watcher
        .wait_for(
            Duration::from_secs(120),
            "every hostile message has its outcome",
            |s| s.dlq.len() >= want_dlq && ids.iter().all(|id| s.by_task.contains_key(id)),
            || tail(&stack.svc.log(), 60),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen2 = watcher.seen();
    assert_eq!(
        seen2.dlq.len(),
        want_dlq,
        "one DLQ record per malformed message"
    );
    assert_eq!(seen2.duplicates(), 0, "no fault, so one result per task");

    // DLQ records, matched to their message by original offset.
    let by_offset: HashMap<i64, &Value> = seen
        .dlq
        .iter()
        .map(|r| (r.value["original_offset"].as_i64().unwrap(), &r.value))
        .collect();
    let mut cut_records = 0;
    for (c, (_, offset)) in cases.iter().zip(&deliveries) {
        match &c.outcome {
            Outcome::Dlq(why) => {
                let v = by_offset
                    .get(offset)
                    .unwrap_or_else(|| panic!("{}: no DLQ record", c.name));
                assert_eq!(v["error_type"], "INVALID_MESSAGE", "{}", c.name);
                assert_eq!(v["original_topic"], topics.tasks.as_str());
                let msg = v["error_message"].as_str().unwrap();
                assert!(msg.contains(why), "{}: error_message {msg:?}", c.name);
                assert!(
                    msg.len() < 4096,
                    "{}: error message of {} bytes",
                    c.name,
                    msg.len()
                );
                let kept = decode(v, "original_value");
                let value = c.value.clone().unwrap_or_default();
                if limit.is_some_and(|l| value.len() > l) {
                    let cut = &v["original_value_truncated"];
                    assert_eq!(cut["bytes"], value.len(), "{}: {cut}", c.name);
                    assert_eq!(cut["sha256"], format!("{:x}", Sha256::digest(&value)));
                    let kept = kept.unwrap();
                    assert!(
                        kept.len() < 100_000 && value.starts_with(&kept),
                        "{}",
                        c.name
                    );
                    cut_records += 1;
                } else {
                    assert!(v["original_value_truncated"].is_null(), "{}", c.name);
                    assert_eq!(
                        kept, c.value,
                        "{}: the original value is kept whole",
                        c.name
                    );
                }
                assert_eq!(decode(v, "original_key"), c.key, "{}: key", c.name);
            }
            Outcome::Failed(id, code) => {
                let r = &seen.by_task[id][0];
                assert_eq!(r.topic, topics.failures, "{}: {}", c.name, r.value);
                assert_eq!(
                    r.value["error_code"],
                    *code,
                    "{}: {}",
                    c.name,
                    short(&r.value)
                );
                assert_eq!(r.value["retryable"], false, "{}", c.name);
                let msg = r.value["error_message"].as_str().unwrap();
                assert!(
                    msg.len() < 4096,
                    "{}: error message of {} bytes",
                    c.name,
                    msg.len()
                );
                if r.value["truncated"] == true {
                    assert!(limit.is_some(), "{}: cut without a limit", c.name);
                    assert!(r.value.to_string().len() < 10_000, "{}", c.name);
                    cut_records += 1;
                }
            }
            Outcome::Copied(id, local) => {
                let r = &seen.by_task[id][0];
                assert_eq!(r.topic, topics.results, "{}: {}", c.name, short(&r.value));
                let got = std::fs::read(storage.path().join(local))
                    .unwrap_or_else(|e| panic!("{}: {local:?}: {e}", c.name));
                assert!(got == payload, "{}: bytes differ", c.name);
                // The digest of the bytes, sha256 by default (issue 21).
                assert_eq!(r.value["checksum"]["algorithm"], "sha256", "{}", c.name);
                assert_eq!(
                    r.value["checksum"]["value"],
                    format!("{:x}", Sha256::digest(&payload)),
                    "{}",
                    c.name
                );
            }
        }
    }
    // Limited: the 10 MiB text and binary values, the 1 MiB task_id, and the two results
    // that echo 10 MiB paths were cut.
    assert_eq!(cut_records, if limit.is_some() { 5 } else { 0 });
    // The remote file survived the CRLF injection attempt; nothing escaped base_path.
    assert!(stack.server.root().join("src/ok.bin").exists());
    assert!(!Path::new("/etc/h-dotdot").exists());
    assert!(files_ending_with(storage.path(), TEMP_SUFFIX).is_empty());
    // An expected digest that differs puts nothing in place.
    assert!(!storage.path().join("hostile/sum.bin").exists());

    // Nothing crashed: the same stage processes, no restart.
    stack.assert_no_restart().await;
    // Every offset committed.
    let end = deliveries.iter().map(|(_, o)| o + 1).max().unwrap();
    let start = std::time::Instant::now();
    loop {
        let got = committed(&topics.group, &topics.tasks, 1);
        if got.get(&0) == Some(&Some(end)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "committed {got:?}, want {end}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A result with its long fields cut, for assertion messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 600 {
        let head: String = s.chars().take(600).collect();
        format!("{head}... ({} bytes)", s.len())
    } else {
        s
    }
}

/// Guarantee 4 with large messages: while publish is stopped (SIGSTOP), 40 malformed
/// messages of 6 MiB each wait in ingest as DLQ records (each keeps its value until
/// publish acks it). Ingest pauses its partitions at its 64 MiB byte bound, about ten of
/// them, instead of reading all 40 (its message-count bound, 4,096, is far away); once
/// publish runs again every record reaches the DLQ and ingest resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_malformed_messages_pause_ingest_at_its_byte_bound_while_publish_is_stopped() {
    const N: usize = 40;
    const SIZE: usize = 6 * MIB;
    const BYTE_BOUND: usize = 64 * MIB; // stages/ingest: POD_TRACKED_BYTES
    let server = FtpServer::start(FtpKind::Vsftpd, false);
    let storage = tempfile::Builder::new()
        .prefix("storage-")
        .tempdir()
        .unwrap();
    let mut stack = SmallStack::start(Path::new(EXE), server, storage.path(), &[]).await;
    let publish = nix::unistd::Pid::from_raw(stack.pids["publish"] as i32);
    let ingest = stack.pids["ingest"];
    nix::sys::signal::kill(publish, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let cases: Vec<Case> = (0..N)
        .map(|i| Case {
            name: "large",
            key: Some(format!("large-{i}").into_bytes()),
            value: Some(
                std::iter::once(b'{')
                    .chain(std::iter::repeat_n(b'a' + (i % 26) as u8, SIZE - 1))
                    .collect(),
            ),
            outcome: Outcome::Dlq("JSON"),
        })
        .collect();
    produce_raw(&stack.topics.tasks, &cases).await;
    let paused_at = |log: &str| paused_tracked(log).into_iter().max();
    let start = std::time::Instant::now();
    while paused_at(&stack.svc.log()).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ingest never paused:\n{}",
            tail(&stack.svc.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give ingest time to read on, if it were going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tracked = paused_at(&stack.svc.log()).unwrap();
    let rss_mib = std::fs::read_to_string(format!("/proc/{ingest}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap()
        / 1024;
    eprintln!("publish stopped: ingest paused with {tracked} of {N} messages of 6 MiB tracked; ingest RSS {rss_mib} MiB");
    assert!(
        tracked * SIZE >= BYTE_BOUND && tracked * SIZE < BYTE_BOUND + 4 * SIZE,
        "paused with {tracked} messages of 6 MiB tracked (64 MiB bound)"
    );
    assert!(
        !stack.svc.log().contains("partitions resumed"),
        "nothing was acked, so nothing resumed:\n{}",
        tail(&stack.svc.log(), 30)
    );
    nix::sys::signal::kill(publish, nix::sys::signal::Signal::SIGCONT).unwrap();
    stack
        .watcher
        .wait_for(
            Duration::from_secs(180),
            "every large message in the DLQ",
            |s| s.dlq.len() >= N,
            || tail(&stack.svc.log(), 40),
        )
        .await;
    assert!(stack.svc.log().contains("partitions resumed"));
    stack.assert_no_restart().await;
}
