//! Logging of every process: tracing to stderr (the supervisor's stderr is shared by its
//! children, so journald or `kubectl logs` see one stream), and optionally to a
//! daily-rolling file (`logging.file`, through tracing-appender's non-blocking writer,
//! keeping `logging.max_files` files).
//!
//! Every line names its process: text lines start with `ingest[1234]`; JSON lines
//! (`logging.format: json`, one object per line) carry `"stage"` and `"pid"`. The level
//! comes from `logging.level`, or `RUST_LOG` when set. Task outcomes are one event each
//! (`task finished`, with task_id, direction, connection, bytes, duration_ms, error_code,
//! attempts).
//!
//! Invariant: in JSON mode every line a service process writes is one JSON object, and a
//! fatal error or a panic is one line, once:
//! - a fatal error ends the process through [`fatal`] only (never also logged by the
//!   code that returned it);
//! - a panic goes through the hook [`init`] and [`bootstrap`] install (text mode keeps
//!   Rust's own panic message);
//! - before the configuration is in hand the format is [`Format::bootstrap`]'s: the
//!   environment override `FTP_POOLER_LOGGING__FORMAT` (the supervisor sets it on its
//!   stages to the format in force), else `logging.format` of the settings file if it can
//!   be read, else JSON (the default).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

/// One output: JSON lines or text, each line naming the process.
fn layer<S, W, F>(
    name: &str,
    json: bool,
    ansi: bool,
    writer: W,
    filter: F,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    F: tracing_subscriber::layer::Filter<S> + Send + Sync + 'static,
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

/// The environment variable that overrides `logging.format` (also the one the
/// supervisor sets on its stages).
pub const ENV_FORMAT: &str = "FTP_POOLER_LOGGING__FORMAT";

/// The shape of every line of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// From a `logging.format` value; `None` if it is not one.
    pub fn parse(value: &str) -> Option<Format> {
        let settings = LoggingSettings {
            format: value.to_string(),
            ..LoggingSettings::default()
        };
        settings
            .is_json()
            .map(|json| if json { Format::Json } else { Format::Text })
    }

    /// The format before the configuration is loaded: `$FTP_POOLER_LOGGING__FORMAT`,
    /// else `logging.format` in `config_file` when it can be read, else JSON.
    pub fn bootstrap(config_file: Option<&Path>) -> Format {
        let from_env = std::env::var(ENV_FORMAT).ok();
        let from_file = || {
            let text = std::fs::read_to_string(config_file?).ok()?;
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
            yaml.get("logging")?
                .get("format")?
                .as_str()
                .map(String::from)
        };
        from_env
            .or_else(from_file)
            .and_then(|f| Format::parse(&f))
            .unwrap_or(Format::Json)
    }
}

/// The format of this process's lines (JSON until told otherwise).
static JSON: AtomicBool = AtomicBool::new(true);
/// The process's name, for lines written before [`init`].
static NAME: Mutex<String> = Mutex::new(String::new());
/// Keeps the file writer flushing until [`finish`].
static GUARD: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

/// Whether [`init`] installed the global subscriber (tracing's own `has_been_set` also
/// counts scoped ones).
static INITIALIZED: AtomicBool = AtomicBool::new(false);

fn initialized() -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}

fn json() -> bool {
    JSON.load(Ordering::SeqCst)
}

/// Before the configuration: lines of the process `name` take `format`, panics included.
pub fn bootstrap(name: &str, format: Format) {
    JSON.store(format == Format::Json, Ordering::SeqCst);
    *NAME.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    install_panic_hook();
}

/// Runs `f` with the global subscriber, or, before [`init`], with one for the lines of
/// the bootstrap (built once: a dropped subscriber would leave tracing's callsite cache
/// saying "nobody listens").
fn with_subscriber(f: impl FnOnce()) {
    static EARLY: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    if initialized() {
        return f();
    }
    let early = EARLY.get_or_init(|| {
        let name = NAME.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let json = json();
        let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer(
            &name,
            json,
            ansi,
            std::io::stderr,
            tracing_subscriber::filter::LevelFilter::INFO,
        )))
    });
    tracing::dispatcher::with_default(early, f);
}

/// Reports the error that ends the process: one line, once.
pub fn fatal(error: &anyhow::Error) {
    let text = format!("{error:#}");
    if !json() && !initialized() {
        // Text mode before logging: the plain line of old.
        eprintln!("ftp-pooler: {text}");
        return;
    }
    with_subscriber(|| tracing::error!(error = %text, "fatal: {text}"));
}

