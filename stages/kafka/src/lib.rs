//! ftp-pooler-kafka: the librdkafka settings of every Kafka client of the project.
//!
//! Owns, for each [`Role`] (the ingest consumer, its broker probe, its reader of the
//! result topics, the publish producer,
//! and `ftp-pooler-client`), the librdkafka configuration built from one
//! [`KafkaSettings`]: the service's own properties, a `client.id` an operator recognises
//! in broker logs and quotas, the ingest consumer's `group.instance.id` (static
//! membership, [`instance`]), then the operator's `kafka.consumer_config` or
//! `kafka.producer_config` (security, tuning). Also owns the check of those properties by
//! librdkafka itself ([`check`]), the routing of librdkafka's logs and errors into
//! tracing without floods ([`ClientLog`]), and what this build of librdkafka offers
//! ([`librdkafka`]).
//!
//! Invariants:
//! - every client of the project gets its configuration from [`client_config`], so a
//!   security setting written once reaches the consumer, the probe, the producer and the
//!   command-line client alike;
//! - the operator's properties come last and win, except the ones the delivery
//!   guarantees rest on, which the config crate refuses to let them change;
//! - only the ingest consumer is a static member: `group.instance.id` (derived, or the
//!   operator's) is never given to the probe or to `ftp-pooler-client`'s consumer, which
//!   would otherwise claim the ingest's identity in the group;
//! - nothing here prints a secret property's value (`sasl.password`, ...): problems and
//!   logs name the property only.

mod check;
pub mod instance;
mod log;
pub mod recall;

pub use check::check;
pub use ftp_pooler_channel::BrokerProblem;
pub use instance::{default_group_instance_id, ENV_INSTANCE_ID};
pub use log::{problem_of, ClientLog};
/// The librdkafka binding every client here is built with (for [`forward_client_log`]).
pub use rdkafka;

use ftp_pooler_config::{KafkaMap, KafkaSettings, GROUP_INSTANCE_ID};
use rdkafka::config::ClientConfig;

/// Who a Kafka client is, for its properties and its `client.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The ingest stage's consumer of `kafka.input_topic`.
    Ingest,
    /// Ingest's broker probe (reachability and lag for `/ready` and `/metrics`): a
    /// consumer-type client that never subscribes.
    Probe,
    /// Ingest's reader of the result topics on partition assignment (issue 18: which
    /// tasks above the commit point are done): a consumer-type client that only `assign`s,
    /// never subscribes and never commits.
    Recall,
    /// The publish stage's producer of results and DLQ records.
    Publish,
    /// `ftp-pooler-client` producing tasks.
    ClientProducer,
    /// `ftp-pooler-client` reading results (a group of its own, never the service's).
    ClientConsumer,
}

impl Role {
    /// Which of the operator's maps applies.
    pub fn map(self) -> KafkaMap {
        match self {
            Role::Ingest | Role::Probe | Role::Recall | Role::ClientConsumer => KafkaMap::Consumer,
            Role::Publish | Role::ClientProducer => KafkaMap::Producer,
        }
    }

    /// The part of `client.id` that names the role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Probe => "ingest-probe",
            Role::Recall => "ingest-recall",
            Role::Publish => "publish",
            Role::ClientProducer | Role::ClientConsumer => "client",
        }
    }
}

/// The `client.id` of `role` on this host: `ftp-pooler-<role>@<host>`, e.g.
/// `ftp-pooler-ingest@ftp-pooler-0` in a StatefulSet (the pod's name is its host name).
pub fn client_id(role: Role) -> String {
    format!("ftp-pooler-{}@{}", role.name(), host_name())
}

/// The ingest consumer's `group.instance.id`: None without `kafka.static_membership`,
/// else the operator's (`kafka.consumer_config`), else [`default_group_instance_id`].
pub fn group_instance_id(kafka: &KafkaSettings) -> Option<String> {
    kafka.static_membership.then(|| {
        kafka
            .consumer_config
            .get(GROUP_INSTANCE_ID)
            .cloned()
            .unwrap_or_else(default_group_instance_id)
    })
}

/// `$HOSTNAME` (set in every Kubernetes pod), else the kernel's host name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown-host".into())
}

/// The properties of `role`: the service's own (from the config crate, which pins the
/// ones the guarantees rest on), a default `client.id`, for the ingest consumer its
/// `group.instance.id` (with `kafka.static_membership`), then the operator's map
/// (without `group.instance.id` for any other role).
pub fn properties(kafka: &KafkaSettings, role: Role) -> Vec<(String, String)> {
    let (service, operator) = match role.map() {
        KafkaMap::Consumer => (kafka.consumer_properties(), &kafka.consumer_config),
        KafkaMap::Producer => (kafka.producer_properties(), &kafka.producer_config),
    };
    let mut props: Vec<(String, String)> = service
        .into_iter()
        .filter(|(k, _)| !operator.contains_key(k))
        .collect();
    debug_assert!(props.iter().all(|(k, _)| !operator.contains_key(k)));
    if !operator.contains_key("client.id") {
        props.push(("client.id".into(), client_id(role)));
    }
    let static_member = role == Role::Ingest && kafka.static_membership;
    if static_member && !operator.contains_key(GROUP_INSTANCE_ID) {
        props.push((GROUP_INSTANCE_ID.into(), default_group_instance_id()));
    }
    props.extend(
        operator
            .iter()
            .filter(|(k, _)| static_member || k.as_str() != GROUP_INSTANCE_ID)
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    props
}

/// The librdkafka configuration of `role`.
pub fn client_config(kafka: &KafkaSettings, role: Role) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in properties(kafka, role) {
        config.set(k, v);
    }
    config
}

