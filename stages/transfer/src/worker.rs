//! The transfer stage process (`ftp-pooler stage transfer <connection-id>`).
//!
//! Owns one connection's [`Engine`] (and so its session pool), a listening socket that the
//! ingest stage connects to, and a link to the publish stage. Invariants:
//! - a Kafka message's job is run at most once at a time by this process, and not again
//!   while its result waits for publish: jobs are known by (partition, offset), whichever
//!   ingest generation sent them, so a job re-sent after a reconnect, or by a restarted
//!   ingest that read the message again, is not run twice;
//! - when a newer ingest generation connects, jobs of older generations keep running (a
//!   restarted ingest reads their messages again and sends them here, where they are
//!   already known; their `Finished` goes to the new ingest, which matches it by offset);
//! - a result is kept until publish confirms Kafka has it, and re-sent whenever the link
//!   to publish is re-established (publish restarted);
//! - a job's `Finished` goes to ingest only after its result was written to publish's
//!   socket (ingest never re-sends a finished job);
//! - a suspect job's `Started` goes to ingest before its first byte moves, so a crash
//!   during it counts against it (poison detection lives in ingest); other jobs say
//!   nothing until they finish (a crash counts against every job the worker had);
//! - writes to ingest and to publish go through the channel's paced writer
//!   ([`PacedWriter`], [`PIPELINE_PACE`]): under load one write carries every notice and
//!   result that came meanwhile.
//!
//! Test hook: when `FTP_POOLER_TEST_ABORT_ON` is set, a job whose remote path contains its
//! value aborts the process when it starts (used to prove poison-task handling).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use ftp_pooler_channel::{
    accept_peer, accept_until, bind, run_link, ChannelError, FromPublish, Hello, IngestToTransfer,
    Job, LinkEvent, LinkSpec, Outgoing, PacedWriter, Role, RuntimePaths, StageDetail, StageReport,
    SupervisorLink, ToPublish, TransferDetail, TransferToIngest, PIPELINE_PACE,
};
use ftp_pooler_config::Config;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

use crate::engine::Engine;

/// Why the stage could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("transfer[{0}]: {1}")]
    Setup(String, String),
    #[error("transfer: channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("transfer: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Default)]
struct State {
    /// The ingest generation whose jobs run.
    generation: u64,
    /// Jobs queued or running here, by (partition, offset).
    known: HashSet<(i32, i64)>,
    /// Results not yet confirmed by publish, by (partition, offset).
    held: BTreeMap<(i32, i64), ToPublish>,
    /// The current ingest connection's outbox.
    to_ingest: Option<mpsc::UnboundedSender<Notice>>,
}

/// A notice to ingest; `written` is told once it is written to the socket.
struct Notice {
    msg: TransferToIngest,
    written: oneshot::Sender<()>,
}

impl Notice {
    fn new(msg: TransferToIngest) -> (Notice, oneshot::Receiver<()>) {
        let (written, rx) = oneshot::channel();
        (Notice { msg, written }, rx)
    }
}

impl Outgoing for Notice {
    type Frame = TransferToIngest;
    fn frame(&self) -> Cow<'_, TransferToIngest> {
        Cow::Borrowed(&self.msg)
    }
}

struct Worker {
    engine: Engine,
    state: Arc<Mutex<State>>,
    to_publish: mpsc::UnboundedSender<ToPublish>,
    slots: Semaphore,
    /// Told whenever a job ends, a result is acked or ingest goes: what the drain waits
    /// on (running jobs and held results).
    settled: Arc<Notify>,
    stopping: AtomicBool,
    abort_on: Option<String>,
}