/// An error line that is not the end (e.g. one of several configuration errors): plain
/// in text mode, one JSON object otherwise.
pub fn error_line(text: &str) {
    if !json() && !initialized() {
        eprintln!("{text}");
        return;
    }
    with_subscriber(|| tracing::error!("{text}"));
}

/// Flushes the log file (the end of `main`).
pub fn finish() {
    drop(GUARD.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// In JSON mode a panic is one `ERROR` event (`panic`, `location`, and `backtrace` when
/// `RUST_BACKTRACE` asks for one) instead of Rust's text; in text mode Rust's own hook
/// runs, as before. Installed once.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !json() {
                return default(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("<unnamed>");
            let backtrace = std::backtrace::Backtrace::capture();
            with_subscriber(|| {
                if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                    tracing::error!(panic = %message, location, thread, backtrace = %backtrace, "panicked: {message}");
                } else {
                    tracing::error!(panic = %message, location, thread, "panicked: {message}");
                }
            });
        }));
    });
}

/// The daily-rolling file `file` (`DIR/NAME.YYYY-MM-DD`, UTC days), keeping `max_files`
/// files whose names start with NAME (0: all).
fn rolling_file(
    file: &str,
    max_files: u64,
) -> Result<tracing_appender::rolling::RollingFileAppender, tracing_appender::rolling::InitError> {
    let path = Path::new(file);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ftp-pooler.log".into());
    let mut builder = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(prefix);
    if max_files > 0 {
        builder = builder.max_log_files(usize::try_from(max_files).unwrap_or(usize::MAX));
    }
    builder.build(dir)
}

/// Installs the global subscriber for the process called `name` (and the panic hook).
pub fn init(settings: &LoggingSettings, name: &str) {
    use std::io::IsTerminal;
    let level = settings.level_filter().unwrap_or("info");
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{level},rdkafka=warn,librdkafka=warn")))
    };
    let json = settings.is_json().unwrap_or(true);
    bootstrap(name, if json { Format::Json } else { Format::Text });
    let ansi = std::io::stderr().is_terminal() && !json;
    let stderr_layer = layer(name, json, ansi, std::io::stderr, filter());
    let mut file_problem = None;
    let file_layer = match settings.file.as_deref().filter(|f| !f.is_empty()) {
        Some(file) => match rolling_file(file, settings.max_files) {
            Ok(appender) => {
                let (writer, guard) = tracing_appender::non_blocking(appender);
                *GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
                Some(layer(name, json, false, writer, filter()))
            }
            Err(e) => {
                file_problem = Some(format!("{file}: {e}"));
                None
            }
        },
        None => None,
    };
    let installed = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    INITIALIZED.store(installed.is_ok(), Ordering::SeqCst);
    if let Some(problem) = file_problem {
        tracing::error!(file = %problem, "logging.file cannot be opened: logging to stderr only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_format_is_the_files_when_the_environment_says_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.yaml");
        std::fs::write(&text, "logging:\n  format: TEXT\n").unwrap();
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, "logging: [format: text\n").unwrap();
        // (The environment override is covered by the service tests: tests run in
        // parallel threads, and the environment is the process's.)
        if std::env::var_os(ENV_FORMAT).is_none() {
            assert_eq!(Format::bootstrap(Some(&text)), Format::Text);
            assert_eq!(Format::bootstrap(Some(&broken)), Format::Json);
            assert_eq!(
                Format::bootstrap(Some(&dir.path().join("none"))),
                Format::Json
            );
            assert_eq!(Format::bootstrap(None), Format::Json);
        }
        assert_eq!(Format::parse("console"), Some(Format::Text));
        assert_eq!(Format::parse("xml"), None);
    }

    #[test]
    fn the_rolling_file_keeps_max_files_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<String> = (1..=5).map(|d| format!("svc.log.2020-01-0{d}")).collect();
        for name in &old {
            std::fs::write(dir.path().join(name), "old\n").unwrap();
            // Creation times must differ for the appender to order them.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(dir.path().join("other.log.2020-01-01"), "not ours\n").unwrap();
        let file = dir.path().join("svc.log");
        let mut appender = rolling_file(file.to_str().unwrap(), 3).unwrap();
        std::io::Write::write_all(&mut appender, b"today\n").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let today = format!("svc.log.{}", chrono::Utc::now().format("%Y-%m-%d"));
        assert_eq!(
            left,
            [
                "other.log.2020-01-01".to_string(),
                old[3].clone(),
                old[4].clone(),
                today.clone()
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&today)).unwrap(),
            "today\n"
        );
        // 0 keeps everything.
        drop(rolling_file(file.to_str().unwrap(), 0).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}
