//! The session pool of one server (an FTP or SFTP connection).
//!
//! Owns every session of its connection. Invariants:
//! - at most `cap` sessions exist at once, `cap <= limit` (the connection's share of the
//!   pod budget, see `ftp_pooler_config::session_budget`); a semaphore permit travels
//!   with each [`Lease`]; a task waits for a permit without spinning, for a bounded time;
//! - adaptive concurrency (AIMD): when the server refuses a connection as one too many
//!   (421, "too many connections"), `cap` is halved and the task waits for a session of
//!   the pool instead of failing; every `8 x cap` successful tasks `cap` grows by one, up
//!   to `limit`;
//! - a leased session is used by one task only and comes back only through
//!   [`Lease::release`], and only when not poisoned (any timeout, desync or I/O failure);
//!   a lease dropped without release (a cancelled or timed-out task, whose session may be
//!   mid-command) discards its session;
//! - an idle session past the idle timeout is closed instead of reused; one idle for
//!   longer than [`NOOP_AFTER`] is proved alive with NOOP before it is handed out (the
//!   server may have closed it), and replaced when dead.
//!
//! - every [`Pool::acquire`] (a task asking for a session) is timed into the wait
//!   histogram, when one is attached ([`Pool::with_wait_metric`]), by outcome: `reused`
//!   (an idle session), `new` (a login), `failed` (no session: timeout or login error);
//!   pre-warming is not a task's wait and is not timed.
//!
//! Session states, as the stats API shows them: DISCONNECTED (slots without a session),
//! IDLE, BUSY (leased), ERROR (sessions discarded after a failure, counted).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_contract::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::remote::{Remote, Session};
use crate::{SessionOptions, TransferError};

/// An idle session older than this is checked with NOOP before reuse.
pub const NOOP_AFTER: Duration = Duration::from_secs(2);

struct Idle {
    session: Session,
    since: Instant,
}

struct Shared {
    idle: Vec<Idle>,
    /// The current limit (adaptive), `1..=limit`.
    cap: usize,
    /// Permits to retire as they come back (the cap went down while they were out).
    owed: usize,
    /// Successful tasks since the cap last changed.
    successes: usize,
}

struct Inner {
    remote: Remote,
    opts: SessionOptions,
    limit: usize,
    idle_timeout: Duration,
    /// `pool.reuse_sessions`: when false, a released session is closed, not kept.
    reuse: bool,
    permits: Arc<Semaphore>,
    shared: Mutex<Shared>,
    open: AtomicUsize,
    /// Logins under way (a refusal while others are connecting is worth waiting out).
    connecting: AtomicUsize,
    logins: AtomicU64,
    discarded: AtomicU64,
    refused: AtomicU64,
    /// `ftp_session_wait_seconds{outcome}` (with the connection_id const label).
    wait: Option<prometheus::HistogramVec>,
}

/// Where a task's session came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Reused,
    New,
}

/// The `outcome` label of a wait.
fn wait_outcome<T>(r: &Result<(T, Got), TransferError>) -> &'static str {
    match r {
        Ok((_, Got::Reused)) => "reused",
        Ok((_, Got::New)) => "new",
        Err(_) => "failed",
    }
}

