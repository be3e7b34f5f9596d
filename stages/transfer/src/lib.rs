//! ftp-pooler-transfer: the transfer stage's room.
//!
//! Owns everything that speaks FTP: [`FtpSession`] (one logged-in control connection,
//! plain, explicit or implicit FTPS; passive or [`active`]-mode data connections; plain
//! passive transfers pipelined, their data connections opened ahead: [`plain`]; what the
//! transfer paths share: `data`), its TLS
//! setup ([`tls`]), and the mapping of FTP and I/O failures to the contract's error codes
//! ([`TransferError`]), the session [`pool`],
//! local path confinement ([`local`]), the digest of the bytes as they pass ([`digest`]),
//! the server's own digest and the checks that let a retry resume ([`server_digest`],
//! `verify`),
//! one attempt at a time per temporary name
//! ([`claim`]), the durable [`commit`] of downloads, the
//! [`engine`] that runs a task with retries, and the stage process itself ([`worker`]).
//! Invariants:
//! - every network call is bounded by a timeout; a session whose call failed or timed out
//!   is poisoned ([`FtpSession::is_poisoned`]) and must be discarded, never reused;
//! - transfers are binary and stream through a fixed-size buffer;
//! - remote relative paths resolve against the login directory, never a current directory;
//! - passwords are never logged.

pub mod active;
pub mod breaker;
pub mod claim;
pub mod commit;
mod data;
pub mod digest;
pub mod engine;
mod error;
pub mod local;
pub mod localio;
mod plain;
pub mod pool;
pub mod remote;
pub mod resume;
pub mod server_digest;
mod session;
pub mod sftp;
pub mod tls;
mod verify;
pub mod worker;

pub use active::ActiveOptions;
pub use breaker::{BreakerState, CircuitBreaker};
pub use engine::{Engine, RetryPolicy};
pub use error::TransferError;
pub use pool::{Lease, Pool, PoolStats};
pub use remote::{Remote, Session};
pub use session::{FtpSession, SessionOptions};
pub use sftp::SftpSession;