/// Runs the stage until asked to stop; in-flight jobs get up to the drain deadline. It
/// runs on the configuration in force that `supervisor` received (never the files).
pub async fn run(
    supervisor: SupervisorLink,
    connection_id: String,
    paths: RuntimePaths,
) -> Result<(), WorkerError> {
    let name = ftp_pooler_config::ConnectionId::new(connection_id.as_str())
        .map(|id| ftp_pooler_channel::StageId::Transfer(id).to_string())
        .map_err(|e| WorkerError::Setup(connection_id.clone(), e))?;
    let config: Config = supervisor.config().config.clone();
    let supervisor = Arc::new(supervisor);
    let engine = Engine::new(&config, &connection_id)
        .map_err(|e| WorkerError::Setup(connection_id.clone(), e.message))?;
    let drain = Duration::from_secs(config.settings.shutdown.drain_timeout_seconds);
    let listener = bind(&paths.transfer(&connection_id))?;

    let state = Arc::new(Mutex::new(State::default()));
    let settled = Arc::new(Notify::new());
    let (to_publish, publish_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = engine.pool().limit();
    let slots = 8 * limit;
    let worker = Arc::new(Worker {
        engine,
        state: state.clone(),
        to_publish,
        // Eight times the sessions: a job that is syncing and renaming its file has given
        // its session back, and other jobs must be there to take it at once. With twice
        // the sessions, jobs in fsync (which takes as long as the FTP exchange of a small
        // file) left sessions idle; with the group commit a job waits for two syncs (its
        // data, then its rename), and four times the sessions held small downloads to
        // about 3,000 files/s, eight let the first round reach 4,200 (docs/BENCHMARKS.md).
        slots: Semaphore::new(slots),
        settled: settled.clone(),
        stopping: AtomicBool::new(false),
        abort_on: std::env::var("FTP_POOLER_TEST_ABORT_ON")
            .ok()
            .filter(|s| !s.is_empty()),
    });

    let link_state = state.clone();
    let written_state = state.clone();
    let publish_link = tokio::spawn(run_link(
        LinkSpec {
            path: paths.publish(),
            me: Role::Transfer,
            peer: Role::Publish,
            hello: Hello {
                name: name.clone(),
                pid: std::process::id(),
                generation: 0,
            },
            pace: PIPELINE_PACE,
        },
        state.clone(),
        publish_rx,
        |s: &mut State| s.held.values().cloned().collect(),
        move |ev: LinkEvent<FromPublish>| match ev {
            LinkEvent::Received(FromPublish::Acked(id)) => {
                link_state
                    .lock()
                    .expect("state")
                    .held
                    .remove(&(id.partition, id.offset));
                settled.notify_waiters();
            }
            LinkEvent::Received(_) => {}
            LinkEvent::Connected => tracing::info!("connected to publish"),
            LinkEvent::Lost => tracing::warn!("lost publish; results will be re-sent"),
        },
        // A job's `Finished` goes to ingest only once its result is in publish's socket:
        // ingest never re-sends a finished job, so a crash of this worker between the two
        // writes must not find ingest told and publish not.
        move |sent: &[ToPublish]| {
            let s = written_state.lock().expect("state");
            let Some(tx) = &s.to_ingest else { return };
            for item in sent {
                // Jobs of an earlier ingest too: the current one matches them by offset.
                if let ToPublish::Result { id, .. } = item {
                    let _ = tx.send(Notice::new(TransferToIngest::Finished(*id)).0);
                }
            }
        },
        stop_rx,
    ));

    let reaper = {
        let pool = worker.engine.pool().clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                pool.reap_idle().await;
            }
        })
    };

    supervisor.ready().await?;
    tracing::info!(connection = %connection_id, sessions = limit, "transfer worker ready");
    let metrics = WorkerMetrics::new(
        &connection_id,
        &[&worker.engine.retries, &worker.engine.resumes],
        &worker.engine.session_wait,
    );
    let reporter = {
        let worker = worker.clone();
        supervisor.spawn_reports(Duration::from_secs(1), move || {
            report(&worker, &metrics, slots)
        })
    };
    let pool_settings = &config.settings.pool;
    if pool_settings.prewarm_enabled && pool_settings.prewarm_sessions_per_connection > 0 {
        // In the background: a server that refuses logins must not hold readiness back.
        let pool = worker.engine.pool().clone();
        let n = pool_settings.prewarm_sessions_per_connection as usize;
        let within = Duration::from_secs(pool_settings.prewarm_timeout_seconds);
        tokio::spawn(async move {
            let opened = pool.prewarm(n, within).await;
            tracing::info!(opened, wanted = n.min(pool.limit()), "pre-warmed sessions");
        });
    }
    let why = accept_until(&listener, supervisor.shutdown_requested(), |stream| {
        tokio::spawn(serve_ingest(worker.clone(), stream));
    })
    .await;
    tracing::info!(reason = why, "stopping: finishing jobs in flight");
    worker.stopping.store(true, Ordering::SeqCst);
    drop(listener);
    let deadline = Instant::now() + drain;
    loop {
        // Registered before the check: a change between the check and the wait wakes it.
        let settled = worker.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        let (running, held) = {
            let s = state.lock().expect("state");
            let running = slots - worker.slots.available_permits();
            // Results wait for publish's ack, which follows ingest's; once ingest is gone
            // (it stops first, and commits nothing it was not acked for), Kafka redelivers
            // whatever they stand for, and waiting for them would only hold the stop.
            let held = if s.to_ingest.is_some() {
                s.held.len()
            } else {
                0
            };
            (running, held)
        };
        if running == 0 && held == 0 {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                running,
                held,
                "drain deadline reached; ingest will re-send these"
            );
            break;
        }
        let _ = tokio::time::timeout_at(deadline.into(), settled).await;
    }
    let _ = stop_tx.send(true);
    let _ = publish_link.await;
    reaper.abort();
    reporter.abort();
    worker.engine.pool().close_idle().await;
    tracing::info!("stopped");
    Ok(())
}

