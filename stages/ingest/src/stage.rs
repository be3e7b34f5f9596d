//! The ingest stage process (`ftp-pooler stage ingest`). Its links to the transfer workers
//! and reloads are in [`links`], its broker probe in [`probe`].
//!
//! Owns the Kafka consumer (on its own thread, polling a `BaseConsumer`; rebalance
//! callbacks run there and may block), the [`Tracker`], and one link per transfer worker
//! plus one to publish. Invariants:
//! - every message read is tracked until publish acks its outcome; offsets are committed
//!   (synchronously) only up to each partition's commit point;
//! - malformed messages become DLQ records and invalid tasks failure results, sent to
//!   publish directly; valid tasks go to the worker of their remote connection;
//! - flow control pauses partitions instead of buffering (see the tracker);
//! - what is done is told by publish when this process connects to it (`Done`, then
//!   `HandedOver`): the consumer reads nothing before that (bounded by [`HANDOVER_WAIT`]),
//!   so a restarted ingest skips the messages whose outcome is already in Kafka; each
//!   successful commit is told to publish (it forgets what the commit covers), and on
//!   each connect publish is told what this ingest knows done above its commit points;
//! - on revoke: stop reading those partitions, finish what was read of them (bounded by
//!   the drain deadline), commit them synchronously, forget them;
//! - on assign: before any message of them is handled, learn which of their offsets
//!   above the commit point are done already ([`crate::recall`]);
//! - on stop: no more fetching; in-flight messages get the drain deadline; final commit;
//!   the consumer leaves the group;
//! - nothing slow blocks the consumer thread but Kafka's own consumer calls: the broker
//!   probe (reachability, lag) runs on a thread and a client of its own;
//! - its links write paced ([`PIPELINE_PACE`]): under load one write carries every job
//!   that was dispatched meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use ftp_pooler_channel::{
    run_link, ChannelError, EnqueuedAt, FromPublish, Hello, IngestDetail, IngestToPublish,
    IngestToTransfer, Job, LinkEvent, LinkSpec, MessageId, Role, RuntimePaths, StageDetail,
    StageReport, SupervisorLink, ToPublish, PIPELINE_PACE,
};
use ftp_pooler_config::{Config, Registry};
use ftp_pooler_contract::{DlqRecord, TransferResult, TransferTask};
use ftp_pooler_kafka::{ClientLog, Role as KafkaRole};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};

use crate::tracker::{Limits, Out, Tracker};

mod links;
mod probe;

use links::{reload, TransferLink};
use probe::probe_loop;

/// A job that kills its worker this many times becomes a failure result.
pub const POISON_LIMIT: u32 = 3;
/// Backlogged messages of one partition before it is paused. A paused partition is
/// resumed when half of that is left; messages flow again 0.5-0.8 s after a resume
/// (measured against Tansu), so what is left must last that long at full speed: with 512
/// (resumed at 128) the workers sat idle for half a second at every pause, which cost a
/// 2,000-file run nearly half its throughput (docs/BENCHMARKS.md). A tracked message is
/// its parsed task, a few hundred bytes (paths are at most 4 KiB).
const PARTITION_BACKLOG: usize = 2048;
/// Messages tracked at once, at least (the pod bound is also twice its sessions); resumed
/// at half, for the same reason as [`PARTITION_BACKLOG`].
const MIN_POD_TRACKED: usize = 4096;
/// Bytes of tracked messages (their text: paths, ids, and the values of DLQ records)
/// before every partition is paused; resumed at half. Ordinary tasks never come near it
/// (4,096 of them hold about 2 MiB); a run of multi-MiB malformed messages does.
const POD_TRACKED_BYTES: usize = 64 * 1024 * 1024;
/// How often the commit point is committed while running.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long the consumer waits, before reading anything, for publish to hand over what
/// it delivered (a connect and a few frames: milliseconds when publish runs). Past it
/// (publish down too), reading starts anyway: at worst those messages run again.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest: Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("ingest: channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("ingest: consumer thread: {0}")]
    Thread(String),
}

/// Where tracker output goes: the link queues.
struct Outlets {
    transfers: RwLock<HashMap<String, mpsc::UnboundedSender<IngestToTransfer>>>,
    publish: mpsc::UnboundedSender<IngestToPublish>,
}

