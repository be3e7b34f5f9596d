//! One download attempt: from the server into a temporary file beside the destination,
//! checked (size, the task's digest, the server's digest), made durable, renamed.
//!
//! Invariants: the destination is never written but by the rename of a complete, checked
//! file; a failed attempt removes its temporary file, except after a failure of the link
//! (CONNECTION_ERROR, TRANSFER_TIMEOUT, or the attempt cut by its time limit) with
//! `transfer.resume` on: then the file stays for the next attempt to resume from
//! ([`crate::resume`]) and the run removes it if it gives up.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ftp_pooler_channel::Route;
use ftp_pooler_contract::{ChecksumAlgorithm, TransferTask};

use super::{expected, keeps_partial, Done, Engine, TempFile};
use crate::digest::{Digester, Hashed};
use crate::local;
use crate::remote::Session;
use crate::resume::{plan_download, read_range, rehash_prefix, Carry, Overlap, Plan};
use crate::TransferError;

/// Where a resumed download goes on from.
struct Resumed {
    file: std::fs::File,
    digester: Option<Digester>,
    /// The REST offset: the kept bytes less the overlap.
    offset: u64,
    /// The kept bytes from `offset` on, which the source's must equal.
    expect: Vec<u8>,
    /// The source's size (SIZE).
    size: u64,
}

