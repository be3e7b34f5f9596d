//! The broker probe of the ingest stage: its own client (never subscribed) on its own
//! thread, which checks the broker's reachability and each partition's lag for `/ready`,
//! `/stages` and `ftp_kafka_consumer_lag`. Invariant: nothing it does waits on, or holds
//! up, the consumer thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftp_pooler_kafka::{ClientLog, Role as KafkaRole};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::ClientContext;

use super::Shared;

/// The probe's context: librdkafka's logs and errors, and what they say about the broker.
struct ProbeContext {
    log: ClientLog,
}

impl ClientContext for ProbeContext {
    ftp_pooler_kafka::forward_client_log!(log);
}

impl ConsumerContext for ProbeContext {}

/// The probe thread: [`probe`] every 5 s, every second while the broker is unreachable,
/// until the stage stops. It has a client of its own (never subscribed), so its requests
/// never hold up the consumer thread: they are slow on some brokers (Tansu answers a
/// watermark request in about 300 ms), and on the consumer thread they stalled every
/// task for that long every 5 s (`docs/BENCHMARKS.md`).
pub(super) fn probe_loop(
    shared: Arc<Shared>,
    kafka: ftp_pooler_config::KafkaSettings,
    stopping: Arc<AtomicBool>,
) {
    let client: BaseConsumer<ProbeContext> = match ftp_pooler_kafka::client_config(
        &kafka,
        KafkaRole::Probe,
    )
    .create_with_context(ProbeContext {
        log: ClientLog::new(KafkaRole::Probe),
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the broker probe has no client; /ready and lag stay as they are");
            return;
        }
    };
    while !stopping.load(Ordering::SeqCst) {
        probe(&shared, &client, &kafka.input_topic);
        let every = if shared.stats.lock().expect("stats").broker_up {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(1)
        };
        let until = Instant::now() + every;
        while Instant::now() < until && !stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Broker reachability (a metadata request) and the lag of each tracked partition
/// (high watermark minus committed offset).
fn probe(shared: &Shared, consumer: &BaseConsumer<ProbeContext>, topic: &str) {
    // Serves the client's queued events (errors, logs) to its context: a client that is
    // never subscribed gets no other poll. A poll with a timeout serves every event that
    // arrives until it expires (with no timeout it returns after the first log event).
    let _ = consumer.poll(Duration::from_millis(20));
    let up = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(2))
        .is_ok();
    let problem = if up {
        consumer.context().log.clear();
        None
    } else {
        consumer.context().log.problem()
    };
    let committed = shared.stats.lock().expect("stats").committed.clone();
    let mut lag = std::collections::BTreeMap::new();
    if up {
        for (&p, &c) in &committed {
            if let Ok((_, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(1)) {
                lag.insert(p, (high - c).max(0));
            }
        }
    }
    shared.metrics.lag.set(lag.values().sum());
    let mut stats = shared.stats.lock().expect("stats");
    if stats.broker_up != up {
        if up {
            tracing::info!("broker reachable");
        } else {
            tracing::warn!("broker not reachable");
        }
    }
    stats.broker_up = up;
    stats.broker_problem = problem;
    if up {
        stats.lag_by_partition = lag;
    }
}
