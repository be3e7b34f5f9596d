//! The one result published per task: `ftp-results` on success, `ftp-failures` on
//! failure, keyed by task_id. Every field is present on every result; `error_code` and
//! `error_message` are null on success; `attempts` is 0 for tasks never tried.
//! `error_message` is at most [`MAX_ERROR_MESSAGE_BYTES`] (an excerpt past that). A result
//! too large for Kafka (a task with huge paths) is [`TransferResult::shrink`]ed: its ids and
//! paths cut, and `truncated: true` (false on every other result).

use serde::{Deserialize, Serialize};

use crate::limits::{excerpt, MAX_ERROR_MESSAGE_BYTES, SHRUNK_PATH_BYTES};
use crate::{Checksum, ErrorCode, Timestamp, TransferTask};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    pub task_id: String,
    pub status: Status,
    pub src_id: String,
    pub src_path: String,
    pub dst_id: String,
    pub dst_path: String,
    pub bytes_transferred: u64,
    pub duration_ms: u64,
    pub timestamp: Timestamp,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub retryable: bool,
    /// True only on a result whose ids or paths were cut to fit Kafka's size limit (an
    /// addition to the Python shape; always present). No serde skipping here: the same
    /// struct travels as bincode between the stages, which needs every field.
    #[serde(default)]
    pub truncated: bool,
    /// The digest of the bytes transferred, computed as they passed (issue 21): in the
    /// task's algorithm when it expected one, else `transfer.checksum`'s; null on
    /// failures and with `transfer.checksum: none`. Always present, as `truncated`.
    #[serde(default)]
    pub checksum: Option<Checksum>,
}

impl TransferResult {
    pub fn success(task: &TransferTask, bytes: u64, duration_ms: u64, attempts: u32) -> Self {
        TransferResult {
            status: Status::Success,
            bytes_transferred: bytes,
            duration_ms,
            attempts,
            ..Self::blank(task)
        }
    }

    /// A failure; `retryable` says whether the code is one that is retried (the retries
    /// were spent by the time it is published).
    pub fn failure(
        task: &TransferTask,
        code: ErrorCode,
        message: impl Into<String>,
        duration_ms: u64,
        attempts: u32,
    ) -> Self {
        TransferResult {
            status: Status::Failed,
            duration_ms,
            error_code: Some(code),
            error_message: Some(excerpt(&message.into(), MAX_ERROR_MESSAGE_BYTES).into_owned()),
            attempts,
            retryable: code.is_retryable(),
            ..Self::blank(task)
        }
    }

    fn blank(task: &TransferTask) -> Self {
        TransferResult {
            task_id: task.task_id.clone(),
            status: Status::Failed,
            src_id: task.src_id.clone(),
            src_path: task.src_path.clone(),
            dst_id: task.dst_id.clone(),
            dst_path: task.dst_path.clone(),
            bytes_transferred: 0,
            duration_ms: 0,
            timestamp: Timestamp::now(),
            error_code: None,
            error_message: None,
            attempts: 0,
            retryable: false,
            truncated: false,
            checksum: None,
        }
    }

    /// The same failure with `retryable` as the service decided it, where that is not
    /// what its code says (a CHECKSUM_MISMATCH against the server's own digest is
    /// retried; against the task's expected digest it is not).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The same result carrying the digest of its bytes.
    pub fn with_checksum(mut self, checksum: Option<Checksum>) -> Self {
        self.checksum = checksum;
        self
    }

    /// Cuts the echoed connection ids and paths to [`SHRUNK_PATH_BYTES`] and marks the
    /// result `truncated`, for a result Kafka refused as too large. False when there was
    /// nothing to cut.
    pub fn shrink(&mut self) -> bool {
        if self.truncated {
            return false;
        }
        let mut cut = false;
        for path in [
            &mut self.src_id,
            &mut self.src_path,
            &mut self.dst_id,
            &mut self.dst_path,
        ] {
            if path.len() > SHRUNK_PATH_BYTES {
                *path = excerpt(path, SHRUNK_PATH_BYTES).into_owned();
                cut = true;
            }
        }
        self.truncated |= cut;
        cut
    }

    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a result serialises")
    }
}
