//! librdkafka's logs and errors, routed into tracing without floods.
//!
//! A client that cannot authenticate (a wrong SASL password, a certificate the broker
//! refuses) reconnects with librdkafka's backoff and reports an error at every attempt,
//! from every client of every stage. [`ClientLog`] keeps, per client, one log event per
//! kind of message per [`LOG_EVERY`] (with how many were held back), and remembers the
//! last broker problem it saw, so that `/ready` can say *why* the broker is not usable
//! ([`BrokerProblem`]). A kind is the level, the facility (or error code) and the text
//! with its numbers blanked ([`kind_of`]): the same failure repeated (other timings,
//! ports, counts) is one kind; a different message, or the same one about another
//! broker name, is another.
//!
//! Invariants: the first occurrence of a kind is always logged at once; later ones of the
//! same kind within [`LOG_EVERY`] are counted, not logged; a problem older than
//! [`PROBLEM_TTL`] is forgotten (the broker may have been fixed), and any success
//! reported by the owner ([`ClientLog::clear`]) forgets it at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftp_pooler_channel::BrokerProblem;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::Role;

/// One event per kind of librdkafka message per this long, per client.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// A broker problem counts for readiness this long after it was last seen.
pub const PROBLEM_TTL: Duration = Duration::from_secs(30);

/// What an error code says about the broker, if anything.
pub fn problem_of(code: RDKafkaErrorCode) -> Option<BrokerProblem> {
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => Some(BrokerProblem::Authentication),
        RDKafkaErrorCode::SSL => Some(BrokerProblem::Tls),
        _ => None,
    }
}

/// The body of a `ClientContext` impl that hands librdkafka's logs and errors to the
/// [`ClientLog`] in field `$field`: `impl ClientContext for C { forward_client_log!(log); }`.
#[macro_export]
macro_rules! forward_client_log {
    ($field:ident) => {
        fn log(
            &self,
            level: $crate::rdkafka::config::RDKafkaLogLevel,
            fac: &str,
            log_message: &str,
        ) {
            self.$field.log(level, fac, log_message);
        }

        fn error(&self, error: $crate::rdkafka::error::KafkaError, reason: &str) {
            self.$field.error(&error, reason);
        }
    };
}

/// The log and error sink of one Kafka client (use it from the client's context).
pub struct ClientLog {
    role: Role,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    problem: Option<(BrokerProblem, Instant)>,
    /// Per kind: when it was last logged, and how many were held back since.
    kinds: HashMap<String, (Instant, u64)>,
}

/// The kind of a message: `prefix` and the text with every run of digits as `#`
/// ("after 59ms in state AUTH_REQ" and "after 71ms in state AUTH_REQ" are one kind).
fn kind_of(prefix: &str, text: &str) -> String {
    let mut kind = String::with_capacity(prefix.len() + text.len() + 1);
    kind.push_str(prefix);
    kind.push('|');
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                kind.push('#');
            }
            in_digits = true;
        } else {
            kind.push(c);
            in_digits = false;
        }
    }
    kind
}

/// Whether to log an occurrence of a kind now, and how many were held back before it.
fn throttle(kinds: &mut HashMap<String, (Instant, u64)>, kind: &str, now: Instant) -> Option<u64> {
    match kinds.get_mut(kind) {
        Some((last, held)) if now.duration_since(*last) < LOG_EVERY => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            let before = *held;
            *last = now;
            *held = 0;
            Some(before)
        }
        None => {
            kinds.insert(kind.to_string(), (now, 0));
            Some(0)
        }
    }
}

impl ClientLog {
    pub fn new(role: Role) -> Self {
        ClientLog {
            role,
            state: Mutex::new(State::default()),
        }
    }

