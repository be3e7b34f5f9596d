//! The publish stage process (`ftp-pooler stage publish`).
//!
//! Listens for ingest and transfer workers; writes every result and DLQ record it gets to
//! Kafka; confirms each one only after Kafka has acknowledged it (acks=all):
//! `Acked(id)` to the ingest of that id's generation (the message is complete; its offset
//! may be committed) and, once that ack is written, to the worker that sent the result
//! (it drops its copy).
//! Invariants:
//! - nothing is acknowledged before its delivery report; a failed delivery is retried
//!   with backoff, never acknowledged;
//! - a record Kafka refuses as too large (over `message.max.bytes` of the producer or the
//!   broker) is cut once, visibly ([`ToPublish::shrink`]: `truncated` fields, the full
//!   size and digest), counted in `ftp_publish_truncated_total`, and sent again: one
//!   oversized task must not stall its partition;
//! - every ack goes to the connected ingest, whichever generation read the message (the
//!   outcome is a fact about the Kafka message); a worker is acked only after ingest's ack
//!   is in ingest's socket ([`Peers::route_ack`]); acks while no ingest is connected wait
//!   for the next one;
//! - the [`Ledger`] keeps what was delivered until ingest reports a commit past it; an
//!   ingest that connects gets the ledger (`Done`), the waiting acks, then `HandedOver`,
//!   before anything else, so a restarted ingest skips what is already in Kafka;
//! - at start, before the first send, publish reads the result topics' last
//!   [`RECALL_WINDOW`] for records answering this group's tasks
//!   ([`ftp_pooler_kafka::recall::read::recall_recent`]) into the ledger: what a killed
//!   predecessor had delivered without acking it is not sent a second time when its
//!   senders send it again (waited for at most [`RECALL_WAIT`]);
//! - on stop: no new connections, deliveries in flight get the drain deadline, then the
//!   producer is flushed;
//! - acks to a peer go through the channel's paced writer ([`PacedWriter`],
//!   [`PIPELINE_PACE`]): under load one write carries every ack that came meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::borrow::Cow;

use ftp_pooler_channel::{
    accept_peer, accept_until, bind, ChannelError, FromPublish, IngestToPublish, MessageId,
    OffsetSet, Outgoing, PacedWriter, PublishDetail, Receiver, Role, RuntimePaths, StageDetail,
    StageReport, SupervisorLink, ToPublish, PIPELINE_PACE,
};
use ftp_pooler_config::Config;
use std::collections::BTreeMap;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use crate::ledger::Ledger;
use crate::metrics::PublishMetrics;
use crate::Publisher;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publish: cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("publish: channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("publish: {0}")]
    Io(#[from] std::io::Error),
}

/// A frame on its way to a peer: an ack, with (`then_ack`) the transfer worker to ack
/// once it is written (see [`Peers::route_ack`]); or a handover frame to a new ingest.
enum Ack {
    Ack {
        ack: MessageId,
        then_ack: Option<String>,
    },
    Handover(FromPublish),
}

impl Ack {
    fn to(ack: MessageId, then_ack: Option<String>) -> Ack {
        Ack::Ack { ack, then_ack }
    }
}

impl Outgoing for Ack {
    type Frame = FromPublish;
    fn frame(&self) -> Cow<'_, FromPublish> {
        match self {
            Ack::Ack { ack, .. } => Cow::Owned(FromPublish::Acked(*ack)),
            Ack::Handover(f) => Cow::Borrowed(f),
        }
    }
}

/// What a peer sends: ingest's [`IngestToPublish`] and a worker's [`ToPublish`] as one.
enum Incoming {
    Item(Box<ToPublish>),
    Committed(BTreeMap<i32, i64>),
    Done(BTreeMap<i32, OffsetSet>),
}

/// The reading half of a peer's connection, by role.
enum PeerReader {
    Ingest(Receiver<IngestToPublish>),
    Transfer(Receiver<ToPublish>),
}

impl PeerReader {
    async fn recv(&mut self) -> Result<Option<Incoming>, ChannelError> {
        Ok(match self {
            PeerReader::Ingest(r) => r.recv().await?.map(|m| match m {
                IngestToPublish::Publish(item) => Incoming::Item(item),
                IngestToPublish::Committed(points) => Incoming::Committed(points),
                IngestToPublish::Done(done) => Incoming::Done(done),
            }),
            PeerReader::Transfer(r) => r.recv().await?.map(|item| Incoming::Item(Box::new(item))),
        })
    }
}