impl Outlets {
    /// Must be called with the tracker locked (see `ftp_pooler_channel::link`).
    fn send(&self, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::Transfer(conn, job) => {
                    if let Some(tx) = self.transfers.read().expect("outlets").get(&conn) {
                        let _ = tx.send(IngestToTransfer::Job(job));
                    }
                }
                Out::Publish(item) => {
                    let _ = self.publish.send(IngestToPublish::Publish(Box::new(item)));
                }
            }
        }
    }
}

struct Shared {
    tracker: Arc<Mutex<Tracker>>,
    /// Signalled on every ack (waiters: revoke and drain).
    acked: Condvar,
    outlets: Outlets,
    topic: String,
    /// The settings recall's own clients are made from (issue 18).
    kafka: ftp_pooler_config::KafkaSettings,
    revoke_wait: Duration,
    /// The connections tasks are routed by (replaced on reload).
    registry: RwLock<Registry>,
    /// Connections removed by a reload whose worker has not stopped yet (watched by
    /// [`TransferLink::retire`]).
    retiring: watch::Sender<std::collections::HashSet<String>>,
    /// Set once the final drain is over: a revoke while closing does not wait again.
    closing: AtomicBool,
    /// Publish handed over what it knows done (see [`HANDOVER_WAIT`]).
    handed_over: AtomicBool,
    stats: Mutex<IngestDetail>,
    metrics: IngestMetrics,
}

/// `ftp_kafka_messages_received_total`, `ftp_kafka_consumer_lag`, `ftp_committed_offset`.
struct IngestMetrics {
    registry: prometheus::Registry,
    received: prometheus::IntCounter,
    already_done: prometheus::IntCounter,
    lag: prometheus::IntGauge,
    committed: prometheus::IntGaugeVec,
}

impl IngestMetrics {
    fn new() -> IngestMetrics {
        use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
        let m = IngestMetrics {
            registry: prometheus::Registry::new(),
            received: IntCounter::new(
                "ftp_kafka_messages_received_total",
                "Total Kafka messages received",
            )
            .expect("a valid metric"),
            already_done: IntCounter::new(
                "ftp_tasks_already_done_total",
                "Task messages read again whose outcome was already in Kafka: skipped, not run again",
            )
            .expect("a valid metric"),
            lag: IntGauge::new("ftp_kafka_consumer_lag", "Kafka consumer lag")
                .expect("a valid metric"),
            committed: IntGaugeVec::new(
                Opts::new(
                    "ftp_committed_offset",
                    "Last committed offset of the task topic, per partition",
                ),
                &["topic", "partition"],
            )
            .expect("a valid metric"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 4] = [
            Box::new(m.received.clone()),
            Box::new(m.already_done.clone()),
            Box::new(m.lag.clone()),
            Box::new(m.committed.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("unique");
        }
        m
    }
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Tracker) -> (Vec<Out>, T)) -> T {
        let mut t = self.tracker.lock().expect("tracker");
        let (outs, v) = f(&mut t);
        self.outlets.send(outs);
        v
    }

    /// Waits until `done(tracker)` or the deadline; true if done.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&Tracker) -> bool) -> bool {
        let mut t = self.tracker.lock().expect("tracker");
        loop {
            if done(&t) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            t = self.acked.wait_timeout(t, step).expect("tracker").0;
        }
    }

    /// Commits the commit points (of `only` these partitions); false if the commit failed.
    fn commit(&self, consumer: &BaseConsumer<IngestContext>, only: Option<&[i32]>) -> bool {
        let points = {
            let t = self.tracker.lock().expect("tracker");
            let mut points = t.commit_points();
            if let Some(parts) = only {
                points.retain(|p, _| parts.contains(p));
            }
            points
        };
        if points.is_empty() {
            return true;
        }
        match crate::commit(consumer, &self.topic, &points) {
            Ok(()) => {
                tracing::debug!(?points, "committed");
                let mut t = self.tracker.lock().expect("tracker");
                t.committed(&points);
                // Under the tracker's lock, as every link message (see `run_link`).
                let _ = self
                    .outlets
                    .publish
                    .send(IngestToPublish::Committed(points.clone()));
                drop(t);
                let mut stats = self.stats.lock().expect("stats");
                for (p, o) in &points {
                    stats.committed.insert(*p, *o);
                    self.metrics
                        .committed
                        .with_label_values(&[self.topic.as_str(), &p.to_string()])
                        .set(*o);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, ?points, "commit failed; will retry");
                false
            }
        }
    }
}

