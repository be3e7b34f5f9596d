//! ftp-pooler-supervisor: the parent process (`ftp-pooler run`).
//!
//! Owns the stage processes and the configuration in force: it spawns
//! `ftp-pooler stage publish`, one `ftp-pooler stage transfer <id>` per ftp connection
//! and `ftp-pooler stage ingest` (in that order), hands each its configuration when it
//! connects, waits for each to report ready, restarts crashed ones according to the
//! [`policy`], gives up on a stage that cannot stay up, applies reloads to every stage
//! at once, serves `ftp-pooler ctl`, the REST API and `/metrics`, and drains on
//! SIGTERM/SIGINT.
//!
//! The rooms: [`core`] decides (pure: events in, actions out), [`shell`] runs the one
//! event loop and does what the core decides, [`channels`] holds the sockets' tasks
//! (stages, ctl, signals), [`reload`] plans a reload, [`policy`] restarts and gives up,
//! [`api`], [`observed`] and [`metrics`] serve what the stages report ([`access`]: who
//! may call the mutating routes), [`process_metrics`] what `/proc` shows of each stage
//! process, [`watch`] decides when changed files make a reload. Invariants:
//! - the supervisor never touches Kafka or FTP; stages reconnect among themselves;
//! - stages never read the configuration files: the supervisor reads and validates them
//!   at start and at each reload, and a stage (re)started at any time runs on the
//!   configuration in force, never on an edited file;
//! - children run in their own process group (a terminal's Ctrl-C reaches only the
//!   supervisor, which drains them in order) and stop by themselves when the
//!   supervisor's channel closes.

pub mod access;
pub mod api;
pub mod channels;
pub mod core;
pub mod metrics;
pub mod notify;
pub mod observed;
pub mod policy;
pub mod process_metrics;
pub mod reload;
pub mod runtime_dir;
pub mod shell;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use ftp_pooler_channel::{ChannelError, StageId};
use ftp_pooler_config::{Config, ConfigErrors};

pub use channels::ctl;
pub use shell::run;

/// Environment variable naming the runtime directory (children get it from the supervisor).
pub const ENV_RUNTIME_DIR: &str = "FTP_POOLER_RUNTIME_DIR";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("runtime directory {path}: {problem}")]
    RuntimeDir { path: PathBuf, problem: String },
    #[error("another ftp-pooler supervisor is running with runtime directory {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot start {stage}: {error}")]
    Spawn {
        stage: StageId,
        error: std::io::Error,
    },
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("cannot listen on {addr} ({key}): {error}")]
    Bind {
        key: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a supervisor run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Drained and stopped on request (exit 0).
    Stopped,
    /// A stage could not stay up (exit non-zero).
    GaveUp { stage: StageId },
}

/// Reads and validates both configuration files (the same way at start and at each
/// reload); every error found, one per line, on failure.
pub type LoadConfig = Arc<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>;

/// Names the files the configuration is read from, as they are now (see
/// `ftp_pooler_config::Sources::watched_files`): what `supervisor.watch_config` watches.
pub type WatchedFiles = Arc<dyn Fn() -> Vec<PathBuf> + Send + Sync>;

/// What the supervisor needs besides the configuration.
#[derive(Clone)]
pub struct Options {
    /// The `ftp-pooler` executable to re-execute for the stages.
    pub exe: PathBuf,
    pub runtime_dir: PathBuf,
    /// How a reload reads the files.
    pub load: LoadConfig,
    /// The files whose change makes a reload (when `supervisor.watch_config`).
    pub watched: WatchedFiles,
    /// The labels of the `ftp_pooler_build_info` gauge (version, commit, rustc,
    /// librdkafka), always 1.
    pub build_info: Vec<(String, String)>,
}