#[derive(Default)]
struct Peers {
    /// The connected ingest: its connection number and outbox.
    ingest: Option<(u64, mpsc::UnboundedSender<Ack>)>,
    /// Acks produced while no ingest was connected, with the worker each result came from.
    pending_acks: Vec<(MessageId, Option<String>)>,
    /// Connected transfer workers by name (a newer connection replaces an older one).
    transfers: HashMap<String, (u64, mpsc::UnboundedSender<Ack>)>,
    next_conn: u64,
    ledger: Ledger,
}

impl Peers {
    /// Sends the ack of a delivered item: to ingest and then, once that ack is written to
    /// ingest's socket, to the worker the result came from (`origin`). The order matters:
    /// the worker forgets its copy on its ack, and ingest never re-sends a job's result,
    /// so a crash of this process must never leave the worker acked and ingest not (the
    /// message would stay uncommitted for good). Every generation's ack goes to the
    /// connected ingest (a restarted one completes, or skips, the same message); without
    /// a connected ingest the ack waits in `pending_acks`.
    fn route_ack(&mut self, id: MessageId, origin: Option<String>) {
        match &self.ingest {
            Some((_, tx)) => {
                let _ = tx.send(Ack::to(id, origin));
            }
            None => self.pending_acks.push((id, origin)),
        }
    }

    fn ack_worker(&self, id: MessageId, origin: Option<String>) {
        if let Some((_, tx)) = origin.and_then(|name| self.transfers.get(&name)) {
            let _ = tx.send(Ack::to(id, None));
        }
    }

    /// An ingest connected: it gets the ledger, one frame per partition, the acks that
    /// waited for it, and `HandedOver`, before any other frame.
    fn ingest_connected(&mut self, conn: u64, tx: mpsc::UnboundedSender<Ack>) {
        for (p, set) in self.ledger.snapshot() {
            let _ = tx.send(Ack::Handover(FromPublish::Done(BTreeMap::from([(p, set)]))));
        }
        self.ingest = Some((conn, tx.clone()));
        for (id, origin) in std::mem::take(&mut self.pending_acks) {
            self.route_ack(id, origin);
        }
        let _ = tx.send(Ack::Handover(FromPublish::HandedOver));
    }
}

/// How far back publish looks, at its start, for records its killed predecessor may have
/// delivered: that process died moments before this one started (a restart backoff of
/// 0.2 s by default, a few seconds after repeated crashes), and what it had in flight was
/// produced just before. Each second of window is a second of results to read.
pub const RECALL_WINDOW: Duration = Duration::from_secs(10);
/// How long deliveries wait for that read at start, at most (it takes well under a second
/// on a normal tail); past it they go, and duplicates are possible.
pub const RECALL_WAIT: Duration = Duration::from_secs(5);

struct Stage {
    publisher: Arc<Publisher>,
    peers: Mutex<Peers>,
    /// Set once the start's recall is in the ledger (or given up on).
    recalled: watch::Sender<bool>,
    /// Items received and not yet delivered (the drain waits for none).
    in_flight: watch::Sender<usize>,
    stopping: watch::Receiver<bool>,
    metrics: PublishMetrics,
    broker_up: AtomicBool,
}