impl Engine {
    pub(super) async fn download(
        &self,
        task: &TransferTask,
        route: &Route,
        base: &Path,
        carry: &mut Carry,
    ) -> Result<Done, TransferError> {
        let dest = local::resolve(base, &route.local_path)?;
        let tmp = local::temp_path(&dest, &task.task_id);
        self.ensure_local_dir(&dest)?;
        // Another run of this task (a duplicate) may be using the same temporary name:
        // wait for it. The claim goes with the file to the committer.
        let claim = self.claims.claim(format!("local:{}", tmp.display())).await;
        let started = *carry.started.get_or_insert_with(SystemTime::now);
        let kept = carry
            .local_tmp
            .take()
            .filter(|p| *p == tmp && self.resume)
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        // From here a cancelled attempt (its time limit) leaves the file for the next.
        let guard = TempFile::new(tmp.clone(), self.resume);
        carry.local_tmp = self.resume.then(|| tmp.clone());
        let algorithm = self.algorithm(task);
        let mut lease = None;
        let mut resumed = None;
        if let Some(kept) = kept {
            // The session first: its SIZE and MDTM decide whether the kept file is used.
            let mut l = self.pool.acquire(self.transfer_timeout).await?;
            let point = self
                .resume_point(
                    l.session(),
                    &route.remote_path,
                    &tmp,
                    kept,
                    started,
                    algorithm,
                )
                .await;
            match point {
                Ok(r) => resumed = r,
                Err(e) => {
                    l.release();
                    return Err(e);
                }
            }
            lease = Some(l);
        }
        let fresh = |resumed: Option<Resumed>| -> Result<Resumed, TransferError> {
            if let Some(r) = resumed {
                return Ok(r);
            }
            let file = std::fs::File::create(&tmp).map_err(|e| {
                // A directory removed behind our back: forget it, the retry recreates it.
                if let Some(dir) = dest.parent() {
                    self.known_local_dirs.lock().expect("dirs lock").remove(dir);
                }
                TransferError::local_io(&format!("create {}", tmp.display()), &e)
            })?;
            Ok(Resumed {
                file,
                digester: algorithm.map(Digester::new),
                offset: 0,
                expect: Vec::new(),
                size: 0,
            })
        };
        let mut from = fresh(resumed)?;
        // The session is taken only now: it is not held while the local file is created.
        let mut lease = match lease {
            Some(l) => l,
            None => self.pool.acquire(self.transfer_timeout).await?,
        };
        let session = lease.session();
        if from.offset > 0 {
            match session.rest(from.offset).await {
                Ok(true) => self.resumes.inc(),
                Ok(false) => {
                    // The server refuses REST: the whole file again, in the same attempt.
                    drop(from);
                    from = fresh(None)?;
                }
                Err(e) => {
                    lease.release();
                    return Err(e);
                }
            }
        }
        let offset = from.offset;
        let mut sink = Overlap::new(
            Hashed::resuming(
                crate::localio::SyncFile::at(from.file, offset),
                from.digester,
                offset,
            ),
            from.expect,
        );
        let got = session.download(&route.remote_path, &mut sink).await;
        let differed = sink.differed();
        let checksum = sink.get_mut().take_checksum();
        let got = got.map(|n| n + offset).and_then(|total| {
            if offset > 0 && total != from.size {
                return Err(TransferError::new(
                    ftp_pooler_contract::ErrorCode::IoError,
                    format!(
                        "RETR {}: resumed at {offset}, the file has {total} bytes, the server said {}",
                        route.remote_path, from.size
                    ),
                ));
            }
            Ok(total)
        });
        let checked = match &got {
            Ok(bytes) => {
                self.against_server(session, &route.remote_path, checksum.as_ref(), *bytes)
                    .await
            }
            Err(_) => Ok(()),
        };
        lease.release();
        let outcome = got.and_then(|bytes| checked.map(|()| bytes));
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err(e) => {
                if differed || !keeps_partial(&e) {
                    // Nothing worth keeping: the guard removes the file.
                    carry.local_tmp = None;
                    guard.remove();
                }
                return Err(e);
            }
        };
        // Before the rename: other bytes than the producer expected are never put in
        // place (the file is removed).
        if let Err(e) = expected(task, checksum.as_ref()) {
            carry.local_tmp = None;
            guard.remove();
            return Err(e);
        }
        // The step that waits for the device (see commit.rs), off the runtime threads.
        self.committer
            .commit(
                sink.into_inner().into_inner().into_inner(),
                &tmp,
                &dest,
                claim,
            )
            .await
            .map_err(|e| TransferError::local_io("commit", &e))?;
        guard.disarm();
        carry.local_tmp = None;
        Ok(Done { bytes, checksum })
    }

    /// Creates the destination's directory unless known to exist.
    fn ensure_local_dir(&self, dest: &Path) -> Result<(), TransferError> {
        let Some(dir) = dest.parent() else {
            return Ok(());
        };
        if self
            .known_local_dirs
            .lock()
            .expect("dirs lock")
            .contains(dir)
        {
            return Ok(());
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| TransferError::local_io(&format!("create {}", dir.display()), &e))?;
        self.known_local_dirs
            .lock()
            .expect("dirs lock")
            .insert(dir.to_path_buf());
        Ok(())
    }

    /// Whether (and from where) a download that kept `kept` bytes in `tmp` resumes: the
    /// source's SIZE and MDTM now ([`plan_download`]), then the kept file read again for
    /// its digest and its last bytes (off the runtime threads).
    async fn resume_point(
        &self,
        session: &mut Session,
        remote: &str,
        tmp: &Path,
        kept: u64,
        started: SystemTime,
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Resumed>, TransferError> {
        if kept < crate::resume::RESUME_MIN {
            return Ok(None);
        }
        let size = match session.size(remote).await {
            Ok(n) => Some(n),
            Err(_) if !session.is_poisoned() => None,
            Err(e) => return Err(e),
        };
        let mdtm = session.mdtm(remote).await?;
        let (kept, overlap) = match plan_download(kept, size, mdtm, started) {
            Plan::Fresh(why) => {
                tracing::debug!(path = remote, why, "the retry downloads from zero");
                return Ok(None);
            }
            Plan::Resume { kept, overlap } => (kept, overlap),
        };
        let offset = kept - overlap;
        let path: PathBuf = tmp.to_path_buf();
        let prepared = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let expect = read_range(&mut f, offset, overlap)?;
            let digester = rehash_prefix(&mut f, offset, algorithm)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok::<_, std::io::Error>((f, digester, expect))
        })
        .await
        .map_err(|e| TransferError::local_io("read the kept file", &std::io::Error::other(e)))?;
        match prepared {
            Ok((file, digester, expect)) => {
                tracing::debug!(path = remote, kept, "the retry resumes the download");
                Ok(Some(Resumed {
                    file,
                    digester,
                    offset,
                    expect,
                    size: size.unwrap_or(0),
                }))
            }
            Err(e) => {
                tracing::debug!(path = remote, error = %e, "the kept file cannot be read; downloading from zero");
                Ok(None)
            }
        }
    }
}
