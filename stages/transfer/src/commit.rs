//! Durable commit of downloaded files: the step between "all bytes are in the temporary
//! file" and "the download succeeded".
//!
//! Owns the order in which a download reaches the device, in one of two modes
//! (`transfer.fsync`):
//! - `group` (the default): one thread per worker process commits in groups. It takes
//!   every file that finished meanwhile, calls `syncfs` once per file system (the data of
//!   this group and the renames of the previous group: one journal commit), then reports
//!   the previous group and renames this one. A group gathers files for up to [`GATHER`]
//!   before its sync; when nothing new has arrived, one more `syncfs` covers the last
//!   renames. Under load that is one `syncfs` per group instead of an `fsync` per file;
//!   a group grows while the previous `syncfs` runs, so the work per file falls as the
//!   load rises (docs/BENCHMARKS.md).
//! - `per_file`: `fsync` of the file, rename, `fsync` of its directory, on the blocking
//!   pool. For file systems whose `syncfs` does nothing (some FUSE ones) or that other
//!   programs keep full of unwritten data (a `syncfs` also waits for theirs).
//!
//! Invariants, in both modes:
//! - a file is renamed only after a sync that began after its last write has returned
//!   without error, and the file's own write-back error state was checked (a write-back
//!   error of any file fails that file, as its `fsync` would);
//! - success is reported only after a sync that began after the rename: a success
//!   result means the complete file is at its destination on the device;
//! - an error fails the files it may concern (every file of that file system in the
//!   group), never reports them done; the caller's temporary-file guard and retry take
//!   over. Files stay open until reported.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The most files one group takes: bounds one `syncfs`'s work and the results it holds.
const MAX_GROUP: usize = 512;

/// How long a group waits for more files before its `syncfs` (as a database's commit
/// delay): a sync costs a journal commit and a device flush whatever the group's size.
/// With it, small downloads ran at 1.01-1.26x lftp in every round of a 5-round run,
/// against 0.93-1.12x without (docs/BENCHMARKS.md); 2 ms did no better. It adds at most
/// this to each of a file's two syncs.
const GATHER: Duration = Duration::from_millis(1);

/// Commits downloaded files (see the module header). One per worker process.
pub struct Committer {
    mode: Mode,
}

enum Mode {
    PerFile,
    Group(crossbeam_channel::Sender<Job>),
}

/// A file waiting for the group-commit thread.
struct Job {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    done: oneshot::Sender<io::Result<()>>,
    /// Held until the file is renamed and reported, or has failed (see `commit`).
    _hold: Box<dyn Send>,
}

impl Committer {
    /// `per_file`: `transfer.fsync: per_file`; otherwise starts the group-commit thread,
    /// which ends when the committer is dropped and its queue is done.
    pub fn new(per_file: bool) -> io::Result<Committer> {
        if per_file {
            return Ok(Committer {
                mode: Mode::PerFile,
            });
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || group_commit(rx))?;
        Ok(Committer {
            mode: Mode::Group(tx),
        })
    }

    /// Makes `file` (written as `tmp`) durable, renames it to `dest` and makes the rename
    /// durable. An error names the step that failed. `hold` (the attempt's claim on the
    /// temporary name, [`crate::claim`]) is released only when this work is over, even
    /// if the caller stops waiting (an attempt that timed out): no other attempt may
    /// create `tmp` while it may still be renamed.
    pub async fn commit(
        &self,
        file: File,
        tmp: &Path,
        dest: &Path,
        hold: impl Send + 'static,
    ) -> io::Result<()> {
        let (tmp, dest) = (tmp.to_path_buf(), dest.to_path_buf());
        match &self.mode {
            Mode::PerFile => tokio::task::spawn_blocking(move || {
                let _hold = hold;
                per_file(file, &tmp, &dest)
            })
            .await
            .map_err(|e| io::Error::other(format!("commit task: {e}")))?,
            Mode::Group(tx) => {
                let stopped = || io::Error::other("the group-commit thread has stopped");
                let (done, result) = oneshot::channel();
                tx.send(Job {
                    file,
                    tmp,
                    dest,
                    done,
                    _hold: Box::new(hold),
                })
                .map_err(|_| stopped())?;
                result.await.map_err(|_| stopped())?
            }
        }
    }
}