/// The worker's own metrics (aggregated with the other stages' by the supervisor).
struct WorkerMetrics {
    registry: prometheus::Registry,
    in_progress: prometheus::IntGauge,
    active: prometheus::IntGauge,
    total: prometheus::IntGauge,
    breaker: prometheus::IntGauge,
}

impl WorkerMetrics {
    fn new(
        connection_id: &str,
        counters: &[&prometheus::IntCounter],
        session_wait: &prometheus::HistogramVec,
    ) -> WorkerMetrics {
        use prometheus::{IntGauge, Opts};
        let labelled = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).const_label("connection_id", connection_id))
                .expect("a valid metric")
        };
        let m = WorkerMetrics {
            registry: prometheus::Registry::new(),
            in_progress: IntGauge::new(
                "ftp_tasks_in_progress",
                "Number of transfer tasks currently in progress",
            )
            .expect("a valid metric"),
            active: labelled("ftp_sessions_active", "Number of active FTP sessions"),
            total: labelled("ftp_sessions_total", "Total number of FTP sessions"),
            breaker: labelled(
                "ftp_circuit_breaker_state",
                "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ),
        };
        for c in [&m.in_progress, &m.active, &m.total, &m.breaker] {
            m.registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for c in counters {
            m.registry
                .register(Box::new((*c).clone()))
                .expect("unique metric");
        }
        m.registry
            .register(Box::new(session_wait.clone()))
            .expect("unique metric");
        m
    }
}

fn report(worker: &Worker, metrics: &WorkerMetrics, limit: usize) -> StageReport {
    let stats = worker.engine.pool().stats();
    let running = limit.saturating_sub(worker.slots.available_permits());
    let (state, failures, successes) = worker.engine.breaker_counts();
    let health = worker.engine.health();
    metrics.in_progress.set(running as i64);
    metrics.active.set(stats.busy as i64);
    metrics.total.set(stats.open as i64);
    metrics.breaker.set(state.as_gauge());
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.registry.gather())
        .unwrap_or_default();
    let (last_failure, last_error) = match health.last_failure {
        Some((at, message)) => (Some(at), Some(message)),
        None => (None, None),
    };
    StageReport {
        detail: StageDetail::Transfer(TransferDetail {
            connection_id: worker.engine.connection_id().to_string(),
            max_sessions: stats.limit as u64,
            cap: stats.cap as u64,
            total_sessions: stats.open as u64,
            active_sessions: stats.busy as u64,
            available_sessions: stats.idle as u64,
            logins: stats.logins,
            discarded: stats.discarded,
            refused: stats.refused,
            tasks_in_progress: running as u64,
            timeouts: health.timeouts,
            breaker_state: state.as_str().to_string(),
            breaker_failures: failures as u64,
            breaker_successes: successes as u64,
            last_failure,
            last_error,
            healthy: health.healthy,
        }),
        metrics: text,
    }
}

