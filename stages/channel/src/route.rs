//! Where a job goes: its [`Direction`] and which side of the task is remote and which
//! local. A [`Route`] travels with each job from ingest to the transfer worker of its
//! remote connection; ingest resolves it from the task and the connection registry
//! (`ftp_pooler_ingest::route`), so neither this crate nor the Kafka contract knows the
//! configuration.
//!
//! Invariant: the bytes are pinned with the job's (`tests/golden.rs`); a change bumps
//! [`crate::PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// remote -> local
    Download,
    /// local -> remote
    Upload,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }
}

/// Where a task goes: its direction, and which side is remote and which local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub direction: Direction,
    /// The ftp connection id: the transfer worker that runs the task.
    pub remote_id: String,
    pub remote_path: String,
    pub local_id: String,
    pub local_path: String,
}
