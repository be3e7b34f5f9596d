//! A transfer engine against real servers, below the pipeline: a configuration with the
//! test's ftp connections and a `local` connection in a fresh storage directory, tasks
//! routed as ingest routes them, and the helpers the engine-level tests share (file
//! contents, every task at once, temporary files left behind).
//!
//! Invariant: the storage directory lives (and is removed) with the bed.

use std::path::{Path, PathBuf};

use ftp_pooler_channel::Route;
use ftp_pooler_config::{Config, Registry, Settings};
use ftp_pooler_contract::{TransferResult, TransferTask};
use ftp_pooler_ingest::route::resolve;
use ftp_pooler_transfer::Engine;

/// The suffix of the engine's temporary files (downloads and uploads alike).
pub const TEMP_SUFFIX: &str = ".ftp-pooler.part";

pub struct EngineBed {
    pub storage: tempfile::TempDir,
    pub config: Config,
}

impl EngineBed {
    /// `settings`, and the connections of `ftp_sections` (connections.ini text) plus
    /// `[local]` in a fresh storage directory.
    pub fn new(settings: Settings, ftp_sections: &str) -> EngineBed {
        let storage = tempfile::Builder::new()
            .prefix("storage-")
            .tempdir()
            .unwrap();
        let ini = format!(
            "{ftp_sections}\n[local]\ntype = local\nbase_path = {}\n",
            storage.path().display()
        );
        let registry = Registry::parse(Path::new("connections.ini"), &ini).unwrap();
        EngineBed {
            storage,
            config: Config {
                settings,
                registry,
                config_file: None,
                connections_file: PathBuf::from("connections.ini"),
            },
        }
    }

    /// The engine of connection `conn`.
    pub fn engine(&self, conn: &str) -> Engine {
        Engine::new(&self.config, conn).unwrap()
    }

    /// A task from `src` (connection, path) to `dst`, with its route.
    pub fn task(&self, id: &str, src: (&str, &str), dst: (&str, &str)) -> (TransferTask, Route) {
        let task = TransferTask {
            task_id: id.into(),
            src_id: src.0.into(),
            src_path: src.1.into(),
            dst_id: dst.0.into(),
            dst_path: dst.1.into(),
            checksum: None,
        };
        let route = resolve(&task, &self.config.registry).unwrap();
        (task, route)
    }

    /// `rel` inside the local storage.
    pub fn local(&self, rel: &str) -> PathBuf {
        self.storage.path().join(rel)
    }
}

/// Runs every task at once on `engine`.
pub async fn run_all(engine: &Engine, tasks: &[(TransferTask, Route)]) -> Vec<TransferResult> {
    futures::future::join_all(tasks.iter().map(|(t, r)| engine.run(t, r))).await
}

/// The content of test file `i`: `size` bytes that differ from file to file.
pub fn data(i: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((i * 131 + j * 17) % 253) as u8)
        .collect()
}

/// The engine's temporary files under `root`.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    crate::service::files_ending_with(root, TEMP_SUFFIX)
}

/// The size of the first temporary file under `root` (0 if none).
pub fn temp_size(root: &Path) -> u64 {
    temp_files(root)
        .first()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// While `run` goes on, waits (at most 30 s) until the temporary file under `watch`
/// holds `at` bytes, then does `then` (cut the link, freeze the server) and returns
/// true; false if the run ended or the 30 s passed first.
pub async fn when_temp_reaches<T>(
    run: &tokio::task::JoinHandle<T>,
    watch: &Path,
    at: u64,
    then: impl FnOnce(),
) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !run.is_finished() && std::time::Instant::now() < deadline {
        if temp_size(watch) >= at {
            then();
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    false
}
