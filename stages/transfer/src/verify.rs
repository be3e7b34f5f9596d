//! What a session asks the server to check a transfer: FEAT at login (which digests it
//! offers), its digest of a file ([`crate::server_digest`]), a file's size and
//! modification time before a retry resumes.
//!
//! Invariants: every command here is bounded (a digest by the time the server may take to
//! read the file as well); a reply that refuses (4xx/5xx) leaves the session in step and
//! usable and means "not available", never a pass; a timeout or an I/O error poisons the
//! session, as everywhere.

use std::time::{Duration, SystemTime};

use ftp_pooler_contract::{Checksum, ChecksumAlgorithm};
use suppaftp::{FtpError, Status};

use crate::data::{timed, Fail};
use crate::server_digest::{digest_in_reply, DigestCommand, ServerDigests};
use crate::session::{with_ftp, FtpSession};
use crate::TransferError;

/// The rate a server is assumed to read a file at least while it computes a digest:
/// the digest's time limit grows with the file by this much.
const SERVER_HASH_RATE: u64 = 50 * 1024 * 1024;

/// FEAT: the digests the server offers (none if it does not answer FEAT).
pub(crate) async fn features(s: &mut FtpSession) -> Result<ServerDigests, TransferError> {
    let op = s.opts.op_timeout;
    match with_ftp!(s, f => timed(op, f.feat()).await) {
        Ok(features) => Ok(ServerDigests::from_feat(
            features.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )),
        Err(Fail::Ftp(FtpError::UnexpectedResponse(_) | FtpError::BadResponse)) => {
            Ok(ServerDigests::default())
        }
        Err(fail) => Err(fail.classify("FEAT", op)),
    }
}

impl FtpSession {
    /// Whether the server offers a digest in `algorithm` (learned at login).
    pub fn offers_digest(&self, algorithm: ChecksumAlgorithm) -> bool {
        self.digests.command_for(algorithm).is_some()
    }

    /// The server's digest of `path` in `algorithm`, a file of about `bytes` bytes: Ok(None)
    /// when it offers none, or refuses for this file (a reply that is not a digest).
    pub async fn server_checksum(
        &mut self,
        path: &str,
        algorithm: ChecksumAlgorithm,
        bytes: u64,
    ) -> Result<Option<Checksum>, TransferError> {
        let Some(command) = self.digests.command_for(algorithm) else {
            return Ok(None);
        };
        let path = self.remote_path(path)?;
        if self.poisoned {
            return Ok(None);
        }
        let op = self.opts.op_timeout;
        let limit = op + Duration::from_secs(bytes / SERVER_HASH_RATE);
        let line = match &command {
            DigestCommand::Hash { name, select } => {
                if *select {
                    let opts = format!("OPTS HASH {name}");
                    let r = with_ftp!(self, f => timed(op, f.custom_command(opts.as_str(), &[Status::CommandOk])).await);
                    match r {
                        Ok(_) => self.digests.selected(name),
                        Err(Fail::Ftp(FtpError::UnexpectedResponse(r))) => {
                            tracing::debug!(reply = %String::from_utf8_lossy(&r.body).trim(), "OPTS HASH refused; no server digest");
                            return Ok(None);
                        }
                        Err(fail) => {
                            self.poisoned = true;
                            return Err(fail.classify("OPTS HASH", op));
                        }
                    }
                }
                format!("HASH {path}")
            }
            DigestCommand::X(cmd) => format!("{cmd} {path}"),
        };
        let r = with_ftp!(self, f => timed(limit, f.custom_command(line.as_str(), &[Status::File, Status::RequestedFileActionOk])).await);
        match r {
            Ok(reply) => {
                let text = String::from_utf8_lossy(&reply.body);
                Ok(digest_in_reply(&text, algorithm).map(|value| Checksum { algorithm, value }))
            }
            Err(Fail::Ftp(FtpError::UnexpectedResponse(r))) => {
                tracing::debug!(reply = %String::from_utf8_lossy(&r.body).trim(), "the server gave no digest");
                Ok(None)
            }
            Err(fail) => {
                self.poisoned = true;
                let what = line.split(' ').next().unwrap_or("HASH").to_string();
                Err(match fail {
                    Fail::Timeout => TransferError::timeout(&what, limit.as_secs_f64()),
                    fail => fail.classify(&what, op),
                })
            }
        }
    }
}

impl FtpSession {
    /// REST `offset`: the next RETR starts there. False when the server refuses it (the
    /// session stays usable: the transfer goes from the start).
    pub async fn rest(&mut self, offset: u64) -> Result<bool, TransferError> {
        self.guard_usable("REST")?;
        let op = self.opts.op_timeout;
        let line = format!("REST {offset}");
        let r = with_ftp!(self, f => timed(op, f.custom_command(line.as_str(), &[Status::RequestFilePending])).await);
        match r {
            Ok(_) => {
                self.restart = offset;
                Ok(true)
            }
            Err(Fail::Ftp(FtpError::UnexpectedResponse(r))) => {
                tracing::debug!(reply = %String::from_utf8_lossy(&r.body).trim(), "REST refused; the transfer starts from zero");
                Ok(false)
            }
            Err(fail) => {
                self.poisoned = true;
                Err(fail.classify("REST", op))
            }
        }
    }

    /// MDTM of `path`: its modification time as the server tells it (UTC, seconds), None
    /// when the server does not say.
    pub async fn mdtm(&mut self, path: &str) -> Result<Option<SystemTime>, TransferError> {
        let path = self.remote_path(path)?;
        self.guard_usable("MDTM")?;
        let op = self.opts.op_timeout;
        let line = format!("MDTM {path}");
        let r =
            with_ftp!(self, f => timed(op, f.custom_command(line.as_str(), &[Status::File])).await);
        match r {
            Ok(reply) => Ok(crate::resume::parse_mdtm(&String::from_utf8_lossy(
                &reply.body,
            ))),
            Err(Fail::Ftp(FtpError::UnexpectedResponse(_))) => Ok(None),
            Err(fail) => {
                self.poisoned = true;
                Err(fail.classify("MDTM", op))
            }
        }
    }

    fn guard_usable(&self, op: &str) -> Result<(), TransferError> {
        if self.poisoned {
            Err(TransferError::new(
                ftp_pooler_contract::ErrorCode::ConnectionError,
                format!("{op}: session is no longer usable"),
            ))
        } else {
            Ok(())
        }
    }
}
