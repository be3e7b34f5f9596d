//! Logging of every process: tracing to stderr (the supervisor's stderr is shared by its
//! children, so journald or `kubectl logs` see one stream), and optionally to a
//! daily-rolling file (`logging.file`, through tracing-appender's non-blocking writer).
//!
//! Every line names its process: text lines start with `ingest[1234]`; JSON lines
//! (`logging.format: json`, one object per line) carry `"stage"` and `"pid"`. The level
//! comes from `logging.level`, or `RUST_LOG` when set. Task outcomes are one event each
//! (`task finished`, with task_id, direction, connection, bytes, duration_ms, error_code,
//! attempts).

use std::path::Path;

use ftp_pooler_config::LoggingSettings;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Formats with `inner`, then names the process: a `name[pid] ` prefix on text lines,
/// `"stage"` and `"pid"` keys first in JSON objects.
struct Named<F> {
    name: String,
    json: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Named<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let pid = std::process::id();
        if !self.json {
            write!(writer, "{}[{pid}] ", self.name)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let name = serde_json::to_string(&self.name).unwrap_or_default();
                write!(writer, "{{\"stage\":{name},\"pid\":{pid},{rest}")
            }
            None => writer.write_str(&line),
        }
    }
}

/// Keeps the file writer flushing until the process ends.
pub struct Guard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// One output: JSON lines or text, each line naming the process.
fn layer<S, W>(
    name: &str,
    json: bool,
    ansi: bool,
    writer: W,
    filter: EnvFilter,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(Named {
                name: name.to_string(),
                json: true,
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false),
            })
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .event_format(Named {
                name: name.to_string(),
                json: false,
                inner: tracing_subscriber::fmt::format()
                    .with_target(false)
                    .with_ansi(ansi),
            })
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    }
}

/// Installs the global subscriber for the process called `name`.
pub fn init(settings: &LoggingSettings, name: &str) -> Guard {
    use std::io::IsTerminal;
    let level = settings.level_filter().unwrap_or("info");
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{level},rdkafka=warn,librdkafka=warn")))
    };
    let json = settings.is_json().unwrap_or(true);
    let ansi = std::io::stderr().is_terminal() && !json;
    let stderr_layer = layer(name, json, ansi, std::io::stderr, filter());
    let (file_layer, guard) = match settings.file.as_deref().filter(|f| !f.is_empty()) {
        Some(file) => {
            let path = Path::new(file);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let prefix = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "ftp-pooler.log".into());
            let (writer, guard) =
                tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, prefix));
            (
                Some(layer(name, json, false, writer, filter())),
                Some(guard),
            )
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Guard(guard)
}
