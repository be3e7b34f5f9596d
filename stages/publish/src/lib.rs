//! ftp-pooler-publish: the publish stage's room, the Kafka producer.
//!
//! Owns the producer of results and DLQ records. Invariants: acks=all and idempotence on
//! (pinned in the config crate); a send completes only when Kafka has acknowledged the
//! record (its delivery report), and only then may the stage ack the task's offset back to
//! ingest. Successes go to `kafka.result_topic`, failures to `kafka.fail_topic`, both keyed
//! by task_id; malformed messages to `kafka.dlq_topic` under their original key.
//! A delivery report whose offset does not move its partition forward is not trusted
//! ([`Publisher::send`]): it comes back as an error, so publish sends the record again.
//! Every record carries headers naming the task message it answers (topic
//! `kafka.input_topic`, partition, offset, group: [`Answers`]), so a new owner of a task
//! partition can find in Kafka itself which of its tasks are done (issue 18); the JSON
//! payloads are unchanged.

pub mod ledger;
mod metrics;
pub mod stage;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ftp_pooler_channel::MessageId;
use ftp_pooler_config::KafkaSettings;
use ftp_pooler_contract::{Answers, DlqRecord, TransferResult};
use ftp_pooler_kafka::{BrokerProblem, ClientLog, Role};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

/// Where a record landed: (partition, offset), from the broker's acknowledgement.
pub type Delivered = (i32, i64);

/// Delivery reports, checked in the order librdkafka gives them (per partition, the
/// order the records were produced in) and handed to the waiting send.
struct Deliveries {
    /// The last offset delivered to each (topic, partition) by this producer.
    last: Mutex<HashMap<(String, i32), i64>>,
    log: ClientLog,
}

impl ClientContext for Deliveries {
    ftp_pooler_kafka::forward_client_log!(log);
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<Result<Delivered, KafkaError>>>;

    /// One producer's records land on a partition in order (idempotence), so each
    /// delivery's offset is above the last one there. One that is not is the broker's
    /// DUPLICATE_SEQUENCE_NUMBER answer to a batch librdkafka retried across a broker
    /// failure, which librdkafka reports as delivered with offsets counted from -1. Kafka
    /// answers so only when it has the batch; a broker that counted the sequence and then
    /// lost the batch (Tansu on S3, killed between the two: docs/RELIABILITY.md) would
    /// make it a lost result. So it is reported as an error and the record is sent again:
    /// at worst a duplicate, which a broker fault allows.
    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let out = match result {
            Ok(m) => {
                let mut last = self.last.lock().expect("offsets");
                let seen = last
                    .entry((m.topic().to_string(), m.partition()))
                    .or_insert(-1);
                if m.offset() <= *seen {
                    Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::DuplicateSequenceNumber,
                    ))
                } else {
                    *seen = m.offset();
                    Ok((m.partition(), m.offset()))
                }
            }
            Err((e, _)) => Err(e.clone()),
        };
        let _ = tx.send(out);
    }
}

pub struct Publisher {
    producer: ThreadedProducer<Deliveries>,
    result_topic: String,
    fail_topic: String,
    dlq_topic: String,
    /// The task topic and group, for the headers of every record.
    task_topic: String,
    group: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaSettings) -> Result<Publisher, KafkaError> {
        Ok(Publisher {
            producer: ftp_pooler_kafka::client_config(kafka, Role::Publish).create_with_context(
                Deliveries {
                    last: Mutex::new(HashMap::new()),
                    log: ClientLog::new(Role::Publish),
                },
            )?,
            result_topic: kafka.result_topic.clone(),
            fail_topic: kafka.fail_topic.clone(),
            dlq_topic: kafka.dlq_topic.clone(),
            task_topic: kafka.input_topic.clone(),
            group: kafka.consumer_group.clone(),
        })
    }

    /// The headers of a record answering the task message `id`.
    pub fn answer_headers(&self, id: &MessageId) -> OwnedHeaders {
        let answers = Answers {
            topic: self.task_topic.clone(),
            partition: id.partition,
            offset: id.offset,
            group: self.group.clone(),
        };
        answers
            .headers()
            .iter()
            .fold(OwnedHeaders::new_with_capacity(4), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            })
    }

    /// Sends one record answering the task message `answers` and waits for Kafka's
    /// acknowledgement (an untrusted one is an error: see [`Deliveries`]). Waits while
    /// librdkafka's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        answers: &MessageId,
    ) -> Result<Delivered, KafkaError> {
        let (tx, rx) = oneshot::channel();
        let mut opaque = Box::new(tx);
        let headers = self.answer_headers(answers);
        loop {
            let mut record = BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, opaque)
                .payload(payload)
                .headers(headers.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    opaque = record.delivery_opaque;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// The topic a result belongs on.
    pub fn topic_for(&self, result: &TransferResult) -> &str {
        if result.is_success() {
            &self.result_topic
        } else {
            &self.fail_topic
        }
    }

    /// Publishes the result (keyed by task_id) of the task message `id` and waits for
    /// the acknowledgement.
    pub async fn publish_result(
        &self,
        result: &TransferResult,
        id: &MessageId,
    ) -> Result<Delivered, KafkaError> {
        self.send(
            self.topic_for(result),
            Some(result.task_id.as_bytes()),
            &result.to_json(),
            id,
        )
        .await
    }

    /// Publishes the DLQ record of the message `id` under its original key.
    pub async fn publish_dlq(
        &self,
        record: &DlqRecord,
        original_key: Option<&[u8]>,
        id: &MessageId,
    ) -> Result<Delivered, KafkaError> {
        self.send(&self.dlq_topic, original_key, &record.to_json(), id)
            .await
    }

    /// True when the cluster answers a metadata request within `limit` (blocking).
    pub fn broker_reachable(&self, limit: Duration) -> bool {
        let up = self.producer.client().fetch_metadata(None, limit).is_ok();
        if up {
            self.producer.context().log.clear();
        }
        up
    }

    /// Why the broker is not usable, when the producer has seen why.
    pub fn broker_problem(&self) -> Option<BrokerProblem> {
        self.producer.context().log.problem()
    }

    /// Waits for every outstanding record to be acknowledged.
    pub fn flush(&self, limit: Duration) -> Result<(), KafkaError> {
        self.producer.flush(limit)
    }
}
