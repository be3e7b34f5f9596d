//! Transfers counted on the FTP server's side, from the server's own transfer log: how
//! many times the service moved each task's file, whatever it published about it. The
//! service's logs and metrics die with a killed process; the server's log does not.
//!
//! Owns: the parsing of the two logs the scenario's servers write (see
//! `scripts/testbed/serve ... xferlog=PATH`), the mapping of a task to the server path its
//! transfers show under, and the per-task counts behind [`Redone`].
//!
//! - vsftpd (`xferlog_enable=YES`, `xferlog_std_format=NO`): one line per transfer,
//!   `OK|FAIL DOWNLOAD|UPLOAD: Client "ip", "/path in the chroot", N bytes, ...`.
//! - pyftpdlib (its INFO log): `RETR|STOR|APPE <path on disk> completed=0|1 bytes=N ...`,
//!   the path under the server's root.
//!
//! Invariants:
//! - Every transfer the server started gets a line, complete or not: a download cut by a
//!   kill is `FAIL` (vsftpd) or `completed=0` (pyftpdlib). An upload cut by a kill reads to
//!   the server as an end of file and is logged as complete, with fewer bytes: a transfer
//!   counts as cut when the server says so or when its byte count is not the file's size.
//! - A download is a RETR of the task's source path. An upload is a STOR to the task's
//!   temporary name (`ftp_pooler_transfer::local::temp_name`, which depends on the
//!   destination and the task id only), so an upload's transfers are told apart from
//!   another task's writing the same destination. Renames are not counted: a STOR is the
//!   work, and a cut one is never renamed.
//! - Paths are server paths from the login directory ("/" on every test-bed server),
//!   always with one leading '/'.

use std::collections::BTreeMap;
use std::path::Path;

/// Which way a file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// The server sent it (RETR).
    Download,
    /// The server received it (STOR or APPE).
    Upload,
}

/// One transfer as the server logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub direction: Direction,
    /// The server path (leading '/').
    pub path: String,
    /// The server considered it complete (vsftpd `OK`, pyftpdlib `completed=1`).
    pub complete: bool,
    /// Bytes moved, when logged (vsftpd leaves them out of a download that never opened).
    pub bytes: Option<u64>,
}

/// Where a task's transfers show in its server's log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub direction: Direction,
    pub path: String,
}

impl Key {
    /// A download of `remote` (as the task names it: relative to the login directory or
    /// absolute).
    pub fn download(remote: &str) -> Key {
        Key {
            direction: Direction::Download,
            path: rooted(remote),
        }
    }

    /// An upload by `task_id` to `remote`: the STORs go to the task's temporary name in
    /// the destination's directory.
    pub fn upload(remote: &str, task_id: &str) -> Key {
        let remote = rooted(remote);
        let (dir, name) = ftp_pooler_transfer::local::split_remote(&remote);
        let temp = ftp_pooler_transfer::local::temp_name(name, task_id);
        Key {
            direction: Direction::Upload,
            path: format!("{}/{temp}", dir.trim_end_matches('/')),
        }
    }
}

