//! The typed messages of each channel direction.
//!
//! ```text
//! ingest  --IngestToTransfer-->  transfer[conn]      (jobs)
//! ingest  <--TransferToIngest--  transfer[conn]      (a job started)
//! ingest --IngestToPublish--> publish               (results, DLQ records, commits)
//! transfer --ToPublish--> publish                    (results)
//! ingest / transfer <--FromPublish-- publish         (acknowledged by Kafka)
//! stage   <-> supervisor                             (hello, config in force, ready)
//! ctl     <-> supervisor                             (status, restart)
//! ```
//!
//! Every message of the pipeline carries the [`MessageId`] of the Kafka message it came
//! from: the ingest generation (one per ingest process), the partition and the offset.
//! Each hop keeps what it sent until the next hop confirms it, and re-sends it when the
//! next hop reconnects after a restart. What is *done* is a fact about the Kafka message,
//! (partition, offset), whichever generation did it: publish keeps what it delivered above
//! the group's commit point and tells each ingest that connects, and ingest tells each
//! publish that connects what it knows done, so a restart of either one redoes nothing.

use std::collections::BTreeMap;

use ftp_pooler_contract::{DlqRecord, TransferResult, TransferTask};
use serde::{Deserialize, Serialize};

use crate::offsets::OffsetSet;
use crate::route::{Direction, Route};

/// Which Kafka message a piece of work belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// The ingest process that read the message (a new one after every ingest start).
    pub generation: u64,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}@{:x}",
            self.partition, self.offset, self.generation
        )
    }
}

/// The first frame after the handshake, from the connecting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The stage's name (`ingest`, `transfer:<id>`, `publish`, `ctl`).
    pub name: String,
    pub pid: u32,
    /// The ingest generation (ingest only; 0 for others).
    pub generation: u64,
}

/// The Kafka timestamp of a task's message (milliseconds since the Unix epoch: the
/// producer's CreateTime, or the broker's LogAppendTime), carried with the task's job
/// and result to publish, which observes the end-to-end latency
/// (`ftp_task_latency_seconds`) when Kafka acknowledges the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueuedAt(pub i64);

impl EnqueuedAt {
    /// The time from this timestamp to `now`; zero when the clock that stamped the task
    /// is ahead of ours.
    pub fn age(self, now: std::time::SystemTime) -> std::time::Duration {
        let then = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        now.duration_since(then).unwrap_or_default()
    }
}

/// A task to run on one FTP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: MessageId,
    pub task: TransferTask,
    pub route: Route,
    /// The job was with a worker that died: the worker reports its start on the socket
    /// before running it (so a second crash is blamed on it), and runs it alone.
    pub suspect: bool,
    /// The task message's Kafka timestamp (None when the broker gave none).
    pub enqueued_at: Option<EnqueuedAt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestToTransfer {
    Job(Job),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferToIngest {
    /// The worker is about to run a suspect job (a crash from now on counts against it).
    /// Only suspects are announced: a crash counts against every job a worker had.
    Started(MessageId),
    /// The worker finished the job and handed its result to publish: its slot is free.
    Finished(MessageId),
}

/// Something to write to Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPublish {
    /// A task's result: to the result topic on success, the failure topic on failure.
    /// `direction` is None for tasks that were never routed (INVALID_CONFIG);
    /// `enqueued_at` is the task message's Kafka timestamp.
    Result {
        id: MessageId,
        result: TransferResult,
        direction: Option<Direction>,
        enqueued_at: Option<EnqueuedAt>,
    },
    /// A malformed message, to the DLQ topic under its original key.
    Dlq {
        id: MessageId,
        record: DlqRecord,
        key: Option<Vec<u8>>,
    },
}

impl ToPublish {
    /// Cuts the record down to fit Kafka's message size limit (see
    /// [`TransferResult::shrink`] and [`DlqRecord::shrink`]); false if nothing could be cut.
    pub fn shrink(&mut self) -> bool {
        match self {
            ToPublish::Result { result, .. } => result.shrink(),
            ToPublish::Dlq { record, .. } => record.shrink(),
        }
    }

    /// Cuts a record whose text could not pass a channel frame ([`crate::MAX_FRAME`])
    /// whole: ingest builds DLQ records and failure results from whatever a client sent
    /// (a 60 MiB value, a 40 MiB connection id). Such a record could not be published
    /// whole anyway. True if it was cut.
    pub fn fit_in_frame(&mut self) -> bool {
        let text = match self {
            ToPublish::Result { result: r, .. } => {
                r.src_id.len() + r.src_path.len() + r.dst_id.len() + r.dst_path.len()
            }
            ToPublish::Dlq { record, key, .. } => {
                // base64 grows a binary value by a third; the key travels twice.
                record.original_value.as_ref().map_or(0, String::len)
                    + 2 * key.as_ref().map_or(0, Vec::len)
            }
        };
        text > crate::MAX_FRAME as usize / 2 && self.shrink()
    }

    pub fn id(&self) -> MessageId {
        match self {
            ToPublish::Result { id, .. } | ToPublish::Dlq { id, .. } => *id,
        }
    }
}

