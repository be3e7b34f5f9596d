//! The task a client produces to `ftp-tasks`, and the exact rules that send a payload to
//! the DLQ instead (DESIGN.md section 8): not JSON, not an object, a required field
//! missing, null, empty or not a string, or a task_id that is not a string or is over
//! 256 characters. A missing (or null) task_id gets a UUID v4. Unknown fields are ignored.
//! An optional `checksum` (issue 21) that is not a valid [`Checksum`] is refused too.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Checksum;

/// Longest task_id accepted, in characters.
pub const MAX_TASK_ID_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTask {
    pub task_id: String,
    pub src_id: String,
    pub src_path: String,
    pub dst_id: String,
    pub dst_path: String,
    /// The digest the producer expects of the bytes (optional; issue 21): the transfer
    /// fails with `CHECKSUM_MISMATCH` rather than put other bytes in place.
    pub checksum: Option<Checksum>,
}

/// Why a payload is not a task; it goes to the DLQ as `INVALID_MESSAGE` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMessage(pub String);

impl TransferTask {
    /// Parses a Kafka payload (None: a message without a value).
    pub fn parse(payload: Option<&[u8]>) -> Result<TransferTask, InvalidMessage> {
        let bad = |m: String| Err(InvalidMessage(m));
        let Some(payload) = payload else {
            return bad("message has no value".into());
        };
        let value: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) if std::str::from_utf8(payload).is_err() => {
                return bad(format!("not valid JSON (not UTF-8 text): {e}"))
            }
            Err(e) => return bad(format!("not valid JSON: {e}")),
        };
        let Value::Object(obj) = value else {
            return bad(format!("not a JSON object: found {}", kind(&value)));
        };
        let task_id = match obj.get("task_id") {
            None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
            Some(Value::String(s)) if s.chars().count() > MAX_TASK_ID_CHARS => {
                return bad(format!(
                    "task_id is {} characters long; at most {MAX_TASK_ID_CHARS} are allowed",
                    s.chars().count()
                ))
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => return bad(format!("task_id must be a string, found {}", kind(other))),
        };
        Ok(TransferTask {
            task_id,
            src_id: required(&obj, "src_id")?,
            src_path: required(&obj, "src_path")?,
            dst_id: required(&obj, "dst_id")?,
            dst_path: required(&obj, "dst_path")?,
            checksum: match obj.get("checksum") {
                None | Some(Value::Null) => None,
                Some(v) => Some(Checksum::from_task_field(v).map_err(InvalidMessage)?),
            },
        })
    }

    /// The task as JSON (what a client would produce): without `checksum` when it has
    /// none (the struct keeps the field for bincode, which cannot skip one).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("a task serialises");
        if self.checksum.is_none() {
            if let Value::Object(obj) = &mut v {
                obj.remove("checksum");
            }
        }
        serde_json::to_vec(&v).expect("a task serialises")
    }
}

fn required(obj: &Map<String, Value>, field: &str) -> Result<String, InvalidMessage> {
    match obj.get(field) {
        None => Err(InvalidMessage(format!("missing required field {field}"))),
        Some(Value::Null) => Err(InvalidMessage(format!("required field {field} is null"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(InvalidMessage(format!("required field {field} is empty")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(InvalidMessage(format!(
            "required field {field} must be a string, found {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
