//! Golden tests: the exact JSON of tasks, results and DLQ records (DESIGN.md sections 2
//! and 8). A consumer written for the Python ftp-pooler parses these bytes; change them
//! only by adding fields.

use chrono::TimeZone;
use ftp_pooler_contract::{
    DlqRecord, Encoding, ErrorCode, InvalidMessage, Status, Timestamp, TransferResult, TransferTask,
};
use serde_json::{json, Value};

fn at() -> Timestamp {
    Timestamp(
        chrono::Utc
            .with_ymd_and_hms(2025, 11, 25, 19, 0, 3)
            .unwrap()
            + chrono::Duration::microseconds(45406),
    )
}

fn task() -> TransferTask {
    TransferTask::parse(Some(br#"{"task_id":"uuid-1234","src_id":"remote-ftp","src_path":"/data/file.txt","dst_id":"local","dst_path":"/storage/file.txt"}"#)).unwrap()
}

#[test]
fn success_result_bytes() {
    let mut r = TransferResult::success(&task(), 1048576, 1234, 1);
    r.timestamp = at();
    assert_eq!(
        String::from_utf8(r.to_json()).unwrap(),
        r#"{"task_id":"uuid-1234","status":"success","src_id":"remote-ftp","src_path":"/data/file.txt","dst_id":"local","dst_path":"/storage/file.txt","bytes_transferred":1048576,"duration_ms":1234,"timestamp":"2025-11-25T19:00:03.045406+00:00","error_code":null,"error_message":null,"attempts":1,"retryable":false,"truncated":false,"checksum":null}"#
    );
}

#[test]
fn failure_result_bytes() {
    let mut r = TransferResult::failure(
        &task(),
        ErrorCode::ConnectionError,
        "Connection refused",
        5000,
        6,
    );
    r.timestamp = at();
    assert_eq!(
        String::from_utf8(r.to_json()).unwrap(),
        r#"{"task_id":"uuid-1234","status":"failed","src_id":"remote-ftp","src_path":"/data/file.txt","dst_id":"local","dst_path":"/storage/file.txt","bytes_transferred":0,"duration_ms":5000,"timestamp":"2025-11-25T19:00:03.045406+00:00","error_code":"CONNECTION_ERROR","error_message":"Connection refused","attempts":6,"retryable":true,"truncated":false,"checksum":null}"#
    );
    let never_tried =
        TransferResult::failure(&task(), ErrorCode::InvalidConfig, "both local", 0, 0);
    assert_eq!((never_tried.attempts, never_tried.retryable), (0, false));
}

#[test]
fn results_round_trip_and_timestamps_have_six_digits() {
    let r = TransferResult::success(&task(), 1, 2, 1);
    let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
    let ts = v["timestamp"].as_str().unwrap();
    // 2025-11-25T19:00:03.045406+00:00
    assert_eq!(ts.len(), 32, "{ts}");
    assert_eq!(&ts[19..20], ".");
    assert!(ts[20..26].bytes().all(|b| b.is_ascii_digit()), "{ts}");
    assert!(ts.ends_with("+00:00"), "{ts}");
    let back: TransferResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.status, Status::Success);
}

#[test]
fn dlq_record_bytes_utf8_and_base64() {
    let mut d = DlqRecord::new(
        "ftp-tasks",
        2,
        41,
        Some(b"k1"),
        Some(b"{not json"),
        &InvalidMessage("not valid JSON: x".into()),
    );
    d.timestamp = at();
    assert_eq!(
        String::from_utf8(d.to_json()).unwrap(),
        r#"{"original_topic":"ftp-tasks","original_partition":2,"original_offset":41,"original_key":"k1","original_value":"{not json","error_type":"INVALID_MESSAGE","error_message":"not valid JSON: x","timestamp":"2025-11-25T19:00:03.045406+00:00","original_key_encoding":"utf-8","original_value_encoding":"utf-8","original_value_truncated":null}"#
    );
    let raw = [0xff, 0xfe, 0x00, b'{'];
    let mut d = DlqRecord::new(
        "ftp-tasks",
        0,
        7,
        None,
        Some(&raw),
        &InvalidMessage("bad".into()),
    );
    d.timestamp = at();
    let v: Value = serde_json::from_slice(&d.to_json()).unwrap();
    assert_eq!(v["original_key"], Value::Null);
    assert_eq!(v["original_key_encoding"], Value::Null);
    assert_eq!(v["original_value"], json!("//4Aew=="));
    assert_eq!(v["original_value_encoding"], json!("base64"));
    assert_eq!(d.original_value_bytes().unwrap(), raw);
    assert_eq!(d.original_value_encoding, Some(Encoding::Base64));
}

#[test]
fn task_fields_and_generated_id() {
    let t = task();
    assert_eq!(
        (t.task_id.as_str(), t.src_id.as_str(), t.dst_path.as_str()),
        ("uuid-1234", "remote-ftp", "/storage/file.txt")
    );
    for payload in [
        r#"{"src_id":"a","src_path":"p","dst_id":"b","dst_path":"q"}"#,
        r#"{"task_id":null,"src_id":"a","src_path":"p","dst_id":"b","dst_path":"q","extra":{"ignored":true}}"#,
    ] {
        let t = TransferTask::parse(Some(payload.as_bytes())).unwrap();
        let id = uuid::Uuid::parse_str(&t.task_id).expect("a UUID");
        assert_eq!(id.get_version_num(), 4);
    }
    let max = "x".repeat(256);
    let t = TransferTask::parse(Some(
        json!({"task_id": max, "src_id":"a","src_path":"p","dst_id":"b","dst_path":"q"})
            .to_string()
            .as_bytes(),
    ))
    .unwrap();
    assert_eq!(t.task_id.len(), 256);
}

#[test]
fn every_dlq_rule_of_section_8() {
    let ok = json!({"task_id":"t","src_id":"a","src_path":"p","dst_id":"b","dst_path":"q"});
    let with = |field: &str, v: Value| {
        let mut o = ok.clone();
        o[field] = v;
        o.to_string()
    };
    let without = |field: &str| {
        let mut o = ok.clone();
        o.as_object_mut().unwrap().remove(field);
        o.to_string()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (vec![0xff, 0xfe, 0x01], "not valid JSON (not UTF-8 text)"),
        (b"[1,2]".to_vec(), "not a JSON object: found an array"),
        (
            b"\"a string\"".to_vec(),
            "not a JSON object: found a string",
        ),
        (b"null".to_vec(), "not a JSON object: found null"),
        (
            without("src_id").into_bytes(),
            "missing required field src_id",
        ),
        (
            without("dst_path").into_bytes(),
            "missing required field dst_path",
        ),
        (
            with("src_path", Value::Null).into_bytes(),
            "required field src_path is null",
        ),
        (
            with("dst_id", json!("")).into_bytes(),
            "required field dst_id is empty",
        ),
        (
            with("dst_id", json!("  ")).into_bytes(),
            "required field dst_id is empty",
        ),
        (
            with("src_id", json!(42)).into_bytes(),
            "required field src_id must be a string, found a number",
        ),
        (
            with("src_path", json!(["a"])).into_bytes(),
            "required field src_path must be a string, found an array",
        ),
        (
            with("task_id", json!(7)).into_bytes(),
            "task_id must be a string, found a number",
        ),
        (
            with("task_id", json!("x".repeat(257))).into_bytes(),
            "task_id is 257 characters long; at most 256 are allowed",
        ),
    ];
    for (payload, want) in cases {
        let err = TransferTask::parse(Some(&payload)).unwrap_err();
        assert!(
            err.0.starts_with(want),
            "{:?}: got {:?}, want {want:?}",
            String::from_utf8_lossy(&payload),
            err.0
        );
    }
    assert_eq!(
        TransferTask::parse(None).unwrap_err().0,
        "message has no value"
    );
}

#[test]
fn long_error_messages_are_excerpts() {
    let r = TransferResult::failure(&task(), ErrorCode::IoError, "x".repeat(10_000), 1, 1);
    let msg = r.error_message.unwrap();
    assert!(msg.len() < ftp_pooler_contract::limits::MAX_ERROR_MESSAGE_BYTES + 32);
    assert!(msg.ends_with("... (10000 bytes)"), "{msg}");
}

#[test]
fn a_result_too_large_for_kafka_shrinks_and_says_so() {
    let mut t = task();
    t.src_path = "p/".repeat(1_000_000);
    let mut r = TransferResult::failure(&t, ErrorCode::PathNotAllowed, "too long", 0, 0);
    assert!(String::from_utf8(r.to_json())
        .unwrap()
        .ends_with(r#""truncated":false,"checksum":null}"#));
    assert!(r.shrink());
    assert!(r.src_path.len() < 1100 && r.src_path.ends_with("... (2000000 bytes)"));
    assert_eq!(r.dst_path, t.dst_path, "short fields stay whole");
    let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(v["truncated"], true);
    assert!(!r.shrink(), "nothing left to cut");
}

#[test]
fn a_dlq_record_too_large_for_kafka_keeps_a_prefix_size_and_digest() {
    use sha2::Digest as _;
    let bad = InvalidMessage("not valid JSON".into());
    for value in [vec![b'A'; 3_000_000], vec![0xff; 3_000_000]] {
        let mut d = DlqRecord::new("t", 1, 7, None, Some(&value), &bad);
        assert!(d.shrink());
        let kept = d.original_value_bytes().unwrap();
        assert_eq!(kept.len(), ftp_pooler_contract::limits::SHRUNK_VALUE_BYTES);
        assert_eq!(kept[..], value[..kept.len()]);
        let cut = d.original_value_truncated.clone().unwrap();
        assert_eq!(cut.bytes, 3_000_000);
        assert_eq!(cut.sha256, format!("{:x}", sha2::Sha256::digest(&value)));
        assert!(d.error_message.contains("t[1]@7"), "{}", d.error_message);
        let v: serde_json::Value = serde_json::from_slice(&d.to_json()).unwrap();
        assert_eq!(v["original_value_truncated"]["bytes"], 3_000_000);
        assert!(!d.shrink());
    }
    let mut small = DlqRecord::new("t", 0, 0, None, Some(b"{"), &bad);
    assert!(!small.shrink());
    assert!(String::from_utf8(small.to_json())
        .unwrap()
        .ends_with(r#""original_value_truncated":null}"#));
}