/// The consumer's context: rebalance handling, librdkafka's logs and errors.
struct IngestContext {
    shared: Arc<Shared>,
    log: ClientLog,
}

impl ClientContext for IngestContext {
    ftp_pooler_kafka::forward_client_log!(log);
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions_of(tpl, &self.shared.topic);
                tracing::info!(
                    ?parts,
                    "partitions revoked: finishing their messages in flight"
                );
                self.shared.with(|t| {
                    t.revoke(&parts);
                    (Vec::new(), ())
                });
                let deadline = if self.shared.closing.load(Ordering::SeqCst) {
                    Instant::now()
                } else {
                    Instant::now() + self.shared.revoke_wait
                };
                let done = self
                    .shared
                    .wait_until(deadline, |t| t.in_flight(&parts) == 0);
                if !done {
                    tracing::warn!(?parts, "revoke: deadline reached with messages in flight; the next owner re-reads from the first unfinished one");
                }
                let park = !self.shared.commit(consumer, Some(&parts));
                if park {
                    tracing::warn!(
                        ?parts,
                        "revoke: final commit failed; keeping the done prefix to skip and commit if the partitions come back"
                    );
                }
                self.shared.with(|t| (t.forget(&parts, park), ()));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = partitions_of(tpl, &self.shared.topic);
            tracing::info!(?parts, "partitions assigned");
            // A partition paused before a revoke may come back still paused in librdkafka;
            // the tracker starts it fresh (not paused), so make librdkafka agree.
            if !parts.is_empty() {
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "resume after assign failed");
                }
            }
            self.shared.with(|t| {
                t.assigned(&parts);
                (Vec::new(), ())
            });
            self.recall(&parts);
        }
    }
}