/// Runs the stage until asked to stop, on the configuration in force that `supervisor`
/// received (never the files).
pub async fn run(supervisor: SupervisorLink, paths: RuntimePaths) -> Result<(), PublishError> {
    let config: Config = supervisor.config().config.clone();
    let supervisor = Arc::new(supervisor);
    let publisher = Arc::new(Publisher::new(&config.settings.kafka)?);
    let drain = Duration::from_secs(config.settings.shutdown.drain_timeout_seconds);
    let listener = bind(&paths.publish())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stage = Arc::new(Stage {
        publisher,
        peers: Mutex::new(Peers::default()),
        recalled: watch::Sender::new(false),
        in_flight: watch::Sender::new(0),
        stopping: stop_rx,
        metrics: PublishMetrics::new(),
        broker_up: AtomicBool::new(false),
    });
    supervisor.ready().await?;
    tracing::info!("publish ready");
    if config.settings.kafka.recall {
        tokio::spawn(recall_at_start(
            stage.clone(),
            config.settings.kafka.clone(),
        ));
    } else {
        stage.recalled.send_replace(true);
    }
    let prober = {
        let stage = stage.clone();
        tokio::spawn(async move {
            loop {
                let p = stage.publisher.clone();
                let up =
                    tokio::task::spawn_blocking(move || p.broker_reachable(Duration::from_secs(3)))
                        .await
                        .unwrap_or(false);
                stage.broker_up.store(up, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(if up { 5 } else { 1 })).await;
            }
        })
    };
    let reporter = {
        let stage = stage.clone();
        supervisor.spawn_reports(Duration::from_secs(1), move || report(&stage))
    };
    let why = accept_until(&listener, supervisor.shutdown_requested(), |stream| {
        tokio::spawn(serve(stage.clone(), stream));
    })
    .await;
    tracing::info!(reason = why, "stopping: delivering what is in flight");
    drop(listener);
    let mut in_flight = stage.in_flight.subscribe();
    let _ = tokio::time::timeout(drain, in_flight.wait_for(|n| *n == 0)).await;
    let _ = stop_tx.send(true);
    prober.abort();
    reporter.abort();
    let left = *stage.in_flight.borrow();
    if left > 0 {
        tracing::warn!(
            left,
            "drain deadline reached; their senders will re-send them"
        );
    }
    let flush = stage.publisher.flush(Duration::from_secs(5));
    if let Err(e) = flush {
        tracing::warn!(error = %e, "flush incomplete");
    }
    tracing::info!("stopped");
    Ok(())
}

fn report(stage: &Stage) -> StageReport {
    let m = &stage.metrics;
    let sent = |t: &str| m.sent.with_label_values(&[t]).get();
    StageReport {
        detail: StageDetail::Publish(PublishDetail {
            broker_up: stage.broker_up.load(Ordering::Relaxed),
            broker_problem: stage.publisher.broker_problem(),
            results_sent: sent("result"),
            failures_sent: sent("fail"),
            dlq_messages_sent: m.dlq.get(),
            send_errors: m.send_errors.load(Ordering::Relaxed),
            pending_count: *stage.in_flight.borrow() as u64,
        }),
        metrics: prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap_or_default(),
    }
}

