//! The check of the operator's librdkafka properties, by librdkafka itself.
//!
//! `check-config` and `run` must refuse what librdkafka would refuse, naming the
//! property, instead of starting and then looping on a client that cannot be created.
//! Three steps per map (`kafka.consumer_config`, `kafka.producer_config`):
//! 1. each property that names a file (`ssl.ca.location`, ...) names one this process
//!    can read: librdkafka's own message for a missing CA file is an OpenSSL error stack;
//! 2. each property alone is set on a fresh librdkafka configuration: an unknown name
//!    (`sesion.timeout.ms`), an invalid value, or a value this build does not support
//!    (a `security.protocol` without OpenSSL) is refused here, one problem per property;
//! 3. when both pass, a client of the map's type is created from the whole map, with
//!    `bootstrap.servers` left out so that it never connects: what only the whole
//!    configuration shows (an unsupported `sasl.mechanism`, a key that does not match its
//!    certificate, ...) is refused here.
//!
//! Invariants: a problem names its property whenever librdkafka's message lets us find
//! it, and never shows a secret property's value ([`ftp_pooler_config::is_secret_property`]).

use std::collections::BTreeMap;

use ftp_pooler_config::{is_secret_property, KafkaMap, KafkaSettings, PropertyProblem};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaType;

use crate::Role;

/// librdkafka properties whose value is a path this process must be able to read.
const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "ssl.engine.location",
    "https.ca.location",
    "sasl.kerberos.keytab",
    "sasl.oauthbearer.assertion.file",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.jwt.template.file",
];

/// Every problem librdkafka finds in the operator's properties.
pub fn check(kafka: &KafkaSettings) -> Vec<PropertyProblem> {
    let mut problems = Vec::new();
    for (map, operator, role) in [
        (KafkaMap::Consumer, &kafka.consumer_config, Role::Ingest),
        (KafkaMap::Producer, &kafka.producer_config, Role::Publish),
    ] {
        let found = problems.len();
        for (property, value) in operator {
            let problem = file_problem(property, value).or_else(|| alone(property, value));
            if let Some(problem) = problem {
                problems.push(PropertyProblem {
                    map,
                    property: Some(property.clone()),
                    problem,
                });
            }
        }
        if problems.len() == found {
            if let Some(p) = whole(kafka, role, operator) {
                problems.push(p);
            }
        }
    }
    problems
}

/// Step 1: a file property whose file cannot be read.
fn file_problem(property: &str, value: &str) -> Option<String> {
    if !FILE_PROPERTIES.contains(&property) || value.is_empty() || value == "probe" {
        return None;
    }
    let path = std::path::Path::new(value);
    let readable = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path).map(drop),
        Ok(_) => std::fs::File::open(path).map(drop),
        Err(e) => Err(e),
    };
    readable
        .err()
        .map(|e| format!("{property}: cannot read {value}: {e}"))
}

/// Step 2: one property on a fresh configuration.
fn alone(property: &str, value: &str) -> Option<String> {
    let mut config = ClientConfig::new();
    config.set(property, value);
    match config.create_native_config() {
        Ok(_) => None,
        Err(KafkaError::ClientConfig(_, description, _, _)) => Some(format!(
            "{property}: {}",
            redact(&description, property, value)
        )),
        Err(e) => Some(format!(
            "{property}: {}",
            redact(&e.to_string(), property, value)
        )),
    }
}

/// Step 3: a client of the role's type from the whole configuration, never connected.
fn whole(
    kafka: &KafkaSettings,
    role: Role,
    operator: &BTreeMap<String, String>,
) -> Option<PropertyProblem> {
    let mut config = ClientConfig::new();
    for (k, v) in crate::properties(kafka, role) {
        if k != "bootstrap.servers" {
            config.set(k, v);
        }
    }
    // librdkafka's own warnings about the configuration (e.g. a consumer property in a
    // producer) go to its log, not here.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
    let kind = match role.map() {
        KafkaMap::Consumer => RDKafkaType::RD_KAFKA_CONSUMER,
        KafkaMap::Producer => RDKafkaType::RD_KAFKA_PRODUCER,
    };
    let created = config
        .create_native_config()
        .and_then(|native| Client::new(&config, native, kind, DefaultClientContext));
    let message = match created {
        Ok(client) => {
            drop(client);
            return None;
        }
        Err(KafkaError::ClientCreation(m)) => m,
        Err(KafkaError::ClientConfig(_, description, _, _)) => description,
        Err(e) => e.to_string(),
    };
    let mut message = message;
    for (k, v) in operator {
        message = redact(&message, k, v);
    }
    let property = blamed(&message, operator);
    let problem = match &property {
        Some(p) if !message.contains(p.as_str()) => format!("{p}: {message}"),
        _ => message,
    };
    Some(PropertyProblem {
        map: role.map(),
        property,
        problem,
    })
}