impl IngestContext {
    /// Before any message of newly assigned `parts` is handled: what the result topics say
    /// is done above their commit points (issue 18) is learnt, so it is not run again.
    fn recall(&self, parts: &[i32]) {
        if parts.is_empty() || !self.shared.kafka.recall {
            return;
        }
        match ftp_pooler_kafka::recall::read::recall(&self.shared.kafka, parts) {
            Ok((facts, report)) => {
                tracing::info!(
                    ?parts,
                    records = report.records,
                    facts = report.facts,
                    partitions = report.partitions,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    bounded = report.bounded,
                    "recall: done tasks above the commit points learnt from the result topics"
                );
                // Where the group stands now: a partition parked here before (its final
                // commit failed) must not commit below what its owner since committed.
                self.shared.with(|t| {
                    t.committed(&report.committed);
                    (Vec::new(), ())
                });
                for (p, done) in facts.0 {
                    self.shared.with(|t| (t.learn_done(p, &done), ()));
                }
            }
            Err(e) => tracing::warn!(
                ?parts, error = %e,
                "recall failed: tasks done above the commit points will run again"
            ),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

/// Jobs dispatched to a worker at once: enough queued behind its sessions that a
/// session never waits for ingest's refill round trip (which crosses two processes), and
/// the worker's job slots (eight per session) stay full.
fn window_for(sessions: u64) -> usize {
    (16 * sessions as usize).max(32)
}

/// Runs the stage until asked to stop, on the configuration in force that `supervisor`
/// received; a new one from it (a reload) is applied with [`reload`].
pub async fn run(supervisor: SupervisorLink, paths: RuntimePaths) -> Result<(), IngestError> {
    let mut configs = supervisor.config_changes();
    let config: Config = configs.borrow_and_update().config.clone();
    let supervisor = Arc::new(supervisor);
    let generation = loop {
        let g = fastrand::u64(..);
        if g != 0 {
            break g;
        }
    };
    // SIGHUP is ignored (reloads come from the supervisor): its default action would end
    // the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    let settings = &config.settings;
    let drain = Duration::from_secs(settings.shutdown.drain_timeout_seconds);

    // Bounds: eight jobs per session a worker may open (its share of the pod budget); the
    // pod bound twice the pod's sessions, and at least MIN_POD_TRACKED.
    let pod_sessions = settings.pool.max_sessions_per_pod.max(1) as usize;
    let window: HashMap<String, usize> =
        ftp_pooler_config::session_budget(settings, &config.registry)
            .into_iter()
            .map(|(id, sessions)| (id, window_for(sessions)))
            .collect();
    let limits = Limits {
        window,
        default_window: 2,
        pod: (2 * pod_sessions).max(MIN_POD_TRACKED),
        partition_backlog: PARTITION_BACKLOG,
        pod_bytes: POD_TRACKED_BYTES,
    };
    let tracker = Arc::new(Mutex::new(Tracker::new(generation, limits, POISON_LIMIT)));

    let hello = Hello {
        name: "ingest".into(),
        pid: std::process::id(),
        generation,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (publish_tx, publish_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        tracker: tracker.clone(),
        acked: Condvar::new(),
        outlets: Outlets {
            transfers: RwLock::new(HashMap::new()),
            publish: publish_tx,
        },
        topic: settings.kafka.input_topic.clone(),
        kafka: settings.kafka.clone(),
        revoke_wait: drain,
        registry: RwLock::new(config.registry.clone()),
        retiring: watch::Sender::new(Default::default()),
        closing: AtomicBool::new(false),
        handed_over: AtomicBool::new(false),
        stats: Mutex::new(IngestDetail::default()),
        metrics: IngestMetrics::new(),
    });

    let mut links = Vec::new();
    let mut transfer_links: HashMap<String, TransferLink> = HashMap::new();
    for (conn, _) in config.registry.servers() {
        transfer_links.insert(
            conn.to_string(),
            TransferLink::spawn(&shared, &paths, &hello, conn),
        );
    }
    {
        let sh = shared.clone();
        links.push(tokio::spawn(run_link(
            LinkSpec {
                path: paths.publish(),
                me: Role::Ingest,
                peer: Role::Publish,
                hello: hello.clone(),
                pace: PIPELINE_PACE,
            },
            tracker.clone(),
            publish_rx,
            |t: &mut Tracker| {
                let done = IngestToPublish::Done(t.done_above_commit());
                std::iter::once(done)
                    .chain(
                        t.pending_for_publish()
                            .into_iter()
                            .map(|item| IngestToPublish::Publish(Box::new(item))),
                    )
                    .collect()
            },
            move |ev: LinkEvent<FromPublish>| match ev {
                LinkEvent::Received(FromPublish::Acked(id)) => {
                    sh.with(|t| (t.ack(id), ()));
                    sh.acked.notify_all();
                }
                LinkEvent::Received(FromPublish::Done(done)) => {
                    let known: u64 = done.values().map(|s| s.count()).sum();
                    tracing::info!(known, "publish says these are done already");
                    sh.with(|t| {
                        let outs = done
                            .iter()
                            .flat_map(|(&p, set)| t.learn_done(p, set))
                            .collect();
                        (outs, ())
                    });
                    sh.acked.notify_all();
                }
                LinkEvent::Received(FromPublish::HandedOver) => {
                    sh.handed_over.store(true, Ordering::SeqCst);
                }
                LinkEvent::Connected => tracing::info!("connected to publish"),
                LinkEvent::Lost => {
                    tracing::warn!("lost publish; results and DLQ records will be re-sent")
                }
            },
            |_: &[IngestToPublish]| {},
            stop_rx.clone(),
        )));
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = oneshot::channel();
    let consumer_thread = {
        let shared = shared.clone();
        let stopping = stopping.clone();
        let kafka = settings.kafka.clone();
        std::thread::Builder::new()
            .name("ingest-consumer".into())
            .spawn(move || consume(shared, kafka, generation, stopping, drain, ready_tx))
            .map_err(|e| IngestError::Thread(e.to_string()))?
    };
    {
        let shared = shared.clone();
        let stopping = stopping.clone();
        let kafka = settings.kafka.clone();
        // Not joined: a probe may be in a request when the stage stops.
        std::thread::Builder::new()
            .name("ingest-probe".into())
            .spawn(move || probe_loop(shared, kafka, stopping))
            .map_err(|e| IngestError::Thread(e.to_string()))?;
    }
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(IngestError::Thread("consumer thread died at start".into())),
    }
    supervisor.ready().await?;
    tracing::info!(
        generation = format!("{generation:x}"),
        group_instance_id = ?ftp_pooler_kafka::group_instance_id(&settings.kafka),
        "ingest ready"
    );
    let reporter = {
        let shared = shared.clone();
        supervisor.spawn_reports(Duration::from_secs(1), move || report(&shared))
    };

    let shutdown = supervisor.shutdown_requested();
    tokio::pin!(shutdown);
    let why = loop {
        tokio::select! {
            why = &mut shutdown => break why,
            _ = hup.recv() => {}
            Ok(()) = configs.changed() => {
                let new = configs.borrow_and_update().clone();
                reload(&shared, &new.config, &paths, &hello, &mut transfer_links);
            }
        }
    };
    tracing::info!(
        reason = why,
        "stopping: no more fetching, draining in-flight messages"
    );
    stopping.store(true, Ordering::SeqCst);
    let joined = tokio::task::spawn_blocking(move || consumer_thread.join()).await;
    let _ = stop_tx.send(true);
    reporter.abort();
    for (_, l) in transfer_links {
        l.stop();
        let _ = l.task.await;
    }
    for l in links {
        let _ = l.await;
    }
    match joined {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
        _ => Err(IngestError::Thread("consumer thread panicked".into())),
    }
}

/// The consumer thread: poll, track, dispatch, pause/resume, commit; drain on stop.
fn consume(
    shared: Arc<Shared>,
    kafka: ftp_pooler_config::KafkaSettings,
    generation: u64,
    stopping: Arc<AtomicBool>,
    drain: Duration,
    ready: oneshot::Sender<Result<(), IngestError>>,
) {
    let consumer: BaseConsumer<IngestContext> = match crate::consumer_config(&kafka)
        .create_with_context(IngestContext {
            shared: shared.clone(),
            log: ClientLog::new(KafkaRole::Ingest),
        }) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[kafka.input_topic.as_str()]) {
        let _ = ready.send(Err(e.into()));
        return;
    }
    let _ = ready.send(Ok(()));
    let gate = Instant::now() + HANDOVER_WAIT;
    while !shared.handed_over.load(Ordering::SeqCst)
        && Instant::now() < gate
        && !stopping.load(Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !shared.handed_over.load(Ordering::SeqCst) {
        tracing::warn!(
            "publish has not said what it delivered; messages it knows done may run again"
        );
    }
    let mut last_commit = Instant::now();
    while !stopping.load(Ordering::SeqCst) {
        let (pause, resume, tracked) = {
            let mut t = shared.tracker.lock().expect("tracker");
            let (pause, resume) = t.update_pauses();
            (pause, resume, t.len())
        };
        flow(&consumer, &kafka.input_topic, &pause, true, tracked);
        flow(&consumer, &kafka.input_topic, &resume, false, tracked);
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(msg)) => handle(&shared, &kafka, generation, &msg),
            // Throttled: a broker that refuses the client answers every poll with one.
            Some(Err(e)) => {
                consumer.context().log.error(&e, "consumer poll");
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    // E.g. fenced: another consumer of the group has this group.instance.id.
                    // The consumer can do nothing more; a new process can (or the
                    // supervisor gives up, visibly, if it is fenced at every start).
                    tracing::error!(?code, reason, "the Kafka consumer failed for good (a fenced static member: give each instance its own group.instance.id); ingest exits");
                    std::process::exit(1);
                }
            }
            None => {}
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            let _ = shared.commit(&consumer, None);
            last_commit = Instant::now();
        }
    }
    let tracked = shared.tracker.lock().expect("tracker").len();
    tracing::info!(tracked, "draining");
    let deadline = Instant::now() + drain;
    if !shared.wait_until(deadline, |t| t.is_empty()) {
        let left = shared.tracker.lock().expect("tracker").len();
        tracing::warn!(
            left,
            "drain deadline reached; uncommitted messages will be redelivered"
        );
    }
    let _ = shared.commit(&consumer, None);
    shared.closing.store(true, Ordering::SeqCst);
    consumer.unsubscribe();
    drop(consumer);
}

