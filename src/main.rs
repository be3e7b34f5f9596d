//! The `ftp-pooler` binary: the command line, and the door to each room.
//!
//! - `run`: the supervisor (room `supervisor/`), which re-executes this binary as
//! - `stage ingest|transfer <id>|publish`: the stage processes (rooms `stages/*`);
//! - `ctl status|restart <stage>`: talks to a running supervisor;
//! - `check-config`: validates both configuration files;
//! - `completions <shell>` and `man`: shell completions and the man page (roff), both
//!   generated from this command line, on stdout.
//!
//! Errors are reported here, at the edge, with `anyhow`; exit codes: 0 ok, 1 failure
//! (including a supervisor that gave up on a crash-looping stage), 2 invalid
//! configuration or usage.

mod build_info;
mod check_config;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ftp_pooler_channel::{CtlRequest, CtlResponse, Role, RuntimePaths, StageId, SupervisorLink};
use ftp_pooler_config::Config;
use ftp_pooler_supervisor::{Outcome, ENV_RUNTIME_DIR};

#[derive(Parser, Debug)]
#[command(
    name = "ftp-pooler",
    version,
    about = "Moves files between FTP/FTPS servers and local storage, driven by Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: the supervisor and its stage processes.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Check config.yaml (with environment overrides) and connections.ini without starting.
    ///
    /// Exit 0 and a summary (connections without secrets) when both are valid; exit 2 with
    /// every error found, one per line, otherwise.
    CheckConfig(ConfigArgs),
    /// Talk to a running supervisor.
    Ctl {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Print the shell completion script for SHELL (e.g. `ftp-pooler completions bash >
    /// /etc/bash_completion.d/ftp-pooler`).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `ftp-pooler man > ftp-pooler.1`, or `ftp-pooler man |
    /// man -l -`.
    Man,
    /// A stage process (started by the supervisor, not by hand).
    #[command(hide = true)]
    Stage {
        #[command(subcommand)]
        stage: StageKind,
    },
}

#[derive(Subcommand, Debug)]
enum CtlAction {
    /// Each stage's pid, state, restarts and uptime.
    Status,
    /// Restart one stage (`ingest`, `publish`, `transfer:<connection-id>`) while the
    /// others keep running; returns when its new process is ready.
    Restart { stage: String },
    /// Re-read config.yaml and connections.ini (as SIGHUP does) and apply them to every
    /// stage: new connections get workers, removed ones stop, stages whose settings or
    /// connection changed restart; an invalid edit is rejected and changes nothing.
    Reload,
}

#[derive(Subcommand, Debug)]
enum StageKind {
    Ingest,
    Transfer { connection_id: String },
    Publish,
}

impl StageKind {
    /// The name its lines carry (`transfer:<id>`), before the id is checked.
    fn name(&self) -> String {
        match self {
            StageKind::Ingest => "ingest".into(),
            StageKind::Publish => "publish".into(),
            StageKind::Transfer { connection_id } => format!("transfer:{connection_id}"),
        }
    }
}

/// Where the configuration comes from (flags win over FTP_POOLER_CONFIG / FTP_POOLER_CONNECTIONS).
#[derive(clap::Args, Debug, Clone)]
struct ConfigArgs {
    /// The settings file (default: $FTP_POOLER_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The connections file (default: $FTP_POOLER_CONNECTIONS, else connections_path in config.yaml).
    #[arg(long, value_name = "FILE")]
    connections: Option<PathBuf>,
}

impl ConfigArgs {
    fn sources(&self) -> ftp_pooler_config::Sources {
        ftp_pooler_config::Sources::from_env(self.config.clone(), self.connections.clone())
    }
}

#[derive(clap::Args, Debug, Clone)]
struct RuntimeArgs {
    /// The private directory of the service's sockets (default: $FTP_POOLER_RUNTIME_DIR,
    /// else $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/ftp-pooler or /tmp/ftp-pooler-<uid>).
    #[arg(long, value_name = "DIR", env = ENV_RUNTIME_DIR)]
    runtime_dir: Option<PathBuf>,
}