/// The operator's property a librdkafka message is about: the longest one it names, else
/// the one its wording points at.
fn blamed(message: &str, operator: &BTreeMap<String, String>) -> Option<String> {
    if let Some(named) = operator
        .keys()
        .filter(|k| message.contains(k.as_str()))
        .max_by_key(|k| k.len())
    {
        return Some(named.clone());
    }
    let lower = message.to_ascii_lowercase();
    let hints: &[(&str, &[&str])] = &[
        ("sasl mechanism", &["sasl.mechanism", "sasl.mechanisms"]),
        ("mechanism", &["sasl.mechanism", "sasl.mechanisms"]),
        ("private key", &["ssl.key.location", "ssl.key.pem"]),
        (
            "certificate",
            &["ssl.certificate.location", "ssl.certificate.pem"],
        ),
        ("oauthbearer", &["sasl.oauthbearer.method"]),
        ("kerberos", &["sasl.kerberos.service.name"]),
    ];
    hints
        .iter()
        .filter(|(word, _)| lower.contains(word))
        .flat_map(|(_, props)| props.iter())
        .find(|p| operator.contains_key(**p))
        .map(|p| p.to_string())
}

/// `message` without `value` when `property` holds a secret.
fn redact(message: &str, property: &str, value: &str) -> String {
    if is_secret_property(property) && !value.is_empty() {
        message.replace(value, "***")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(consumer: &[(&str, &str)], producer: &[(&str, &str)]) -> KafkaSettings {
        let mut k = KafkaSettings::default();
        for (p, v) in consumer {
            k.consumer_config.insert(p.to_string(), v.to_string());
        }
        for (p, v) in producer {
            k.producer_config.insert(p.to_string(), v.to_string());
        }
        k
    }

    fn one(problems: Vec<PropertyProblem>) -> PropertyProblem {
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn the_defaults_and_a_secured_config_pass() {
        assert_eq!(check(&KafkaSettings::default()), vec![]);
        let sasl: &[(&str, &str)] = &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("compression.type", "zstd"),
        ];
        let k = with(&sasl[..4], sasl);
        assert_eq!(check(&k), vec![]);
        let oidc: &[(&str, &str)] = &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "id"),
            ("sasl.oauthbearer.client.secret", "secret"),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "https://idp.example/token",
            ),
        ];
        assert_eq!(check(&with(oidc, oidc)), vec![]);
        let gssapi: &[(&str, &str)] = &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "GSSAPI"),
            ("sasl.kerberos.kinit.cmd", "true"),
        ];
        assert_eq!(check(&with(gssapi, &[])), vec![]);
    }

    #[test]
    fn an_unknown_property_is_named() {
        let p = one(check(&with(&[("sesion.timeout.ms", "10000")], &[])));
        assert_eq!(p.map, KafkaMap::Consumer);
        assert_eq!(p.property.as_deref(), Some("sesion.timeout.ms"));
        assert!(
            p.problem.starts_with("sesion.timeout.ms: "),
            "{}",
            p.problem
        );
        assert!(
            p.problem.contains("No such configuration property"),
            "{}",
            p.problem
        );
    }

    #[test]
    fn an_invalid_value_is_named_and_a_secret_is_not_shown() {
        let p = one(check(&with(&[], &[("compression.type", "brotli")])));
        assert_eq!(p.map, KafkaMap::Producer);
        assert_eq!(p.property.as_deref(), Some("compression.type"));
        let p = one(check(&with(&[("sasl.oauthbearer.method", "hunter2")], &[])));
        assert!(
            p.problem.contains("sasl.oauthbearer.method"),
            "{}",
            p.problem
        );
    }

    #[test]
    fn a_missing_file_is_named_with_its_path() {
        let k = with(
            &[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", "/nonexistent/ca.pem"),
            ],
            &[],
        );
        let p = one(check(&k));
        assert_eq!(p.property.as_deref(), Some("ssl.ca.location"));
        assert!(p.problem.contains("/nonexistent/ca.pem"), "{}", p.problem);
    }

    #[test]
    fn what_only_the_whole_configuration_shows_is_refused() {
        let k = with(
            &[],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "NOT-A-MECHANISM"),
                ("sasl.password", "hunter2"),
            ],
        );
        let p = one(check(&k));
        assert_eq!(p.map, KafkaMap::Producer);
        assert!(p.problem.contains("sasl.mechanism"), "{}", p.problem);
        assert!(!p.problem.contains("hunter2"), "{}", p.problem);
        // A certificate that is not PEM.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let k = with(
            &[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", bad.to_str().unwrap()),
            ],
            &[],
        );
        let p = one(check(&k));
        assert_eq!(
            p.property.as_deref(),
            Some("ssl.ca.location"),
            "{}",
            p.problem
        );
    }
}
