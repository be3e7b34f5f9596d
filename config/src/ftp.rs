//! `type = ftp` sections of `connections.ini`: an FTP or FTPS server.
//!
//! Keys: host, port (21, or 990 with `tls = implicit`), user (none: anonymous), `pass`
//! or `password`, passive, timeout, tls (none, explicit, implicit), tls_ca_file,
//! tls_insecure, max_sessions, and for active mode (`passive = false`) active_address and
//! active_port_range.
//!
//! Invariants: every problem is named by its key; the active-mode keys with passive mode
//! are an error, not ignored; TLS options without TLS are an error; a CA file must be
//! readable; the password is a [`Secret`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::active::{parse_active_address, PortRange};
use crate::connections::Secret;
use crate::keys::{check_unknown, parse_bool, password, port, positive, required};

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

/// The keys of an ftp section.
pub(crate) const FTP_KEYS: &[&str] = &[
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

pub(crate) fn parse_ftp(
    keys: &BTreeMap<String, String>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<FtpConnection> {
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
    ok.then_some(FtpConnection {
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
    })
}
