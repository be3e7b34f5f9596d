//! ftp-pooler-ingest: the ingest stage's room, the Kafka consumer.
//!
//! Owns the consumer of `kafka.input_topic` in group `kafka.consumer_group`, and the
//! routing of tasks through the connection registry ([`route`]), and what a new owner of
//! a partition learns from the result topics on assignment ([`recall`]). Invariants:
//! auto commit and auto offset store are off (pinned in the config crate), so an offset
//! is committed only by [`commit`], which the stage calls with the end of each partition's
//! contiguous prefix of published results.

pub mod route;
pub mod stage;
pub mod tracker;

use std::collections::BTreeMap;

use ftp_pooler_config::KafkaSettings;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// librdkafka configuration of the task consumer.
pub fn consumer_config(kafka: &KafkaSettings) -> ClientConfig {
    ftp_pooler_kafka::client_config(kafka, ftp_pooler_kafka::Role::Ingest)
}

/// A consumer subscribed to the input topic.
pub fn subscribe(kafka: &KafkaSettings) -> KafkaResult<StreamConsumer> {
    let consumer: StreamConsumer = consumer_config(kafka).create()?;
    consumer.subscribe(&[kafka.input_topic.as_str()])?;
    Ok(consumer)
}

/// Commits, synchronously, `next_offset` (the first offset *not* yet done) for each
/// partition of `topic`.
pub fn commit<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    next_offsets: &BTreeMap<i32, i64>,
) -> KafkaResult<()> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (&partition, &offset) in next_offsets {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&list, CommitMode::Sync)
}

pub use ftp_pooler_kafka::committed;