fn per_file(file: File, tmp: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all().map_err(|e| context("fsync", tmp, e))?;
    drop(file);
    std::fs::rename(tmp, dest).map_err(|e| context("rename to", dest, e))?;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context("fsync directory", dir, e))
}

/// The group-commit thread's loop (see the module header).
fn group_commit(rx: crossbeam_channel::Receiver<Job>) {
    // Renamed, waiting for a sync that began after their rename; with their file system.
    let mut renamed: Vec<(Job, u64)> = Vec::new();
    loop {
        let mut group = Vec::new();
        let mut take = |job: Job| match job.file.metadata() {
            Ok(m) => group.push((job, m.dev())),
            Err(e) => {
                let _ = job.done.send(Err(context("stat", &job.tmp, e)));
            }
        };
        if renamed.is_empty() {
            match rx.recv() {
                Ok(job) => take(job),
                Err(_) => return, // the committer is gone and its queue is done
            }
        }
        let until = Instant::now() + GATHER;
        for _ in 0..MAX_GROUP {
            match rx.recv_deadline(until) {
                Ok(job) => take(job),
                Err(_) => break,
            }
        }

        // One syncfs per file system: this group's data, the renamed files' renames.
        let mut synced: HashMap<u64, io::Result<()>> = HashMap::new();
        for (job, dev) in renamed.iter().chain(group.iter()) {
            synced.entry(*dev).or_insert_with(|| syncfs(&job.file));
        }
        let outcome = |job: &Job, dev: u64| match &synced[&dev] {
            Ok(()) => check_written(&job.file).map_err(|e| context("sync", &job.tmp, e)),
            Err(e) => Err(context(
                "syncfs for",
                &job.tmp,
                io::Error::new(e.kind(), e.to_string()),
            )),
        };

        for (job, dev) in renamed.drain(..) {
            let result = outcome(&job, dev);
            let _ = job.done.send(result);
        }
        for (job, dev) in group {
            let result = outcome(&job, dev).and_then(|()| {
                std::fs::rename(&job.tmp, &job.dest).map_err(|e| context("rename to", &job.dest, e))
            });
            match result {
                Ok(()) => renamed.push((job, dev)),
                Err(e) => {
                    let _ = job.done.send(Err(e));
                }
            }
        }
    }
}

/// `syncfs(2)` on the file system holding `file`: every dirty page and inode of it on the
/// device, and its journal committed.
fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// After a `syncfs`: waits for any write-back of `file` still running and reports the
/// write-back errors recorded for it since it was opened, as its `fsync` would. Nothing
/// is dirty any more, so this costs a system call, not a device round trip.
fn check_written(file: &File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain system call on a descriptor that `file` keeps open.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn download(c: &Committer, dir: &Path, name: &str, body: &[u8]) -> io::Result<()> {
        let tmp = dir.join(format!(".{name}.part"));
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        c.commit(f, &tmp, &dir.join(name), ()).await
    }

    async fn many(per_file: bool) {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Committer::new(per_file).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (c, d) = (c.clone(), dir.path().to_path_buf());
            tasks.push(tokio::spawn(async move {
                download(&c, &d, &format!("f{i}"), format!("body {i}").as_bytes()).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..200 {
            let got = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(got, format!("body {i}").as_bytes());
            assert!(!dir.path().join(format!(".f{i}.part")).exists());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commits_every_file_under_its_name() {
        many(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_file_commits_every_file_under_its_name() {
        many(true).await;
    }

    #[tokio::test]
    async fn a_failed_rename_fails_that_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = Committer::new(false).unwrap();
        // The destination is a non-empty directory: rename(2) refuses to replace it.
        std::fs::create_dir_all(dir.path().join("taken/inner")).unwrap();
        let e = download(&c, dir.path(), "taken", b"x").await.unwrap_err();
        assert!(e.to_string().starts_with("rename to "), "{e}");
        download(&c, dir.path(), "free", b"y").await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("free")).unwrap(), b"y");
    }

    #[tokio::test]
    async fn the_thread_ends_with_its_committer() {
        let c = Committer::new(false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        download(&c, dir.path(), "a", b"a").await.unwrap();
        drop(c); // the thread's receiver disconnects; nothing to assert but no hang
    }
}