/// One ingest connection: jobs in, `Started` (suspects) and `Finished` out.
async fn serve_ingest(worker: Arc<Worker>, stream: UnixStream) {
    let Some(accepted) = accept_peer(stream, Role::Transfer, &[Role::Ingest]).await else {
        return;
    };
    let generation = accepted.hello.generation;
    let (writer, mut reader) = accepted
        .into_conn::<TransferToIngest, IngestToTransfer>()
        .split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
    {
        let mut s = worker.state.lock().expect("state");
        if s.generation != generation {
            tracing::info!(
                generation = format!("{generation:x}"),
                "new ingest generation"
            );
        }
        s.generation = generation;
        s.to_ingest = Some(tx.clone());
    }
    let write_task = tokio::spawn(async move {
        let mut writer = PacedWriter::new(writer, PIPELINE_PACE);
        while let Some(Ok(batch)) = writer.next(&mut rx).await {
            for n in batch {
                let _ = n.written.send(());
            }
        }
    });
    loop {
        match reader.recv().await {
            Ok(Some(IngestToTransfer::Job(job))) => {
                let fresh = {
                    let mut s = worker.state.lock().expect("state");
                    let key = (job.id.partition, job.id.offset);
                    job.id.generation == s.generation
                        && !s.held.contains_key(&key)
                        && s.known.insert(key)
                };
                if fresh {
                    tokio::spawn(run_job(worker.clone(), job));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "ingest channel failed");
                break;
            }
        }
    }
    write_task.abort();
    let mut s = worker.state.lock().expect("state");
    if s.to_ingest.as_ref().is_some_and(|t| t.same_channel(&tx)) {
        s.to_ingest = None;
        worker.settled.notify_waiters();
    }
}

async fn run_job(worker: Arc<Worker>, job: Job) {
    let permit = worker.slots.acquire().await.expect("slots never close");
    let (started, written) = Notice::new(TransferToIngest::Started(job.id));
    let key = (job.id.partition, job.id.offset);
    let current = {
        let s = worker.state.lock().expect("state");
        let current = !worker.stopping.load(Ordering::SeqCst);
        if current && job.suspect {
            if let Some(tx) = &s.to_ingest {
                let _ = tx.send(started);
            }
        }
        current
    };
    if !current {
        worker.state.lock().expect("state").known.remove(&key);
        drop(permit);
        worker.settled.notify_waiters();
        return;
    }
    // For a suspect (it was here when a worker died), `Started` is on the socket before
    // any work begins: if this process dies now, ingest blames this job. Other jobs say
    // nothing until they finish: a crash counts against every job the worker had.
    if job.suspect {
        let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
    }
    if let Some(pattern) = &worker.abort_on {
        if job.route.remote_path.contains(pattern.as_str()) {
            tracing::error!(task_id = %job.task.task_id, "test hook FTP_POOLER_TEST_ABORT_ON: aborting");
            std::process::abort();
        }
    }
    let result = worker.engine.run(&job.task, &job.route).await;
    tracing::info!(
        task_id = %result.task_id,
        direction = job.route.direction.as_str(),
        connection = worker.engine.connection_id(),
        status = if result.is_success() { "success" } else { "failed" },
        bytes = result.bytes_transferred,
        duration_ms = result.duration_ms,
        error_code = result.error_code.map(|c| c.as_str()).unwrap_or(""),
        attempts = result.attempts,
        "task finished"
    );
    let outcome = ToPublish::Result {
        id: job.id,
        result,
        direction: Some(job.route.direction),
        enqueued_at: job.enqueued_at,
    };
    // Held until publish confirms; `Finished` follows once the result is written to
    // publish (the link's `on_written`, in `run`). The slot is freed once the result is
    // held, so the drain never sees neither.
    {
        let mut s = worker.state.lock().expect("state");
        s.known.remove(&key);
        s.held.insert(key, outcome.clone());
        let _ = worker.to_publish.send(outcome);
    }
    drop(permit);
    worker.settled.notify_waiters();
}
