//! The FTP control channel as the link proxy sees it: pure parsing and rewriting, no I/O.
//!
//! - [`Lines`] cuts a byte stream into complete CRLF lines (a partial line is held back
//!   until its end arrives), and turns to raw pass-through for good at the first byte no
//!   control channel carries in clear text (a TLS record: implicit FTPS) or when told to
//!   (after a `234` reply to AUTH: explicit FTPS). Nothing is ever dropped or reordered.
//! - [`passive_reply`] reads the data address out of a `227` (PASV) or `229` (EPSV)
//!   reply line; [`rewrite_passive`] points that line at another address (a 229 changes
//!   only its port, a 227 its address and port), keeping the rest of the text.
//! - [`active_command`] / [`rewrite_active`] do the same for the client's PORT and EPRT.

use std::net::{Ipv4Addr, SocketAddrV4};

/// A piece of a control stream: a complete line (with its line end), or raw bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    Line(Vec<u8>),
    Raw(Vec<u8>),
}

/// Cuts a control stream into lines; see the module header.
#[derive(Debug, Default)]
pub struct Lines {
    held: Vec<u8>,
    raw: bool,
}

impl Lines {
    /// From now on everything passes raw (the held partial line too, next `feed`).
    pub fn go_raw(&mut self) {
        self.raw = true;
    }

    /// Feeds bytes read; returns what can be passed on now, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Segment> {
        let mut out = Vec::new();
        if !self.raw && bytes.iter().any(|&b| !is_text(b)) {
            self.raw = true;
        }
        if self.raw {
            let mut all = std::mem::take(&mut self.held);
            all.extend_from_slice(bytes);
            if !all.is_empty() {
                out.push(Segment::Raw(all));
            }
            return out;
        }
        self.held.extend_from_slice(bytes);
        while let Some(end) = self.held.iter().position(|&b| b == b'\n') {
            let rest = self.held.split_off(end + 1);
            out.push(Segment::Line(std::mem::replace(&mut self.held, rest)));
        }
        out
    }
}

/// Bytes a clear-text control channel carries (UTF-8 pathnames included); a TLS record
/// starts with 0x14..=0x17.
fn is_text(b: u8) -> bool {
    b >= 0x20 || b == b'\r' || b == b'\n' || b == b'\t'
}

/// The data address a passive-mode reply announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// `227 ... (h1,h2,h3,h4,p1,p2)`: an IPv4 address and port.
    Pasv(SocketAddrV4),
    /// `229 ... (|||port|)`: a port on the control connection's peer.
    Epsv(u16),
}

/// The address a 227 or 229 reply line announces (the last line of the reply: `227 `,
/// not `227-`); None for any other line.
pub fn passive_reply(line: &[u8]) -> Option<Passive> {
    let text = std::str::from_utf8(line).ok()?;
    if let Some(rest) = text.strip_prefix("227 ") {
        let (_, addr, _) = six_numbers(rest)?;
        Some(Passive::Pasv(addr))
    } else if let Some(rest) = text.strip_prefix("229 ") {
        let (_, port, _) = epsv_port(rest)?;
        Some(Passive::Epsv(port))
    } else {
        None
    }
}

/// The reply line pointed at `to` (a 227: address and port; a 229: the port only).
pub fn rewrite_passive(line: &[u8], to: SocketAddrV4) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    if let Some(rest) = text.strip_prefix("227 ") {
        if let Some((start, _, end)) = six_numbers(rest) {
            return format!("227 {}{}{}", &rest[..start], pasv_text(to), &rest[end..]).into();
        }
    } else if let Some(rest) = text.strip_prefix("229 ") {
        if let Some((start, _, end)) = epsv_port(rest) {
            return format!("229 {}{}{}", &rest[..start], to.port(), &rest[end..]).into();
        }
    }
    line.to_vec()
}

