//! [`ConnectionId`]: the id of one connection of `connections.ini` (its section name).
//!
//! Invariant: a `ConnectionId` is valid as a process and socket name (not empty, no
//! whitespace, control characters or `/`), the same rule the registry applies to its
//! sections; it is checked when one is made from text or deserialised.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A connection's id (`server-a` in `[server-a]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnectionId(String);

impl ConnectionId {
    /// The id, or why it cannot be one.
    pub fn new(id: impl Into<String>) -> Result<ConnectionId, String> {
        let id = id.into();
        crate::connections::check_id(&id)?;
        Ok(ConnectionId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ConnectionId {
    type Err = String;

    fn from_str(s: &str) -> Result<ConnectionId, String> {
        ConnectionId::new(s)
    }
}

impl TryFrom<String> for ConnectionId {
    type Error = String;

    fn try_from(s: String) -> Result<ConnectionId, String> {
        ConnectionId::new(s)
    }
}

impl From<ConnectionId> for String {
    fn from(id: ConnectionId) -> String {
        id.0
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_registry_rule() {
        assert_eq!(
            "server-a".parse::<ConnectionId>().unwrap().as_str(),
            "server-a"
        );
        for bad in ["", " ", "a b", "a/b", "a\tb"] {
            assert!(bad.parse::<ConnectionId>().is_err(), "{bad:?}");
        }
    }
}
