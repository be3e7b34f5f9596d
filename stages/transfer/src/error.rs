//! Transfer failures, classified into the contract's error codes.
//!
//! 530 (not logged in) is `AUTH_ERROR`; 550 on RETR/SIZE is `FILE_NOT_FOUND`; refused,
//! reset, 421 and other transient (4xx) replies, TLS failures and protocol desyncs are
//! `CONNECTION_ERROR`; local disk errors are `IO_ERROR`; timeouts `TRANSFER_TIMEOUT`.

use ftp_pooler_contract::ErrorCode;
use suppaftp::{FtpError, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TransferError {
    pub code: ErrorCode,
    pub message: String,
}

impl TransferError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TransferError {
            code,
            message: message.into(),
        }
    }

    /// A local file-system failure (reading the source or writing the destination).
    pub fn local_io(what: &str, e: &std::io::Error) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound if what.starts_with("open source") => ErrorCode::FileNotFound,
            _ => ErrorCode::IoError,
        };
        TransferError::new(code, format!("{what}: {e}"))
    }

    pub fn timeout(what: &str, secs: f64) -> Self {
        TransferError::new(ErrorCode::TransferTimeout, format!("{what}: no answer within {secs:.0} s"))
    }

    /// Classifies an FTP error; `op` names the command for the message and decides
    /// whether 550 means a missing file.
    pub fn ftp(op: &str, e: FtpError) -> Self {
        let code = match &e {
            FtpError::ConnectionError(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ErrorCode::TransferTimeout
            }
            FtpError::ConnectionError(_) | FtpError::SecureError(_) | FtpError::BadResponse => {
                ErrorCode::ConnectionError
            }
            FtpError::InvalidAddress(_) | FtpError::DataConnectionAlreadyOpen => ErrorCode::ConnectionError,
            FtpError::UnexpectedResponse(r) => match r.status {
                Status::NotLoggedIn => ErrorCode::AuthError,
                Status::FileUnavailable if op == "RETR" || op == "SIZE" => ErrorCode::FileNotFound,
                s if (400..500).contains(&s.code()) => ErrorCode::ConnectionError,
                _ => ErrorCode::UnknownError,
            },
        };
        let detail = match &e {
            FtpError::UnexpectedResponse(r) => format!(
                "{} {}",
                r.status.code(),
                String::from_utf8_lossy(&r.body).trim()
            ),
            other => other.to_string(),
        };
        TransferError::new(code, format!("{op}: {detail}"))
    }
}
