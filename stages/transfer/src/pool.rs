//! The session pool of one FTP connection.
//!
//! Owns every session of its connection. Invariants:
//! - at most `limit` sessions exist at once (a semaphore permit travels with each
//!   [`Lease`]); a task waits for a permit without spinning, for a bounded time;
//! - a leased session is used by one task only and comes back only through
//!   [`Lease::release`], and only when not poisoned (any timeout, desync or I/O failure);
//!   a lease dropped without release (a cancelled or timed-out task, whose session may be
//!   mid-command) discards its session;
//! - an idle session past the idle timeout is closed instead of reused; one idle for
//!   longer than [`NOOP_AFTER`] is proved alive with NOOP before it is handed out.
//!
//! The production hardening (pre-warm, pod-wide budget, adaptive limits on 421, the
//! circuit breaker, DISCONNECTED/IDLE/BUSY/ERROR states for the API) fills this structure.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_config::FtpConnection;
use ftp_pooler_contract::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tls::TlsContext;
use crate::{FtpSession, SessionOptions, TransferError};

/// An idle session older than this is checked with NOOP before reuse.
pub const NOOP_AFTER: Duration = Duration::from_secs(15);

struct Idle {
    session: FtpSession,
    since: Instant,
}

struct Inner {
    conn: FtpConnection,
    tls: Option<TlsContext>,
    opts: SessionOptions,
    limit: usize,
    idle_timeout: Duration,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    open: AtomicUsize,
    logins: AtomicU64,
}

/// Counters of a pool, for logs, tests and (later) the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub limit: usize,
    pub open: usize,
    pub idle: usize,
    pub logins: u64,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(
        conn: FtpConnection,
        tls: Option<TlsContext>,
        opts: SessionOptions,
        limit: usize,
        idle_timeout: Duration,
    ) -> Pool {
        let limit = limit.max(1);
        Pool {
            inner: Arc::new(Inner {
                conn,
                tls,
                opts,
                limit,
                idle_timeout,
                permits: Arc::new(Semaphore::new(limit)),
                idle: Mutex::new(Vec::new()),
                open: AtomicUsize::new(0),
                logins: AtomicU64::new(0),
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            limit: self.inner.limit,
            open: self.inner.open.load(Ordering::Relaxed),
            idle: self.inner.idle.lock().expect("pool lock").len(),
            logins: self.inner.logins.load(Ordering::Relaxed),
        }
    }

    /// A session for one task: an idle one (checked when it has been idle for a while) or
    /// a new one. Waits at most `wait` for a free slot.
    pub async fn acquire(&self, wait: Duration) -> Result<Lease, TransferError> {
        let permit = tokio::time::timeout(wait, self.inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                TransferError::new(
                    ErrorCode::TransferTimeout,
                    format!(
                        "no free session of {} within {:.0} s",
                        self.inner.limit,
                        wait.as_secs_f64()
                    ),
                )
            })?
            .expect("the pool's semaphore is never closed");
        loop {
            let idle = self.inner.idle.lock().expect("pool lock").pop();
            let Some(Idle { mut session, since }) = idle else {
                break;
            };
            let age = since.elapsed();
            if age > self.inner.idle_timeout {
                self.discard(session).await;
                continue;
            }
            if age > NOOP_AFTER && session.noop().await.is_err() {
                self.discard(session).await;
                continue;
            }
            return Ok(self.lease(session, permit));
        }
        let session =
            FtpSession::connect(&self.inner.conn, self.inner.tls.as_ref(), self.inner.opts).await?;
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        Ok(self.lease(session, permit))
    }

    fn lease(&self, session: FtpSession, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            session: Some(session),
            inner: self.inner.clone(),
            _permit: permit,
        }
    }

    async fn discard(&self, session: FtpSession) {
        self.inner.open.fetch_sub(1, Ordering::Relaxed);
        session.quit().await;
    }

    /// Closes idle sessions past the idle timeout (run periodically).
    pub async fn reap_idle(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.inner.idle.lock().expect("pool lock");
            let timeout = self.inner.idle_timeout;
            let (old, keep): (Vec<Idle>, Vec<Idle>) =
                idle.drain(..).partition(|i| i.since.elapsed() > timeout);
            *idle = keep;
            old
        };
        for i in expired {
            self.discard(i.session).await;
        }
    }

    /// Closes every idle session (shutdown).
    pub async fn close_idle(&self) {
        let all: Vec<Idle> = self
            .inner
            .idle
            .lock()
            .expect("pool lock")
            .drain(..)
            .collect();
        for i in all {
            self.discard(i.session).await;
        }
    }
}

/// A session on loan to one task; [`Lease::release`] returns it, dropping discards it.
pub struct Lease {
    session: Option<FtpSession>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn session(&mut self) -> &mut FtpSession {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }

    /// Gives the session back for reuse (discarded instead when poisoned).
    pub fn release(mut self) {
        if let Some(session) = self.session.take() {
            if session.is_poisoned() {
                self.inner.open.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.inner.idle.lock().expect("pool lock").push(Idle {
                    session,
                    since: Instant::now(),
                });
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.session.take().is_some() {
            // Not released: the task was cancelled or failed mid-command. Dropping the
            // session closes its sockets.
            self.inner.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