impl RuntimeArgs {
    fn dir(&self) -> PathBuf {
        self.runtime_dir
            .clone()
            .unwrap_or_else(ftp_pooler_supervisor::runtime_dir::default_dir)
    }
}

/// The whole command line, `--version` (long form: commit, build date, rustc,
/// librdkafka) included.
fn command(build: &build_info::BuildInfo) -> clap::Command {
    use clap::CommandFactory;
    Cli::command().long_version(build.long_version_static())
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let build = build_info::BuildInfo::current();
    let matches = command(&build).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Service processes log (fatal errors and panics included) in the configured format
    // from the first line on; see logging.rs for the rule before the configuration.
    match &cli.command {
        Command::Run { config, .. } => logging::bootstrap(
            "supervisor",
            logging::Format::bootstrap(config.sources().config_file.as_deref()),
        ),
        Command::Stage { stage } => {
            logging::bootstrap(&stage.name(), logging::Format::bootstrap(None))
        }
        _ => {}
    }
    let outcome = match cli.command {
        Command::CheckConfig(args) => check_config::run(&args.sources()),
        Command::Run { config, runtime } => run(&config, &runtime, &build),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut command(&build),
                "ftp-pooler",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(command(&build))
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .context("writing the man page"),
        Command::Ctl { runtime, action } => ctl(&runtime, action),
        Command::Stage { stage } => stage_main(stage),
    };
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            logging::fatal(&e);
            ExitCode::FAILURE
        }
    };
    logging::finish();
    code
}

/// Loads the configuration, with the librdkafka properties checked by librdkafka, or
/// prints every error (exit 2).
fn load(sources: &ftp_pooler_config::Sources) -> Result<Config, ExitCode> {
    sources
        .load_checked(&ftp_pooler_kafka::check)
        .map_err(|errors| {
            for e in errors.iter() {
                logging::error_line(&e.to_string());
            }
            logging::error_line(&format!("configuration invalid: {} error(s)", errors.len()));
            ExitCode::from(2)
        })
}

