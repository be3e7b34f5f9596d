//! What this build is: version, git commit, build date, rustc and the linked librdkafka
//! (captured by build.rs). Shown by `--version` of both binaries and exported as the
//! `ftp_pooler_build_info` metric by the supervisor.

/// The build of this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    /// The git commit, or `unknown` (built outside a git checkout).
    pub commit: &'static str,
    /// RFC 3339, UTC (`SOURCE_DATE_EPOCH` when the build set it).
    pub date: &'static str,
    /// `rustc --version` of the compiler that built it.
    pub rustc: &'static str,
    pub librdkafka: ftp_pooler_kafka::Librdkafka,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("FTP_POOLER_BUILD_COMMIT"),
            date: env!("FTP_POOLER_BUILD_DATE"),
            rustc: env!("FTP_POOLER_BUILD_RUSTC"),
            librdkafka: ftp_pooler_kafka::librdkafka(),
        }
    }

    /// The long `--version` text (clap puts the program name before it): one
    /// `field value` per line after the version.
    pub fn long_version(&self) -> String {
        format!(
            "{}\ncommit {}\nbuilt {}\nrustc {}\nlibrdkafka {}\nlibrdkafka builtin.features {}",
            self.version,
            self.commit,
            self.date,
            self.rustc.strip_prefix("rustc ").unwrap_or(self.rustc),
            self.librdkafka.version,
            self.librdkafka.features
        )
    }

    /// The labels of `ftp_pooler_build_info`.
    #[allow(dead_code)] // the client shows the version only
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            ("version".into(), self.version.into()),
            ("commit".into(), self.commit.into()),
            (
                "rustc".into(),
                self.rustc
                    .strip_prefix("rustc ")
                    .unwrap_or(self.rustc)
                    .into(),
            ),
            ("librdkafka".into(), self.librdkafka.version.clone()),
        ]
    }

    /// `--version` as a leaked string, as clap wants it (built once per process).
    pub fn long_version_static(&self) -> &'static str {
        Box::leak(self.long_version().into_boxed_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_has_one_line_per_field() {
        let b = BuildInfo {
            version: "1.2.3",
            commit: "abc",
            date: "2024-01-01T00:00:00Z",
            rustc: "rustc 1.88.0 (6b00bc388 2025-06-23)",
            librdkafka: ftp_pooler_kafka::Librdkafka {
                version: "2.10.0".into(),
                features: "gzip,ssl".into(),
            },
        };
        assert_eq!(
            b.long_version(),
            "1.2.3\ncommit abc\nbuilt 2024-01-01T00:00:00Z\nrustc 1.88.0 (6b00bc388 2025-06-23)\nlibrdkafka 2.10.0\nlibrdkafka builtin.features gzip,ssl"
        );
    }
}