/// The data address announced by a PORT or EPRT command line (IPv4 only).
pub fn active_command(line: &[u8]) -> Option<SocketAddrV4> {
    let text = std::str::from_utf8(line).ok()?;
    let (verb, arg) = text.trim_end().split_once(' ')?;
    match verb.to_ascii_uppercase().as_str() {
        "PORT" => six_numbers(arg).map(|(_, a, _)| a),
        "EPRT" => {
            let d = arg.chars().next()?;
            let parts: Vec<&str> = arg.trim_matches(d).split(d).collect();
            match parts[..] {
                ["1", ip, port] => Some(SocketAddrV4::new(ip.parse().ok()?, port.parse().ok()?)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The PORT or EPRT command line announcing `to` instead (same verb).
pub fn rewrite_active(line: &[u8], to: SocketAddrV4) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
    match verb.as_str() {
        "PORT" => format!("PORT {}\r\n", pasv_text(to)).into(),
        _ => format!("EPRT |1|{}|{}|\r\n", to.ip(), to.port()).into(),
    }
}

/// Whether a server's reply line is the final line of a 234 (AUTH accepted: TLS starts
/// right after it, both ways).
pub fn is_auth_reply(line: &[u8]) -> bool {
    line.starts_with(b"234 ")
}

/// `h1,h2,h3,h4,p1,p2`.
fn pasv_text(a: SocketAddrV4) -> String {
    let [h1, h2, h3, h4] = a.ip().octets();
    format!("{h1},{h2},{h3},{h4},{},{}", a.port() >> 8, a.port() & 0xff)
}

/// The first run of six comma-separated numbers (0..=255) in `s` (RFC 1123: scan for
/// them, the parentheses are optional): its start, the address, its end.
fn six_numbers(s: &str) -> Option<(usize, SocketAddrV4, usize)> {
    let bytes = s.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if bytes[start].is_ascii_digit() && (start == 0 || !bytes[start - 1].is_ascii_digit()) {
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b',') {
                end += 1;
            }
            let n: Option<Vec<u8>> = s[start..end]
                .trim_end_matches(',')
                .split(',')
                .map(|p| p.parse().ok())
                .collect();
            if let Some([h1, h2, h3, h4, p1, p2]) = n.as_deref() {
                let addr = Ipv4Addr::new(*h1, *h2, *h3, *h4);
                let port = u16::from(*p1) << 8 | u16::from(*p2);
                let end = start + s[start..end].trim_end_matches(',').len();
                return Some((start, SocketAddrV4::new(addr, port), end));
            }
            start = end;
        } else {
            start += 1;
        }
    }
    None
}

/// The port of `(<d><d><d>port<d>)` (any delimiter, RFC 2428): its start, the port, its
/// end.
fn epsv_port(s: &str) -> Option<(usize, u16, usize)> {
    let open = s.find('(')?;
    let inner = &s[open + 1..];
    let d = inner.chars().next()?;
    let prefix = format!("{d}{d}{d}");
    let after = inner.strip_prefix(&prefix)?;
    let len = after.find(d)?;
    let port = after[..len].parse().ok()?;
    let start = open + 1 + prefix.len();
    Some((start, port, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn lines_are_cut_at_line_ends_and_partial_lines_held() {
        let mut l = Lines::default();
        assert_eq!(
            l.feed(b"220 hi\r\n230-a"),
            vec![Segment::Line(b"220 hi\r\n".to_vec())]
        );
        assert_eq!(
            l.feed(b"\r\n230 b\r\n"),
            vec![
                Segment::Line(b"230-a\r\n".to_vec()),
                Segment::Line(b"230 b\r\n".to_vec())
            ]
        );
        assert_eq!(l.feed(b""), vec![]);
    }

    #[test]
    fn a_tls_record_turns_the_stream_raw_with_whatever_was_held() {
        let mut l = Lines::default();
        assert_eq!(l.feed(b"22"), vec![]);
        assert_eq!(
            l.feed(&[0x16, 3, 1]),
            vec![Segment::Raw(vec![b'2', b'2', 0x16, 3, 1])]
        );
        assert_eq!(
            l.feed(b"227 x\r\n"),
            vec![Segment::Raw(b"227 x\r\n".to_vec())]
        );
        let mut told = Lines::default();
        told.go_raw();
        assert_eq!(told.feed(b"ab\r\n"), vec![Segment::Raw(b"ab\r\n".to_vec())]);
    }

    #[test]
    fn passive_replies_of_the_test_bed_servers() {
        // vsftpd, pyftpdlib, pure-ftpd, proftpd
        let pasv = [
            "227 Entering Passive Mode (127,0,0,1,39,16).\r\n",
            "227 Entering passive mode (127,0,0,1,39,16).\r\n",
            "227 Entering Passive Mode (127,0,0,1,39,16)\r\n",
            "227 Entering Passive Mode 127,0,0,1,39,16\r\n",
        ];
        for line in pasv {
            assert_eq!(
                passive_reply(line.as_bytes()),
                Some(Passive::Pasv(v4("127.0.0.1:10000"))),
                "{line}"
            );
            let out = rewrite_passive(line.as_bytes(), v4("127.0.0.2:258"));
            let want = line.replace("127,0,0,1,39,16", "127,0,0,2,1,2");
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let epsv = "229 Entering Extended Passive Mode (|||10000|)\r\n";
        assert_eq!(passive_reply(epsv.as_bytes()), Some(Passive::Epsv(10000)));
        let out = rewrite_passive(epsv.as_bytes(), v4("127.0.0.2:31337"));
        assert_eq!(out, b"229 Entering Extended Passive Mode (|||31337|)\r\n");
        let other = "229 Extended Passive (!!!7!)\r\n";
        assert_eq!(passive_reply(other.as_bytes()), Some(Passive::Epsv(7)));
        assert_eq!(
            rewrite_passive(other.as_bytes(), v4("127.0.0.2:8")),
            b"229 Extended Passive (!!!8!)\r\n"
        );
    }

    #[test]
    fn other_lines_are_no_passive_replies() {
        for line in [
            "227-Entering Passive Mode (127,0,0,1,39,16)\r\n",
            "227 no numbers\r\n",
            "227 (1,2,3,4,5)\r\n",
            "229 (|||x|)\r\n",
            "200 (127,0,0,1,39,16)\r\n",
            "227 (300,0,0,1,1,1)\r\n",
        ] {
            assert_eq!(passive_reply(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn active_commands_are_read_and_rewritten() {
        assert_eq!(
            active_command(b"PORT 127,0,0,1,39,16\r\n"),
            Some(v4("127.0.0.1:10000"))
        );
        assert_eq!(
            active_command(b"eprt |1|127.0.0.1|5000|\r\n"),
            Some(v4("127.0.0.1:5000"))
        );
        assert_eq!(active_command(b"EPRT |2|::1|5000|\r\n"), None);
        assert_eq!(active_command(b"PASV\r\n"), None);
        let to = v4("127.0.0.1:258");
        assert_eq!(
            rewrite_active(b"PORT 127,0,0,2,39,16\r\n", to),
            b"PORT 127,0,0,1,1,2\r\n"
        );
        assert_eq!(
            rewrite_active(b"EPRT |1|127.0.0.2|1|\r\n", to),
            b"EPRT |1|127.0.0.1|258|\r\n"
        );
    }

    #[test]
    fn only_a_final_234_starts_tls() {
        assert!(is_auth_reply(b"234 Proceed with negotiation.\r\n"));
        assert!(!is_auth_reply(b"234-wait\r\n"));
        assert!(!is_auth_reply(b"530 no\r\n"));
    }
}
