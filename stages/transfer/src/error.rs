//! Transfer failures, classified into the contract's error codes.
//!
//! 530 (not logged in) is `AUTH_ERROR`; 550 on RETR/SIZE is `FILE_NOT_FOUND`; refused,
//! reset, 421 and other transient (4xx) replies, TLS failures and protocol desyncs are
//! `CONNECTION_ERROR`; local disk errors are `IO_ERROR`; timeouts `TRANSFER_TIMEOUT`.

use ftp_pooler_contract::ErrorCode;
use suppaftp::types::Response;
use suppaftp::FtpError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TransferError {
    pub code: ErrorCode,
    pub message: String,
    /// The FTP reply code behind the failure, when there was one (421: too many
    /// connections, which the pool answers by lowering its limit).
    pub reply: Option<u32>,
    /// Whether the failure is retried, when not as its code says: a server's digest that
    /// differs from ours is CHECKSUM_MISMATCH retried (the bytes may have been damaged on
    /// the way), a task's expected digest that differs is not.
    pub retryable: Option<bool>,
}

impl TransferError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TransferError {
            code,
            message: message.into(),
            reply: None,
            retryable: None,
        }
    }

    /// The same failure, retried (or not) whatever its code says.
    pub fn retried(self, retryable: bool) -> Self {
        TransferError {
            retryable: Some(retryable),
            ..self
        }
    }

    /// Whether the engine tries the task again after this failure (retries permitting).
    pub fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or_else(|| self.code.is_retryable())
    }

    /// A local file-system failure while streaming (reading the source or writing the
    /// destination): `IO_ERROR`.
    pub fn local_io(what: &str, e: &std::io::Error) -> Self {
        TransferError::new(ErrorCode::IoError, format!("{what}: {e}"))
    }

    /// The server refuses more connections (421, or a "too many" reply): the pool
    /// lowers its limit instead of failing the task.
    pub fn is_too_many_connections(&self) -> bool {
        self.reply == Some(421) || {
            let m = self.message.to_ascii_lowercase();
            m.contains("too many")
                && (m.contains("connection") || m.contains("user") || m.contains("client"))
        }
    }

    /// Runs one step of opening a connection (connect, accept, TLS handshake) within
    /// `limit`: its error is a `CONNECTION_ERROR` "`what`: error", running out of time a
    /// `TRANSFER_TIMEOUT`.
    pub(crate) async fn connecting<T, E: std::fmt::Display>(
        what: &str,
        limit: std::time::Duration,
        step: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, TransferError> {
        match tokio::time::timeout(limit, step).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TransferError::new(
                ErrorCode::ConnectionError,
                format!("{what}: {e}"),
            )),
            Err(_) => Err(TransferError::timeout(what, limit.as_secs_f64())),
        }
    }

    pub fn timeout(what: &str, secs: f64) -> Self {
        TransferError::new(
            ErrorCode::TransferTimeout,
            format!("{what}: no answer within {secs:.0} s"),
        )
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
            FtpError::InvalidAddress(_) | FtpError::DataConnectionAlreadyOpen => {
                ErrorCode::ConnectionError
            }
            FtpError::UnexpectedResponse(r) => match reply_code(r) {
                530 => ErrorCode::AuthError,
                550 if op == "RETR" || op == "SIZE" => ErrorCode::FileNotFound,
                // 4xx: transient (421 service closing, 425 no data connection, ...);
                // 522: the server wants TLS where we spoke plain.
                400..=499 | 522 => ErrorCode::ConnectionError,
                // vsftpd's "500 OOPS: ..." is a server-side failure that ends the
                // session (e.g. no free passive port): transient, retry elsewhere.
                500 if String::from_utf8_lossy(&r.body).contains("OOPS") => {
                    ErrorCode::ConnectionError
                }
                _ => ErrorCode::UnknownError,
            },
        };
        let (detail, reply) = match &e {
            FtpError::UnexpectedResponse(r) => (
                String::from_utf8_lossy(&r.body).trim().to_string(),
                Some(reply_code(r)),
            ),
            other => (other.to_string(), None),
        };
        TransferError {
            reply,
            ..TransferError::new(code, format!("{op}: {detail}"))
        }
    }
}

/// The reply's numeric code; suppaftp maps codes it does not know (522, ...) to 0, so
/// fall back to the digits the reply starts with.
pub(crate) fn reply_code(r: &Response) -> u32 {
    match r.status.code() {
        0 => r
            .body
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
        code => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use suppaftp::Status;

    fn reply(status: Status, body: &str) -> FtpError {
        FtpError::UnexpectedResponse(Response::new(status, body.as_bytes().to_vec()))
    }

    #[test]
    fn replies_map_to_contract_codes() {
        let code = |op: &str, e| TransferError::ftp(op, e).code;
        assert_eq!(
            code("login", reply(Status::NotLoggedIn, "530 Login incorrect.")),
            ErrorCode::AuthError
        );
        assert_eq!(
            code(
                "RETR",
                reply(Status::FileUnavailable, "550 Failed to open file.")
            ),
            ErrorCode::FileNotFound
        );
        assert_eq!(
            code(
                "STOR",
                reply(Status::FileUnavailable, "550 Permission denied.")
            ),
            ErrorCode::UnknownError
        );
        assert_eq!(
            code(
                "connect",
                reply(
                    Status::NotAvailable,
                    "421 There are too many connections from your internet address."
                )
            ),
            ErrorCode::ConnectionError
        );
        assert_eq!(
            code(
                "STOR",
                reply(Status::BadCommand, "500 OOPS: vsf_sysutil_bind")
            ),
            ErrorCode::ConnectionError
        );
        assert_eq!(
            code("SITE", reply(Status::BadCommand, "500 Unknown command.")),
            ErrorCode::UnknownError
        );
        let e = TransferError::ftp("connect", reply(Status::NotAvailable, "421 Too many users"));
        assert!(e.is_too_many_connections());
        assert_eq!(e.reply, Some(421));
    }
}
