//! ftp-pooler-contract: the Kafka wire contract (DESIGN.md sections 2 and 8).
//!
//! Owns the JSON shapes that clients written by others depend on: [`TransferTask`] on
//! `ftp-tasks`, [`TransferResult`] on `ftp-results` / `ftp-failures`, [`DlqRecord`] on
//! `ftp-tasks-dlq`, the [`ErrorCode`]s, the [`Checksum`] a task may expect and a result
//! carries (issue 21), the size [`limits`], and the record headers
//! naming the task a record answers ([`answers`], an addition of issue 18). It knows no configuration:
//! routing a task through the connection registry is ingest's (`ftp_pooler_ingest::route`).
//! Invariants:
//! - a payload either parses into a valid task or yields an [`InvalidMessage`] that sends
//!   it to the DLQ whole; nothing is dropped;
//! - every result carries every field of section 2 (error fields null on success);
//! - timestamps are RFC 3339 UTC with six fractional digits and `+00:00`;
//! - the golden tests in `tests/golden.rs` pin the bytes: change them only additively.

pub mod answers;
mod checksum;
mod dlq;
mod error_code;
pub mod limits;
mod result;
mod task;
mod timestamp;

pub use answers::Answers;
pub use checksum::{Checksum, ChecksumAlgorithm};
pub use dlq::{DlqRecord, Encoding, TruncatedValue};
pub use error_code::ErrorCode;
pub use result::{Status, TransferResult};
pub use task::{InvalidMessage, TransferTask, MAX_TASK_ID_CHARS};
pub use timestamp::Timestamp;
