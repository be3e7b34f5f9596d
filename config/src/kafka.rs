//! The `kafka` section's librdkafka maps (`consumer_config`, `producer_config`): the
//! service's own properties, the ones the delivery guarantees pin, secret properties and
//! their redaction, `${file:}` / `${env:}` references, and the hook through which the
//! kafka crate (which links librdkafka) checks the operator's properties.
//!
//! Invariants: a pinned property keeps the value the guarantees need (any spelling
//! librdkafka reads as that value is accepted); a secret property's value is never in a
//! `Debug` output or a problem; a problem names the property and where it was set; an
//! operator's `group.instance.id` is one Kafka accepts ([`group_instance_id_problem`]).

use std::collections::BTreeMap;

use crate::error::{ConfigError, ConfigErrors, Place};
use crate::settings::KafkaSettings;

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_property(k) {
                        "***".to_string()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("consumer_group", &self.consumer_group)
            .field("input_topic", &self.input_topic)
            .field("result_topic", &self.result_topic)
            .field("fail_topic", &self.fail_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("max_retries", &self.max_retries)
            .field("base_backoff_ms", &self.base_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field("static_membership", &self.static_membership)
            .field("recall", &self.recall)
            .field("consumer_config", &redact(&self.consumer_config))
            .field("producer_config", &redact(&self.producer_config))
            .finish()
    }
}

/// librdkafka properties that hold secrets (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.assertion.private.key.passphrase`,
/// the `*.pem` inline keys, ...): never shown.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passphrase",
        "secret",
        "pem",
        "credentials",
        "token",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// librdkafka properties the delivery guarantees rest on, and the only value allowed.
pub(crate) const PINNED_CONSUMER: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];
pub(crate) const PINNED_PRODUCER: &[(&str, &str)] =
    &[("acks", "all"), ("enable.idempotence", "true")];

impl KafkaSettings {
    /// The service's own consumer properties (the operator's `consumer_config` comes on
    /// top of them, in the kafka crate). Offsets are committed by hand, after publish
    /// (auto commit and auto store off).
    pub fn consumer_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (
                "bootstrap.servers".to_string(),
                self.bootstrap_servers.join(","),
            ),
            ("group.id".into(), self.consumer_group.clone()),
            ("auto.offset.reset".into(), "earliest".into()),
            ("enable.partition.eof".into(), "false".into()),
            // Tasks are latency-sensitive and small: do not let an idle fetch sit for
            // librdkafka's default 500 ms (some brokers hold it that long).
            ("fetch.wait.max.ms".into(), "100".into()),
        ];
        props.extend(pinned(PINNED_CONSUMER));
        props
    }

    /// The service's own producer properties (acks=all, idempotence on); the operator's
    /// `producer_config` comes on top of them.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (
                "bootstrap.servers".to_string(),
                self.bootstrap_servers.join(","),
            ),
            // A DLQ record keeps the whole original value and a result echoes the task's
            // paths: allow records far over librdkafka's 1 MB default. A broker or topic
            // with a smaller limit refuses them; publish then cuts the record, visibly.
            ("message.max.bytes".into(), (32 << 20).to_string()),
        ];
        props.extend(pinned(PINNED_PRODUCER));
        props
    }

    /// What the operator's maps may not say: a pinned property with another value, or
    /// `bootstrap.servers` / `group.id`, which have keys of their own.
    pub fn rule_problems(&self) -> Vec<PropertyProblem> {
        let mut problems = Vec::new();
        if let Some(id) = self.consumer_config.get(GROUP_INSTANCE_ID) {
            if !self.static_membership {
                problems.push(PropertyProblem {
                    map: KafkaMap::Consumer,
                    property: Some(GROUP_INSTANCE_ID.into()),
                    problem: format!(
                        "{GROUP_INSTANCE_ID} makes the ingest consumer a static member, but \
                         kafka.static_membership is false"
                    ),
                });
            } else if let Some(problem) = group_instance_id_problem(id) {
                problems.push(PropertyProblem {
                    map: KafkaMap::Consumer,
                    property: Some(GROUP_INSTANCE_ID.into()),
                    problem: format!("{GROUP_INSTANCE_ID}: {problem}"),
                });
            }
        }
        for (map, props, pins) in [
            (KafkaMap::Consumer, &self.consumer_config, PINNED_CONSUMER),
            (KafkaMap::Producer, &self.producer_config, PINNED_PRODUCER),
        ] {
            for (prop, want) in pins {
                if let Some(v) = props.get(*prop) {
                    if !same_librdkafka_value(v, want) {
                        problems.push(PropertyProblem {
                            map,
                            property: Some(prop.to_string()),
                            problem: format!(
                                "{prop} must stay {want}: the delivery guarantees depend on it"
                            ),
                        });
                    }
                }
            }
            for (prop, key) in [
                ("bootstrap.servers", "bootstrap_servers"),
                ("group.id", "consumer_group"),
            ] {
                if props.contains_key(prop) {
                    problems.push(PropertyProblem {
                        map,
                        property: None,
                        problem: format!("{prop} is set by kafka.{key}; do not repeat it here"),
                    });
                }
            }
        }
        problems
    }
}

/// The consumer property of static group membership. The kafka crate derives one per
/// service instance for the ingest consumer unless the operator sets it.
pub const GROUP_INSTANCE_ID: &str = "group.instance.id";

/// The longest `group.instance.id` Kafka accepts.
pub const GROUP_INSTANCE_ID_MAX: usize = 249;

