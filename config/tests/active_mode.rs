//! connections.ini's active mode: `passive = false` (the Python version's key) with the
//! optional `active_address` and `active_port_range`; their errors name file, section and
//! key, and the active-mode keys with passive mode are errors rather than ignored.

use std::net::IpAddr;
use std::path::Path;

use ftp_pooler_config::{PortRange, Registry};

fn registry(text: &str) -> Result<Registry, ftp_pooler_config::ConfigErrors> {
    Registry::parse(Path::new("connections.ini"), text)
}

fn errors_of(r: Result<Registry, ftp_pooler_config::ConfigErrors>) -> Vec<String> {
    r.unwrap_err().iter().map(|e| e.to_string()).collect()
}

#[test]
fn passive_false_is_active_mode_with_optional_address_and_port_range() {
    let r = registry(
        "
[plain-active]
type = ftp
host = h
passive = false

[nat]
type = ftp
host = h
passive = no
active_address = 203.0.113.7
active_port_range = 50000-50100

[v6]
type = ftp
host = h
passive = 0
active_address = 2001:db8::7
",
    )
    .unwrap();
    let a = r.get("plain-active").unwrap().as_ftp().unwrap();
    assert!(!a.passive);
    assert_eq!((a.active_address, a.active_port_range), (None, None));
    let nat = r.get("nat").unwrap().as_ftp().unwrap();
    assert!(!nat.passive);
    assert_eq!(
        nat.active_address,
        Some("203.0.113.7".parse::<IpAddr>().unwrap())
    );
    assert_eq!(nat.active_port_range, PortRange::new(50000, 50100));
    let summary = r.get("nat").unwrap().summary();
    assert!(
        summary.contains("passive=false active_address=203.0.113.7 active_port_range=50000-50100"),
        "{summary}"
    );
    let v6 = r.get("v6").unwrap().as_ftp().unwrap();
    assert!(v6.active_address.unwrap().is_ipv6());
}

#[test]
fn bad_active_mode_values_name_file_section_and_key() {
    let errs = errors_of(registry(
        "
[a]
type = ftp
host = h
passive = false
active_address = ftp.example.com
active_port_range = 50100-50000

[b]
type = ftp
host = h
passive = false
active_address = 0.0.0.0
active_port_range = 21-22

[c]
type = ftp
host = h
passive = false
active_port_range = 50000-
",
    ));
    for want in [
        "connections.ini: [a] active_address: \"ftp.example.com\" is not an IP address",
        "connections.ini: [a] active_port_range: \"50100-50000\": the first port is above the last",
        "connections.ini: [b] active_address: \"0.0.0.0\" is unspecified",
        "connections.ini: [b] active_port_range: \"21-22\": ports below 1024",
        "connections.ini: [c] active_port_range: \"50000-\" is not a port range",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

#[test]
fn active_mode_keys_with_passive_mode_are_errors_not_ignored() {
    let errs = errors_of(registry(
        "
[absent]
type = ftp
host = h
active_port_range = 50000-50100

[explicit]
type = ftp
host = h
passive = true
active_address = 203.0.113.7
",
    ));
    assert_eq!(
        errs,
        [
            "connections.ini: [absent] active_port_range: applies to active mode only, but passive is true (or absent): set passive = false, or remove it",
            "connections.ini: [explicit] active_address: applies to active mode only, but passive is true (or absent): set passive = false, or remove it",
        ]
    );
}

/// The project's example (with its commented active-mode example) and the seed's
/// connections.ini (the Python version's keys) still load.
#[test]
fn the_example_files_still_load() {
    let seed = "
[remote-server-a]
type = ftp
host = ftp.example.com
port = 21
user = username
pass = password
passive = true
";
    let r = registry(seed).unwrap();
    assert!(r.get("remote-server-a").unwrap().as_ftp().unwrap().passive);
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("connections.ini"))
            .unwrap();
    let errs = errors_of(registry(&example));
    // Only the machine-specific paths of the example may fail here.
    assert!(
        errs.iter()
            .all(|e| e.contains("tls_ca_file") || e.contains("base_path")),
        "{errs:#?}"
    );
}

/// Active-mode keys in [DEFAULT] reach the active connections and leave the passive ones
/// alone (in a passive section itself they are an error, above).
#[test]
fn default_active_keys_apply_to_active_connections_only() {
    let r = registry(
        "[DEFAULT]\nactive_port_range = 50000-50100\n\n[act]\ntype = ftp\nhost = h\npassive = false\n\n[pas]\ntype = ftp\nhost = h\n",
    )
    .unwrap();
    let act = r.get("act").unwrap().as_ftp().unwrap();
    assert!(act.active_port_range.is_some());
    let pas = r.get("pas").unwrap().as_ftp().unwrap();
    assert!(pas.passive && pas.active_port_range.is_none());
}
