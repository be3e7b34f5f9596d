//! The transfer engine of one FTP connection: runs a task over a pooled session, with
//! retries, and turns the outcome into the task's result.
//!
//! Invariants:
//! - downloads stream into a temporary file beside the destination (named from the
//!   destination and the task), are checked against the size the server announced (if
//!   it did, see session.rs), reach the device before their rename and the
//!   rename before their result (see [`crate::commit`]); uploads stream to a temporary
//!   remote name, the server's SIZE is checked, then RNFR/RNTO: a destination is absent,
//!   old, or complete, never partial;
//! - every transfer's bytes are hashed as they pass ([`crate::digest`]: in the task's
//!   algorithm when it expects a digest, else `transfer.checksum`'s) and the result
//!   carries the digest; an expected digest that differs fails the attempt with
//!   CHECKSUM_MISMATCH (not retried) before the rename, so the destination is untouched;
//! - a failed attempt removes its temporary file (local always; remote when the session
//!   can still speak);
//! - local paths are confined (see [`crate::local`]) before any byte is written;
//! - each attempt is bounded by `transfer_timeout_seconds`; the retryable codes
//!   (CONNECTION_ERROR, IO_ERROR, TRANSFER_TIMEOUT) are retried up to `max_retries` times
//!   with exponential backoff and jitter; `attempts` counts every try;
//! - the connection's [`CircuitBreaker`] sees every attempt: while open, attempts fail
//!   fast (CONNECTION_ERROR) without touching the server.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftp_pooler_channel::{Direction, Route};
use ftp_pooler_config::{Config, ConnectionKind};
use ftp_pooler_contract::{Checksum, ChecksumAlgorithm, ErrorCode, TransferResult, TransferTask};

mod download;
mod upload;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::claim::Claims;
use crate::commit::Committer;
use crate::pool::Pool;
use crate::remote::{Remote, Session};
use crate::resume::Carry;
use crate::TransferError;

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): base * 2^(attempt-1),
    /// capped at max, scaled by `jitter` in [0.5, 1.0].
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max).mul_f64(jitter.clamp(0.5, 1.0))
    }
}

pub struct Engine {
    connection_id: String,
    pool: Pool,
    /// Local connection id -> base_path.
    locals: HashMap<String, PathBuf>,
    retry: RetryPolicy,
    transfer_timeout: Duration,
    /// Remote directories known to exist (MKD is skipped for them).
    known_dirs: Mutex<HashSet<String>>,
    /// Local directories known to exist (create_dir_all is skipped for them).
    known_local_dirs: Mutex<HashSet<PathBuf>>,
    breaker: Mutex<CircuitBreaker>,
    health: Mutex<Health>,
    /// Makes downloads durable before their rename and their result (`transfer.fsync`).
    committer: Committer,
    /// Temporary names (local and remote) in use: one attempt at a time per name.
    claims: Claims,
    /// `transfer.checksum`: the digest every transfer computes (None: `none`).
    checksum: Option<ChecksumAlgorithm>,
    /// `transfer.resume`: retries continue interrupted transfers ([`crate::resume`]).
    resume: bool,
    /// The server refused an APPE: uploads on this connection are not resumed.
    append_refused: std::sync::atomic::AtomicBool,
    /// `ftp_transfer_retries_total{connection_id}` (registered by the worker).
    pub retries: prometheus::IntCounter,
    /// `ftp_transfer_resumes_total{connection_id}`: retries that continued where the
    /// failed attempt stopped (registered by the worker).
    pub resumes: prometheus::IntCounter,
    /// `ftp_session_wait_seconds{connection_id,outcome}`: a task's wait for a session of
    /// the pool (registered by the worker, observed by the pool).
    pub session_wait: prometheus::HistogramVec,
}

