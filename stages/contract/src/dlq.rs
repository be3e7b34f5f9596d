//! The dead-letter record for a message that is not a task. The original key and value
//! are kept whole: as text when they are UTF-8, else base64, with the encoding named in
//! `original_key_encoding` / `original_value_encoding` (additions to the Python shape).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{ErrorCode, InvalidMessage, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqRecord {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub original_key: Option<String>,
    pub original_value: Option<String>,
    pub error_type: ErrorCode,
    pub error_message: String,
    pub timestamp: Timestamp,
    pub original_key_encoding: Option<Encoding>,
    pub original_value_encoding: Option<Encoding>,
}

impl DlqRecord {
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error: &InvalidMessage,
    ) -> Self {
        let (original_key, original_key_encoding) = encode(key);
        let (original_value, original_value_encoding) = encode(value);
        DlqRecord {
            original_topic: topic.to_string(),
            original_partition: partition,
            original_offset: offset,
            original_key,
            original_value,
            error_type: ErrorCode::InvalidMessage,
            error_message: error.0.clone(),
            timestamp: Timestamp::now(),
            original_key_encoding,
            original_value_encoding,
        }
    }

    /// The original value's bytes, decoded back from text or base64.
    pub fn original_value_bytes(&self) -> Option<Vec<u8>> {
        decode(self.original_value.as_deref(), self.original_value_encoding)
    }

    /// The original key's bytes, decoded back from text or base64.
    pub fn original_key_bytes(&self) -> Option<Vec<u8>> {
        decode(self.original_key.as_deref(), self.original_key_encoding)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a DLQ record serialises")
    }
}

fn encode(bytes: Option<&[u8]>) -> (Option<String>, Option<Encoding>) {
    match bytes {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Some(s.to_string()), Some(Encoding::Utf8)),
            Err(_) => (
                Some(base64::engine::general_purpose::STANDARD.encode(b)),
                Some(Encoding::Base64),
            ),
        },
    }
}

fn decode(text: Option<&str>, encoding: Option<Encoding>) -> Option<Vec<u8>> {
    match (text, encoding) {
        (Some(t), Some(Encoding::Base64)) => {
            base64::engine::general_purpose::STANDARD.decode(t).ok()
        }
        (Some(t), _) => Some(t.as_bytes().to_vec()),
        (None, _) => None,
    }
}
