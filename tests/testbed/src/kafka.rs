//! The Kafka-protocol broker of the tests: one Tansu per test binary, or an external
//! cluster (`FTP_POOLER_TEST_BOOTSTRAP=host:port,...`).

use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::process::{free_port, ServerProcess};

/// Points the whole suite at an external Kafka cluster instead of a local Tansu.
pub const ENV_BOOTSTRAP: &str = "FTP_POOLER_TEST_BOOTSTRAP";

pub struct Broker {
    bootstrap: String,
    _process: Option<ServerProcess>,
}

/// The test binary's broker, started on first use. Panics (the test fails) when it
/// cannot be started or reached.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let broker = match std::env::var(ENV_BOOTSTRAP) {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => Broker {
                bootstrap,
                _process: None,
            },
            _ => Broker::start_tansu(),
        };
        if let Err(e) = broker.check(Duration::from_secs(30)) {
            panic!(
                "the test broker at {} is not reachable: {e}",
                broker.bootstrap
            );
        }
        broker
    })
}

impl Broker {
    fn start_tansu() -> Broker {
        let tansu = crate::testbed_dir().join("bin/tansu");
        assert!(
            tansu.exists(),
            "{} is missing: run scripts/testbed/install.sh",
            tansu.display()
        );
        let port = free_port();
        let process = ServerProcess::serve(
            &format!("tansu:{port}"),
            &["broker".into(), port.to_string()],
        );
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = process.exited() {
                panic!("tansu exited ({status}):\n{}", process.output());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tansu did not open 127.0.0.1:{port} within 20 s:\n{}",
                process.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            _process: Some(process),
        }
    }

    /// Connects to a broker at `bootstrap` and fetches metadata: Ok only if it answers.
    pub fn check_at(bootstrap: &str, limit: Duration) -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, limit)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check(&self, limit: Duration) -> Result<(), String> {
        Self::check_at(&self.bootstrap, limit)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (give it a [`crate::unique`] name). Panics on failure.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for r in results {
            if let Err((t, code)) = r {
                panic!("create topic {t}: {code}");
            }
        }
    }
}
