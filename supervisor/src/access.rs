//! Who may call the mutating REST routes (`POST /stages/{name}/restart`): the rule,
//! pure and unit-tested. The API ([`crate::api`]) finds the token and the peer and
//! answers what [`decide`] says; the read-only routes are never asked.
//!
//! The rule:
//! - a token configured (`FTP_POOLER_ADMIN_TOKEN`, else the file `api.admin_token_file`):
//!   every caller, loopback included, must send `Authorization: Bearer <token>`;
//!   without it, or with another token: 401;
//! - no token configured: loopback peers only (`ftp-pooler ctl`-like local use, a
//!   sidecar, `kubectl port-forward`); any other peer: 403, saying how to configure one;
//! - a token file that is configured but cannot be read: 503 for every caller (fail
//!   closed: a lost Secret must not open the route).
//!
//! Invariants: the comparison takes the same time whatever the presented token (both
//! are hashed with SHA-256, the digests compared in constant time, so neither content
//! nor length leaks); no answer, log line or error ever holds a token.

use std::net::IpAddr;

use ftp_pooler_config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The admin token in force for one request.
#[derive(Debug)]
pub enum Configured {
    /// None configured: loopback peers only.
    None,
    Token(Secret),
    /// `api.admin_token_file` is set but unreadable or empty (the problem, no content).
    Unreadable(String),
}

/// What a mutating request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// 401 (with `WWW-Authenticate: Bearer`): no token, or the wrong one.
    Unauthorized(&'static str),
    /// 403: not loopback, and no token is configured.
    Forbidden(&'static str),
    /// 503: the configured token cannot be read.
    Unavailable(String),
}

/// Why a caller without a token is turned away (the operator's next step included).
pub const NO_TOKEN_CONFIGURED: &str = "this route answers only loopback callers while no admin token is configured: set api.admin_token_file or FTP_POOLER_ADMIN_TOKEN and send Authorization: Bearer <token>, or use `ftp-pooler ctl`";
pub const TOKEN_REQUIRED: &str = "an admin token is required: Authorization: Bearer <token>";
pub const WRONG_TOKEN: &str = "wrong admin token";

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `presented == expected`, in time that depends on neither.
fn same(presented: &str, expected: &Secret) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    a.ct_eq(&b).into()
}

/// The decision for a request from `peer` with this `Authorization` header.
pub fn decide(configured: &Configured, authorization: Option<&str>, peer: IpAddr) -> Access {
    match configured {
        Configured::Unreadable(problem) => Access::Unavailable(problem.clone()),
        Configured::Token(expected) => match authorization.map(bearer) {
            None => Access::Unauthorized(TOKEN_REQUIRED),
            Some(Some(t)) if same(t, expected) => Access::Allowed,
            Some(_) => Access::Unauthorized(WRONG_TOKEN),
        },
        Configured::None if peer.to_canonical().is_loopback() => Access::Allowed,
        Configured::None => Access::Forbidden(NO_TOKEN_CONFIGURED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = "127.0.0.1";
    const OTHER: &str = "192.0.2.7";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn token() -> Configured {
        Configured::Token(Secret::new("s3cret-token"))
    }

    #[test]
    fn without_a_token_only_loopback_peers_are_allowed() {
        for peer in [LOOPBACK, "127.3.4.5", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                decide(&Configured::None, None, ip(peer)),
                Access::Allowed,
                "{peer}"
            );
        }
        for peer in [OTHER, "10.0.0.1", "::ffff:10.0.0.1", "fe80::1"] {
            assert_eq!(
                decide(&Configured::None, Some("Bearer x"), ip(peer)),
                Access::Forbidden(NO_TOKEN_CONFIGURED),
                "{peer}"
            );
        }
    }

    #[test]
    fn with_a_token_every_peer_must_send_it() {
        for peer in [LOOPBACK, OTHER] {
            let p = ip(peer);
            assert_eq!(
                decide(&token(), None, p),
                Access::Unauthorized(TOKEN_REQUIRED)
            );
            for wrong in [
                "Bearer nope",
                "Bearer s3cret-token2",
                "Bearer s3cret",
                "Basic s3cret-token",
                "s3cret-token",
                "Bearer ",
                "",
            ] {
                assert_eq!(
                    decide(&token(), Some(wrong), p),
                    Access::Unauthorized(WRONG_TOKEN),
                    "{wrong:?}"
                );
            }
            for right in [
                "Bearer s3cret-token",
                "bearer s3cret-token",
                "BEARER  s3cret-token ",
            ] {
                assert_eq!(
                    decide(&token(), Some(right), p),
                    Access::Allowed,
                    "{right:?}"
                );
            }
        }
    }

    #[test]
    fn an_unreadable_token_file_closes_the_route_for_everyone() {
        let c = Configured::Unreadable("cannot read the admin token file /x".into());
        for peer in [LOOPBACK, OTHER] {
            assert!(matches!(
                decide(&c, Some("Bearer anything"), ip(peer)),
                Access::Unavailable(_)
            ));
        }
    }
}
