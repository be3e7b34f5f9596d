//! The dead-letter record for a message that is not a task. The original key and value
//! are kept whole: as text when they are UTF-8, else base64, with the encoding named in
//! `original_key_encoding` / `original_value_encoding` (additions to the Python shape).
//! Only when Kafka refuses the record as too large is the value cut
//! ([`DlqRecord::shrink`]): `original_value_truncated` then gives the full value's size
//! and SHA-256 (null otherwise), and the message itself stays readable at
//! its original topic, partition and offset.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{prefix, SHRUNK_VALUE_BYTES};
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
    /// Set only when `original_value` was cut to fit Kafka's size limit (null otherwise;
    /// always present: bincode between the stages needs every field).
    #[serde(default)]
    pub original_value_truncated: Option<TruncatedValue>,
}

/// What a cut `original_value` was: its full size in bytes and the SHA-256 (hex) of its
/// bytes, to check against the message still at the original offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedValue {
    pub bytes: u64,
    pub sha256: String,
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
            original_value_truncated: None,
        }
    }

    /// Cuts `original_value` to about [`SHRUNK_VALUE_BYTES`] (a prefix of the text, or the
    /// base64 of a prefix of the bytes) and records the full value's size and SHA-256, for
    /// a record Kafka refused as too large. False when there was nothing to cut.
    pub fn shrink(&mut self) -> bool {
        if self.original_value_truncated.is_some() {
            return false;
        }
        let Some(full) = self.original_value_bytes() else {
            return false;
        };
        if full.len() <= SHRUNK_VALUE_BYTES {
            return false;
        }
        let kept = match self.original_value_encoding {
            Some(Encoding::Base64) => {
                base64::engine::general_purpose::STANDARD.encode(&full[..SHRUNK_VALUE_BYTES])
            }
            _ => prefix(
                self.original_value.as_deref().unwrap_or_default(),
                SHRUNK_VALUE_BYTES,
            )
            .to_string(),
        };
        self.original_value = Some(kept);
        self.original_value_truncated = Some(TruncatedValue {
            bytes: full.len() as u64,
            sha256: format!("{:x}", Sha256::digest(&full)),
        });
        self.error_message = format!(
            "{} (original value of {} bytes cut to fit the Kafka message size limit; the \
             message stays at {}[{}]@{})",
            self.error_message,
            full.len(),
            self.original_topic,
            self.original_partition,
            self.original_offset
        );
        true
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
