//! The SSH side of an SFTP session: the TCP connection, the key exchange with the
//! server's host key verified ([`Verifier`]: known_hosts or a `SHA256:` fingerprint,
//! before anything of ours is sent), the login (password, or a private key with its
//! passphrase), and the SFTP channels on the connection.
//!
//! Invariants: a host key that is not the configured one is HOST_KEY_MISMATCH and no
//! authentication goes out; a rejected login is AUTH_ERROR; every step is bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_config::{HostKeyCheck, SftpAuth, SftpConnection};
use ftp_pooler_contract::ErrorCode;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::{RawSftpSession, SftpSession as Sftp};

use super::sftp_error;
use crate::TransferError;

/// What the key exchange found wrong with the server's host key.
#[derive(Debug)]
pub(super) enum Refused {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for Refused {
    fn from(e: russh::Error) -> Self {
        Refused::Ssh(e)
    }
}

/// russh's client handler: verifies the host key.
pub(super) struct Verifier {
    host: String,
    port: u16,
    check: HostKeyCheck,
}

impl client::Handler for Verifier {
    type Error = Refused;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Refused> {
        let key = key.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match &self.check {
            HostKeyCheck::InsecureAcceptAny => {
                tracing::warn!(host = %self.host, port = self.port, %fingerprint, "insecure_accept_any_host_key: the server's host key is not verified");
                Ok(true)
            }
            HostKeyCheck::Fingerprint(want) => {
                if want.trim_end_matches('=') == fingerprint.trim_end_matches('=') {
                    Ok(true)
                } else {
                    Err(Refused::HostKey(format!(
                        "the server's host key is {fingerprint}, not {want}"
                    )))
                }
            }
            HostKeyCheck::KnownHosts(path) => {
                match russh::keys::check_known_hosts_path(&self.host, self.port, &key, path) {
                    Ok(true) => Ok(true),
                    Ok(false) => Err(Refused::HostKey(format!(
                        "{}:{} ({} key {fingerprint}) is not in {}",
                        self.host,
                        self.port,
                        key.algorithm(),
                        path.display()
                    ))),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(Refused::HostKey(format!(
                        "the server's host key {fingerprint} differs from line {line} of {}",
                        path.display()
                    ))),
                    Err(e) => Err(Refused::HostKey(format!(
                        "known_hosts {}: {e}",
                        path.display()
                    ))),
                }
            }
        }
    }
}

/// An SSH error as the contract's code.
pub(super) fn ssh_error(what: &str, e: russh::Error) -> TransferError {
    use russh::Error as E;
    let code = match &e {
        E::UnknownKey | E::KeyChanged { .. } => ErrorCode::HostKeyMismatch,
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout | E::Elapsed(_) => {
            ErrorCode::TransferTimeout
        }
        E::IO(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorCode::TransferTimeout,
        _ => ErrorCode::ConnectionError,
    };
    TransferError::new(code, format!("{what}: {e}"))
}

/// TCP connect, key exchange with the host key verified, login: the SSH connection,
/// each step within `limit`.
pub(super) async fn login(
    conn: &SftpConnection,
    limit: Duration,
) -> Result<Handle<Verifier>, TransferError> {
    let addr = format!("{}:{}", conn.host, conn.port);
    let tcp = TransferError::connecting(
        &format!("connect {addr}"),
        limit,
        tokio::net::TcpStream::connect((conn.host.as_str(), conn.port)),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let mut config = client::Config {
        inactivity_timeout: None,
        nodelay: true,
        ..client::Config::default()
    };
    if let HostKeyCheck::KnownHosts(path) = &conn.host_key {
        // As OpenSSH does: ask first for the key types known_hosts has for this host
        // (russh's own order asks for ed25519 first, and a host known by its RSA key
        // alone would look unknown).
        if let Ok(known) =
            russh::keys::known_hosts::known_host_keys_path(&conn.host, conn.port, path)
        {
            let family = |a: &russh::keys::Algorithm| {
                if a.clone().is_rsa() {
                    "rsa".to_string()
                } else {
                    a.as_str().to_string()
                }
            };
            let known: Vec<String> = known.iter().map(|(_, k)| family(&k.algorithm())).collect();
            let mut keys = config.preferred.key.to_vec();
            keys.sort_by_key(|a| !known.contains(&family(a)));
            config.preferred.key = keys.into();
        }
    }
    let config = Arc::new(config);
    let verifier = Verifier {
        host: conn.host.clone(),
        port: conn.port,
        check: conn.host_key.clone(),
    };
    let handshake = tokio::time::timeout(limit, client::connect_stream(config, tcp, verifier))
        .await
        .map_err(|_| {
            TransferError::timeout(&format!("SSH handshake with {addr}"), limit.as_secs_f64())
        })?;
    let mut handle = handshake.map_err(|e| match e {
        Refused::HostKey(m) => {
            TransferError::new(ErrorCode::HostKeyMismatch, format!("{addr}: {m}"))
        }
        Refused::Ssh(e) => ssh_error(&format!("SSH handshake with {addr}"), e),
    })?;
    let login = async {
        match &conn.auth {
            SftpAuth::Password(p) => handle
                .authenticate_password(conn.user.as_str(), p.expose())
                .await
                .map_err(|e| ssh_error("login", e)),
            SftpAuth::Key { file, passphrase } => {
                let key =
                    russh::keys::load_secret_key(file, passphrase.as_ref().map(|p| p.expose()))
                        .map_err(|e| {
                            TransferError::new(
                                ErrorCode::AuthError,
                                format!("private key {}: {e}", file.display()),
                            )
                        })?;
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(|e| ssh_error("login", e))?
                        .flatten()
                } else {
                    None
                };
                handle
                    .authenticate_publickey(
                        conn.user.as_str(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(|e| ssh_error("login", e))
            }
        }
    };
    let auth = tokio::time::timeout(limit, login)
        .await
        .map_err(|_| TransferError::timeout(&format!("login to {addr}"), limit.as_secs_f64()))??;
    if let AuthResult::Failure { .. } = auth {
        return Err(TransferError::new(
            ErrorCode::AuthError,
            format!("login to {addr} as {:?}: rejected", conn.user),
        ));
    }
    Ok(handle)
}

pub(super) async fn open_sftp(handle: &Handle<Verifier>) -> Result<Sftp, TransferError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| ssh_error("SSH channel", e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| ssh_error("SFTP subsystem", e))?;
    Sftp::new(channel.into_stream())
        .await
        .map_err(|e| sftp_error("SFTP subsystem", e).0)
}

pub(super) async fn open_raw(
    handle: &Handle<Verifier>,
) -> Result<(RawSftpSession, HashMap<String, String>), TransferError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| ssh_error("SSH channel", e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| ssh_error("SFTP subsystem", e))?;
    let raw = RawSftpSession::new(channel.into_stream());
    let version = raw
        .init()
        .await
        .map_err(|e| sftp_error("SFTP subsystem", e).0)?;
    Ok((raw, version.extensions))
}
