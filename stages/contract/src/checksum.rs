//! The digest of a transfer's bytes (issue 21): on a result, the digest of the bytes the
//! service read or wrote, computed as they passed; on a task, the digest its producer
//! expects. JSON shape: `{"algorithm": "sha256", "value": "<lowercase hex>"}`.
//!
//! Invariants: `value` is lowercase hex of exactly the algorithm's length
//! ([`ChecksumAlgorithm::hex_len`]); a task's checksum that breaks that (or names an
//! unknown algorithm) makes the task an [`crate::InvalidMessage`] (the DLQ), never a
//! transfer whose verification could not mean anything.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A digest algorithm of `transfer.checksum` and of the `checksum` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    Sha256,
    Md5,
    /// XXH3, 64 bits (not cryptographic: catches corruption, not tampering).
    Xxh3,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 3] = [
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::Xxh3,
    ];

    /// The name on the wire and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
            ChecksumAlgorithm::Xxh3 => "xxh3",
        }
    }

    /// The algorithm named `name` (exact, lowercase), if known.
    pub fn parse(name: &str) -> Option<ChecksumAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Md5 => 32,
            ChecksumAlgorithm::Xxh3 => 16,
        }
    }
}

impl std::fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A digest and its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Lowercase hex.
    pub value: String,
}

impl Checksum {
    /// A task's `checksum` field: an object with a known `algorithm` and a hex `value` of
    /// the algorithm's length (either case; kept lowercase). The error says what is wrong.
    pub fn from_task_field(v: &Value) -> Result<Checksum, String> {
        let Value::Object(obj) = v else {
            return Err(
                "checksum must be an object {\"algorithm\": ..., \"value\": ...}".to_string(),
            );
        };
        let algorithm = match obj.get("algorithm") {
            Some(Value::String(name)) => ChecksumAlgorithm::parse(name).ok_or_else(|| {
                format!(
                    "checksum.algorithm {name:?} is not one of {}",
                    ChecksumAlgorithm::ALL.map(|a| a.as_str()).join(", ")
                )
            })?,
            _ => return Err("checksum.algorithm must be a string".to_string()),
        };
        let value = match obj.get("value") {
            Some(Value::String(hex)) => hex.to_ascii_lowercase(),
            _ => return Err("checksum.value must be a string".to_string()),
        };
        if value.len() != algorithm.hex_len() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "checksum.value must be {} hex digits for {algorithm}",
                algorithm.hex_len()
            ));
        }
        Ok(Checksum { algorithm, value })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_checksum_names_a_known_algorithm_and_a_hex_value_of_its_length() {
        let ok = Checksum::from_task_field(
            &json!({"algorithm": "md5", "value": "D41D8CD98F00B204E9800998ECF8427E"}),
        )
        .unwrap();
        assert_eq!(ok.algorithm, ChecksumAlgorithm::Md5);
        assert_eq!(ok.value, "d41d8cd98f00b204e9800998ecf8427e");
        for bad in [
            json!("sha256:abc"),
            json!({"algorithm": "crc32", "value": "00000000"}),
            json!({"algorithm": "SHA256", "value": "0".repeat(64)}),
            json!({"algorithm": "sha256", "value": "0".repeat(63)}),
            json!({"algorithm": "sha256", "value": "g".repeat(64)}),
            json!({"algorithm": "xxh3"}),
            json!({"value": "0".repeat(16)}),
        ] {
            assert!(Checksum::from_task_field(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_json_shape_is_algorithm_and_value() {
        let c = Checksum {
            algorithm: ChecksumAlgorithm::Xxh3,
            value: "0123456789abcdef".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"algorithm": "xxh3", "value": "0123456789abcdef"})
        );
    }
}
