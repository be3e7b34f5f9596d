//! `connections.ini`: the connection registry.
//!
//! One section per connection id; `type = sftp` (see [`crate::sftp`]), `type = ftp` (host, port, user, `pass` or `password`,
//! passive, timeout, tls, tls_ca_file, tls_insecure, max_sessions, and for active mode
//! (`passive = false`) active_address and active_port_range) or `type = local`
//! (base_path). The active-mode keys with passive mode are an error, not ignored. Keys are case-insensitive, as in Python's configparser. Every problem of
//! the file is collected and named by file, section and key. A local base_path must be an
//! absolute, existing, writable directory. Passwords are kept in [`Secret`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};
use serde::{Deserialize, Serialize};

use crate::active::{parse_active_address, PortRange};
use crate::error::{ConfigError, ConfigErrors, Place};
use crate::schema::unknown;
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

/// How an FTP connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    /// Plain FTP.
    None,
    /// AUTH TLS on the control connection, then PBSZ 0 / PROT P (FTPES).
    Explicit,
    /// TLS from the first byte (FTPS, usually port 990).
    Implicit,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Explicit => "explicit",
            TlsMode::Implicit => "implicit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtpConnection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// Passive mode (EPSV, then PASV; the default); `passive = false` is active mode
    /// (EPRT, then PORT: the server connects back to a listener of ours).
    pub passive: bool,
    /// Active mode: the address announced to the server in EPRT/PORT instead of the
    /// control connection's local address (NAT). Only with `passive = false`.
    pub active_address: Option<IpAddr>,
    /// Active mode: the local ports data listeners bind (a free one of them). Only with
    /// `passive = false`.
    pub active_port_range: Option<PortRange>,
    /// Per-connection timeout for connecting and for each command, in seconds
    /// (None: `transfer.connect_timeout_seconds`).
    pub timeout_seconds: Option<u64>,
    pub tls: TlsMode,
    /// PEM file of CA certificates trusted in addition to the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any server certificate (self-signed servers). Off by default.
    pub tls_insecure: bool,
    /// Overrides `pool.max_sessions_per_connection` for this connection.
    pub max_sessions: Option<u64>,
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

const FTP_KEYS: &[&str] = &[
    "type",
    "host",
    "port",
    "user",
    "pass",
    "password",
    "passive",
    "timeout",
    "tls",
    "tls_ca_file",
    "tls_insecure",
    "max_sessions",
    "active_address",
    "active_port_range",
];
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
                    parse_ftp(&keys, &mut bad)
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

fn check_unknown(
    keys: &BTreeMap<String, String>,
    known: &[&str],
    bad: &mut dyn FnMut(&str, String),
) {
    for k in keys.keys() {
        if !known.contains(&k.as_str()) {
            bad(k, unknown(k, known));
        }
    }
}

fn parse_ftp(
    keys: &BTreeMap<String, String>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<ConnectionKind> {
    check_unknown(keys, FTP_KEYS, bad);
    let mut ok = true;
    let mut fail = |key: &str, problem: String| {
        ok = false;
        bad(key, problem)
    };
    let host = required(keys, "host", "an ftp connection", &mut fail);
    // As in the Python version: no user means anonymous FTP.
    let user = match keys.get("user").filter(|u| !u.is_empty()) {
        Some(u) => u.clone(),
        None => "anonymous".to_string(),
    };
    let password = password(keys, &mut fail).unwrap_or_default();
    // None: an invalid value (already reported).
    let tls = match keys.get("tls").map(|t| t.to_ascii_lowercase()) {
        None => Some(TlsMode::None),
        Some(t) => match t.as_str() {
            "none" | "" => Some(TlsMode::None),
            "explicit" => Some(TlsMode::Explicit),
            "implicit" => Some(TlsMode::Implicit),
            _ => {
                fail(
                    "tls",
                    format!("{t:?} is not a TLS mode (none, explicit or implicit)"),
                );
                None
            }
        },
    };
    let default_port = if tls == Some(TlsMode::Implicit) {
        990
    } else {
        21
    };
    let port = port(keys, default_port, &mut fail);
    let passive = match keys.get("passive") {
        None => true,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            fail(
                "passive",
                format!("{v:?} is not a boolean (true/false, yes/no, on/off, 1/0)"),
            );
            true
        }),
    };
    let active_address = keys.get("active_address").and_then(|v| {
        parse_active_address(v)
            .map_err(|e| fail("active_address", e))
            .ok()
    });
    let active_port_range = keys.get("active_port_range").and_then(|v| {
        v.parse::<PortRange>()
            .map_err(|e| fail("active_port_range", e))
            .ok()
    });
    // Passive mode would silently ignore them: an operator who set them meant active mode.
    for key in ["active_address", "active_port_range"] {
        if passive && keys.contains_key(key) {
            fail(
                key,
                "applies to active mode only, but passive is true (or absent): set passive = false, or remove it".into(),
            );
        }
    }
    let timeout_seconds = positive(keys, "timeout", &mut fail);
    let max_sessions = positive(keys, "max_sessions", &mut fail);
    let tls_insecure = match keys.get("tls_insecure") {
        None => false,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            fail("tls_insecure", format!("{v:?} is not a boolean"));
            false
        }),
    };
    let tls_ca_file = keys.get("tls_ca_file").map(PathBuf::from);
    if let Some(ca) = &tls_ca_file {
        if let Err(e) = std::fs::File::open(ca) {
            fail("tls_ca_file", format!("cannot read {}: {e}", ca.display()));
        }
    }
    if tls == Some(TlsMode::None) && (tls_ca_file.is_some() || tls_insecure) {
        fail(
            "tls",
            "tls_ca_file / tls_insecure are set but tls is none: set tls = explicit or implicit"
                .into(),
        );
    }
    ok.then_some(ConnectionKind::Ftp(FtpConnection {
        host,
        port,
        user,
        password,
        passive,
        active_address,
        active_port_range,
        timeout_seconds,
        tls: tls.unwrap_or(TlsMode::None),
        tls_ca_file,
        tls_insecure,
        max_sessions,
    }))
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

/// A key that must be given and not empty ("missing: `whose` needs `key`" otherwise).
pub(crate) fn required(
    keys: &BTreeMap<String, String>,
    key: &str,
    whose: &str,
    fail: &mut dyn FnMut(&str, String),
) -> String {
    match keys.get(key).filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            fail(key, format!("missing: {whose} needs {key}"));
            String::new()
        }
    }
}

/// `port`: a TCP port, `default` when absent (or invalid, reported).
pub(crate) fn port(
    keys: &BTreeMap<String, String>,
    default: u16,
    fail: &mut dyn FnMut(&str, String),
) -> u16 {
    match keys.get("port") {
        None => default,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => {
                fail("port", format!("{p:?} is not a TCP port (1-65535)"));
                default
            }
        },
    }
}

/// `pass` or `password` (one of them; both is an error).
pub(crate) fn password(
    keys: &BTreeMap<String, String>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<Secret> {
    match (keys.get("pass"), keys.get("password")) {
        (Some(_), Some(_)) => {
            fail(
                "password",
                "both pass and password are given: keep one".into(),
            );
            None
        }
        (Some(p), None) | (None, Some(p)) => Some(Secret::new(p.clone())),
        (None, None) => None,
    }
}

pub(crate) fn positive(
    keys: &BTreeMap<String, String>,
    key: &str,
    fail: &mut dyn FnMut(&str, String),
) -> Option<u64> {
    let v = keys.get(key)?;
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            fail(key, format!("{v:?} is not a whole number >= 1"));
            None
        }
    }
}

/// Booleans as Python's configparser reads them.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}