/// Whether `c` may appear in a `group.instance.id` (Kafka's rule, as for topic names:
/// ASCII letters and digits, `.`, `_`, `-`).
pub fn group_instance_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why Kafka would refuse `id` as a `group.instance.id` (its JoinGroup check: not empty,
/// not `.` or `..`, at most 249 characters of `[a-zA-Z0-9._-]`), or None. librdkafka
/// checks nothing and the broker refuses the JoinGroup, so the consumer would never get
/// a partition: the configuration is refused instead.
pub fn group_instance_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    if id == "." || id == ".." {
        return Some(format!("{id:?} is not allowed"));
    }
    if id.chars().count() > GROUP_INSTANCE_ID_MAX {
        return Some(format!(
            "{} characters, at most {GROUP_INSTANCE_ID_MAX} are allowed",
            id.chars().count()
        ));
    }
    if let Some(c) = id.chars().find(|&c| !group_instance_id_char(c)) {
        return Some(format!(
            "{c:?} is not allowed: only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

/// Whether librdkafka reads `value` as `want`: booleans as it parses them (`true`, `t`,
/// `1` / `false`, `f`, `0`, any case), `acks` `all` as `-1`, the rest case-insensitively.
fn same_librdkafka_value(value: &str, want: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    match want {
        "true" => matches!(v.as_str(), "true" | "t" | "1"),
        "false" => matches!(v.as_str(), "false" | "f" | "0"),
        "all" => matches!(v.as_str(), "all" | "-1"),
        _ => v == want,
    }
}

fn pinned(list: &'static [(&'static str, &'static str)]) -> impl Iterator<Item = (String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string()))
}

/// A check of the librdkafka properties by something that knows librdkafka (the kafka
/// crate: this one does not link it); [`no_kafka_check`] checks nothing.
pub type KafkaCheck<'a> = dyn Fn(&KafkaSettings) -> Vec<PropertyProblem> + 'a;

/// Checks nothing (for callers that only read the settings).
pub fn no_kafka_check(_: &KafkaSettings) -> Vec<PropertyProblem> {
    Vec::new()
}

/// Which librdkafka map a property is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KafkaMap {
    Consumer,
    Producer,
}

impl KafkaMap {
    /// Its dotted key in config.yaml.
    pub fn key(self) -> &'static str {
        match self {
            KafkaMap::Consumer => "kafka.consumer_config",
            KafkaMap::Producer => "kafka.producer_config",
        }
    }
}

/// A problem with a librdkafka property (or with a map as a whole). `problem` starts
/// with the property's name and never shows a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyProblem {
    pub map: KafkaMap,
    pub property: Option<String>,
    pub problem: String,
}

/// Replaces each `${file:...}` / `${env:...}` value of the librdkafka maps by what it
/// names ([`crate::references`]); a problem names the property, never its value.
/// Returns the properties that could not be resolved.
pub(crate) fn resolve_references(
    kafka: &mut KafkaSettings,
    env: &[(String, String)],
    at: &dyn Fn(&str) -> Place,
    errors: &mut ConfigErrors,
) -> Vec<(KafkaMap, String)> {
    let mut unresolved = Vec::new();
    for (which, map) in [
        (KafkaMap::Consumer, &mut kafka.consumer_config),
        (KafkaMap::Producer, &mut kafka.producer_config),
    ] {
        for (property, value) in map.iter_mut() {
            match crate::references::resolve(value, env) {
                Ok(v) => *value = v,
                Err(problem) => {
                    errors.push(ConfigError::new(
                        property_place(at, which.key(), property),
                        format!("{property}: {problem}"),
                    ));
                    unresolved.push((which, property.clone()));
                }
            }
        }
    }
    unresolved
}

/// Where a librdkafka property was set: its own environment variable if it came from
/// one, else where its map was written (the YAML file's key, or a variable).
pub(crate) fn property_place(at: &dyn Fn(&str) -> Place, map_key: &str, property: &str) -> Place {
    match at(&format!("{map_key}.{property}")) {
        Place::Default(_) => at(map_key),
        place => place,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_instance_id_follows_kafkas_rule() {
        for ok in ["ftp-pooler-0", "a", "A.b_c-9", &"x".repeat(249)] {
            assert_eq!(group_instance_id_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "pod 0",
            "pod/0",
            "ingest@host",
            "é",
            &"x".repeat(250),
        ] {
            assert!(group_instance_id_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn an_invalid_group_instance_id_in_consumer_config_is_a_problem() {
        let mut kafka = KafkaSettings::default();
        kafka
            .consumer_config
            .insert("group.instance.id".into(), "ftp-pooler-0".into());
        assert!(kafka.rule_problems().is_empty());
        kafka
            .consumer_config
            .insert("group.instance.id".into(), "pod 0".into());
        let problems = kafka.rule_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].map, KafkaMap::Consumer);
        assert_eq!(problems[0].property.as_deref(), Some("group.instance.id"));
        assert!(problems[0].problem.starts_with("group.instance.id: ' '"));
        kafka.static_membership = false;
        let problems = kafka.rule_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .problem
            .contains("kafka.static_membership is false"));
        // Only the consumer reads it: a producer's is librdkafka's business (it warns).
        kafka.consumer_config.clear();
        kafka
            .producer_config
            .insert("group.instance.id".into(), "pod 0".into());
        assert!(kafka.rule_problems().is_empty());
    }
}