/// Ingest to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestToPublish {
    /// A result or DLQ record decided by ingest (invalid task, malformed message, poison).
    /// Boxed: the other variants are small (the frame's bytes are the same).
    Publish(Box<ToPublish>),
    /// The group committed these commit points (per partition of the task topic, the first
    /// offset not done): publish forgets what it delivered below them.
    Committed(BTreeMap<i32, i64>),
    /// Per partition of the task topic, offsets above the commit point whose outcome is in
    /// Kafka: sent on every connect, so that a restarted publish can tell a restarted
    /// ingest.
    Done(BTreeMap<i32, OffsetSet>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromPublish {
    /// Kafka acknowledged the record of this message (acks=all). To ingest: the message
    /// is complete (whichever generation read it). To a transfer worker: drop the copy
    /// you kept.
    Acked(MessageId),
    /// To an ingest that just connected, before anything else: per partition of the task
    /// topic, the offsets whose outcome this publish delivered and no commit has covered
    /// yet (what a killed ingest had not committed).
    Done(BTreeMap<i32, OffsetSet>),
    /// To an ingest that just connected: everything publish knew at the connect has been
    /// sent; ingest may start dispatching.
    HandedOver,
}

/// A stage to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageToSupervisor {
    /// Initialised: sockets bound, clients created.
    Ready,
    /// The stage's state and metrics, about once a second.
    Report(Box<StageReport>),
}

/// What a stage reports: its detail for the REST API, and its Prometheus metrics in the
/// text exposition format (counters cumulative since the process started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub detail: StageDetail,
    pub metrics: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageDetail {
    Ingest(IngestDetail),
    Transfer(TransferDetail),
    Publish(PublishDetail),
}

/// Why a Kafka client cannot use the broker, as far as it can tell (`/ready`'s reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerProblem {
    /// SASL authentication failed (wrong user, password, token), or the broker refused
    /// the client as not authorised.
    Authentication,
    /// The TLS handshake failed (the broker's certificate, or the client's, refused).
    Tls,
}

impl BrokerProblem {
    /// Its name in API bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerProblem::Authentication => "authentication",
            BrokerProblem::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestDetail {
    /// The last metadata request to the broker succeeded.
    pub broker_up: bool,
    /// Why the broker is not usable, when a client has seen why; None when it is up or
    /// simply not answering.
    pub broker_problem: Option<BrokerProblem>,
    pub tasks_received: u64,
    /// Malformed messages (sent to the DLQ).
    pub parse_errors: u64,
    /// Tasks that failed validation (INVALID_CONFIG).
    pub invalid_tasks: u64,
    /// Per partition: high watermark minus committed offset (when both are known).
    pub lag_by_partition: BTreeMap<i32, i64>,
    /// Per partition: the last committed offset.
    pub committed: BTreeMap<i32, i64>,
    /// Messages read and not yet complete.
    pub tracked: u64,
    pub paused_partitions: u64,
    /// The ftp connections tasks are routed to (after the last reload).
    pub connections: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferDetail {
    pub connection_id: String,
    /// The connection's session budget and current (adaptive) limit.
    pub max_sessions: u64,
    pub cap: u64,
    /// Sessions open (idle + busy), busy, idle.
    pub total_sessions: u64,
    pub active_sessions: u64,
    pub available_sessions: u64,
    pub logins: u64,
    /// Sessions discarded after a failure, and refusals as one connection too many.
    pub discarded: u64,
    pub refused: u64,
    pub tasks_in_progress: u64,
    pub timeouts: u64,
    pub breaker_state: String,
    pub breaker_failures: u64,
    pub breaker_successes: u64,
    /// RFC 3339 time and message of the last failure that counted against the server.
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
    /// A task succeeded since the last failure (or none failed yet).
    pub healthy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishDetail {
    pub broker_up: bool,
    /// As [`IngestDetail::broker_problem`].
    pub broker_problem: Option<BrokerProblem>,
    pub results_sent: u64,
    pub failures_sent: u64,
    pub dlq_messages_sent: u64,
    /// Deliveries that failed (each retried until it succeeds).
    pub send_errors: u64,
    /// Records waiting for their delivery report.
    pub pending_count: u64,
}

/// The supervisor to a stage (stop is SIGTERM, as from systemd or kubelet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SupervisorToStage {
    Ping,
    /// The configuration in force: the first frame after the stage's hello, and again
    /// after each reload that was applied.
    Config(Box<ConfigInForce>),
}

/// The configuration in force and its generation (1 at start, +1 per applied reload).
/// It holds secrets: this channel is the runtime directory's private socket, and the
/// value is never logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigInForce {
    pub generation: u64,
    pub config: ftp_pooler_config::Config,
}

/// `ftp-pooler ctl` to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlRequest {
    Status,
    /// Re-read and validate config.yaml and connections.ini, and apply them to every
    /// stage (as SIGHUP does).
    Reload,
    /// Restart one stage (`ingest`, `publish`, `transfer:<id>`) while the others run.
    Restart {
        stage: String,
    },
}

/// The state of one stage, as `ctl status` and `GET /stages` show it (in JSON:
/// `{name, pid, state, restarts, uptime_seconds}` with the names and states as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    pub name: crate::StageId,
    pub pid: Option<u32>,
    pub state: crate::StageState,
    pub restarts: u32,
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlResponse {
    Status {
        pid: u32,
        stages: Vec<StageStatus>,
    },
    /// The stage was restarted and its new process is ready.
    Restarted {
        stage: String,
        pid: u32,
    },
    /// A reload was applied (configuration `generation` is now in force): connection
    /// ids added and removed, stages restarted to take it (`transfer:<id>` of a changed
    /// connection; every stage the changed settings concern).
    Reloaded {
        generation: u64,
        added: Vec<String>,
        removed: Vec<String>,
        restarted: Vec<String>,
    },
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::EnqueuedAt;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_age_of_a_task_is_never_negative() {
        let now = UNIX_EPOCH + Duration::from_millis(10_500);
        assert_eq!(EnqueuedAt(10_000).age(now), Duration::from_millis(500));
        // A producer's clock ahead of ours, or a nonsense timestamp: zero, not a panic.
        assert_eq!(EnqueuedAt(11_000).age(now), Duration::ZERO);
        assert_eq!(EnqueuedAt(-1).age(now), Duration::from_millis(10_500));
    }
}