    /// librdkafka's error callback.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let now = Instant::now();
        let code = error.rdkafka_error_code();
        let problem = code.and_then(problem_of).or_else(|| {
            // A SASL failure sometimes arrives as a transport failure whose reason
            // tells the truth ("SASL authentication error: ...").
            // A TLS failure (the broker's certificate refused, or the client's refused by
            // the broker: "tlsv13 alert certificate required") arrives the same way.
            let r = reason.to_ascii_lowercase();
            let tls = r.contains("ssl handshake failed")
                || (r.contains("ssl") && (r.contains("alert") || r.contains("certificate")));
            (r.contains("sasl") && (r.contains("authentication") || r.contains("auth")))
                .then_some(BrokerProblem::Authentication)
                .or_else(|| tls.then_some(BrokerProblem::Tls))
        });
        let kind = kind_of(&format!("error:{code:?}"), reason);
        let held = {
            let mut s = self.state.lock().expect("client log");
            if let Some(p) = problem {
                s.problem = Some((p, now));
            }
            throttle(&mut s.kinds, &kind, now)
        };
        let Some(held) = held else { return };
        let role = self.role.name();
        match problem {
            Some(p) => tracing::error!(
                kafka_client = role,
                broker_problem = p.as_str(),
                held_back = held,
                "Kafka {}: {reason} (retried with backoff; logged once per {} s)",
                match p {
                    BrokerProblem::Authentication => "authentication failed",
                    BrokerProblem::Tls => "TLS handshake failed",
                },
                LOG_EVERY.as_secs()
            ),
            None => tracing::warn!(
                kafka_client = role,
                held_back = held,
                "Kafka client error: {error}: {reason}"
            ),
        }
    }

    /// librdkafka's log callback.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let now = Instant::now();
        let held = {
            let mut s = self.state.lock().expect("client log");
            throttle(
                &mut s.kinds,
                &kind_of(&format!("log:{level:?}:{facility}"), message),
                now,
            )
        };
        let Some(held) = held else { return };
        let role = self.role.name();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(
                    kafka_client = role,
                    facility,
                    held_back = held,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(
                    kafka_client = role,
                    facility,
                    held_back = held,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(
                    kafka_client = role,
                    facility,
                    held_back = held,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(
                    kafka_client = role,
                    facility,
                    held_back = held,
                    "librdkafka: {message}"
                )
            }
        }
    }

    /// The last broker problem seen, if it is recent.
    pub fn problem(&self) -> Option<BrokerProblem> {
        let s = self.state.lock().expect("client log");
        s.problem
            .filter(|(_, at)| at.elapsed() < PROBLEM_TTL)
            .map(|(p, _)| p)
    }

    /// The owner reached the broker: forget the last problem.
    pub fn clear(&self) {
        self.state.lock().expect("client log").problem = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_logged_once_per_interval_with_what_was_held_back() {
        let mut kinds = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(throttle(&mut kinds, "a", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(throttle(&mut kinds, "a", t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(
            throttle(&mut kinds, "b", t0 + Duration::from_secs(1)),
            Some(0)
        );
        assert_eq!(throttle(&mut kinds, "a", t0 + LOG_EVERY), Some(5));
        assert_eq!(throttle(&mut kinds, "a", t0 + LOG_EVERY * 2), Some(0));
    }

    #[test]
    fn a_kind_is_a_message_with_its_numbers_blanked() {
        let a = kind_of(
            "log:Error:FAIL",
            "sasl_ssl://h:9093/bootstrap: failed (after 59ms in state AUTH_REQ)",
        );
        let b = kind_of(
            "log:Error:FAIL",
            "sasl_ssl://h:9093/bootstrap: failed (after 171ms in state AUTH_REQ)",
        );
        let other = kind_of(
            "log:Error:FAIL",
            "sasl_ssl://other:9093/bootstrap: failed (after 59ms in state AUTH_REQ)",
        );
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_ne!(
            a,
            kind_of(
                "log:Warning:FAIL",
                "sasl_ssl://h:9093/bootstrap: failed (after 59ms in state AUTH_REQ)"
            )
        );
    }

    #[test]
    fn authentication_errors_are_remembered_until_cleared() {
        let log = ClientLog::new(Role::Probe);
        assert_eq!(log.problem(), None);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9092/bootstrap: Connection refused",
        );
        assert_eq!(log.problem(), None);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed",
        );
        assert_eq!(log.problem(), Some(BrokerProblem::Authentication));
        log.clear();
        assert_eq!(log.problem(), None);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed: certificate verify failed",
        );
        assert_eq!(log.problem(), Some(BrokerProblem::Tls));
        log.clear();
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116",
        );
        assert_eq!(log.problem(), Some(BrokerProblem::Tls));
    }
}
