//! `ftp-pooler-client`: a small Kafka client for trying the service by hand (the dev
//! stack's sample tasks) and for scripts: it produces tasks and prints results. It is a
//! client like any other, speaking only the Kafka contract of DESIGN.md section 2.
//!
//! - `produce`: one message per line of standard input (sent as-is, so malformed messages
//!   can be sent too), keyed by the line's task_id when it has one; waits for every
//!   delivery report (acks=all) and prints `partition:offset key`.
//! - `watch`: reads topics from the beginning (a fresh consumer group) and prints
//!   `topic<TAB>key<TAB>value` per record, until `--count` records matched or `--timeout`.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[derive(Parser)]
#[command(
    name = "ftp-pooler-client",
    about = "Produce ftp-pooler tasks and watch their results"
)]
struct Cli {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(
        long,
        env = "FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce each line of standard input as one message.
    Produce {
        #[arg(long, default_value = "ftp-tasks")]
        topic: String,
    },
    /// Print records of the given topics from the beginning.
    Watch {
        /// Topics to read (repeat or separate with commas).
        #[arg(long, value_delimiter = ',', default_values = ["ftp-results", "ftp-failures", "ftp-tasks-dlq"])]
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
    let cli = Cli::parse();
    match cli.command {
        Cmd::Produce { topic } => produce(&cli.bootstrap, &topic).await,
        Cmd::Watch {
            topic,
            pattern,
            count,
            timeout,
        } => watch(&cli.bootstrap, &topic, pattern.as_deref(), count, timeout).await,
    }
}

async fn produce(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
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
    bootstrap: &str,
    topics: &[String],
    pattern: Option<&str>,
    count: Option<usize>,
    timeout: u64,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("ftp-pooler-client-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .context("creating the consumer")?;
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
