//! The Kafka-protocol broker of the tests: one Tansu per test binary, or an external
//! cluster (`FTP_POOLER_TEST_BOOTSTRAP=host:port,...`).
//!
//! A test binary that kills the broker calls [`use_persistent_broker`] before anything
//! else touches the broker: its Tansu then keeps its data in a local S3 server (moto,
//! `scripts/testbed/serve s3`), and [`Broker::kill`] / [`Broker::start_again`] stop it
//! with SIGKILL and start it again on the same port and the same storage.
//!
//! A test binary about Kafka security calls [`use_secured_broker`] first: its Tansu is
//! then reached only through real TLS (stunnel, `scripts/testbed/serve stunnel`) and/or
//! SASL ([`crate::sasl_front`]) in front of it, and advertises the outermost address, so
//! every client must speak that protocol. [`Broker::client_config`] and
//! [`Broker::properties`] give every client of the tests (and the service's config.yaml)
//! the properties it needs.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::process::{free_port, ServerProcess};

/// Points the whole suite at an external Kafka cluster instead of a local Tansu.
pub const ENV_BOOTSTRAP: &str = "FTP_POOLER_TEST_BOOTSTRAP";

/// The S3 bucket a persistent Tansu keeps its data in.
const S3_STORAGE: &str = "s3://tansu/";

pub struct Broker {
    bootstrap: String,
    /// None: an external cluster.
    local: Option<Local>,
    /// librdkafka properties every client needs (security of a secured broker).
    properties: Vec<(String, String)>,
    /// What stands in front of a secured broker (kept running with it).
    _fronts: Vec<Front>,
}

/// Something in front of a secured Tansu.
#[allow(dead_code)] // kept to keep them running
enum Front {
    Tls(ServerProcess),
    Sasl(crate::sasl_front::SaslFront),
}

/// How a secured test broker is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// SASL (SCRAM-SHA-512) over TLS: client -> stunnel -> SASL front -> Tansu.
    SaslSsl,
    /// SASL (SCRAM-SHA-512) without TLS: client -> SASL front -> Tansu.
    SaslPlaintext,
    /// TLS: client -> stunnel -> Tansu.
    Ssl,
    /// TLS with a client certificate the TLS server requires and verifies.
    MutualTls,
}

/// The SASL user of a secured test broker (test credentials, not a secret).
pub const SASL_USER: &str = "ftp-pooler-test";
pub const SASL_PASSWORD: &str = "ftp-pooler-test-pw";

static SECURITY: Mutex<Option<Security>> = Mutex::new(None);

/// A Tansu started by this test binary.
struct Local {
    port: u16,
    /// The arguments of `scripts/testbed/serve` (the same for a restart).
    args: Vec<String>,
    /// None while killed.
    process: Mutex<Option<ServerProcess>>,
    /// The S3 server of a persistent broker (None: memory storage, not restartable).
    s3: Option<ServerProcess>,
}

static BROKER: OnceLock<Broker> = OnceLock::new();
static PERSISTENT: AtomicBool = AtomicBool::new(false);

fn external_bootstrap() -> Option<String> {
    std::env::var(ENV_BOOTSTRAP)
        .ok()
        .filter(|b| !b.trim().is_empty())
}

