//! Logging of every process: tracing to stderr (the supervisor's stderr is shared by its
//! children, so journald or `kubectl logs` see one stream). Text lines start with the
//! process's name and pid (`ingest[1234]`); JSON lines are one object each. The level
//! comes from `logging.level`, or `RUST_LOG` when set.

use ftp_pooler_config::LoggingSettings;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

struct Prefixed<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
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
        write!(writer, "{} ", self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber for the process called `name`.
pub fn init(settings: &LoggingSettings, name: &str) {
    let level = settings.level_filter().unwrap_or("info");
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},rdkafka=warn,librdkafka=warn")));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if settings.is_json().unwrap_or(true) {
        let _ = builder.json().flatten_event(true).try_init();
    } else {
        let format = tracing_subscriber::fmt::format().with_target(false);
        let _ = builder
            .event_format(Prefixed {
                prefix: format!("{name}[{}]", std::process::id()),
                inner: format,
            })
            .try_init();
    }
}