/// Counters of a pool, for logs, tests and the stats API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// The connection's session budget.
    pub limit: usize,
    /// The current (adaptive) limit.
    pub cap: usize,
    /// Sessions open now (idle + busy).
    pub open: usize,
    pub idle: usize,
    pub busy: usize,
    /// Slots without a session (DISCONNECTED).
    pub disconnected: usize,
    /// Logins since start.
    pub logins: u64,
    /// Sessions discarded after a failure (ERROR), since start.
    pub discarded: u64,
    /// Connections the server refused as one too many, since start.
    pub refused: u64,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(remote: Remote, opts: SessionOptions, limit: usize, idle_timeout: Duration) -> Pool {
        let limit = limit.max(1);
        Pool {
            inner: Arc::new(Inner {
                remote,
                opts,
                limit,
                idle_timeout,
                reuse: true,
                permits: Arc::new(Semaphore::new(limit)),
                shared: Mutex::new(Shared {
                    idle: Vec::new(),
                    cap: limit,
                    owed: 0,
                    successes: 0,
                }),
                open: AtomicUsize::new(0),
                connecting: AtomicUsize::new(0),
                logins: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                wait: None,
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Turns session reuse off (`pool.reuse_sessions: false`): one login per task.
    pub fn without_reuse(self) -> Pool {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("set before use"));
        inner.reuse = false;
        Pool {
            inner: Arc::new(inner),
        }
    }

    /// Times every task's wait for a session into `histogram` (label `outcome`).
    pub fn with_wait_metric(self, histogram: prometheus::HistogramVec) -> Pool {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("set before use"));
        inner.wait = Some(histogram);
        Pool {
            inner: Arc::new(inner),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let (idle, cap) = {
            let s = self.inner.shared.lock().expect("pool lock");
            (s.idle.len(), s.cap)
        };
        let open = self.inner.open.load(Ordering::Relaxed);
        PoolStats {
            limit: self.inner.limit,
            cap,
            open,
            idle,
            busy: open.saturating_sub(idle),
            disconnected: cap.saturating_sub(open),
            logins: self.inner.logins.load(Ordering::Relaxed),
            discarded: self.inner.discarded.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
        }
    }

    /// A session for one task: an idle one (checked when it has been idle for a while) or
    /// a new one. Waits at most `wait` for a free slot. The time it took is observed in
    /// the wait histogram.
    pub async fn acquire(&self, wait: Duration) -> Result<Lease, TransferError> {
        let start = Instant::now();
        let got = self.checkout(wait).await;
        if let Some(h) = &self.inner.wait {
            h.with_label_values(&[wait_outcome(&got)])
                .observe(start.elapsed().as_secs_f64());
        }
        got.map(|(lease, _)| lease)
    }

    async fn checkout(&self, wait: Duration) -> Result<(Lease, Got), TransferError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let permit =
                tokio::time::timeout_at(deadline, self.inner.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| {
                        TransferError::new(
                            ErrorCode::TransferTimeout,
                            format!(
                                "no free session of {} within {:.0} s",
                                self.stats().cap,
                                wait.as_secs_f64()
                            ),
                        )
                    })?
                    .expect("the pool's semaphore is never closed");
            if let Some(session) = self.take_idle().await {
                return Ok((self.lease(session, permit), Got::Reused));
            }
            match Session::connect(&self.inner.remote, self.inner.opts.clone()).await {
                Ok(session) => {
                    self.inner.open.fetch_add(1, Ordering::SeqCst);
                    self.inner.logins.fetch_add(1, Ordering::Relaxed);
                    return Ok((self.lease(session, permit), Got::New));
                }
                Err(e) if e.is_too_many_connections() => {
                    self.inner.refused.fetch_add(1, Ordering::Relaxed);
                    let cap = self.decrease();
                    self.give_back(permit);
                    let open = self.inner.open.load(Ordering::SeqCst);
                    let connecting = self.inner.connecting.load(Ordering::SeqCst);
                    tracing::warn!(cap, open, connecting, error = %e, "server refused one connection too many: lowering the session limit");
                    if open == 0 && connecting == 0 {
                        // Nothing to wait for: the server refuses even one session.
                        return Err(e);
                    }
                    if open == 0 {
                        // Others are logging in: give them a moment to get there.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => {
                    self.give_back(permit);
                    return Err(e);
                }
            }
        }
    }

    /// An idle session that is still fit for use, if any.
    async fn take_idle(&self) -> Option<Session> {
        loop {
            let idle = self.inner.shared.lock().expect("pool lock").idle.pop();
            let Idle { mut session, since } = idle?;
            let age = since.elapsed();
            if age > self.inner.idle_timeout {
                self.close(session).await;
                continue;
            }
            if age > NOOP_AFTER && session.noop().await.is_err() {
                tracing::debug!(
                    idle_s = age.as_secs(),
                    "idle session found dead; replacing it"
                );
                self.close(session).await;
                continue;
            }
            return Some(session);
        }
    }

    /// Opens up to `n` sessions ahead of the first tasks (bounded by `limit`), within
    /// `within`. Returns how many opened; failures are logged, never fatal.
    pub async fn prewarm(&self, n: usize, within: Duration) -> usize {
        let n = n.min(self.stats().cap);
        let tries = (0..n).map(|_| async {
            let lease = tokio::time::timeout(within, self.checkout(within)).await;
            match lease {
                Ok(Ok((lease, _))) => {
                    lease.release();
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "pre-warm: session not opened");
                    false
                }
                Err(_) => false,
            }
        });
        futures::future::join_all(tries)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// A task finished well on this connection: the limit may grow again.
    pub fn on_success(&self) {
        let mut s = self.inner.shared.lock().expect("pool lock");
        if s.cap >= self.inner.limit {
            return;
        }
        s.successes += 1;
        if s.successes >= 8 * s.cap {
            s.successes = 0;
            s.cap += 1;
            if s.owed > 0 {
                s.owed -= 1;
            } else {
                self.inner.permits.add_permits(1);
            }
            tracing::info!(cap = s.cap, "raising the session limit again");
        }
    }

    /// Halves the cap (at least 1); returns the new cap.
    fn decrease(&self) -> usize {
        let mut s = self.inner.shared.lock().expect("pool lock");
        let new_cap = (s.cap / 2).max(1);
        let drop = s.cap - new_cap;
        let forgotten = self.inner.permits.forget_permits(drop);
        s.owed += drop - forgotten;
        s.cap = new_cap;
        s.successes = 0;
        new_cap
    }

    /// Returns a permit, or retires it when the cap went down meanwhile.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        give_back(&self.inner, permit);
    }

    fn lease(&self, session: Session, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            session: Some(session),
            inner: self.inner.clone(),
            permit: Some(permit),
        }
    }

    async fn close(&self, session: Session) {
        self.inner.open.fetch_sub(1, Ordering::Relaxed);
        session.quit().await;
    }

    /// Closes idle sessions past the idle timeout (run periodically).
    pub async fn reap_idle(&self) {
        let expired: Vec<Idle> = {
            let mut s = self.inner.shared.lock().expect("pool lock");
            let timeout = self.inner.idle_timeout;
            let (old, keep): (Vec<Idle>, Vec<Idle>) =
                s.idle.drain(..).partition(|i| i.since.elapsed() > timeout);
            s.idle = keep;
            old
        };
        for i in expired {
            self.close(i.session).await;
        }
    }

    /// Closes every idle session (shutdown).
    pub async fn close_idle(&self) {
        let all: Vec<Idle> = self
            .inner
            .shared
            .lock()
            .expect("pool lock")
            .idle
            .drain(..)
            .collect();
        for i in all {
            self.close(i.session).await;
        }
    }
}