/// Buckets of the wait for a session (seconds): an idle session at once, a login, a
/// task queued behind busy sessions up to the transfer timeout.
pub const SESSION_WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// What the engine knows about its server's health, for the API.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// RFC 3339 time and message of the last failure counted against the server.
    pub last_failure: Option<(String, String)>,
    /// No failure since the last success (or nothing failed yet).
    pub healthy: bool,
    pub timeouts: u64,
}

impl Engine {
    /// The engine of `connection_id` (an ftp connection of `config`'s registry).
    pub fn new(config: &Config, connection_id: &str) -> Result<Engine, TransferError> {
        let conn = config.registry.get(connection_id).ok_or_else(|| {
            TransferError::new(
                ErrorCode::InvalidConfig,
                format!("{connection_id:?} is not a connection"),
            )
        })?;
        let remote = Remote::for_connection(conn)?;
        let s = &config.settings;
        let limit = ftp_pooler_config::session_budget(s, &config.registry)
            .get(connection_id)
            .copied()
            .unwrap_or(1) as usize;
        let opts = remote.session_options(&s.transfer);
        let mut pool = Pool::new(
            remote,
            opts,
            limit,
            Duration::from_secs(s.pool.session_timeout_seconds),
        );
        if !s.pool.reuse_sessions {
            pool = pool.without_reuse();
        }
        let session_wait = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "ftp_session_wait_seconds",
                "Seconds a task waited for a session of the pool (outcome: reused, new, failed)",
            )
            .const_label("connection_id", connection_id)
            .buckets(SESSION_WAIT_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("a valid metric");
        let pool = pool.with_wait_metric(session_wait.clone());
        let locals = config
            .registry
            .iter()
            .filter_map(|c| match &c.kind {
                ConnectionKind::Local(l) => Some((c.id.clone(), l.base_path.clone())),
                _ => None,
            })
            .collect();
        let committer = Committer::new(s.transfer.per_file_fsync() == Some(true))
            .map_err(|e| TransferError::local_io("start the group-commit thread", &e))?;
        let checksum = s
            .transfer
            .checksum_name()
            .and_then(ChecksumAlgorithm::parse);
        Ok(Engine {
            connection_id: connection_id.to_string(),
            checksum,
            committer,
            claims: Claims::default(),
            pool,
            locals,
            retry: RetryPolicy {
                max_retries: s.kafka.max_retries.min(100) as u32,
                base: Duration::from_millis(s.kafka.base_backoff_ms),
                max: Duration::from_millis(s.kafka.max_backoff_ms),
            },
            transfer_timeout: Duration::from_secs(s.transfer.transfer_timeout_seconds),
            known_dirs: Mutex::new(HashSet::new()),
            known_local_dirs: Mutex::new(HashSet::new()),
            resume: s.transfer.resume,
            append_refused: Default::default(),
            resumes: prometheus::IntCounter::with_opts(
                prometheus::Opts::new(
                    "ftp_transfer_resumes_total",
                    "Retried transfers that continued where the failed attempt stopped",
                )
                .const_label("connection_id", connection_id),
            )
            .expect("a valid metric"),
            breaker: Mutex::new(CircuitBreaker::new(&s.circuit_breaker)),
            health: Mutex::new(Health {
                healthy: true,
                ..Health::default()
            }),
            retries: prometheus::IntCounter::with_opts(
                prometheus::Opts::new(
                    "ftp_transfer_retries_total",
                    "Transfer attempts retried after a retryable failure",
                )
                .const_label("connection_id", connection_id),
            )
            .expect("a valid metric"),
            session_wait,
        })
    }

    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().expect("breaker").state(Instant::now())
    }

    /// The breaker's (state, consecutive failures, half-open successes).
    pub fn breaker_counts(&self) -> (BreakerState, u32, u32) {
        let b = self.breaker.lock().expect("breaker");
        let (f, s) = b.counts();
        (b.state(Instant::now()), f, s)
    }

    /// The server's health as this engine has seen it.
    pub fn health(&self) -> Health {
        self.health.lock().expect("health").clone()
    }

    /// One attempt, through the circuit breaker.
    async fn guarded_attempt(
        &self,
        task: &TransferTask,
        route: &Route,
        carry: &mut Carry,
    ) -> Result<Done, TransferError> {
        if let Err(wait) = self
            .breaker
            .lock()
            .expect("breaker")
            .try_call(Instant::now())
        {
            return Err(TransferError::new(
                ErrorCode::ConnectionError,
                format!(
                    "circuit breaker of {:?} is open after repeated failures; next try in {:.0} s",
                    self.connection_id,
                    wait.as_secs_f64().ceil()
                ),
            ));
        }
        let r = match tokio::time::timeout(self.transfer_timeout, self.attempt(task, route, carry))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(TransferError::timeout(
                &format!("{} {}", route.direction.as_str(), route.remote_path),
                self.transfer_timeout.as_secs_f64(),
            )),
        };
        let mut breaker = self.breaker.lock().expect("breaker");
        let mut health = self.health.lock().expect("health");
        match &r {
            Ok(_) => {
                breaker.on_success();
                self.pool.on_success();
                health.healthy = true;
            }
            Err(e) if counts_against_server(e) => {
                breaker.on_failure(Instant::now());
                health.healthy = false;
                health.last_failure = Some((
                    ftp_pooler_contract::Timestamp::now().to_string(),
                    e.to_string(),
                ));
            }
            Err(_) => breaker.on_neutral(),
        }
        if matches!(&r, Err(e) if e.code == ErrorCode::TransferTimeout) {
            health.timeouts += 1;
        }
        r
    }

    /// Runs `task` (routed to this connection) to its result, retries included.
    pub async fn run(&self, task: &TransferTask, route: &Route) -> TransferResult {
        let start = Instant::now();
        let mut attempts = 0u32;
        // What a failed attempt leaves for the next (a partial file to resume).
        let mut carry = Carry::default();
        loop {
            attempts += 1;
            let outcome = self.guarded_attempt(task, route, &mut carry).await;
            let ms = start.elapsed().as_millis() as u64;
            match outcome {
                Ok(Done { bytes, checksum }) => {
                    return TransferResult::success(task, bytes, ms, attempts)
                        .with_checksum(checksum)
                }
                Err(e) if e.is_retryable() && attempts <= self.retry.max_retries => {
                    self.retries.inc();
                    let pause = self.retry.backoff(attempts, 0.5 + fastrand::f64() / 2.0);
                    tracing::debug!(task_id = %task.task_id, attempt = attempts, error = %e, pause_ms = pause.as_millis() as u64, "attempt failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => {
                    self.discard(&mut carry).await;
                    let retryable = e.is_retryable();
                    return TransferResult::failure(task, e.code, e.message, ms, attempts)
                        .with_retryable(retryable);
                }
            }
        }
    }

    /// Removes what the attempts of a run that gave up kept for a resume.
    async fn discard(&self, carry: &mut Carry) {
        if let Some(tmp) = carry.local_tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
        if let Some(tmp) = carry.remote_tmp.take() {
            self.remove_remote_temp(&tmp).await;
        }
    }

    async fn attempt(
        &self,
        task: &TransferTask,
        route: &Route,
        carry: &mut Carry,
    ) -> Result<Done, TransferError> {
        let base = self.locals.get(&route.local_id).ok_or_else(|| {
            TransferError::new(
                ErrorCode::InvalidConfig,
                format!("{:?} is not a local connection", route.local_id),
            )
        })?;
        match route.direction {
            Direction::Download => self.download(task, route, base, carry).await,
            Direction::Upload => self.upload(task, route, base, carry).await,
        }
    }

    /// The algorithm of this task's digest: the task's own when it expects one.
    fn algorithm(&self, task: &TransferTask) -> Option<ChecksumAlgorithm> {
        task.checksum
            .as_ref()
            .map(|c| c.algorithm)
            .or(self.checksum)
    }

    /// CHECKSUM_MISMATCH, retried, when the server offers its digest of `path` (the file
    /// just read, or the temporary file just written) in our digest's algorithm and it
    /// differs from ours: the bytes changed on the way or on the server's disk, or the
    /// server lies. Nothing to compare (no digest, none offered, or
    /// `transfer.verify_server_checksum: false`) passes.
    async fn against_server(
        &self,
        session: &mut Session,
        path: &str,
        ours: Option<&Checksum>,
        bytes: u64,
    ) -> Result<(), TransferError> {
        let Some(ours) = ours else { return Ok(()) };
        if !session.offers_digest(ours.algorithm) {
            return Ok(());
        }
        match session.server_checksum(path, ours.algorithm, bytes).await? {
            Some(theirs) if theirs != *ours => Err(TransferError::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "the server's {} of {path} is {}, the bytes' is {}",
                    theirs.algorithm, theirs.value, ours.value
                ),
            )
            .retried(true)),
            _ => Ok(()),
        }
    }

    /// Best-effort DELE of a remote temporary file on a fresh or idle session.
    async fn remove_remote_temp(&self, tmp: &str) {
        let wait = Duration::from_secs(5);
        if let Ok(Ok(mut lease)) = tokio::time::timeout(wait, self.pool.acquire(wait)).await {
            let deleted = tokio::time::timeout(wait, lease.session().delete(tmp)).await;
            if matches!(deleted, Ok(Ok(()))) {
                tracing::debug!(path = tmp, "removed the temporary file of a failed upload");
            }
            lease.release();
        }
    }
}

