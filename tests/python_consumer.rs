//! A consumer written for the Python ftp-pooler parses what we publish: Python's own
//! `json` and `datetime.fromisoformat` read our results and DLQ records, and every key
//! the Python version wrote is there with the JSON type it had (ours add keys only:
//! `truncated`, and `checksum` since issue 21, which such a consumer ignores).

use std::io::Write;
use std::process::{Command, Stdio};

use ftp_pooler_contract::{
    Checksum, ChecksumAlgorithm, DlqRecord, ErrorCode, InvalidMessage, TransferResult, TransferTask,
};

const CONSUMER: &str = r#"
import base64, json, sys
from datetime import datetime, timezone

# The keys (and JSON types) of the Python version's TransferResult.to_dict() and
# DLQMessage.to_dict(); error_code/error_message only on failures there.
RESULT = {"task_id": str, "status": str, "src_id": str, "src_path": str, "dst_id": str,
          "dst_path": str, "bytes_transferred": int, "duration_ms": int, "timestamp": str}
FAILURE = {"error_code": str, "error_message": str}
DLQ = {"original_topic": str, "original_partition": int, "original_offset": int,
       "original_value": str, "error_type": str, "error_message": str, "timestamp": str}

def check(obj, keys):
    for k, t in keys.items():
        assert k in obj, f"missing {k}"
        assert isinstance(obj[k], t) and not isinstance(obj[k], bool), f"{k}: {obj[k]!r} is not {t.__name__}"
    ts = datetime.fromisoformat(obj["timestamp"])
    assert ts.utcoffset().total_seconds() == 0, obj["timestamp"]

kinds = []
for line in sys.stdin:
    msg = json.loads(line)
    if "original_topic" in msg:
        check(msg, DLQ)
        raw = msg["original_value"]
        if msg.get("original_value_encoding") == "base64":
            raw = base64.b64decode(raw)
        kinds.append("dlq")
    else:
        check(msg, RESULT)
        assert msg["status"] in ("success", "failed")
        if msg["status"] == "failed":
            check(msg, FAILURE)
        # Issue 21's addition: a consumer that knows it finds an object or null.
        c = msg.get("checksum")
        assert c is None or (isinstance(c["algorithm"], str) and isinstance(c["value"], str)), c
        kinds.append(msg["status"])
print(",".join(kinds))
"#;

#[test]
fn python_reads_our_results_and_dlq_records() {
    let task = TransferTask::parse(Some(
        r#"{"task_id":"t-ü","src_id":"ftp","src_path":"/a b/ü.txt","dst_id":"local","dst_path":"x"}"#.as_bytes(),
    ))
    .unwrap();
    let lines = [
        TransferResult::success(&task, 123, 4, 1).to_json(),
        TransferResult::success(&task, 123, 4, 1)
            .with_checksum(Some(Checksum {
                algorithm: ChecksumAlgorithm::Sha256,
                value: "ab".repeat(32),
            }))
            .to_json(),
        TransferResult::failure(&task, ErrorCode::FileNotFound, "550 No such file", 2, 1).to_json(),
        TransferResult::failure(
            &task,
            ErrorCode::ChecksumMismatch,
            "the bytes' sha256 is ...",
            2,
            1,
        )
        .to_json(),
        DlqRecord::new(
            "ftp-tasks",
            1,
            2,
            None,
            Some(b"{oops"),
            &InvalidMessage("not valid JSON".into()),
        )
        .to_json(),
        DlqRecord::new(
            "ftp-tasks",
            1,
            3,
            Some(b"k"),
            Some(&[0xff, 0x00]),
            &InvalidMessage("not UTF-8".into()),
        )
        .to_json(),
    ];
    let mut child = Command::new("python3")
        .args(["-c", CONSUMER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (on every machine of this project)");
    let mut stdin = child.stdin.take().unwrap();
    for line in &lines {
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python consumer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "success,success,failed,failed,dlq,dlq"
    );
}
