//! The admin API's bearer token: where it comes from and how it is read.
//!
//! The mutating REST routes (`POST /stages/{name}/restart`) require `Authorization:
//! Bearer <token>` when a token is configured: the environment variable
//! [`ENV_ADMIN_TOKEN`] (the token itself) wins over `api.admin_token_file` (a file
//! holding it, e.g. a mounted Kubernetes Secret or systemd's `LoadCredential=`).
//!
//! Invariants: leading and trailing whitespace is not part of the token (`echo` and
//! editors add a newline); an empty token is an error, never "no token"; an error names
//! the file, never its content; the token lives in a [`Secret`], whose `Debug` and
//! `Display` hide it.

use std::path::Path;

use crate::Secret;

/// Environment variable holding the admin token itself (wins over `api.admin_token_file`).
pub const ENV_ADMIN_TOKEN: &str = "FTP_POOLER_ADMIN_TOKEN";

/// The token in `text` (trimmed), or why it is none.
pub fn parse(text: &str) -> Result<Secret, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty: an admin token must hold at least one character".into());
    }
    Ok(Secret::new(token))
}

/// Reads the token from `file`; the problem names the file, never its content.
pub fn read_file(file: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the admin token file {}: {e}", file.display()))?;
    parse(&text).map_err(|p| format!("the admin token file {} {p}", file.display()))
}

/// The token of the environment ([`ENV_ADMIN_TOKEN`]) if set and not empty.
pub fn from_env() -> Option<Secret> {
    std::env::var(ENV_ADMIN_TOKEN)
        .ok()
        .and_then(|v| parse(&v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_around_the_token_is_not_part_of_it() {
        assert_eq!(parse(" s3cret\n").unwrap().expose(), "s3cret");
        assert!(parse(" \n").is_err());
    }

    #[test]
    fn a_file_problem_names_the_file_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "tok-123\n").unwrap();
        assert_eq!(read_file(&f).unwrap().expose(), "tok-123");
        assert_eq!(format!("{:?}", read_file(&f).unwrap()), "***");
        std::fs::write(&f, "\n").unwrap();
        let e = read_file(&f).unwrap_err();
        assert!(
            e.contains(&f.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let e = read_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
