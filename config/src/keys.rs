//! The values of `connections.ini`'s keys, read the same way by every kind of section
//! (ftp, sftp, local): required keys, ports, passwords, positive numbers and booleans as
//! Python's configparser reads them, and unknown keys. Each reports a problem through
//! `fail(key, problem)`, to be named by file, section and key, and goes on.

use std::collections::BTreeMap;

use crate::connections::Secret;
use crate::schema::unknown;

/// Reports every key of `keys` that is not in `known` (with the nearest known one).
pub(crate) fn check_unknown(
    keys: &BTreeMap<String, String>,
    known: &[&str],
    bad: &mut dyn FnMut(&str, String),
) {
    for k in keys.keys() {
        if !known.contains(&k.as_str()) {
            bad(k, unknown(k, known));
        }
    }
}

/// A key that must be given and not empty ("missing: `whose` needs `key`" otherwise).
pub(crate) fn required(
    keys: &BTreeMap<String, String>,
    key: &str,
    whose: &str,
    fail: &mut dyn FnMut(&str, String),
) -> String {
    match keys.get(key).filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            fail(key, format!("missing: {whose} needs {key}"));
            String::new()
        }
    }
}

/// `port`: a TCP port, `default` when absent (or invalid, reported).
pub(crate) fn port(
    keys: &BTreeMap<String, String>,
    default: u16,
    fail: &mut dyn FnMut(&str, String),
) -> u16 {
    match keys.get("port") {
        None => default,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => {
                fail("port", format!("{p:?} is not a TCP port (1-65535)"));
                default
            }
        },
    }
}

/// `pass` or `password` (one of them; both is an error).
pub(crate) fn password(
    keys: &BTreeMap<String, String>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<Secret> {
    match (keys.get("pass"), keys.get("password")) {
        (Some(_), Some(_)) => {
            fail(
                "password",
                "both pass and password are given: keep one".into(),
            );
            None
        }
        (Some(p), None) | (None, Some(p)) => Some(Secret::new(p.clone())),
        (None, None) => None,
    }
}

pub(crate) fn positive(
    keys: &BTreeMap<String, String>,
    key: &str,
    fail: &mut dyn FnMut(&str, String),
) -> Option<u64> {
    let v = keys.get(key)?;
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            fail(key, format!("{v:?} is not a whole number >= 1"));
            None
        }
    }
}

/// Booleans as Python's configparser reads them.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}