/// The test binary's broker, started on first use. Panics (the test fails) when it
/// cannot be started or reached.
pub fn broker() -> &'static Broker {
    BROKER.get_or_init(|| {
        let security = *SECURITY.lock().unwrap();
        let broker = match (external_bootstrap(), security) {
            (Some(bootstrap), None) => Broker {
                bootstrap,
                local: None,
                properties: Vec::new(),
                _fronts: Vec::new(),
            },
            (Some(b), Some(_)) => panic!(
                "{ENV_BOOTSTRAP} is set ({b}): this test binary needs a broker behind TLS \
                 and SASL fronts of its own. Run it without {ENV_BOOTSTRAP}."
            ),
            (None, Some(security)) => Broker::start_secured(security),
            (None, None) => Broker::start_tansu(PERSISTENT.load(Ordering::SeqCst)),
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

/// Makes this test binary's broker a restartable one: Tansu on S3 storage (a local moto
/// server), so that [`Broker::kill`] and [`Broker::start_again`] keep its topics,
/// messages and committed offsets. Call it before anything uses [`broker()`]; panics
/// when the broker is already started without it, or when the suite runs against an
/// external cluster (`FTP_POOLER_TEST_BOOTSTRAP`), which a test cannot kill.
pub fn use_persistent_broker() -> &'static Broker {
    if let Some(b) = external_bootstrap() {
        panic!(
            "{ENV_BOOTSTRAP} is set ({b}): this test kills the broker and starts it again, \
             which it cannot do to an external cluster. Run this test binary without \
             {ENV_BOOTSTRAP} (it starts its own Tansu on S3 storage)."
        );
    }
    PERSISTENT.store(true, Ordering::SeqCst);
    let b = broker();
    assert!(
        b.is_restartable(),
        "use_persistent_broker() was called after the broker was started without it"
    );
    b
}

/// Makes this test binary's broker a secured one (see [`Security`]). Call it before
/// anything uses [`broker()`]; panics otherwise, or under `FTP_POOLER_TEST_BOOTSTRAP`.
pub fn use_secured_broker(security: Security) -> &'static Broker {
    {
        let mut s = SECURITY.lock().unwrap();
        match *s {
            None => *s = Some(security),
            Some(already) => assert_eq!(already, security, "one security per test binary"),
        }
    }
    let b = broker();
    assert!(
        !b.properties.is_empty(),
        "use_secured_broker() was called after the broker was started without it"
    );
    b
}

impl Broker {
    /// Tansu, with TLS and/or SASL in front, advertising the front's address.
    fn start_secured(security: Security) -> Broker {
        let certs = crate::testbed_dir().join("certs");
        let tansu_port = free_port();
        let tls = security != Security::SaslPlaintext;
        let sasl = matches!(security, Security::SaslSsl | Security::SaslPlaintext);
        // The outermost port, known before anything starts: Tansu advertises it.
        let tls_port = free_port();
        let mut fronts = Vec::new();
        let sasl_front = sasl.then(|| {
            crate::sasl_front::SaslFront::start(tansu_port, &[(SASL_USER, SASL_PASSWORD)])
        });
        let outer = if tls {
            tls_port
        } else {
            sasl_front.as_ref().expect("sasl").port()
        };
        let args = vec![
            "broker".to_string(),
            tansu_port.to_string(),
            "memory://tansu/".to_string(),
            "".to_string(),
            format!("127.0.0.1:{outer}"),
        ];
        let process = Self::spawn(tansu_port, &args);
        let behind_tls = sasl_front.as_ref().map_or(tansu_port, |f| f.port());
        if let Some(f) = sasl_front {
            fronts.push(Front::Sasl(f));
        }
        let mut properties = Vec::new();
        if tls {
            let mut serve = vec![
                "stunnel".to_string(),
                tls_port.to_string(),
                behind_tls.to_string(),
            ];
            if security == Security::MutualTls {
                serve.push("mtls".into());
            }
            let stunnel = ServerProcess::serve(&format!("stunnel:{tls_port}"), &serve);
            wait_for_port(tls_port, &stunnel, Duration::from_secs(20));
            fronts.push(Front::Tls(stunnel));
            properties.push((
                "ssl.ca.location".to_string(),
                certs.join("ca.pem").display().to_string(),
            ));
        }
        if security == Security::MutualTls {
            properties.push((
                "ssl.certificate.location".into(),
                certs.join("client.pem").display().to_string(),
            ));
            properties.push((
                "ssl.key.location".into(),
                certs.join("client.key").display().to_string(),
            ));
        }
        let protocol = match security {
            Security::SaslSsl => "SASL_SSL",
            Security::SaslPlaintext => "SASL_PLAINTEXT",
            Security::Ssl | Security::MutualTls => "SSL",
        };
        properties.insert(0, ("security.protocol".into(), protocol.into()));
        if sasl {
            properties.push(("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
            properties.push(("sasl.username".into(), SASL_USER.into()));
            properties.push(("sasl.password".into(), SASL_PASSWORD.into()));
        }
        Broker {
            bootstrap: format!("127.0.0.1:{outer}"),
            local: Some(Local {
                port: tansu_port,
                args,
                process: Mutex::new(Some(process)),
                s3: None,
            }),
            properties,
            _fronts: fronts,
        }
    }

    fn start_tansu(persistent: bool) -> Broker {
        let tansu = crate::testbed_dir().join("bin/tansu");
        assert!(
            tansu.exists(),
            "{} is missing: run scripts/testbed/install.sh",
            tansu.display()
        );
        let port = free_port();
        let mut args = vec!["broker".to_string(), port.to_string()];
        let s3 = persistent.then(|| {
            let s3_port = free_port();
            let s3 = ServerProcess::serve(
                &format!("moto:{s3_port}"),
                &["s3".into(), s3_port.to_string()],
            );
            wait_for_port(s3_port, &s3, Duration::from_secs(30));
            args.push(S3_STORAGE.into());
            args.push(s3_port.to_string());
            s3
        });
        let process = Self::spawn(port, &args);
        Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            local: Some(Local {
                port,
                args,
                process: Mutex::new(Some(process)),
                s3,
            }),
            properties: Vec::new(),
            _fronts: Vec::new(),
        }
    }

    /// The OAuth token endpoint of a broker behind a SASL front (OAUTHBEARER with
    /// librdkafka's OIDC client: `sasl.oauthbearer.token.endpoint.url`).
    pub fn token_url(&self) -> Option<String> {
        self._fronts.iter().find_map(|f| match f {
            Front::Sasl(front) => Some(front.token_url()),
            Front::Tls(_) => None,
        })
    }

    /// How many OAuth tokens the SASL front's endpoint issued.
    pub fn tokens_issued(&self) -> usize {
        self._fronts
            .iter()
            .map(|f| match f {
                Front::Sasl(front) => front.tokens_issued(),
                Front::Tls(_) => 0,
            })
            .sum()
    }

    /// The librdkafka properties every client of this broker needs besides
    /// `bootstrap.servers` (empty unless it is secured).
    pub fn properties(&self) -> &[(String, String)] {
        &self.properties
    }

    /// A librdkafka configuration for this broker: `bootstrap.servers` and
    /// [`Broker::properties`].
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn spawn(port: u16, args: &[String]) -> ServerProcess {
        let process = ServerProcess::serve(&format!("tansu:{port}"), args);
        wait_for_port(port, &process, Duration::from_secs(20));
        process
    }

    /// True for a Tansu on persistent storage (see [`use_persistent_broker`]).
    pub fn is_restartable(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.s3.is_some())
    }

    fn restartable(&self, what: &str) -> &Local {
        match &self.local {
            Some(l) if l.s3.is_some() => l,
            Some(_) => panic!(
                "{what}: this broker keeps its data in memory; call \
                 ftp_pooler_testbed::use_persistent_broker() first"
            ),
            None => panic!("{what}: the broker is an external cluster ({ENV_BOOTSTRAP})"),
        }
    }

    /// SIGKILLs the broker (a persistent one; see [`use_persistent_broker`]).
    pub fn kill(&self) {
        let local = self.restartable("kill the broker");
        let mut process = local.process.lock().unwrap();
        let mut p = process.take().expect("the broker is already killed");
        p.kill();
    }

    /// Starts the broker again after [`Broker::kill`], on the same port and storage, and
    /// waits until it answers a metadata request.
    pub fn start_again(&self) {
        let local = self.restartable("start the broker again");
        let mut process = local.process.lock().unwrap();
        assert!(process.is_none(), "the broker is still running");
        *process = Some(Self::spawn(local.port, &local.args));
        drop(process);
        if let Err(e) = self.check(Duration::from_secs(30)) {
            panic!(
                "the restarted broker at {} does not answer: {e}\n{}",
                self.bootstrap,
                self.output()
            );
        }
    }

    /// The broker's pid (None: external, or killed).
    pub fn pid(&self) -> Option<u32> {
        let local = self.local.as_ref()?;
        local.process.lock().unwrap().as_ref().map(|p| p.pid())
    }

    /// What the local broker (and its S3 server) printed so far.
    pub fn output(&self) -> String {
        let Some(local) = &self.local else {
            return String::new();
        };
        let mut out = local
            .process
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.output())
            .unwrap_or_default();
        if let Some(s3) = &local.s3 {
            let s3_out = s3.output();
            let tail: Vec<&str> = s3_out.lines().rev().take(20).collect();
            out.push_str("\n--- S3 server (last lines) ---\n");
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Connects to a broker at `bootstrap` and fetches metadata: Ok only if it answers.
    pub fn check_at(bootstrap: &str, limit: Duration) -> Result<(), String> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        Self::check_with(&config, limit)
    }

    fn check_with(config: &ClientConfig, limit: Duration) -> Result<(), String> {
        let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, limit)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check(&self, limit: Duration) -> Result<(), String> {
        Self::check_with(&self.client_config(), limit)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (give it a [`crate::unique`] name). Panics on failure.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
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

/// Waits until 127.0.0.1:`port` accepts connections (the port opens in 15-50 ms for
/// Tansu, a second or two for moto); panics with the server's output if it exits.
fn wait_for_port(port: u16, process: &ServerProcess, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = process.exited() {
            panic!(
                "{} exited ({status}):\n{}",
                process.name(),
                process.output()
            );
        }
        assert!(
            start.elapsed() < limit,
            "{} did not open 127.0.0.1:{port} within {limit:?}:\n{}",
            process.name(),
            process.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
