//! `connections.ini`: the connection registry.
//!
//! One section per connection id, by `type`: `ftp` (see [`crate::ftp`]), `sftp` (see
//! [`crate::sftp`]) or `local` (base_path: an absolute, existing, writable directory).
//! Keys are case-insensitive, as in Python's configparser, and a `[DEFAULT]` section's
//! keys apply to every section of a kind that knows them. Every problem of the file is
//! collected and named by file, section and key; key values are read by [`crate::keys`].
//! Passwords are kept in [`Secret`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrors, Place};
use crate::ftp::{parse_ftp, FtpConnection, FTP_KEYS};
use crate::keys::{check_unknown, parse_bool};
use crate::sftp::{parse_sftp, HostKeyCheck, SftpAuth, SftpConnection, SFTP_KEYS};

/// A password: shown as `***` by `Debug` and `Display`; read it with [`Secret::expose`].
/// It serialises as itself: the supervisor hands the configuration in force to its
/// stages over the private (0700) runtime socket. Never serialise it into a log, a
/// result, a metric or an API body.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalConnection {
    /// Absolute; every local path of a task resolves inside it.
    pub base_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionKind {
    Ftp(FtpConnection),
    Sftp(SftpConnection),
    Local(LocalConnection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub kind: ConnectionKind,
}

impl Connection {
    pub fn is_local(&self) -> bool {
        matches!(self.kind, ConnectionKind::Local(_))
    }
    pub fn as_ftp(&self) -> Option<&FtpConnection> {
        match &self.kind {
            ConnectionKind::Ftp(f) => Some(f),
            _ => None,
        }
    }
    pub fn as_sftp(&self) -> Option<&SftpConnection> {
        match &self.kind {
            ConnectionKind::Sftp(f) => Some(f),
            _ => None,
        }
    }
    pub fn as_local(&self) -> Option<&LocalConnection> {
        match &self.kind {
            ConnectionKind::Local(l) => Some(l),
            _ => None,
        }
    }
    /// A server (FTP or SFTP): one transfer worker each.
    pub fn is_remote(&self) -> bool {
        !self.is_local()
    }
    /// The connection's own `max_sessions`, for a server.
    pub fn max_sessions(&self) -> Option<u64> {
        match &self.kind {
            ConnectionKind::Ftp(f) => f.max_sessions,
            ConnectionKind::Sftp(f) => f.max_sessions,
            ConnectionKind::Local(_) => None,
        }
    }

    /// One line describing the connection, without its password.
    pub fn summary(&self) -> String {
        match &self.kind {
            ConnectionKind::Ftp(f) => {
                let mut s = format!(
                    "{:<20} ftp    {}@{}:{} tls={} passive={}",
                    self.id,
                    f.user,
                    f.host,
                    f.port,
                    f.tls.as_str(),
                    f.passive
                );
                if let Some(a) = f.active_address {
                    s.push_str(&format!(" active_address={a}"));
                }
                if let Some(r) = f.active_port_range {
                    s.push_str(&format!(" active_port_range={r}"));
                }
                if let Some(m) = f.max_sessions {
                    s.push_str(&format!(" max_sessions={m}"));
                }
                if let Some(ca) = &f.tls_ca_file {
                    s.push_str(&format!(" tls_ca_file={}", ca.display()));
                }
                if f.tls_insecure {
                    s.push_str(" tls_insecure=true");
                }
                s
            }
            ConnectionKind::Sftp(f) => {
                let auth = match &f.auth {
                    SftpAuth::Password(_) => "password".to_string(),
                    SftpAuth::Key { file, .. } => format!("key={}", file.display()),
                };
                let host_key = match &f.host_key {
                    HostKeyCheck::KnownHosts(p) => format!("known_hosts={}", p.display()),
                    HostKeyCheck::Fingerprint(fp) => format!("host_key={fp}"),
                    HostKeyCheck::InsecureAcceptAny => "host_key=ANY (insecure)".to_string(),
                };
                let mut s = format!(
                    "{:<20} sftp   {}@{}:{} {auth} {host_key}",
                    self.id, f.user, f.host, f.port
                );
                if let Some(m) = f.max_sessions {
                    s.push_str(&format!(" max_sessions={m}"));
                }
                s
            }
            ConnectionKind::Local(l) => {
                format!("{:<20} local  {}", self.id, l.base_path.display())
            }
        }
    }
}

/// All connections of `connections.ini`, in file order. Serialised as the list of its
/// connections; deserialising checks the ids again (valid, unique).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Connection>", into = "Vec<Connection>")]
pub struct Registry {
    connections: BTreeMap<String, Connection>,
    order: Vec<String>,
}

const LOCAL_KEYS: &[&str] = &["type", "base_path"];
/// configparser's section of defaults for every other section.
const DEFAULT_SECTION: &str = "DEFAULT";

impl Registry {
    /// Reads and validates a connections file.
    pub fn load(path: &Path) -> Result<Registry, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::from(ConfigError::new(
                Place::File(path.into()),
                format!("cannot read: {e}"),
            ))
        })?;
        Registry::parse(path, &text)
    }

    /// Parses connections.ini text; `path` is used in error messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Registry, ConfigErrors> {
        let file_err = |problem: String| ConfigError::new(Place::File(path.into()), problem);
        // Values are taken literally (no quotes, no escapes), as configparser does.
        let opt = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: false,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = Ini::load_from_str_opt(text, opt)
            .map_err(|e| ConfigErrors::from(file_err(format!("not a valid INI file: {e}"))))?;

        let mut errors = ConfigErrors::default();
        let mut registry = Registry::default();
        let mut seen = std::collections::HashSet::new();
        // configparser's [DEFAULT]: its keys are defaults for every section.
        let defaults: Vec<(String, String)> = ini
            .section(Some(DEFAULT_SECTION))
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        for (section, props) in ini.iter() {
            if section == Some(DEFAULT_SECTION) {
                continue;
            }
            let Some(id) = section else {
                if let Some((k, _)) = props.iter().next() {
                    errors.push(file_err(format!(
                        "key {k:?} stands before any [section]: every key belongs to a connection"
                    )));
                }
                continue;
            };
            let place = |key: Option<&str>| Place::Ini {
                file: path.into(),
                section: id.to_string(),
                key: key.map(String::from),
            };
            if !seen.insert(id) {
                errors.push(ConfigError::new(
                    place(None),
                    "duplicate section: each connection id must be unique",
                ));
                continue;
            }
            if let Err(problem) = check_id(id) {
                errors.push(ConfigError::new(place(None), problem));
                continue;
            }
            // Keys are case-insensitive; a key given twice is an error. [DEFAULT] keys fill
            // in what a section does not set (those not known for its type are ignored).
            let mut keys: BTreeMap<String, String> = BTreeMap::new();
            let mut own = std::collections::HashSet::new();
            for (k, v) in props.iter() {
                let key = k.trim().to_ascii_lowercase();
                keys.insert(key.clone(), v.trim().to_string());
                if !own.insert(key.clone()) {
                    errors.push(ConfigError::new(place(Some(&key)), "given more than once"));
                }
            }
            for (k, v) in &defaults {
                keys.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let mut bad = |key: &str, problem: String| {
                errors.push(ConfigError::new(place(Some(key)), problem))
            };
            let kind = match keys.get("type").map(|t| t.to_ascii_lowercase()) {
                None => {
                    bad("type", "missing: set type = ftp, sftp or local".into());
                    continue;
                }
                Some(t) if t == "ftp" => {
                    // Active-mode keys inherited from [DEFAULT] by a passive connection
                    // do not apply to it (set in the section itself, they are an error).
                    let passive = keys.get("passive").and_then(|v| parse_bool(v)) != Some(false);
                    keys.retain(|k, _| {
                        own.contains(k)
                            || (FTP_KEYS.contains(&k.as_str())
                                && !(passive && k.starts_with("active_")))
                    });
                    parse_ftp(&keys, &mut bad).map(ConnectionKind::Ftp)
                }
                Some(t) if t == "sftp" => {
                    keys.retain(|k, _| own.contains(k) || SFTP_KEYS.contains(&k.as_str()));
                    check_unknown(&keys, SFTP_KEYS, &mut bad);
                    parse_sftp(&keys, &mut bad).map(ConnectionKind::Sftp)
                }
                Some(t) if t == "local" => {
                    keys.retain(|k, _| own.contains(k) || LOCAL_KEYS.contains(&k.as_str()));
                    parse_local(&keys, &mut bad)
                }
                Some(t) => {
                    bad(
                        "type",
                        format!("{t:?} is not a connection type (ftp, sftp or local)"),
                    );
                    continue;
                }
            };
            if let Some(kind) = kind {
                registry.order.push(id.to_string());
                registry.connections.insert(
                    id.to_string(),
                    Connection {
                        id: id.to_string(),
                        kind,
                    },
                );
            }
        }
        if registry.order.is_empty() && errors.is_empty() {
            errors.push(file_err("defines no connection".into()));
        }
        errors.into_result(registry)
    }

    pub fn get(&self, id: &str) -> Option<&Connection> {
        self.connections.get(id)
    }

    /// Connections in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.order.iter().map(|id| &self.connections[id])
    }

    /// The servers (FTP and SFTP connections) with their ids, in file order: one
    /// transfer worker each.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &Connection)> {
        self.iter()
            .filter(|c| c.is_remote())
            .map(|c| (c.id.as_str(), c))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl From<Registry> for Vec<Connection> {
    fn from(r: Registry) -> Vec<Connection> {
        let Registry {
            mut connections,
            order,
        } = r;
        order
            .iter()
            .filter_map(|id| connections.remove(id))
            .collect()
    }
}