fn run(
    args: &ConfigArgs,
    runtime: &RuntimeArgs,
    build: &build_info::BuildInfo,
) -> anyhow::Result<ExitCode> {
    let mut sources = args.sources();
    let config = match load(&sources) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // A reload reads the same files, whatever the working directory has become. Made
    // absolute, symlinks kept: a Kubernetes volume's files are symlinks through `..data`,
    // which an update swaps (the old target directory is deleted), so the path to read
    // again is the mounted one, not where it pointed at start.
    if let Some(f) = &config.config_file {
        sources.config_file =
            Some(std::path::absolute(f).with_context(|| f.display().to_string())?);
    }
    sources.connections_file = Some(
        std::path::absolute(&config.connections_file)
            .with_context(|| config.connections_file.display().to_string())?,
    );
    let config = match load(&sources) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    logging::init(&config.settings.logging, "supervisor");
    let opts = ftp_pooler_supervisor::Options {
        exe: std::env::current_exe().context("locating the ftp-pooler executable")?,
        runtime_dir: runtime.dir(),
        // The supervisor owns the configuration: it reads the files at start and at each
        // reload, checked as at start (librdkafka included); stages never read them.
        load: {
            let sources = sources.clone();
            std::sync::Arc::new(move || sources.load_checked(&ftp_pooler_kafka::check))
        },
        watched: std::sync::Arc::new(move || sources.watched_files()),
        build_info: build.labels(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(ftp_pooler_supervisor::run(config, opts))? {
        Outcome::Stopped => Ok(ExitCode::SUCCESS),
        Outcome::GaveUp { stage } => Err(anyhow::anyhow!("stage {stage} kept crashing; gave up")),
    }
}

fn ctl(runtime: &RuntimeArgs, action: CtlAction) -> anyhow::Result<ExitCode> {
    let paths = RuntimePaths::new(runtime.dir());
    let (req, limit) = match action {
        CtlAction::Status => (CtlRequest::Status, Duration::from_secs(10)),
        CtlAction::Restart { stage } => (CtlRequest::Restart { stage }, Duration::from_secs(180)),
        CtlAction::Reload => (CtlRequest::Reload, Duration::from_secs(30)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = rt
        .block_on(ftp_pooler_supervisor::ctl(&paths, &req, limit))
        .with_context(|| format!("no supervisor answers at {}", paths.ctl().display()))?;
    match reply {
        CtlResponse::Status { pid, stages } => {
            println!("supervisor pid {pid}");
            println!(
                "{:<28} {:>8} {:<10} {:>8} {:>10}",
                "STAGE", "PID", "STATE", "RESTARTS", "UPTIME_S"
            );
            for s in stages {
                let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
                println!(
                    "{:<28} {:>8} {:<10} {:>8} {:>10}",
                    s.name.to_string(),
                    pid,
                    s.state,
                    s.restarts,
                    s.uptime_seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlResponse::Restarted { stage, pid } => {
            println!("{stage} restarted (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
        CtlResponse::Reloaded {
            generation,
            added,
            removed,
            restarted,
        } => {
            println!(
                "configuration generation {generation} in force: connections added {added:?}, removed {removed:?}; stages restarted {restarted:?}"
            );
            Ok(ExitCode::SUCCESS)
        }
        CtlResponse::Error(e) => {
            eprintln!("ftp-pooler ctl: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// A stage process: it connects to the supervisor, which hands it the configuration in
/// force (stages never read the configuration files), then runs.
fn stage_main(stage: StageKind) -> anyhow::Result<ExitCode> {
    let dir = std::env::var_os(ENV_RUNTIME_DIR)
        .context("FTP_POOLER_RUNTIME_DIR is not set: stages are started by `ftp-pooler run`")?;
    let paths = RuntimePaths::new(PathBuf::from(dir));
    let (id, role) = match &stage {
        StageKind::Ingest => (StageId::Ingest, Role::Ingest),
        StageKind::Publish => (StageId::Publish, Role::Publish),
        StageKind::Transfer { connection_id } => (
            StageId::Transfer(connection_id.parse().map_err(anyhow::Error::msg)?),
            Role::Transfer,
        ),
    };
    let name = id.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let supervisor = rt
        .block_on(SupervisorLink::connect(&paths, role, &name, 0))
        .with_context(|| format!("{name}: no configuration from the supervisor"))?;
    logging::init(&supervisor.config().config.settings.logging, &name);
    test_hook_fail_at_start(&name)?;
    let result: anyhow::Result<()> = rt.block_on(async move {
        match stage {
            StageKind::Ingest => ftp_pooler_ingest::stage::run(supervisor, paths).await?,
            StageKind::Publish => ftp_pooler_publish::stage::run(supervisor, paths).await?,
            StageKind::Transfer { connection_id } => {
                ftp_pooler_transfer::worker::run(supervisor, connection_id, paths).await?
            }
        }
        Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    // A failure is reported once, by main.
    result.map(|()| ExitCode::SUCCESS)
}

/// Test hook: `FTP_POOLER_TEST_FAIL_AT_START=<stage>:error` makes that stage fail right
/// after its logging is set up, `<stage>:panic` makes it panic (to prove that a failing
/// start and a panic are one line each, in the configured format).
fn test_hook_fail_at_start(name: &str) -> anyhow::Result<()> {
    let Ok(hook) = std::env::var("FTP_POOLER_TEST_FAIL_AT_START") else {
        return Ok(());
    };
    match hook.strip_prefix(name).and_then(|h| h.strip_prefix(':')) {
        Some("error") => anyhow::bail!("{name}: test hook FTP_POOLER_TEST_FAIL_AT_START"),
        Some("panic") => panic!("{name}: test hook FTP_POOLER_TEST_FAIL_AT_START"),
        _ => Ok(()),
    }
}
