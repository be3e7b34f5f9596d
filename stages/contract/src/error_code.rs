//! The error codes of results and of the DLQ, and which of them are retried.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not a task at all (DLQ `error_type`).
    InvalidMessage,
    /// Both local, both remote, or an unknown connection id.
    InvalidConfig,
    /// A local path escaping its base_path (or an unusable path).
    PathNotAllowed,
    FileNotFound,
    /// The server rejected the login.
    AuthError,
    ConnectionError,
    IoError,
    TransferTimeout,
    UnknownError,
    /// The bytes' digest is not the one expected: the task's `checksum` (not retried: the
    /// source is not what its producer expected) or the server's own digest (retried).
    ChecksumMismatch,
    /// SFTP: the server's host key is not the one configured (not retried: nothing is
    /// sent to a server that may not be the one meant, no password either).
    HostKeyMismatch,
    /// The server refused access to the file or directory (SFTP's PERMISSION_DENIED).
    PermissionDenied,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidConfig,
        ErrorCode::PathNotAllowed,
        ErrorCode::FileNotFound,
        ErrorCode::AuthError,
        ErrorCode::ConnectionError,
        ErrorCode::IoError,
        ErrorCode::TransferTimeout,
        ErrorCode::UnknownError,
        ErrorCode::ChecksumMismatch,
        ErrorCode::HostKeyMismatch,
        ErrorCode::PermissionDenied,
    ];

    /// Retried with backoff before the failure is published.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ConnectionError | ErrorCode::IoError | ErrorCode::TransferTimeout
        )
    }

    /// The code as it appears on the wire (`"FILE_NOT_FOUND"`), e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::PathNotAllowed => "PATH_NOT_ALLOWED",
            ErrorCode::FileNotFound => "FILE_NOT_FOUND",
            ErrorCode::AuthError => "AUTH_ERROR",
            ErrorCode::ConnectionError => "CONNECTION_ERROR",
            ErrorCode::IoError => "IO_ERROR",
            ErrorCode::TransferTimeout => "TRANSFER_TIMEOUT",
            ErrorCode::UnknownError => "UNKNOWN_ERROR",
            ErrorCode::ChecksumMismatch => "CHECKSUM_MISMATCH",
            ErrorCode::HostKeyMismatch => "HOST_KEY_MISMATCH",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn exactly_three_codes_are_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(
            retryable,
            [
                ErrorCode::ConnectionError,
                ErrorCode::IoError,
                ErrorCode::TransferTimeout
            ]
        );
    }
}
