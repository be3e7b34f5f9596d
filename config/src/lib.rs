//! ftp-pooler-config: everything the service reads before it starts.
//!
//! Owns `config.yaml` ([`Settings`], with environment overrides) and `connections.ini`
//! ([`Registry`]). Invariants:
//! - precedence is environment > YAML file > built-in defaults (the Python version's);
//! - an unknown key, a wrong type or an out-of-range value is an error that names the file
//!   (or environment variable), the section and the key: nothing falls back silently;
//! - loading collects *every* error it can find, so `check-config` shows them all at once;
//! - passwords live in [`Secret`], whose `Debug` and `Display` never show them.

mod active;
pub mod admin_token;
mod connections;
mod error;
mod ftp;
mod id;
mod kafka;
mod keys;
pub mod references;
mod schema;
mod settings;
pub mod sftp;
mod watched;

pub use active::{PortRange, MIN_ACTIVE_PORT};
pub use connections::{Connection, ConnectionKind, LocalConnection, Registry, Secret};
pub use error::{ConfigError, ConfigErrors, Place};
pub use ftp::{FtpConnection, TlsMode};
pub use id::ConnectionId;
pub use kafka::{
    group_instance_id_char, group_instance_id_problem, is_secret_property, no_kafka_check,
    KafkaCheck, KafkaMap, PropertyProblem, GROUP_INSTANCE_ID, GROUP_INSTANCE_ID_MAX,
};
pub use settings::{
    ApiSettings, CircuitBreakerSettings, KafkaSettings, LoggingSettings, MetricsSettings,
    PoolSettings, Settings, ShutdownSettings, SupervisorSettings, TransferSettings,
};
pub use sftp::{HostKeyCheck, SftpAuth, SftpConnection};

use std::path::{Path, PathBuf};

/// Environment variable naming the YAML settings file.
pub const ENV_CONFIG: &str = "FTP_POOLER_CONFIG";
/// Environment variable naming the connections file.
pub const ENV_CONNECTIONS: &str = "FTP_POOLER_CONNECTIONS";
/// Prefix of setting overrides such as `FTP_POOLER_KAFKA__BOOTSTRAP_SERVERS`.
pub const ENV_PREFIX: &str = "FTP_POOLER_";

/// Both configuration files, loaded and validated together. Serialisable (serde, and so
/// bincode): the supervisor hands the configuration in force to each stage over its
/// private channel, so stages never read the files (DESIGN.md section 9). It holds
/// secrets: never log or publish its serialised form.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub settings: Settings,
    pub registry: Registry,
    /// The files they came from (None: built-in defaults only).
    pub config_file: Option<PathBuf>,
    pub connections_file: PathBuf,
}

/// Where to read the configuration from: explicit paths (command line) win over the
/// `FTP_POOLER_CONFIG` / `FTP_POOLER_CONNECTIONS` variables, which win over
/// `connections_path` inside config.yaml.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_file: Option<PathBuf>,
    pub connections_file: Option<PathBuf>,
    /// The environment to apply (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// Reads the process environment; `config`/`connections` override it when given.
    pub fn from_env(config: Option<PathBuf>, connections: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| PathBuf::from(v))
                .filter(|p| !p.as_os_str().is_empty())
        };
        Sources {
            config_file: config.or_else(|| get(ENV_CONFIG)),
            connections_file: connections.or_else(|| get(ENV_CONNECTIONS)),
            env,
        }
    }

    /// Loads and validates both files; every error found in either is returned. The
    /// librdkafka properties are checked only for their references (`${file:...}`):
    /// [`Sources::load_checked`] has them checked by librdkafka too.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        self.load_checked(&no_kafka_check)
    }

    /// [`Sources::load`], with the librdkafka properties checked by `check` (the kafka
    /// crate's, which asks librdkafka itself); its problems are reported with the others.
    pub fn load_checked(&self, check: &KafkaCheck<'_>) -> Result<Config, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let settings = match settings::load(self.config_file.as_deref(), &self.env, check) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let connections_file = self.connections_file.clone().or_else(|| {
            settings
                .as_ref()
                .and_then(|s| s.connections_path.as_ref().map(PathBuf::from))
        });
        let registry = match &connections_file {
            Some(path) => match Registry::load(path) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            },
            None => {
                errors.push(ConfigError::new(
                    Place::Env(ENV_CONNECTIONS.into()),
                    "no connections file given: set FTP_POOLER_CONNECTIONS or --connections",
                ));
                None
            }
        };
        match (settings, registry, connections_file) {
            (Some(settings), Some(registry), Some(connections_file)) if errors.is_empty() => {
                Ok(Config {
                    settings,
                    registry,
                    config_file: self.config_file.clone(),
                    connections_file,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Loads only the settings (YAML + environment); see [`Sources::load`] for both files.
pub fn load_settings(
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Settings, ConfigErrors> {
    settings::load(file, env, &no_kafka_check)
}

/// The session budget of each server (ftp or sftp connection) (DESIGN.md section 5): its own limit
/// (`max_sessions`, else `pool.max_sessions_per_connection`), scaled down when the sum
/// exceeds `pool.max_sessions_per_pod`, every connection keeping at least one session.
/// Deterministic: every process computes the same budget from the same files, so the
/// supervisor's share for each transfer worker is this function's value for it.
pub fn session_budget(
    settings: &Settings,
    registry: &Registry,
) -> std::collections::BTreeMap<String, u64> {
    use std::collections::BTreeMap;
    let pool = &settings.pool;
    let wants: BTreeMap<String, u64> = registry
        .servers()
        .map(|(id, c)| {
            let want = c
                .max_sessions()
                .unwrap_or(pool.max_sessions_per_connection)
                .max(1);
            (id.to_string(), want)
        })
        .collect();
    let sum: u64 = wants.values().sum();
    let pod = pool.max_sessions_per_pod.max(1);
    if sum <= pod {
        return wants;
    }
    // Proportional shares, rounded down (at least 1), then the remainder to the largest
    // fractions (ties by id).
    let mut shares: BTreeMap<String, u64> = BTreeMap::new();
    let mut fractions: Vec<(u64, String)> = Vec::new();
    for (id, &want) in &wants {
        let exact = want * pod;
        shares.insert(id.clone(), (exact / sum).max(1));
        fractions.push((exact % sum, id.clone()));
    }
    let used: u64 = shares.values().sum();
    let mut left = pod.saturating_sub(used);
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, id) in fractions {
        if left == 0 {
            break;
        }
        let s = shares.get_mut(&id).expect("share");
        if *s < wants[&id] {
            *s += 1;
            left -= 1;
        }
    }
    shares
}
