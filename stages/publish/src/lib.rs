//! ftp-pooler-publish: the publish stage's room, the Kafka producer.
//!
//! Owns the producer of results and DLQ records. Invariants: acks=all and idempotence on
//! (pinned in the config crate); a send completes only when Kafka has acknowledged the
//! record (its delivery report), and only then may the stage ack the task's offset back to
//! ingest. Successes go to `kafka.result_topic`, failures to `kafka.fail_topic`, both keyed
//! by task_id; malformed messages to `kafka.dlq_topic` under their original key.

pub mod stage;

use std::time::Duration;

use ftp_pooler_config::KafkaSettings;
use ftp_pooler_contract::{DlqRecord, TransferResult};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// Where a record landed: (partition, offset), from the broker's acknowledgement.
pub type Delivered = (i32, i64);

/// librdkafka configuration of the result producer.
pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in kafka.producer_properties() {
        config.set(k, v);
    }
    config
}

pub struct Publisher {
    producer: FutureProducer,
    result_topic: String,
    fail_topic: String,
    dlq_topic: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaSettings) -> Result<Publisher, KafkaError> {
        Ok(Publisher {
            producer: producer_config(kafka).create()?,
            result_topic: kafka.result_topic.clone(),
            fail_topic: kafka.fail_topic.clone(),
            dlq_topic: kafka.dlq_topic.clone(),
        })
    }

    /// Sends one record and waits for Kafka's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<Delivered, KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = self
            .producer
            .send(record, Timeout::Never)
            .await
            .map_err(|(e, _)| e)?;
        Ok((delivery.partition, delivery.offset))
    }

    /// The topic a result belongs on.
    pub fn topic_for(&self, result: &TransferResult) -> &str {
        if result.is_success() {
            &self.result_topic
        } else {
            &self.fail_topic
        }
    }

    /// Publishes a result (keyed by task_id) and waits for the acknowledgement.
    pub async fn publish_result(&self, result: &TransferResult) -> Result<Delivered, KafkaError> {
        self.send(
            self.topic_for(result),
            Some(result.task_id.as_bytes()),
            &result.to_json(),
        )
        .await
    }

    /// Publishes a DLQ record under the original message's key.
    pub async fn publish_dlq(
        &self,
        record: &DlqRecord,
        original_key: Option<&[u8]>,
    ) -> Result<Delivered, KafkaError> {
        self.send(&self.dlq_topic, original_key, &record.to_json())
            .await
    }

    /// True when the cluster answers a metadata request within `limit` (blocking).
    pub fn broker_reachable(&self, limit: Duration) -> bool {
        self.producer.client().fetch_metadata(None, limit).is_ok()
    }

    /// Waits for every outstanding record to be acknowledged.
    pub fn flush(&self, limit: Duration) -> Result<(), KafkaError> {
        self.producer.flush(limit)
    }
}