fn give_back(inner: &Inner, permit: OwnedSemaphorePermit) {
    let mut s = inner.shared.lock().expect("pool lock");
    if s.owed > 0 {
        s.owed -= 1;
        permit.forget();
    } else {
        drop(permit);
    }
}

/// A session on loan to one task; [`Lease::release`] returns it, dropping discards it.
pub struct Lease {
    session: Option<Session>,
    inner: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    pub fn session(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }

    /// Gives the session back for reuse (discarded instead when poisoned).
    pub fn release(mut self) {
        if let Some(session) = self.session.take() {
            if !self.inner.reuse {
                self.inner.open.fetch_sub(1, Ordering::Relaxed);
                tokio::spawn(session.quit());
            } else if session.is_poisoned() {
                self.inner.open.fetch_sub(1, Ordering::Relaxed);
                self.inner.discarded.fetch_add(1, Ordering::Relaxed);
            } else {
                self.inner
                    .shared
                    .lock()
                    .expect("pool lock")
                    .idle
                    .push(Idle {
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
            self.inner.discarded.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(permit) = self.permit.take() {
            give_back(&self.inner, permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{wait_outcome, Got};
    use crate::TransferError;
    use ftp_pooler_contract::ErrorCode;

    #[test]
    fn a_wait_is_labelled_by_where_its_session_came_from() {
        assert_eq!(wait_outcome(&Ok(((), Got::Reused))), "reused");
        assert_eq!(wait_outcome(&Ok(((), Got::New))), "new");
        let err: Result<((), Got), _> = Err(TransferError::new(ErrorCode::TransferTimeout, "t"));
        assert_eq!(wait_outcome(&err), "failed");
    }
}
