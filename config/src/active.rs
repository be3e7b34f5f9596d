//! The values of active mode's connections.ini keys: `active_port_range` as a
//! [`PortRange`] (and the rule for `active_address`, an IP address).
//!
//! Invariants: a [`PortRange`] is never empty (`first <= last`) and never reaches below
//! 1024 (servers refuse PORT/EPRT to privileged ports, as protection against FTP bounce
//! attacks: vsftpd answers "500 Illegal PORT command", pyftpdlib 501).

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// The lowest port a data listener may announce (see the module header).
pub const MIN_ACTIVE_PORT: u16 = 1024;

/// The local ports active-mode data listeners bind, both ends included (`50000-50100`).
/// Serialised as `(first, last)`; deserialising checks the invariants again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "(u16, u16)", into = "(u16, u16)")]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `first..=last`; None when empty or below [`MIN_ACTIVE_PORT`].
    pub fn new(first: u16, last: u16) -> Option<PortRange> {
        (first >= MIN_ACTIVE_PORT && first <= last).then_some(PortRange { first, last })
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ports (at least 1).
    pub fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never true (a range holds at least one port); for clippy's `len` convention.
    pub fn is_empty(self) -> bool {
        false
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn ports(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl From<PortRange> for (u16, u16) {
    fn from(r: PortRange) -> (u16, u16) {
        (r.first, r.last)
    }
}

impl TryFrom<(u16, u16)> for PortRange {
    type Error = String;

    fn try_from((first, last): (u16, u16)) -> Result<PortRange, String> {
        PortRange::new(first, last)
            .ok_or_else(|| format!("{first}-{last}: not a port range from {MIN_ACTIVE_PORT} up"))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `FIRST-LAST` (spaces around either number allowed); `N` alone is `N-N`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        let shape = || format!("{s:?} is not a port range such as 50000-50100");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| shape());
        let (first, last) = (port(a)?, port(b)?);
        if first > last {
            return Err(format!("{s:?}: the first port is above the last"));
        }
        PortRange::new(first, last).ok_or_else(|| {
            format!("{s:?}: ports below {MIN_ACTIVE_PORT} are refused by FTP servers in PORT/EPRT")
        })
    }
}

/// An `active_address`: an IP address (IPv4 or IPv6) that is not unspecified
/// (`0.0.0.0`, `::`), since the server connects to it.
pub fn parse_active_address(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| {
        format!("{s:?} is not an IP address (IPv4 or IPv6; host names are not resolved)")
    })?;
    if ip.is_unspecified() {
        return Err(format!(
            "{s:?} is unspecified: give the address the server connects back to"
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_with_both_ends_included() {
        let r: PortRange = "50000-50100".parse().unwrap();
        assert_eq!((r.first(), r.last(), r.len()), (50000, 50100, 101));
        assert!(r.contains(50000) && r.contains(50100) && !r.contains(50101));
        assert_eq!(r.to_string(), "50000-50100");
        let one: PortRange = " 60000 ".parse().unwrap();
        assert_eq!((one.first(), one.last(), one.len()), (60000, 60000, 1));
        assert_eq!(
            " 2000 - 2001".parse::<PortRange>().unwrap(),
            PortRange::new(2000, 2001).unwrap()
        );
    }

    #[test]
    fn bad_port_ranges_say_why() {
        for (bad, why) in [
            ("", "not a port range"),
            ("50000-", "not a port range"),
            ("a-b", "not a port range"),
            ("50000-70000", "not a port range"),
            ("1-2-3", "not a port range"),
            ("50100-50000", "first port is above the last"),
            ("20-21", "below 1024"),
            ("0-2000", "below 1024"),
        ] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(PortRange::new(1023, 2000), None);
        assert_eq!(PortRange::new(3000, 2000), None);
    }

    #[test]
    fn active_addresses_are_ip_addresses_the_server_can_reach() {
        assert_eq!(
            parse_active_address("203.0.113.7").unwrap().to_string(),
            "203.0.113.7"
        );
        assert!(parse_active_address("2001:db8::7").unwrap().is_ipv6());
        for bad in ["ftp.example.com", "0.0.0.0", "::", "1.2.3", ""] {
            assert!(parse_active_address(bad).is_err(), "{bad}");
        }
    }
}
