//! The server's own digest of a file (issue 21): which commands its FEAT offers, which one
//! answers for a transfer's algorithm, and the digest in its reply. Pure; the session
//! sends the commands ([`crate::FtpSession::server_checksum`]).
//!
//! Two families exist. HASH (draft-bryan-ftpext-hash-02): FEAT lists ` HASH
//! SHA-1;SHA-256*;MD5` (the `*` marks the algorithm in use), `OPTS HASH SHA-256` selects
//! one, `HASH <path>` answers `213 SHA-256 0-4095 <hex> <path>`. The older X commands
//! (`XSHA256 <path>`, `XMD5 <path>`, ...) answer `250 <hex>` (proftpd's mod_digest) or
//! `213 <hex>`. The test bed's proftpd has both (mod_digest), its pyftpdlib both
//! (scripts/testbed/pyftpdlib_serve.py); vsftpd and pure-ftpd neither.
//!
//! Invariants: a server is asked only in the algorithm the transfer hashed its bytes in
//! (SHA-256 or MD5; XXH3 has no FTP command), so the check costs the client nothing but
//! the round trip; XCRC and XSHA1 are recognised but not used (they would take a second
//! digest of every transfer). HASH is preferred to an X command when both are offered.

use ftp_pooler_contract::ChecksumAlgorithm;

/// What a server's FEAT offers for digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerDigests {
    /// Algorithms HASH offers, as FEAT names them (`SHA-256`), upper case.
    hash: Vec<String>,
    /// The algorithm HASH uses now (FEAT's `*`, or the last `OPTS HASH` accepted).
    selected: Option<String>,
    /// X commands FEAT lists (`XSHA256`, `XMD5`, ...), upper case.
    x: Vec<String>,
}

/// How to ask the server for a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestCommand {
    /// `HASH <path>`, after `OPTS HASH <name>` unless `name` is selected already.
    Hash { name: String, select: bool },
    /// `<command> <path>` (`XSHA256`, `XMD5`).
    X(&'static str),
}

impl ServerDigests {
    /// From FEAT's lines as (feature, its parameters), e.g. `("HASH", Some("SHA-1;MD5*"))`.
    pub fn from_feat<'a>(features: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut d = ServerDigests::default();
        for (name, params) in features {
            let name = name.trim().to_ascii_uppercase();
            if name == "HASH" {
                for alg in params.unwrap_or("").split(';') {
                    let alg = alg.trim().to_ascii_uppercase();
                    let (alg, star) = match alg.strip_suffix('*') {
                        Some(a) => (a.to_string(), true),
                        None => (alg, false),
                    };
                    if alg.is_empty() {
                        continue;
                    }
                    if star {
                        d.selected = Some(alg.clone());
                    }
                    d.hash.push(alg);
                }
            } else if ["XSHA256", "XSHA1", "XSHA", "XSHA512", "XMD5", "XCRC"]
                .contains(&name.as_str())
            {
                d.x.push(name);
            }
        }
        d
    }

    /// Whether the server offers anything at all.
    pub fn any(&self) -> bool {
        !self.hash.is_empty() || !self.x.is_empty()
    }

    /// The command that gives `algorithm`'s digest, if the server has one.
    pub fn command_for(&self, algorithm: ChecksumAlgorithm) -> Option<DigestCommand> {
        let (hash_name, x) = match algorithm {
            ChecksumAlgorithm::Sha256 => ("SHA-256", "XSHA256"),
            ChecksumAlgorithm::Md5 => ("MD5", "XMD5"),
            ChecksumAlgorithm::Xxh3 => return None,
        };
        if self.hash.iter().any(|h| h == hash_name) {
            return Some(DigestCommand::Hash {
                name: hash_name.to_string(),
                select: self.selected.as_deref() != Some(hash_name),
            });
        }
        self.x.iter().any(|c| c == x).then_some(DigestCommand::X(x))
    }

    /// Records that `OPTS HASH name` was accepted.
    pub fn selected(&mut self, name: &str) {
        self.selected = Some(name.to_string());
    }
}

/// The digest in a reply to HASH or an X command, lower case: the first word of the
/// reply (after its code) that is all hex digits and as long as `algorithm`'s digest.
/// None when there is none (a reply of another shape is not a digest).
pub fn digest_in_reply(reply: &str, algorithm: ChecksumAlgorithm) -> Option<String> {
    let len = match algorithm {
        ChecksumAlgorithm::Sha256 => 64,
        ChecksumAlgorithm::Md5 => 32,
        ChecksumAlgorithm::Xxh3 => 16,
    };
    reply
        .get(4..)?
        .split_ascii_whitespace()
        .find(|w| w.len() == len && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| w.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feat(lines: &[(&'static str, Option<&'static str>)]) -> ServerDigests {
        ServerDigests::from_feat(lines.iter().copied())
    }

    #[test]
    fn hash_is_preferred_and_selected_once() {
        // proftpd's mod_digest.
        let mut d = feat(&[
            ("MDTM", None),
            ("HASH", Some("CRC32;MD5;SHA-1*;SHA-256;SHA-512")),
            ("XCRC", None),
            ("XMD5", None),
            ("XSHA256", None),
        ]);
        assert!(d.any());
        assert_eq!(
            d.command_for(ChecksumAlgorithm::Sha256),
            Some(DigestCommand::Hash {
                name: "SHA-256".into(),
                select: true
            })
        );
        d.selected("SHA-256");
        assert_eq!(
            d.command_for(ChecksumAlgorithm::Sha256),
            Some(DigestCommand::Hash {
                name: "SHA-256".into(),
                select: false
            })
        );
        assert_eq!(d.command_for(ChecksumAlgorithm::Xxh3), None);
    }

    #[test]
    fn x_commands_answer_when_hash_lacks_the_algorithm() {
        let d = feat(&[("HASH", Some("SHA-1*")), ("XMD5", None), ("XCRC", None)]);
        assert_eq!(
            d.command_for(ChecksumAlgorithm::Md5),
            Some(DigestCommand::X("XMD5"))
        );
        assert_eq!(d.command_for(ChecksumAlgorithm::Sha256), None);
        let none = feat(&[("SIZE", None), ("MDTM", None), ("XCRC", None)]);
        assert_eq!(none.command_for(ChecksumAlgorithm::Sha256), None);
        assert!(none.any(), "XCRC is recognised, not used");
        assert!(!feat(&[("EPSV", None)]).any());
    }

    #[test]
    fn the_digest_is_the_hex_word_of_the_right_length() {
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hash = format!("213 SHA-256 0-2 {} /d/a b.txt", sha.to_uppercase());
        assert_eq!(
            digest_in_reply(&hash, ChecksumAlgorithm::Sha256).as_deref(),
            Some(sha)
        );
        let x = "250 900150983cd24fb0d6963f7d28e17f72";
        assert_eq!(
            digest_in_reply(x, ChecksumAlgorithm::Md5).as_deref(),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        // A file named like a digest comes after it; a wrong length is no digest.
        assert_eq!(digest_in_reply(x, ChecksumAlgorithm::Sha256), None);
        assert_eq!(digest_in_reply("213", ChecksumAlgorithm::Md5), None);
        assert_eq!(
            digest_in_reply("550 Not a file", ChecksumAlgorithm::Md5),
            None
        );
    }
}
