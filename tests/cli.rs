//! What an operator sees of the command line besides the service (issue 19, item 8):
//! `--version` of both binaries (version, commit, build date, rustc, librdkafka),
//! `ftp-pooler completions <shell>` and `ftp-pooler man`.

use std::process::{Command, Stdio};

fn run(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{exe} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The commit the binaries must name: the override of the build, else the checkout's.
fn expected_commit() -> String {
    if let Some(c) = option_env!("FTP_POOLER_GIT_COMMIT").filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if out.status.success() {
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    } else {
        "unknown".into()
    }
}

/// `field value` lines of a `--version` output, after its first line.
fn fields(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            let (k, v) = match k {
                "librdkafka" if v.starts_with("builtin.features ") => (
                    "librdkafka builtin.features",
                    v.trim_start_matches("builtin.features "),
                ),
                _ => (k, v),
            };
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn check_version(exe: &str, name: &str) {
    let out = run(exe, &["--version"]);
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        format!("{name} {}", env!("CARGO_PKG_VERSION")),
        "{out}"
    );
    let f = fields(&out);
    let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "commit",
            "built",
            "rustc",
            "librdkafka",
            "librdkafka builtin.features"
        ],
        "{out}"
    );
    assert_eq!(f[0].1, expected_commit(), "{out}");
    // RFC 3339, UTC, seconds: 2025-11-25T19:00:03Z.
    let date = f[1].1.as_bytes();
    assert_eq!(date.len(), 20, "{out}");
    for (i, c) in date.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{out}"),
            10 => assert_eq!(*c, b'T', "{out}"),
            13 | 16 => assert_eq!(*c, b':', "{out}"),
            19 => assert_eq!(*c, b'Z', "{out}"),
            _ => assert!(c.is_ascii_digit(), "{out}"),
        }
    }
    let rustc = Command::new("rustc").arg("--version").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    assert_eq!(format!("rustc {}", f[2].1), rustc.trim(), "{out}");
    assert!(f[3].1.starts_with("2."), "librdkafka version: {out}");
    assert!(f[4].1.split(',').any(|x| x == "ssl"), "{out}");
}

#[test]
fn both_binaries_name_their_build_in_the_version() {
    check_version(env!("CARGO_BIN_EXE_ftp-pooler"), "ftp-pooler");
    check_version(env!("CARGO_BIN_EXE_ftp-pooler-client"), "ftp-pooler-client");
}

#[test]
fn the_bash_completions_are_a_valid_script_that_knows_the_subcommands() {
    let script = run(env!("CARGO_BIN_EXE_ftp-pooler"), &["completions", "bash"]);
    for word in [
        "run",
        "check-config",
        "ctl",
        "completions",
        "man",
        "--config",
    ] {
        assert!(script.contains(word), "{word} missing:\n{script}");
    }
    // bash parses it (-n: read, do not run) and it registers the completion.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ftp-pooler.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p ftp-pooler",
            file.display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ftp-pooler"),
        "{out:?}"
    );
    // An unknown shell is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_ftp-pooler"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_man_page_is_roff_for_section_1_with_every_public_subcommand() {
    let page = run(env!("CARGO_BIN_EXE_ftp-pooler"), &["man"]);
    let th = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap_or_else(|| panic!("no .TH line:\n{page}"));
    assert!(th.starts_with(".TH ftp-pooler 1 "), "{th}");
    assert!(
        th.contains(&format!("ftp-pooler {}", env!("CARGO_PKG_VERSION"))),
        "{th}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH VERSION"] {
        assert!(page.contains(section), "{section} missing:\n{page}");
    }
    for cmd in [
        "ftp\\-pooler\\-run",
        "ftp\\-pooler\\-check\\-config",
        "ftp\\-pooler\\-ctl",
    ] {
        assert!(page.contains(cmd), "{cmd} missing:\n{page}");
    }
    // The stages are started by the supervisor only: not in the page.
    assert!(!page.contains("ftp\\-pooler\\-stage"), "{page}");
}