/// What a successful attempt moved.
pub(super) struct Done {
    bytes: u64,
    checksum: Option<Checksum>,
}

/// `CHECKSUM_MISMATCH` unless the task expected no digest or this one (a digest that
/// could not be computed, its thread lost, is an `IO_ERROR`, retried).
pub(super) fn expected(task: &TransferTask, got: Option<&Checksum>) -> Result<(), TransferError> {
    match (&task.checksum, got) {
        (Some(want), Some(got)) if want != got => Err(TransferError::new(
            ErrorCode::ChecksumMismatch,
            format!(
                "the bytes' {} is {}, the task expected {}",
                got.algorithm, got.value, want.value
            ),
        )),
        (Some(_), None) => Err(TransferError::new(
            ErrorCode::IoError,
            "the digest of the bytes could not be computed",
        )),
        _ => Ok(()),
    }
}

/// Failures that say the server is in trouble (for the circuit breaker); a refusal as one
/// connection too many is the pool's business, not a failure of the server.
fn counts_against_server(e: &TransferError) -> bool {
    matches!(
        e.code,
        ErrorCode::ConnectionError | ErrorCode::TransferTimeout | ErrorCode::AuthError
    ) && !e.is_too_many_connections()
}

/// Failures after which a partial file is worth keeping for the next attempt to resume:
/// the link's (the bytes that arrived are the source's, as far as they go).
pub(super) fn keeps_partial(e: &TransferError) -> bool {
    matches!(
        e.code,
        ErrorCode::ConnectionError | ErrorCode::TransferTimeout
    )
}

/// A download's local temporary file: removed when dropped (a failed or cancelled
/// attempt) unless disarmed (renamed into place) or kept for a resume (`keep`: the
/// attempt's own error path removes it when the failure leaves nothing worth keeping).
pub(super) struct TempFile {
    path: Option<PathBuf>,
    keep: bool,
}

impl TempFile {
    pub(super) fn new(path: PathBuf, keep: bool) -> Self {
        TempFile {
            path: Some(path),
            keep,
        }
    }

    pub(super) fn disarm(mut self) {
        self.path = None;
    }

    /// Removes the file now.
    pub(super) fn remove(mut self) {
        self.keep = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take().filter(|_| !self.keep) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.backoff(5, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(60, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(100));
    }
}
