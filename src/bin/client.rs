//! `ftp-pooler-client`: a small Kafka client for trying the service by hand (the dev
//! stack's sample tasks) and for scripts: it produces tasks and prints results. It is a
//! client like any other, speaking only the Kafka contract of DESIGN.md section 2.
//!
//! - `produce`: one message per line of standard input (sent as-is, so malformed messages
//!   can be sent too), keyed by the line's task_id when it has one; waits for every
//!   delivery report (acks=all) and prints `partition:offset key`.
//! - `watch`: reads topics from the beginning (a fresh consumer group) and prints
//!   `topic<TAB>key<TAB>value` per record, until `--count` records matched or `--timeout`.
//!
//! Its Kafka settings are the service's (ftp-pooler-kafka): config.yaml (`--config` or
//! `$FTP_POOLER_CONFIG`) with the environment's `FTP_POOLER_KAFKA__*` overrides, so the
//! security settings written for the service reach it too; `--bootstrap` and `-X
//! key=value` (as kcat's) come last. Every property is checked by librdkafka before use.
//! `--version` names the build (commit, date, rustc, librdkafka) as the service's does.

#[path = "../build_info.rs"]
mod build_info;

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ftp_pooler_config::{ConfigErrors, KafkaSettings};
use ftp_pooler_kafka::Role;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

#[derive(Parser)]
#[command(
    name = "ftp-pooler-client",
    version,
    about = "Produce ftp-pooler tasks and watch their results"
)]
struct Cli {
    /// The service's settings file, for its `kafka` section (default: $FTP_POOLER_CONFIG,
    /// else the built-in defaults); FTP_POOLER_KAFKA__* variables apply on top.
    #[arg(long, value_name = "FILE", env = "FTP_POOLER_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Kafka bootstrap servers (host:port,...), over the settings' bootstrap_servers.
    #[arg(long)]
    bootstrap: Option<String>,
    /// A librdkafka property for both the producer and the consumer, over the settings
    /// (repeatable), e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    #[command(subcommand)]
    command: Cmd,
}

/// `KEY=VALUE`.
fn property(text: &str) -> Result<(String, String), ()> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(()),
    }
}

impl Cli {
    /// The `kafka` settings: file and environment, then --bootstrap and -X; checked by
    /// librdkafka (exit 2 naming the property otherwise).
    fn kafka(&self) -> anyhow::Result<KafkaSettings> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let report = |errors: ConfigErrors| {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            std::process::exit(2)
        };
        let settings =
            ftp_pooler_config::load_settings(self.config.as_deref(), &env).unwrap_or_else(report);
        let mut kafka = settings.kafka;
        if let Some(b) = &self.bootstrap {
            kafka.bootstrap_servers = b.split(',').map(|s| s.trim().to_string()).collect();
        }
        // As in config.yaml: ${file:...} / ${env:...} references, and the properties
        // the guarantees pin keep their values.
        let mut problems = Vec::new();
        for (i, text) in self.properties.iter().enumerate() {
            let Ok((k, v)) = property(text) else {
                problems.push(format!(
                    "-X number {}: expected KEY=VALUE (not shown: it may hold a secret)",
                    i + 1
                ));
                continue;
            };
            match ftp_pooler_config::references::resolve(&v, &env) {
                Ok(v) => {
                    kafka.consumer_config.insert(k.clone(), v.clone());
                    kafka.producer_config.insert(k, v);
                }
                Err(problem) => problems.push(format!("-X {k}: {problem}")),
            }
        }
        problems.extend(
            kafka
                .rule_problems()
                .into_iter()
                .chain(ftp_pooler_kafka::check(&kafka))
                .map(|p| format!("{}: {}", p.map.key(), p.problem)),
        );
        if !problems.is_empty() {
            for p in problems {
                eprintln!("{p}");
            }
            std::process::exit(2);
        }
        Ok(kafka)
    }
}

/// librdkafka's log and errors (broker unreachable, authentication failed) on standard
/// error, at `RUST_LOG` (default warn), so that a refused client says why.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce each line of standard input as one message.
    Produce {
        /// The topic (default: the settings' input_topic, ftp-tasks).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Print records of the given topics from the beginning.
    Watch {
        /// Topics to read (repeat or separate with commas; default: the settings'
        /// result, fail and DLQ topics).
        #[arg(long, value_delimiter = ',')]
        topic: Vec<String>,
        /// Only records whose value contains this text.
        #[arg(long = "match")]
        pattern: Option<String>,
        /// Stop after this many matching records.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds (exit 1 if --count was not reached).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = {
        use clap::{CommandFactory, FromArgMatches};
        let build = build_info::BuildInfo::current();
        let matches = Cli::command()
            .long_version(build.long_version_static())
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    init_logging();
    let kafka = cli.kafka()?;
    match cli.command {
        Cmd::Produce { topic } => {
            let topic = topic.unwrap_or_else(|| kafka.input_topic.clone());
            produce(&kafka, &topic).await
        }
        Cmd::Watch {
            topic,
            pattern,
            count,
            timeout,
        } => {
            let topic = if topic.is_empty() {
                vec![
                    kafka.result_topic.clone(),
                    kafka.fail_topic.clone(),
                    kafka.dlq_topic.clone(),
                ]
            } else {
                topic
            };
            watch(&kafka, &topic, pattern.as_deref(), count, timeout).await
        }
    }
}

async fn produce(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ftp_pooler_kafka::client_config(kafka, Role::ClientProducer)
        .create()
        .context("creating the producer")?;
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<Result<_, _>>()
        .context("reading standard input")?;
    let sends = lines.iter().filter(|l| !l.trim().is_empty()).map(|line| {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("task_id")?.as_str().map(str::to_string));
        let producer = &producer;
        async move {
            let mut record = FutureRecord::<str, str>::to(topic).payload(line.as_str());
            if let Some(k) = &key {
                record = record.key(k.as_str());
            }
            let d = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
            Ok::<_, rdkafka::error::KafkaError>((d.partition, d.offset, key))
        }
    });
    for r in futures::future::join_all(sends).await {
        let (p, o, key) = r.context("producing")?;
        println!("{p}:{o} {}", key.as_deref().unwrap_or("-"));
    }
    Ok(())
}

async fn watch(
    kafka: &KafkaSettings,
    topics: &[String],
    pattern: Option<&str>,
    count: Option<usize>,
    timeout: u64,
) -> anyhow::Result<()> {
    let mut config = ftp_pooler_kafka::client_config(kafka, Role::ClientConsumer);
    // A group of its own: never the service's, whose offsets it must not move.
    config.set(
        "group.id",
        format!("ftp-pooler-client-{}", uuid::Uuid::new_v4()),
    );
    if !kafka.consumer_config.contains_key("session.timeout.ms") {
        config.set("session.timeout.ms", "6000");
    }
    let consumer: StreamConsumer = config.create().context("creating the consumer")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).context("subscribing")?;
    let mut stream = consumer.stream();
    let mut matched = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    while count.is_none_or(|c| matched < c) {
        let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(m)) => m.context("consuming")?,
            Ok(None) => break,
            Err(_) => {
                if let Some(c) = count {
                    bail!("only {matched} of {c} records within {timeout} s");
                }
                break;
            }
        };
        let value = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        if pattern.is_some_and(|p| !value.contains(p)) {
            continue;
        }
        matched += 1;
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        println!(
            "{}\t{}\t{value}",
            msg.topic(),
            key.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
