//! `ftp-pooler check-config`: validates both configuration files without starting.
//! Prints a summary without secrets (exit 0), or every error, one per line (exit 2).

use std::io::Write;
use std::process::ExitCode;

use ftp_pooler_config::{is_secret_property, Config, Sources};

pub fn run(sources: &Sources) -> anyhow::Result<ExitCode> {
    match sources.load_checked(&ftp_pooler_kafka::check) {
        Ok(config) => {
            let mut out = std::io::stdout().lock();
            out.write_all(summary(&config).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in errors.iter() {
                writeln!(err, "{e}")?;
            }
            writeln!(err, "configuration invalid: {} error(s)", errors.len())?;
            Ok(ExitCode::from(2))
        }
    }
}

fn summary(c: &Config) -> String {
    let s = &c.settings;
    let k = &s.kafka;
    let mut out = String::new();
    let config_file = c
        .config_file
        .as_ref()
        .map_or("(built-in defaults)".to_string(), |p| {
            p.display().to_string()
        });
    out.push_str(&format!("config:       {config_file}\n"));
    out.push_str(&format!("connections:  {}\n", c.connections_file.display()));
    out.push_str(&format!(
        "kafka:        {} group={} tasks={} results={} failures={} dlq={}\n",
        k.bootstrap_servers.join(","),
        k.consumer_group,
        k.input_topic,
        k.result_topic,
        k.fail_topic,
        k.dlq_topic
    ));
    for (name, map) in [
        ("consumer_config", &k.consumer_config),
        ("producer_config", &k.producer_config),
    ] {
        if !map.is_empty() {
            let props: Vec<String> = map
                .iter()
                .map(|(p, v)| {
                    let v = if is_secret_property(p) { "***" } else { v };
                    format!("{p}={v}")
                })
                .collect();
            out.push_str(&format!("  {name}: {}\n", props.join(" ")));
        }
    }
    let lib = ftp_pooler_kafka::librdkafka();
    out.push_str(&format!(
        "librdkafka:   {} ({})\n",
        lib.version, lib.features
    ));
    out.push_str(&format!(
        "pool:         max_sessions_per_pod={} max_sessions_per_connection={}\n",
        s.pool.max_sessions_per_pod, s.pool.max_sessions_per_connection
    ));
    out.push_str(&format!(
        "api:          {}:{}  metrics: :{}\n",
        s.api.host, s.api.port, s.metrics.port
    ));
    out.push_str(&format!("connections ({}):\n", c.registry.len()));
    for conn in c.registry.iter() {
        out.push_str(&format!("  {}\n", conn.summary()));
    }
    out.push_str("configuration ok\n");
    out
}