async fn serve(stage: Arc<Stage>, stream: UnixStream) {
    let Some(accepted) = accept_peer(stream, Role::Publish, &[Role::Ingest, Role::Transfer]).await
    else {
        return;
    };
    let (role, hello) = (accepted.role, accepted.hello.clone());
    let (writer, mut reader) = if role == Role::Ingest {
        let (w, r) = accepted.into_conn::<FromPublish, IngestToPublish>().split();
        (w, PeerReader::Ingest(r))
    } else {
        let (w, r) = accepted.into_conn::<FromPublish, ToPublish>().split();
        (w, PeerReader::Transfer(r))
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Ack>();
    let conn = {
        let mut peers = stage.peers.lock().expect("peers");
        peers.next_conn += 1;
        let conn = peers.next_conn;
        if role == Role::Ingest {
            peers.ingest_connected(conn, tx);
        } else {
            peers.transfers.insert(hello.name.clone(), (conn, tx));
        }
        conn
    };
    tracing::info!(peer = %hello.name, peer_pid = hello.pid, "peer connected");
    let write_task = {
        let stage = stage.clone();
        tokio::spawn(async move {
            let mut writer = PacedWriter::new(writer, PIPELINE_PACE);
            // Once a write failed, every later batch comes back unwritten at once.
            while let Some(written) = writer.next(&mut rx).await {
                let (broken, batch) = match written {
                    Ok(batch) => (false, batch),
                    Err((batch, _)) => (true, batch),
                };
                let mut peers = stage.peers.lock().expect("peers");
                if broken && matches!(&peers.ingest, Some((c, _)) if *c == conn) {
                    peers.ingest = None;
                }
                for o in batch {
                    let Ack::Ack { ack, then_ack } = o else {
                        continue;
                    };
                    match (broken, then_ack) {
                        (false, then) => peers.ack_worker(ack, then),
                        // Ingest is gone before its ack was written: it waits for the
                        // next ingest, as any new ack does.
                        (true, Some(origin)) => peers.route_ack(ack, Some(origin)),
                        (true, None) => {}
                    }
                }
                drop(peers);
                if broken && role == Role::Transfer {
                    // The worker reconnects and re-sends what it still holds.
                    return;
                }
            }
        })
    };
    loop {
        match reader.recv().await {
            Ok(Some(Incoming::Committed(points))) => {
                stage.peers.lock().expect("peers").ledger.committed(&points);
            }
            Ok(Some(Incoming::Done(done))) => {
                stage.peers.lock().expect("peers").ledger.merge(&done);
            }
            Ok(Some(Incoming::Item(item))) => {
                stage.in_flight.send_modify(|n| *n += 1);
                let origin = (role == Role::Transfer).then(|| hello.name.clone());
                tokio::spawn(deliver(stage.clone(), *item, origin));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(peer = %hello.name, error = %e, "channel failed");
                break;
            }
        }
    }
    {
        let mut peers = stage.peers.lock().expect("peers");
        if role == Role::Ingest {
            if matches!(&peers.ingest, Some((c, _)) if *c == conn) {
                peers.ingest = None;
            }
        } else if matches!(peers.transfers.get(&hello.name), Some((c, _)) if *c == conn) {
            peers.transfers.remove(&hello.name);
        }
    }
    if role == Role::Ingest {
        // Its outbox is closed now: the writer hands what it could not write back to
        // `route_ack`, so no worker is acked for an ack ingest never got.
        let _ = write_task.await;
    } else {
        write_task.abort();
    }
    tracing::info!(peer = %hello.name, "peer disconnected");
}

/// Learns what the result topics' last [`RECALL_WINDOW`] answers for this group (see the
/// module's header); deliveries wait for it up to [`RECALL_WAIT`].
async fn recall_at_start(stage: Arc<Stage>, kafka: ftp_pooler_config::KafkaSettings) {
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - RECALL_WINDOW.as_millis() as i64;
    let read = tokio::task::spawn_blocking(move || {
        ftp_pooler_kafka::recall::read::recall_recent(&kafka, since_ms)
    });
    let stage2 = stage.clone();
    let merge = async move {
        match read.await {
            Ok(Ok((facts, report))) => {
                tracing::info!(
                    facts = report.facts,
                    records = report.records,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    bounded = report.bounded,
                    "recall: outcomes already in Kafka"
                );
                stage2.peers.lock().expect("peers").ledger.merge(&facts.0);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "recall failed; outcomes sent again may be duplicated")
            }
            Err(e) => tracing::warn!(error = %e, "recall failed"),
        }
        stage2.recalled.send_replace(true);
    };
    let merge = tokio::spawn(merge);
    if tokio::time::timeout(RECALL_WAIT, stage.recalled.subscribe().wait_for(|r| *r))
        .await
        .is_err()
    {
        tracing::warn!(
            "recall is slow: delivering without it; outcomes sent again may be duplicated"
        );
        stage.recalled.send_replace(true);
    }
    let _ = merge.await;
}

/// Kafka refused the record for its size (the producer's `message.max.bytes`, or the
/// broker's / topic's limit).
fn too_large(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge)
    )
}

