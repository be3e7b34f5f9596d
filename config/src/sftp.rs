//! `type = sftp` sections of `connections.ini` (issue 22): an SSH server's SFTP subsystem.
//!
//! Keys: host, port (22), user, and how to log in: `password` (or `pass`) or
//! `private_key_file` (OpenSSH format), whose passphrase, if it has one, comes from the
//! environment (`private_key_passphrase_env = VAR`) or a file
//! (`private_key_passphrase_file`); and how the server's host key is verified:
//! `known_hosts_file` (OpenSSH's format, `[host]:port` entries included) or
//! `host_key_fingerprint` (`SHA256:<base64>`, as `ssh-keygen -lf` prints it). Host keys
//! are always verified: `insecure_accept_any_host_key = true` skips that, for tests only,
//! and the transfer stage warns at every connect. `timeout` and `max_sessions` as for FTP.
//!
//! Invariants: every problem is named by its key (a missing or unreadable key file,
//! known_hosts file or passphrase, a malformed fingerprint, no way to log in, no way to
//! verify the host); the password and the passphrase are [`Secret`]s and are never
//! shown; the key file's content is read by the transfer stage, not kept here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connections::Secret;
use crate::keys::{parse_bool, password, port, positive, required};

/// The keys of an sftp section.
pub(crate) const SFTP_KEYS: &[&str] = &[
    "type",
    "host",
    "port",
    "user",
    "pass",
    "password",
    "private_key_file",
    "private_key_passphrase_env",
    "private_key_passphrase_file",
    "known_hosts_file",
    "host_key_fingerprint",
    "insecure_accept_any_host_key",
    "timeout",
    "max_sessions",
];

/// How an SFTP connection proves who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SftpAuth {
    Password(Secret),
    /// A private key file; its passphrase (None: the key is not encrypted).
    Key {
        file: PathBuf,
        passphrase: Option<Secret>,
    },
}

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostKeyCheck {
    /// An OpenSSH known_hosts file.
    KnownHosts(PathBuf),
    /// `SHA256:<base64, no padding>` of the host key.
    Fingerprint(String),
    /// Any host key (tests only; warned at every connect).
    InsecureAcceptAny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftpConnection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SftpAuth,
    pub host_key: HostKeyCheck,
    /// Seconds for connecting and for each request (None: the transfer settings').
    pub timeout_seconds: Option<u64>,
    /// Overrides `pool.max_sessions_per_connection` for this connection.
    pub max_sessions: Option<u64>,
}

/// A well-formed `SHA256:` fingerprint: 43 characters of unpadded standard base64 (32
/// bytes), as OpenSSH prints it.
pub fn valid_fingerprint(f: &str) -> bool {
    let Some(b64) = f.strip_prefix("SHA256:") else {
        return false;
    };
    let b64 = b64.trim_end_matches('=');
    b64.len() == 43
        && b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses an sftp section's keys (unknown keys already reported by the caller).
pub(crate) fn parse_sftp(
    keys: &BTreeMap<String, String>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<SftpConnection> {
    let mut ok = true;
    let mut fail = |key: &str, problem: String| {
        ok = false;
        fail(key, problem)
    };
    let host = required(keys, "host", "an sftp connection", &mut fail);
    let user = required(keys, "user", "an sftp connection", &mut fail);
    let port = port(keys, 22, &mut fail);
    let password = password(keys, &mut fail);
    let key_file = keys.get("private_key_file").map(PathBuf::from);
    if let Some(f) = &key_file {
        if let Err(e) = std::fs::read(f) {
            fail(
                "private_key_file",
                format!("cannot read {}: {e}", f.display()),
            );
        }
    }
    let passphrase = match (
        keys.get("private_key_passphrase_env"),
        keys.get("private_key_passphrase_file"),
    ) {
        (Some(_), Some(_)) => {
            fail(
                "private_key_passphrase_file",
                "both private_key_passphrase_env and private_key_passphrase_file are given: keep one"
                    .into(),
            );
            None
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(p) => Some(Secret::new(p)),
            Err(_) => {
                fail(
                    "private_key_passphrase_env",
                    format!("the environment variable {var:?} is not set"),
                );
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            // One line: a trailing newline is not part of the passphrase.
            Ok(p) => Some(Secret::new(p.trim_end_matches(['\r', '\n']))),
            Err(e) => {
                fail(
                    "private_key_passphrase_file",
                    format!("cannot read {file}: {e}"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if passphrase.is_some() && key_file.is_none() {
        fail(
            "private_key_file",
            "a passphrase is given but no private_key_file".into(),
        );
    }
    let auth = match (password, key_file) {
        (Some(_), Some(_)) => {
            fail(
                "private_key_file",
                "both password and private_key_file are given: keep one".into(),
            );
            None
        }
        (Some(p), None) => Some(SftpAuth::Password(p)),
        (None, Some(file)) => Some(SftpAuth::Key { file, passphrase }),
        (None, None) => {
            fail(
                "password",
                "missing: an sftp connection needs password or private_key_file".into(),
            );
            None
        }
    };
    let insecure = match keys.get("insecure_accept_any_host_key") {
        None => false,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            fail(
                "insecure_accept_any_host_key",
                format!("{v:?} is not a boolean"),
            );
            false
        }),
    };
    let known_hosts = keys.get("known_hosts_file").map(PathBuf::from);
    if let Some(f) = &known_hosts {
        if let Err(e) = std::fs::read_to_string(f) {
            fail(
                "known_hosts_file",
                format!("cannot read {}: {e}", f.display()),
            );
        }
    }
    let fingerprint = keys.get("host_key_fingerprint").cloned();
    if let Some(f) = &fingerprint {
        if !valid_fingerprint(f) {
            fail(
                "host_key_fingerprint",
                format!("{f:?} is not a SHA256 fingerprint (SHA256: and 43 base64 characters, as ssh-keygen -lf prints it)"),
            );
        }
    }
    let given = [known_hosts.is_some(), fingerprint.is_some(), insecure]
        .iter()
        .filter(|g| **g)
        .count();
    let host_key = match (known_hosts, fingerprint, insecure) {
        _ if given > 1 => {
            fail(
                "host_key_fingerprint",
                "give one of known_hosts_file, host_key_fingerprint and insecure_accept_any_host_key"
                    .into(),
            );
            None
        }
        (Some(f), None, false) => Some(HostKeyCheck::KnownHosts(f)),
        (None, Some(f), false) => Some(HostKeyCheck::Fingerprint(f)),
        (None, None, true) => Some(HostKeyCheck::InsecureAcceptAny),
        _ => {
            fail(
                "known_hosts_file",
                "missing: the server's host key is always verified: set known_hosts_file or host_key_fingerprint"
                    .into(),
            );
            None
        }
    };
    let timeout_seconds = positive(keys, "timeout", &mut fail);
    let max_sessions = positive(keys, "max_sessions", &mut fail);
    if !ok {
        return None;
    }
    Some(SftpConnection {
        host,
        port,
        user,
        auth: auth?,
        host_key: host_key?,
        timeout_seconds,
        max_sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_as_ssh_keygen_prints_them() {
        assert!(valid_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
        ));
        for bad in [
            "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            "SHA256:short",
            "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2!",
        ] {
            assert!(!valid_fingerprint(bad), "{bad}");
        }
    }
}
