//! The `ftp-pooler` binary: the command line, and the door to each room.
//!
//! Only subcommands that work exist. Today: `check-config`. The supervisor (`run`), the
//! stage entry points (`stage ingest|transfer <id>|publish`) and `ctl` arrive with the
//! pipeline. Errors are reported here, at the edge, with `anyhow`; exit codes: 0 ok,
//! 1 failure, 2 invalid configuration.

mod check_config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Check config.yaml (with environment overrides) and connections.ini without starting.
    ///
    /// Exit 0 and a summary (connections without secrets) when both are valid; exit 2 with
    /// every error found, one per line, otherwise.
    CheckConfig(ConfigArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::CheckConfig(args) => check_config::run(&args.sources()),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ftp-pooler: {e:#}");
            ExitCode::FAILURE
        }
    }
}