impl TryFrom<Vec<Connection>> for Registry {
    type Error = String;

    fn try_from(list: Vec<Connection>) -> Result<Registry, String> {
        let mut registry = Registry::default();
        for c in list {
            check_id(&c.id).map_err(|e| format!("[{}]: {e}", c.id))?;
            if registry.connections.contains_key(&c.id) {
                return Err(format!("[{}]: duplicate connection id", c.id));
            }
            registry.order.push(c.id.clone());
            registry.connections.insert(c.id.clone(), c);
        }
        Ok(registry)
    }
}

/// Connection ids name processes and sockets: no whitespace, control characters or `/`.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("empty connection id".into());
    }
    if id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err("a connection id may not contain whitespace, control characters or '/'".into());
    }
    Ok(())
}

fn parse_local(
    keys: &BTreeMap<String, String>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<ConnectionKind> {
    check_unknown(keys, LOCAL_KEYS, bad);
    let Some(base) = keys.get("base_path").filter(|b| !b.is_empty()) else {
        bad(
            "base_path",
            "missing: a local connection needs base_path".into(),
        );
        return None;
    };
    let base_path = PathBuf::from(base);
    if !base_path.is_absolute() {
        bad("base_path", format!("{base:?} is not an absolute path"));
        return None;
    }
    match std::fs::metadata(&base_path) {
        Err(e) => {
            bad("base_path", format!("{base:?}: {e}"));
            return None;
        }
        Ok(m) if !m.is_dir() => {
            bad("base_path", format!("{base:?} is not a directory"));
            return None;
        }
        Ok(_) => {}
    }
    if let Err(e) = tempfile_probe(&base_path) {
        bad("base_path", format!("{base:?} is not writable: {e}"));
        return None;
    }
    Some(ConnectionKind::Local(LocalConnection { base_path }))
}

/// Proves a directory writable by creating and removing a file in it.
fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".ftp-pooler-write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