/// What this build of librdkafka is and offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Librdkafka {
    /// e.g. `2.12.1`.
    pub version: String,
    /// `builtin.features`, e.g. `gzip,snappy,ssl,sasl,regex,lz4,sasl_gssapi,...`.
    pub features: String,
}

/// The linked librdkafka's version and `builtin.features`.
pub fn librdkafka() -> Librdkafka {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    Librdkafka { version, features }
}

/// The group's committed offsets for `partitions` of `topic` (None: nothing committed).
pub fn committed<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X>>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
    timeout: std::time::Duration,
) -> rdkafka::error::KafkaResult<std::collections::BTreeMap<i32, Option<i64>>> {
    let mut list = rdkafka::TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(list, timeout)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let off = match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), off)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_gets_the_operators_properties_last_and_a_client_id() {
        let mut kafka = KafkaSettings::default();
        kafka
            .consumer_config
            .insert("security.protocol".into(), "SASL_SSL".into());
        kafka
            .consumer_config
            .insert("fetch.wait.max.ms".into(), "50".into());
        kafka
            .producer_config
            .insert("client.id".into(), "mine".into());
        let ingest = properties(&kafka, Role::Ingest);
        let get = |props: &[(String, String)], k: &str| {
            props
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&ingest, "security.protocol").as_deref(),
            Some("SASL_SSL")
        );
        assert_eq!(get(&ingest, "fetch.wait.max.ms").as_deref(), Some("50"));
        assert_eq!(
            ingest
                .iter()
                .filter(|(k, _)| k == "fetch.wait.max.ms")
                .count(),
            1
        );
        assert!(get(&ingest, "client.id")
            .unwrap()
            .starts_with("ftp-pooler-ingest@"));
        assert!(get(&properties(&kafka, Role::Probe), "client.id")
            .unwrap()
            .starts_with("ftp-pooler-ingest-probe@"));
        let recall = properties(&kafka, Role::Recall);
        assert!(get(&recall, "client.id")
            .unwrap()
            .starts_with("ftp-pooler-ingest-recall@"));
        assert_eq!(
            get(&recall, "security.protocol").as_deref(),
            Some("SASL_SSL")
        );
        let publish = properties(&kafka, Role::Publish);
        assert_eq!(get(&publish, "client.id").as_deref(), Some("mine"));
        assert_eq!(get(&publish, "acks").as_deref(), Some("all"));
        assert_eq!(
            get(&publish, "security.protocol"),
            None,
            "producer_config has none"
        );
    }

    #[test]
    fn only_the_ingest_consumer_is_a_static_member() {
        let get = |props: &[(String, String)], k: &str| {
            let found: Vec<String> = props
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect();
            assert!(found.len() <= 1, "{k} set twice: {found:?}");
            found.into_iter().next()
        };
        let mut kafka = KafkaSettings::default();
        assert_eq!(
            get(&properties(&kafka, Role::Ingest), "group.instance.id"),
            Some(default_group_instance_id())
        );
        assert_eq!(group_instance_id(&kafka), Some(default_group_instance_id()));
        kafka
            .consumer_config
            .insert("group.instance.id".into(), "blue-0".into());
        assert_eq!(
            get(&properties(&kafka, Role::Ingest), "group.instance.id").as_deref(),
            Some("blue-0")
        );
        assert_eq!(group_instance_id(&kafka).as_deref(), Some("blue-0"));
        for role in [
            Role::Probe,
            Role::ClientConsumer,
            Role::Publish,
            Role::ClientProducer,
        ] {
            assert_eq!(get(&properties(&kafka, role), "group.instance.id"), None);
        }
        kafka.static_membership = false;
        kafka.consumer_config.clear();
        assert_eq!(
            get(&properties(&kafka, Role::Ingest), "group.instance.id"),
            None
        );
        assert_eq!(group_instance_id(&kafka), None);
    }

    #[test]
    fn this_build_offers_tls_sasl_and_every_codec() {
        let lib = librdkafka();
        let features: Vec<&str> = lib.features.split(',').collect();
        for want in [
            "gzip",
            "snappy",
            "lz4",
            "zstd",
            "ssl",
            "sasl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "sasl_gssapi",
            "http",
            "oidc",
        ] {
            assert!(
                features.contains(&want),
                "{want} missing from {}",
                lib.features
            );
        }
        assert!(lib.version.starts_with("2."), "{}", lib.version);
    }
}
