//! Build information for `--version` and the `ftp_pooler_build_info` metric: the git
//! commit, the build date and the rustc version, as `FTP_POOLER_BUILD_*` compile-time
//! environment variables (read with `env!` in src/build_info.rs).
//!
//! - commit: `$FTP_POOLER_GIT_COMMIT` when set (image builds whose context excludes
//!   `.git`), else `git rev-parse HEAD`, else `unknown` (a source tarball, no git). No
//!   `-dirty` mark: it would need watching the index, which would rebuild at every
//!   `git status`.
//! - date: `$SOURCE_DATE_EPOCH` when set (reproducible builds), else now; RFC 3339, UTC,
//!   seconds.
//! - rustc: `$RUSTC --version`, else `unknown`.
//!
//! Never fails the build: a missing tool gives `unknown`.

use std::process::Command;

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn commit() -> String {
    if let Some(c) = std::env::var("FTP_POOLER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
    {
        return c.trim().to_string();
    }
    output(Command::new("git").args(["rev-parse", "HEAD"])).unwrap_or_else(|| "unknown".into())
}

fn date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn rustc() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into())
}

fn main() {
    println!("cargo:rustc-env=FTP_POOLER_BUILD_COMMIT={}", commit());
    println!("cargo:rustc-env=FTP_POOLER_BUILD_DATE={}", date());
    println!("cargo:rustc-env=FTP_POOLER_BUILD_RUSTC={}", rustc());
    println!("cargo:rerun-if-env-changed=FTP_POOLER_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit (HEAD moves, or the branch it names does) rebuilds the info.
    // (`--git-path` resolves both in a linked worktree; packed-refs for packed branches.)
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(output(Command::new("git").args([
        "symbolic-ref",
        "-q",
        "HEAD",
    ])));
    for name in watch {
        let path = output(Command::new("git").args([
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            &name,
        ]));
        // A path that does not exist would rerun this script at every build.
        if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