fn report(shared: &Shared) -> StageReport {
    let (tracked, paused, skipped) = {
        let t = shared.tracker.lock().expect("tracker");
        (t.len() as u64, t.paused() as u64, t.skipped())
    };
    let counted = shared.metrics.already_done.get();
    shared
        .metrics
        .already_done
        .inc_by(skipped.saturating_sub(counted));
    let mut detail = shared.stats.lock().expect("stats").clone();
    detail.connections = shared
        .registry
        .read()
        .expect("registry")
        .servers()
        .map(|(id, _)| id.to_string())
        .collect();
    detail.tracked = tracked;
    detail.paused_partitions = paused;
    detail.tasks_received = shared.metrics.received.get();
    StageReport {
        detail: StageDetail::Ingest(detail),
        metrics: prometheus::TextEncoder::new()
            .encode_to_string(&shared.metrics.registry.gather())
            .unwrap_or_default(),
    }
}

fn flow(
    consumer: &BaseConsumer<IngestContext>,
    topic: &str,
    parts: &[i32],
    pause: bool,
    tracked: usize,
) {
    if parts.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition(topic, p);
    }
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match r {
        Ok(()) if pause => tracing::info!(?parts, tracked, "partitions paused (in-flight bound)"),
        Ok(()) => tracing::info!(?parts, tracked, "partitions resumed"),
        Err(e) => tracing::warn!(error = %e, ?parts, pause, "pause/resume failed"),
    }
}