fn rooted(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// The transfers of a log's text, in order. `root` is the server's root directory on
/// disk (pyftpdlib logs paths on disk); lines that are not transfers are skipped.
pub fn parse(log: &str, root: &Path) -> Vec<Transfer> {
    let roots: Vec<String> = [Some(root.to_path_buf()), root.canonicalize().ok()]
        .into_iter()
        .flatten()
        .map(|r| r.display().to_string().trim_end_matches('/').to_string())
        .collect();
    log.lines()
        .filter_map(|l| vsftpd_line(l).or_else(|| pyftpdlib_line(l, &roots)))
        .collect()
}

/// `... [user] OK DOWNLOAD: Client "127.0.0.1", "/a/b.bin", 6 bytes, 11.38Kbyte/sec`.
fn vsftpd_line(line: &str) -> Option<Transfer> {
    let (complete, direction, rest) = [
        (true, Direction::Download, "] OK DOWNLOAD: "),
        (false, Direction::Download, "] FAIL DOWNLOAD: "),
        (true, Direction::Upload, "] OK UPLOAD: "),
        (false, Direction::Upload, "] FAIL UPLOAD: "),
    ]
    .into_iter()
    .find_map(|(c, d, marker)| Some((c, d, line.split_once(marker)?.1)))?;
    // Client "ip", "path"[, N bytes], rate: the path runs to the last quote.
    let (_, after_client) = rest.split_once("\", \"")?;
    let end = after_client.rfind('"')?;
    let path = &after_client[..end];
    let bytes = after_client[end + 1..]
        .strip_prefix(", ")
        .and_then(|b| b.split_once(" bytes"))
        .and_then(|(n, _)| n.parse().ok());
    Some(Transfer {
        direction,
        path: rooted(path),
        complete,
        bytes,
    })
}

/// `... 127.0.0.1:5000-[user] RETR /root/on/disk/a/b.bin completed=1 bytes=6 seconds=0.0`.
fn pyftpdlib_line(line: &str, roots: &[String]) -> Option<Transfer> {
    let (direction, rest) = [
        (Direction::Download, "] RETR "),
        (Direction::Upload, "] STOR "),
        (Direction::Upload, "] APPE "),
    ]
    .into_iter()
    .find_map(|(d, marker)| Some((d, line.split_once(marker)?.1)))?;
    let (path, fields) = rest.rsplit_once(" completed=")?;
    let mut fields = fields.split_whitespace();
    let complete = fields.next()? == "1";
    let bytes = fields
        .next()
        .and_then(|f| f.strip_prefix("bytes="))
        .and_then(|n| n.parse().ok());
    let path = roots
        .iter()
        .find_map(|r| path.strip_prefix(r.as_str()))
        .unwrap_or(path);
    Some(Transfer {
        direction,
        path: rooted(path),
        complete,
        bytes,
    })
}

/// How often one path was transferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Every transfer, complete or cut.
    pub transfers: usize,
    /// Those the server logged as incomplete, or whose byte count was not `size`.
    pub cut: usize,
}

/// The transfers of each of `keys` (with the file's size) in `transfers`.
pub fn count(transfers: &[Transfer], keys: &[(Key, u64)]) -> BTreeMap<Key, Count> {
    let mut out: BTreeMap<Key, Count> = keys
        .iter()
        .map(|(k, _)| (k.clone(), Count::default()))
        .collect();
    let sizes: BTreeMap<&Key, u64> = keys.iter().map(|(k, s)| (k, *s)).collect();
    for t in transfers {
        let key = Key {
            direction: t.direction,
            path: t.path.clone(),
        };
        let Some(&size) = sizes.get(&key) else {
            continue;
        };
        let c = out.get_mut(&key).expect("every key has a count");
        c.transfers += 1;
        if !t.complete || t.bytes != Some(size) {
            c.cut += 1;
        }
    }
    out
}

/// Work a fault made the service do twice, in two independent counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redone {
    /// Results beyond the first per task (records on the result and failure topics).
    pub duplicate_results: usize,
    /// Transfers beyond the first per task, on the FTP servers (complete or cut).
    pub redone_transfers: usize,
    /// Tasks transferred more than once.
    pub tasks_redone: usize,
    /// Transfers cut short (by the kill, or by the service's own cancellation); they are
    /// counted in `redone_transfers` when another transfer of the task followed.
    pub cut_transfers: usize,
    /// Tasks whose transfers were counted (every task that should copy a file).
    pub tasks_counted: usize,
}

impl Redone {
    /// Sums per-task counts; `duplicate_results` comes from the result topics.
    pub fn from_counts<'a>(
        duplicate_results: usize,
        counts: impl IntoIterator<Item = &'a Count>,
    ) -> Redone {
        let mut r = Redone {
            duplicate_results,
            ..Redone::default()
        };
        for c in counts {
            r.tasks_counted += 1;
            r.redone_transfers += c.transfers.saturating_sub(1);
            r.tasks_redone += usize::from(c.transfers > 1);
            r.cut_transfers += c.cut;
        }
        r
    }
}

