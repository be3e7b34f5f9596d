//! The ingest consumer's static group membership: its default `group.instance.id`.
//!
//! A consumer with a `group.instance.id` is a static member of its group (KIP-345): when
//! its process dies and a new one joins with the same id, the broker hands the new one
//! the old one's member id and assignment at once, instead of waiting for the old
//! member's session to expire and rebalancing the group. A restarted ingest stage thus
//! resumes without waiting `session.timeout.ms` (docs/PIPELINE.md, "A restarted ingest
//! resumes").
//!
//! Owns the derivation of the default id, one per service instance:
//! `$FTP_POOLER_INSTANCE_ID` when set, else the host name (a StatefulSet pod's name)
//! followed by a short hash of the runtime directory (two services on one host have two
//! runtime directories). Invariants:
//! - stable across restarts of the same instance: a restarted stage, or the whole service
//!   restarted with the same runtime directory on the same host, gets the same id; the
//!   hash is FNV-1a, fixed here, never a hasher whose output may change between builds;
//! - unique per instance of one group, given distinct host names or runtime directories;
//! - always one Kafka accepts ([`ftp_pooler_config::group_instance_id_problem`]): other
//!   characters become `_`, and the host part is cut so that the hash always fits.

use ftp_pooler_config::{group_instance_id_char, GROUP_INSTANCE_ID_MAX};

/// Names this service instance in the group (its ingest's `group.instance.id`); the
/// operator's `kafka.consumer_config` `group.instance.id` wins over it.
pub const ENV_INSTANCE_ID: &str = "FTP_POOLER_INSTANCE_ID";

/// The runtime directory, set by the supervisor for every stage (the supervisor crate's
/// `ENV_RUNTIME_DIR`; this crate does not depend on it).
const ENV_RUNTIME_DIR: &str = "FTP_POOLER_RUNTIME_DIR";

/// The default `group.instance.id` of this process's service instance, from its
/// environment and host name.
pub fn default_group_instance_id() -> String {
    let env = |name: &str| std::env::var(name).ok();
    derive(
        env(ENV_INSTANCE_ID).as_deref(),
        &crate::host_name(),
        env(ENV_RUNTIME_DIR).as_deref(),
    )
}

/// The default id from `instance` (`$FTP_POOLER_INSTANCE_ID`), else `host` and the
/// runtime directory: `<host>-<8 hex digits>`.
pub fn derive(instance: Option<&str>, host: &str, runtime_dir: Option<&str>) -> String {
    if let Some(id) = instance.map(str::trim).filter(|i| !i.is_empty()) {
        let id = sanitize(id, GROUP_INSTANCE_ID_MAX);
        // "." and ".." are the only valid-charset ids Kafka refuses.
        return if id.chars().all(|c| c == '.') {
            id.replace('.', "_")
        } else {
            id
        };
    }
    let hash = format!("{:08x}", fnv1a32(runtime_dir.unwrap_or("").as_bytes()));
    let host = sanitize(host.trim(), GROUP_INSTANCE_ID_MAX - 1 - hash.len());
    format!("{host}-{hash}")
}

/// `s` with every character Kafka refuses replaced by `_`, cut to `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if group_instance_id_char(c) { c } else { '_' })
        .take(max)
        .collect()
}

/// 32-bit FNV-1a: fixed, so the id of an instance never changes with the build.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftp_pooler_config::group_instance_id_problem;

    #[test]
    fn the_default_is_the_host_and_a_hash_of_the_runtime_directory() {
        let a = derive(None, "ftp-pooler-0", Some("/run/ftp-pooler"));
        assert!(a.starts_with("ftp-pooler-0-"), "{a}");
        assert_eq!(a.len(), "ftp-pooler-0-".len() + 8);
        // Stable: the same inputs give the same id, in every build (FNV-1a's test vector).
        assert_eq!(a, derive(None, "ftp-pooler-0", Some("/run/ftp-pooler")));
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        // Unique per instance: another pod, or another service on the same host.
        assert_ne!(a, derive(None, "ftp-pooler-1", Some("/run/ftp-pooler")));
        assert_ne!(a, derive(None, "ftp-pooler-0", Some("/run/ftp-pooler-b")));
        assert_eq!(group_instance_id_problem(&a), None);
    }

    #[test]
    fn ftp_pooler_instance_id_wins_and_every_result_is_valid() {
        assert_eq!(derive(Some("blue-1"), "host", Some("/run/x")), "blue-1");
        assert_eq!(derive(Some("  "), "host", None), derive(None, "host", None));
        assert_eq!(derive(Some("pod 0/a"), "host", None), "pod_0_a");
        assert_eq!(derive(Some(".."), "host", None), "__");
        let long = "h".repeat(400);
        for id in [
            derive(Some(&long), "host", None),
            derive(None, &long, Some("/run/x")),
            derive(None, "höst.example.com", None),
            derive(None, "", None),
        ] {
            assert_eq!(group_instance_id_problem(&id), None, "{id}");
        }
        assert!(
            derive(None, &long, Some("/run/x")).ends_with(&format!("-{:08x}", fnv1a32(b"/run/x")))
        );
    }
}
