//! Where the sockets live inside the private runtime directory (mode 0700, created by the
//! supervisor). Socket paths must fit `sun_path` (108 bytes): a transfer socket is named
//! after its connection id when that is short and plain, else after a hash of it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    pub root: PathBuf,
}

impl RuntimePaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RuntimePaths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stages say hello and ready here.
    pub fn supervisor(&self) -> PathBuf {
        self.root.join("supervisor.sock")
    }

    /// `ftp-pooler ctl` talks to the supervisor here.
    pub fn ctl(&self) -> PathBuf {
        self.root.join("ctl.sock")
    }

    pub fn publish(&self) -> PathBuf {
        self.root.join("publish.sock")
    }

    pub fn transfer(&self, connection_id: &str) -> PathBuf {
        let plain = connection_id.len() <= 40
            && connection_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !connection_id.starts_with('.');
        if plain {
            self.root.join(format!("transfer-{connection_id}.sock"))
        } else {
            let digest = Sha256::digest(connection_id.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            self.root.join(format!("transfer-h{hex}.sock"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_sockets_are_short_and_distinct() {
        let p = RuntimePaths::new("/run/x");
        assert_eq!(
            p.transfer("server-a"),
            Path::new("/run/x/transfer-server-a.sock")
        );
        let long = "a".repeat(200);
        let weird = "../etc";
        for id in [long.as_str(), weird] {
            let s = p.transfer(id);
            assert!(s.as_os_str().len() < 60, "{s:?}");
            assert!(s.starts_with("/run/x"));
        }
        assert_ne!(p.transfer("a b"), p.transfer("a c"));
    }
}
