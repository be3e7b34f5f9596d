//! The publish stage's metrics: the Python version's task metrics, counted when Kafka
//! has acknowledged the result (so they match what was published), the Kafka ones, and
//! the end-to-end latency of each task (`ftp_task_latency_seconds{status}`: from its
//! message's Kafka timestamp, carried by [`EnqueuedAt`] through ingest and the transfer
//! worker, to its result acknowledged by Kafka, retries and redeliveries included).
//! Invariants: a result is counted once per delivery; a task without a Kafka timestamp
//! is counted but has no latency sample; `ftp_tasks_total{status}` and
//! `ftp_kafka_messages_sent_total{topic_type}` have their series from the start, at 0.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use ftp_pooler_channel::{Direction, EnqueuedAt};
use ftp_pooler_contract::TransferResult;

/// Buckets of the end-to-end latency (seconds): from a fast small transfer to a task that
/// waited an hour in a backlog.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The Python version's task metrics, counted when Kafka has the result (so they match
/// what was published), plus the Kafka ones.
pub(crate) struct PublishMetrics {
    pub registry: prometheus::Registry,
    tasks: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
    /// `ftp_task_latency_seconds{status}`: from the task's Kafka timestamp to its result
    /// acknowledged by Kafka.
    latency: prometheus::HistogramVec,
    bytes: prometheus::IntCounterVec,
    errors: prometheus::IntCounterVec,
    pub sent: prometheus::IntCounterVec,
    pub dlq: prometheus::IntCounter,
    pub truncated: prometheus::IntCounter,
    /// `ftp_publish_already_in_kafka_total`: outcomes not sent again (see the ledger).
    pub already: prometheus::IntCounter,
    pub send_errors: AtomicU64,
}

impl PublishMetrics {
    pub fn new() -> PublishMetrics {
        use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
        let m = PublishMetrics {
            registry: prometheus::Registry::new(),
            tasks: IntCounterVec::new(
                Opts::new(
                    "ftp_tasks_total",
                    "Total number of transfer tasks processed",
                ),
                &["status"],
            )
            .expect("a valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "ftp_transfer_duration_seconds",
                    "Transfer duration in seconds",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ]),
                &["direction", "status"],
            )
            .expect("a valid metric"),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "ftp_task_latency_seconds",
                    "Seconds from the task's Kafka timestamp to its result acknowledged by Kafka (end to end)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["status"],
            )
            .expect("a valid metric"),
            bytes: IntCounterVec::new(
                Opts::new("ftp_transfer_bytes_total", "Total bytes transferred"),
                &["direction"],
            )
            .expect("a valid metric"),
            errors: IntCounterVec::new(
                Opts::new("ftp_errors_total", "Total number of errors"),
                &["error_code"],
            )
            .expect("a valid metric"),
            sent: IntCounterVec::new(
                Opts::new("ftp_kafka_messages_sent_total", "Total Kafka messages sent"),
                &["topic_type"],
            )
            .expect("a valid metric"),
            dlq: IntCounter::new(
                "ftp_dlq_messages_total",
                "Malformed messages written to the DLQ",
            )
            .expect("a valid metric"),
            truncated: IntCounter::new(
                "ftp_publish_truncated_total",
                "Records cut to fit Kafka's message size limit (huge paths or DLQ values)",
            )
            .expect("a valid metric"),
            already: IntCounter::new(
                "ftp_publish_already_in_kafka_total",
                "Outcomes not sent because Kafka already had one for the same task message (sent again after a restart)",
            )
            .expect("a valid metric"),
            send_errors: AtomicU64::new(0),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(m.already.clone()),
            Box::new(m.tasks.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.bytes.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.sent.clone()),
            Box::new(m.dlq.clone()),
            Box::new(m.truncated.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("unique");
        }
        // Series that alerts take rates of exist from the start, at 0: a counter that
        // appears at its first increment loses that increment to `rate()`/`increase()`,
        // and "no results for 10 minutes" needs a series that stays at 0.
        for status in ["success", "failed"] {
            m.tasks.with_label_values(&[status]);
        }
        for topic in ["result", "fail", "dlq"] {
            m.sent.with_label_values(&[topic]);
        }
        m
    }

    /// A result Kafka acknowledged at `now`.
    pub fn result(
        &self,
        r: &TransferResult,
        direction: Option<Direction>,
        enqueued_at: Option<EnqueuedAt>,
        now: SystemTime,
    ) {
        let status = if r.is_success() { "success" } else { "failed" };
        let direction = direction.map_or("unknown", Direction::as_str);
        self.tasks.with_label_values(&[status]).inc();
        if let Some(at) = enqueued_at {
            self.latency
                .with_label_values(&[status])
                .observe(at.age(now).as_secs_f64());
        }
        self.duration
            .with_label_values(&[direction, status])
            .observe(r.duration_ms as f64 / 1000.0);
        if r.bytes_transferred > 0 {
            self.bytes
                .with_label_values(&[direction])
                .inc_by(r.bytes_transferred);
        }
        if let Some(code) = r.error_code {
            self.errors.with_label_values(&[code.as_str()]).inc();
        }
        let topic = if r.is_success() { "result" } else { "fail" };
        self.sent.with_label_values(&[topic]).inc();
    }

    pub fn dlq(&self) {
        self.dlq.inc();
        self.sent.with_label_values(&["dlq"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftp_pooler_contract::{ErrorCode, TransferTask};
    use std::time::{Duration, UNIX_EPOCH};

    fn text(m: &PublishMetrics) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap()
    }

    #[test]
    fn the_latency_runs_from_the_kafka_timestamp_to_the_acknowledgement() {
        let m = PublishMetrics::new();
        let task = TransferTask {
            task_id: "t".into(),
            src_id: "a".into(),
            src_path: "x".into(),
            dst_id: "l".into(),
            dst_path: "y".into(),
            checksum: None,
        };
        let failed = TransferResult::failure(&task, ErrorCode::FileNotFound, "550", 1, 1);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        // Enqueued 3 s before it was acknowledged.
        m.result(
            &failed,
            Some(Direction::Download),
            Some(EnqueuedAt(997_000)),
            now,
        );
        // No timestamp: counted, no latency sample.
        m.result(&failed, None, None, now);
        let t = text(&m);
        assert!(
            t.contains("ftp_task_latency_seconds_bucket{status=\"failed\",le=\"2.5\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("ftp_task_latency_seconds_bucket{status=\"failed\",le=\"5\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("ftp_task_latency_seconds_sum{status=\"failed\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("ftp_task_latency_seconds_count{status=\"failed\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("ftp_tasks_total{status=\"failed\"} 2\n"), "{t}");
        assert!(t.contains("ftp_tasks_total{status=\"success\"} 0\n"), "{t}");
        assert!(
            t.contains("ftp_kafka_messages_sent_total{topic_type=\"dlq\"} 0\n"),
            "{t}"
        );
    }
}
