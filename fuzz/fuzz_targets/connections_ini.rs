//! Fuzzes the connections.ini loader (ftp_pooler_config::Registry::parse) with arbitrary
//! text (inputs that are not UTF-8 are read with from_utf8_lossy, as a file would be
//! refused before parsing anyway).
//!
//! Checks, for every input: `Registry::parse` never panics; errors are fine. A registry
//! it accepts is not empty, every connection in it has a non-blank id and can be looked
//! up by it, its `summary` and Debug output do not depend on the password (so never show
//! it), and every error message formats.
//!
//! Note: parsing is not pure. A `tls_ca_file` is opened and a local `base_path` gets a
//! write probe (a `.ftp-pooler-write-probe-<pid>` file created and removed at once), so
//! the fuzzer may touch files in existing directories whose names it guesses.
#![no_main]

use std::path::Path;

use ftp_pooler_config::{ConnectionKind, Registry, Secret, SftpAuth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Registry::parse(Path::new("connections.ini"), &text) {
        Ok(registry) => {
            assert!(!registry.is_empty());
            assert_eq!(registry.iter().count(), registry.len());
            for c in registry.iter() {
                assert!(!c.id.trim().is_empty());
                assert!(registry.get(&c.id).is_some());
                // The password never shows: the same connection with another password
                // has the same summary and Debug output.
                let mut other = c.clone();
                match &mut other.kind {
                    ConnectionKind::Ftp(ftp) => {
                        ftp.password = Secret::new(format!("{}-other", ftp.password.expose()));
                    }
                    ConnectionKind::Sftp(sftp) => match &mut sftp.auth {
                        SftpAuth::Password(p) => *p = Secret::new(format!("{}-other", p.expose())),
                        SftpAuth::Key { passphrase, .. } => {
                            *passphrase = Some(Secret::new("other-passphrase"))
                        }
                    },
                    ConnectionKind::Local(_) => {}
                }
                assert_eq!(c.summary(), other.summary(), "password in summary");
                assert_eq!(format!("{c:?}"), format!("{other:?}"), "password in Debug");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let _ = errors.to_string();
        }
    }
});