/// One message: a job, a failure result, or a DLQ record.
fn handle(
    shared: &Shared,
    kafka: &ftp_pooler_config::KafkaSettings,
    generation: u64,
    msg: &BorrowedMessage<'_>,
) {
    let id = MessageId {
        generation,
        partition: msg.partition(),
        offset: msg.offset(),
    };
    shared.metrics.received.inc();
    let enqueued_at = msg.timestamp().to_millis().map(EnqueuedAt);
    match TransferTask::parse(msg.payload()) {
        Err(invalid) => {
            shared.stats.lock().expect("stats").parse_errors += 1;
            tracing::warn!(record = %id, error = %invalid, "malformed message: to the DLQ");
            let record = DlqRecord::new(
                &kafka.input_topic,
                id.partition,
                id.offset,
                msg.key(),
                msg.payload(),
                &invalid,
            );
            let mut item = ToPublish::Dlq {
                id,
                record,
                key: msg.key().map(<[u8]>::to_vec),
            };
            if item.fit_in_frame() {
                tracing::error!(record = %id, "DLQ value too large for a channel frame: cut");
            }
            shared.with(|t| (t.track_direct(item), ()));
        }
        Ok(task) => {
            match crate::route::resolve(&task, &shared.registry.read().expect("registry")) {
                Err(e) => {
                    shared.stats.lock().expect("stats").invalid_tasks += 1;
                    tracing::info!(task_id = %task.task_id, error = %e, "invalid task: failure result");
                    let result = TransferResult::failure(&task, e.code, e.message, 0, 0);
                    let mut item = ToPublish::Result {
                        id,
                        result,
                        direction: None,
                        enqueued_at,
                    };
                    if item.fit_in_frame() {
                        tracing::error!(task_id = %task.task_id, record = %id, "result too large for a channel frame: cut");
                    }
                    shared.with(|t| (t.track_direct(item), ()));
                }
                Ok(route) => {
                    let conn = route.remote_id.clone();
                    tracing::info!(
                        task_id = %task.task_id,
                        record = %id,
                        connection = %conn,
                        direction = route.direction.as_str(),
                        "task received"
                    );
                    shared.with(|t| {
                        let job = Job {
                            id,
                            task,
                            route,
                            suspect: false,
                            enqueued_at,
                        };
                        (t.track_job(&conn, job), ())
                    });
                }
            }
        }
    }
}