/// Writes one item to Kafka, retrying until acknowledged (or the stage stops), then
/// confirms it to its sender and to ingest.
async fn deliver(stage: Arc<Stage>, mut item: ToPublish, origin: Option<String>) {
    let id = item.id();
    // Every event about a result names its task (DLQ records have none).
    let task_id = match &item {
        ToPublish::Result { result, .. } => Some(result.task_id.clone()),
        ToPublish::Dlq { .. } => None,
    };
    let task_id = task_id.as_deref();
    let mut pause = Duration::from_millis(100);
    if !*stage.recalled.borrow() {
        let _ = stage.recalled.subscribe().wait_for(|r| *r).await;
    }
    {
        let mut peers = stage.peers.lock().expect("peers");
        if peers.ledger.contains(id) {
            // Kafka has an outcome of this message already (delivered by a killed
            // publish, or by this one for an earlier send): a second one would be a
            // duplicate.
            stage.metrics.already.inc();
            tracing::info!(task_id, record = %id, "already in Kafka: not sent again");
            peers.route_ack(id, origin);
            drop(peers);
            stage.in_flight.send_modify(|n| *n -= 1);
            return;
        }
    }
    loop {
        let sent = match &item {
            ToPublish::Result { result, .. } => stage.publisher.publish_result(result, &id).await,
            ToPublish::Dlq { record, key, .. } => {
                stage
                    .publisher
                    .publish_dlq(record, key.as_deref(), &id)
                    .await
            }
        };
        match sent {
            Ok(_) => break,
            Err(e) if too_large(&e) && item.shrink() => {
                stage.metrics.truncated.inc();
                tracing::error!(
                    task_id, record = %id, error = %e,
                    "record over Kafka's message size limit: cut (marked truncated) and sent again"
                );
            }
            Err(e) => {
                stage.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task_id, record = %id, error = %e, "delivery failed; retrying");
                if *stage.stopping.borrow() {
                    stage.in_flight.send_modify(|n| *n -= 1);
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    match &item {
        ToPublish::Result {
            result,
            direction,
            enqueued_at,
            ..
        } => {
            tracing::info!(
                task_id,
                record = %id,
                status = if result.is_success() { "success" } else { "failed" },
                "result published"
            );
            stage
                .metrics
                .result(result, *direction, *enqueued_at, SystemTime::now())
        }
        ToPublish::Dlq { .. } => {
            tracing::info!(record = %id, "DLQ record published");
            stage.metrics.dlq()
        }
    }
    {
        let mut peers = stage.peers.lock().expect("peers");
        peers.ledger.delivered(id);
        peers.route_ack(id, origin);
    }
    stage.in_flight.send_modify(|n| *n -= 1);
}

#[cfg(test)]
mod tests {
    use super::{Ack, Peers};
    use ftp_pooler_channel::{FromPublish, MessageId};
    use tokio::sync::mpsc;

    fn id(generation: u64, offset: i64) -> MessageId {
        MessageId {
            generation,
            partition: 0,
            offset,
        }
    }

    /// What was sent, as text: `ack:<offset>[>worker]`, `done:<ranges>`, `handed-over`.
    fn drain(rx: &mut mpsc::UnboundedReceiver<Ack>) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(o) = rx.try_recv() {
            v.push(match o {
                Ack::Ack { ack, then_ack } => match then_ack {
                    Some(w) => format!("ack:{}>{w}", ack.offset),
                    None => format!("ack:{}", ack.offset),
                },
                Ack::Handover(FromPublish::Done(d)) => {
                    format!("done:{:?}", d[&0].ranges().collect::<Vec<_>>())
                }
                Ack::Handover(FromPublish::HandedOver) => "handed-over".into(),
                Ack::Handover(other) => format!("{other:?}"),
            });
        }
        v
    }

    #[test]
    fn a_worker_is_acked_after_ingest_and_a_new_ingest_gets_the_ledger_first() {
        let mut peers = Peers::default();
        let (wtx, mut wrx) = mpsc::unbounded_channel();
        peers.transfers.insert("transfer:a".into(), (1, wtx));
        let w = || Some("transfer:a".to_string());

        // Delivered while no ingest is connected: the ack waits, the worker is not told.
        for o in [1, 2, 4] {
            peers.ledger.delivered(id(7, o));
        }
        peers.route_ack(id(7, 4), w());
        assert_eq!(peers.pending_acks.len(), 1);
        assert!(drain(&mut wrx).is_empty());

        // A new ingest (another generation): the ledger, the waiting ack, then the end.
        let (itx, mut irx) = mpsc::unbounded_channel();
        peers.ingest_connected(2, itx);
        assert_eq!(
            drain(&mut irx),
            ["done:[(1, 2), (4, 4)]", "ack:4>transfer:a", "handed-over"]
        );
        assert!(
            drain(&mut wrx).is_empty(),
            "only once ingest's ack is written"
        );

        // Any generation's ack goes to ingest first, carrying the worker's.
        peers.route_ack(id(6, 3), w());
        assert_eq!(drain(&mut irx), ["ack:3>transfer:a"]);
        peers.ack_worker(id(6, 3), w());
        assert_eq!(drain(&mut wrx), ["ack:3"]);
    }
}
