//! Typed names and states of the stage processes.
//!
//! [`StageId`] names a stage: `ingest`, `publish` or `transfer:<connection-id>`
//! (DESIGN.md section 8: the names of `GET /stages`, `ctl restart` and the
//! `ftp_stage_restarts_total{stage}` label). [`StageState`] is a stage's lifecycle state
//! as `ctl status` and `GET /stages` show it. Invariants: `Display` and `FromStr` are
//! inverse; both serialise as those strings in JSON (and in bincode), so the API's
//! bodies are exactly the strings the Python-compatible contract fixes.

use std::fmt;
use std::str::FromStr;

use ftp_pooler_config::ConnectionId;
use serde::{Deserialize, Serialize};

/// One stage process of the service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StageId {
    Ingest,
    Publish,
    /// The transfer worker of one ftp connection.
    Transfer(ConnectionId),
}

impl StageId {
    /// Start order: publish first, then the transfer workers, ingest last (drain is the
    /// reverse).
    pub fn start_rank(&self) -> u8 {
        match self {
            StageId::Publish => 0,
            StageId::Transfer(_) => 1,
            StageId::Ingest => 2,
        }
    }

    /// The connection of a transfer worker.
    pub fn connection(&self) -> Option<&ConnectionId> {
        match self {
            StageId::Transfer(c) => Some(c),
            _ => None,
        }
    }

    /// The arguments after the executable: `stage ingest`, `stage transfer <id>`, ...
    pub fn command_args(&self) -> Vec<String> {
        match self {
            StageId::Ingest => vec!["stage".into(), "ingest".into()],
            StageId::Publish => vec!["stage".into(), "publish".into()],
            StageId::Transfer(c) => vec!["stage".into(), "transfer".into(), c.to_string()],
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageId::Ingest => f.write_str("ingest"),
            StageId::Publish => f.write_str("publish"),
            StageId::Transfer(c) => write!(f, "transfer:{c}"),
        }
    }
}

impl FromStr for StageId {
    type Err = String;

    fn from_str(s: &str) -> Result<StageId, String> {
        match s {
            "ingest" => Ok(StageId::Ingest),
            "publish" => Ok(StageId::Publish),
            _ => match s.strip_prefix("transfer:") {
                Some(id) => Ok(StageId::Transfer(id.parse()?)),
                None => Err(format!(
                    "{s:?} is not a stage name (ingest, publish, transfer:<connection-id>)"
                )),
            },
        }
    }
}

impl TryFrom<String> for StageId {
    type Error = String;

    fn try_from(s: String) -> Result<StageId, String> {
        s.parse()
    }
}

impl From<StageId> for String {
    fn from(id: StageId) -> String {
        id.to_string()
    }
}

/// A stage's lifecycle state, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// Started, not yet ready.
    Starting,
    /// Reported ready.
    Running,
    /// Exited; waiting to be started again.
    Backoff,
    /// Asked to stop (drain, restart, or its connection was removed).
    Stopping,
    /// Not running and not coming back (drained, or given up).
    Stopped,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Starting => "starting",
            StageState::Running => "running",
            StageState::Backoff => "backoff",
            StageState::Stopping => "stopping",
            StageState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for StageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialise_as_the_contract_strings() {
        for name in ["ingest", "publish", "transfer:server-a", "transfer:a:b"] {
            let id: StageId = name.parse().unwrap();
            assert_eq!(id.to_string(), name);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(
            "transfer:x".parse::<StageId>().unwrap(),
            StageId::Transfer("x".parse().unwrap())
        );
        for bad in ["", "Ingest", "transfer:", "transfer:a b", "worker:a"] {
            assert!(bad.parse::<StageId>().is_err(), "{bad:?}");
        }
        assert_eq!(
            serde_json::to_string(&StageState::Backoff).unwrap(),
            "\"backoff\""
        );
    }
}
