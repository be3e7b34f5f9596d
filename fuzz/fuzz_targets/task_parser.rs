//! Fuzzes the task parser of `ftp-tasks` (ftp_pooler_contract::TransferTask::parse) with
//! arbitrary message values, and what ingest builds from its answer: the route, the
//! failure result of a task that cannot be routed, and the DLQ record of a rejected value.
//!
//! Checks, for every input:
//! - `parse` never panics: it returns a task or an `InvalidMessage`;
//! - a task it returns has non-blank required fields and a task_id of at most
//!   MAX_TASK_ID_CHARS characters, and survives `to_json` -> `parse` unchanged;
//! - ingest's `route::resolve` of that task against a small registry (one local and two ftp
//!   connections) never panics; a route joins an ftp id to a local id, and paths over
//!   MAX_PATH_BYTES are refused; the failure result of a refused task has a bounded
//!   error message, and survives a JSON round trip before and after `shrink`;
//! - for a rejected value, `DlqRecord::new(..).to_json()` is valid JSON that
//!   deserialises back to the same record, and the original key and value come back from
//!   it byte for byte (UTF-8 text or base64): nothing sent to the DLQ is altered;
//! - for one input in 64 (it costs ~1 ms), the value repeated past SHRUNK_VALUE_BYTES makes a record that
//!   `shrink` cuts to a prefix of the value, with the full size and SHA-256 recorded.
#![no_main]

use std::sync::OnceLock;

use ftp_pooler_config::Registry;
use ftp_pooler_contract::limits::{MAX_ERROR_MESSAGE_BYTES, MAX_PATH_BYTES, SHRUNK_VALUE_BYTES};
use ftp_pooler_contract::{
    DlqRecord, Encoding, ErrorCode, InvalidMessage, TransferResult, TransferTask,
    MAX_TASK_ID_CHARS,
};
use ftp_pooler_ingest::route::resolve;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The registry tasks are routed against (its local base_path is the temp dir).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let text = format!(
            "[remote-server-a]\ntype = ftp\nhost = ftp.example.com\n\
             [b]\ntype = ftp\nhost = b.example\n\
             [local]\ntype = local\nbase_path = {}\n",
            std::env::temp_dir().display()
        );
        Registry::parse("fuzz.ini".as_ref(), &text).expect("the fuzz registry is valid")
    })
}

/// JSON out and back in gives the same value.
fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let json = serde_json::to_vec(v).expect("serialises");
    let back: T = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{v:?} does not deserialise from its JSON: {e}"));
    assert_eq!(&back, v, "changed by a JSON round trip");
}

fn check_task(task: &TransferTask) {
    assert!(task.task_id.chars().count() <= MAX_TASK_ID_CHARS);
    for field in [&task.src_id, &task.src_path, &task.dst_id, &task.dst_path] {
        assert!(!field.trim().is_empty(), "blank required field in {task:?}");
    }
    let json = task.to_json();
    let again = TransferTask::parse(Some(&json))
        .unwrap_or_else(|e| panic!("re-serialised task rejected: {e}: {task:?}"));
    assert_eq!(&again, task, "task changed by to_json -> parse");

    let registry = registry();
    match resolve(task, registry) {
        Ok(route) => {
            assert!(registry.get(&route.remote_id).unwrap().as_ftp().is_some());
            assert!(registry.get(&route.local_id).unwrap().is_local());
            assert!(route.remote_path.len() <= MAX_PATH_BYTES);
            assert!(route.local_path.len() <= MAX_PATH_BYTES);
        }
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::InvalidConfig | ErrorCode::PathNotAllowed
            ));
            let mut result = TransferResult::failure(task, e.code, e.message, 0, 0);
            let message = result.error_message.as_deref().unwrap();
            // An excerpt of at most MAX_ERROR_MESSAGE_BYTES, plus "... (N bytes)".
            assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES + 32, "{message:?}");
            json_round_trip(&result);
            if result.shrink() {
                assert!(result.truncated);
                json_round_trip(&result);
            }
        }
    }
}

fn check_dlq(data: &[u8], error: &InvalidMessage) {
    // The key of a Kafka message is arbitrary bytes too: use a prefix of the input as
    // the key (and none at all for an empty input).
    let key = (!data.is_empty()).then(|| &data[..data.len() / 3]);
    let record = DlqRecord::new("ftp-tasks", 3, 42, key, Some(data), error);
    let json = record.to_json();
    let value: serde_json::Value = serde_json::from_slice(&json).expect("DLQ record JSON parses");
    assert!(value.is_object());
    json_round_trip(&record);
    assert_eq!(record.original_value_bytes().as_deref(), Some(data));
    assert_eq!(record.original_key_bytes().as_deref(), key);

    // A value too large for Kafka: the record is cut to a prefix, visibly.
    if data.first().is_some_and(|b| b % 64 == 0) {
        let big: Vec<u8> = data
            .iter()
            .copied()
            .cycle()
            .take(SHRUNK_VALUE_BYTES + data.len())
            .collect();
        let mut record = DlqRecord::new("ftp-tasks", 0, 1, None, Some(&big), error);
        assert!(record.shrink(), "a value over SHRUNK_VALUE_BYTES is cut");
        assert!(!record.shrink(), "a record is cut once");
        let cut = record.original_value_truncated.as_ref().unwrap();
        assert_eq!(cut.bytes, big.len() as u64);
        assert_eq!(cut.sha256.len(), 64);
        let kept = record
            .original_value_bytes()
            .expect("the cut value decodes");
        assert!(kept.len() <= SHRUNK_VALUE_BYTES && big.starts_with(&kept));
        if record.original_value_encoding == Some(Encoding::Base64) {
            assert_eq!(kept.len(), SHRUNK_VALUE_BYTES);
        } else {
            assert!(
                kept.len() > SHRUNK_VALUE_BYTES - 4,
                "a UTF-8 cut backs off < 4 bytes"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match TransferTask::parse(Some(data)) {
        Ok(task) => check_task(&task),
        Err(error) => check_dlq(data, &error),
    }
});