impl std::fmt::Display for Redone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} duplicate results, {} redone transfers ({} tasks transferred more than once, \
             {} cut transfers, over {} file tasks)",
            self.duplicate_results,
            self.redone_transfers,
            self.tasks_redone,
            self.cut_transfers,
            self.tasks_counted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VSFTPD: &str = r#"Thu Dec  3 16:45:54 2026 [pid 11260] CONNECT: Client "127.0.0.1"
Thu Dec  3 16:45:54 2026 [pid 11259] [ftptest] OK LOGIN: Client "127.0.0.1"
Thu Dec  3 16:45:54 2026 [pid 11261] [ftptest] OK DOWNLOAD: Client "127.0.0.1", "/a.txt", 6 bytes, 11.38Kbyte/sec
Thu Dec  3 16:45:54 2026 [pid 11261] [ftptest] OK MKDIR: Client "127.0.0.1", "/d"
Thu Dec  3 16:45:54 2026 [pid 11261] [ftptest] OK UPLOAD: Client "127.0.0.1", "/d/.x.bin.abcd.ftp-pooler.part", 1000 bytes, 2536.53Kbyte/sec
Thu Dec  3 16:45:54 2026 [pid 11261] [ftptest] OK RENAME: Client "127.0.0.1", "/d/.x.bin.abcd.ftp-pooler.part /d/x.bin"
Thu Dec  3 16:45:54 2026 [pid 11261] [ftptest] FAIL DOWNLOAD: Client "127.0.0.1", "/missing", 0.00Kbyte/sec
Thu Dec  3 16:45:58 2026 [pid 11312] [ftptest] FAIL DOWNLOAD: Client "127.0.0.1", "/big.bin", 4160512 bytes, 1728200.77Kbyte/sec
Thu Dec  3 16:45:58 2026 [pid 11313] [ftptest] FAIL UPLOAD: Client "127.0.0.1", "/d/a "quoted".bin", 12 bytes, 1.00Kbyte/sec
"#;

    const PYFTPDLIB: &str = "\
2026-12-03 16:46:28,445 >>> starting FTP server on 127.0.0.1:47131, pid=11816 <<<
2026-12-03 16:46:29,856 127.0.0.1:54062-[] FTP session opened (connect)
2026-12-03 16:46:29,857 127.0.0.1:54062-[ftptest] USER 'ftptest' logged in.
2026-12-03 16:46:29,858 127.0.0.1:54062-[ftptest] RETR /tmp/pt/root/a.txt completed=1 bytes=6 seconds=0.0
2026-12-03 16:46:29,859 127.0.0.1:54062-[ftptest] MKD /tmp/pt/root/d 257
2026-12-03 16:46:29,860 127.0.0.1:54062-[ftptest] STOR /tmp/pt/root/d/.x.bin.abcd.ftp-pooler.part completed=1 bytes=1000 seconds=0.0
2026-12-03 16:46:29,860 127.0.0.1:54062-[ftptest] RNFR /tmp/pt/root/d/.x.bin.abcd.ftp-pooler.part 350
2026-12-03 16:46:29,860 127.0.0.1:54062-[ftptest] RNTO /tmp/pt/root/d/x.bin 250
2026-12-03 16:46:29,932 127.0.0.1:54068-[ftptest] RETR /tmp/pt/root/big.bin completed=0 bytes=2818048 seconds=0.001
2026-12-03 16:46:29,940 127.0.0.1:54070-[ftptest] APPE /tmp/pt/root/with space.bin completed=1 bytes=3 seconds=0.0
";

    fn t(direction: Direction, path: &str, complete: bool, bytes: Option<u64>) -> Transfer {
        Transfer {
            direction,
            path: path.into(),
            complete,
            bytes,
        }
    }

    #[test]
    fn vsftpd_lines_are_transfers_and_nothing_else_is() {
        use Direction::*;
        assert_eq!(
            parse(VSFTPD, Path::new("/unused")),
            vec![
                t(Download, "/a.txt", true, Some(6)),
                t(Upload, "/d/.x.bin.abcd.ftp-pooler.part", true, Some(1000)),
                t(Download, "/missing", false, None),
                t(Download, "/big.bin", false, Some(4160512)),
                t(Upload, "/d/a \"quoted\".bin", false, Some(12)),
            ]
        );
    }

    #[test]
    fn pyftpdlib_paths_on_disk_become_server_paths() {
        use Direction::*;
        assert_eq!(
            parse(PYFTPDLIB, Path::new("/tmp/pt/root/")),
            vec![
                t(Download, "/a.txt", true, Some(6)),
                t(Upload, "/d/.x.bin.abcd.ftp-pooler.part", true, Some(1000)),
                t(Download, "/big.bin", false, Some(2818048)),
                t(Upload, "/with space.bin", true, Some(3)),
            ]
        );
    }

    #[test]
    fn a_task_maps_to_its_source_or_its_temporary_name() {
        assert_eq!(
            Key::download("src/d1/f1.bin"),
            Key::download("/src/d1/f1.bin")
        );
        assert_eq!(Key::download("src/f.bin").path, "/src/f.bin");
        let up = Key::upload("/dst/d2/f9.bin", "task-00009");
        let tag = ftp_pooler_transfer::local::task_tag("task-00009");
        assert_eq!(up.path, format!("/dst/d2/.f9.bin.{tag}.ftp-pooler.part"));
        assert_eq!(up.direction, Direction::Upload);
        assert_eq!(
            Key::upload("top.bin", "t").path,
            format!(
                "/.top.bin.{}.ftp-pooler.part",
                ftp_pooler_transfer::local::task_tag("t")
            )
        );
        assert_ne!(
            Key::upload("/dst/f.bin", "t1"),
            Key::upload("/dst/f.bin", "t2")
        );
    }

    #[test]
    fn counts_per_task_with_cut_transfers_and_the_sum() {
        let down = Key::download("/src/a.bin");
        let up = Key::upload("/dst/b.bin", "task-b");
        let other = Key::download("/src/c.bin");
        let log = format!(
            "\
x [ftptest] OK DOWNLOAD: Client \"127.0.0.1\", \"/src/a.bin\", 100 bytes, 1Kbyte/sec
x [ftptest] FAIL DOWNLOAD: Client \"127.0.0.1\", \"/src/a.bin\", 40 bytes, 1Kbyte/sec
x [ftptest] OK DOWNLOAD: Client \"127.0.0.1\", \"/src/a.bin\", 100 bytes, 1Kbyte/sec
x [ftptest] OK UPLOAD: Client \"127.0.0.1\", \"{0}\", 50 bytes, 1Kbyte/sec
x [ftptest] OK UPLOAD: Client \"127.0.0.1\", \"{0}\", 200 bytes, 1Kbyte/sec
x [ftptest] OK DOWNLOAD: Client \"127.0.0.1\", \"/src/not-a-task.bin\", 1 bytes, 1Kbyte/sec
x [ftptest] OK DOWNLOAD: Client \"127.0.0.1\", \"/src/c.bin\", 7 bytes, 1Kbyte/sec
",
            up.path
        );
        let counts = count(
            &parse(&log, Path::new("/")),
            &[(down.clone(), 100), (up.clone(), 200), (other.clone(), 7)],
        );
        assert_eq!(
            counts[&down],
            Count {
                transfers: 3,
                cut: 1
            }
        );
        // The upload cut by a kill was logged OK, with fewer bytes than the file.
        assert_eq!(
            counts[&up],
            Count {
                transfers: 2,
                cut: 1
            }
        );
        assert_eq!(
            counts[&other],
            Count {
                transfers: 1,
                cut: 0
            }
        );
        let r = Redone::from_counts(4, counts.values());
        assert_eq!(
            r,
            Redone {
                duplicate_results: 4,
                redone_transfers: 3,
                tasks_redone: 2,
                cut_transfers: 2,
                tasks_counted: 3,
            }
        );
        assert!(r
            .to_string()
            .starts_with("4 duplicate results, 3 redone transfers"));
    }
}
