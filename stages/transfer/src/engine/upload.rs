//! One upload attempt: from the local source to a temporary remote name, checked (the
//! server's SIZE, the task's digest, the server's digest), renamed.
//!
//! Invariants: the remote destination takes only a complete, checked file (RNFR/RNTO); a
//! failed attempt removes its remote temporary file, except after a failure of the link
//! with `transfer.resume` on: then it stays for the next attempt to continue with APPE
//! ([`crate::resume`]) and the run removes it if it gives up.

use std::io::{Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use ftp_pooler_channel::Route;
use ftp_pooler_contract::{ChecksumAlgorithm, ErrorCode, TransferTask};

use super::{expected, keeps_partial, Done, Engine};
use crate::digest::{Digester, Hashed};
use crate::local::{self, split_remote, temp_name};
use crate::remote::Session;
use crate::resume::{plan_upload, read_range, rehash_prefix, Carry, Plan};
use crate::TransferError;

impl Engine {
    pub(super) async fn upload(
        &self,
        task: &TransferTask,
        route: &Route,
        base: &std::path::Path,
        carry: &mut Carry,
    ) -> Result<Done, TransferError> {
        let src = local::resolve(base, &route.local_path)?;
        let mut raw = match std::fs::File::open(&src) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TransferError::new(
                    ErrorCode::FileNotFound,
                    format!("local source {} does not exist", route.local_path),
                ))
            }
            Err(e) => {
                return Err(TransferError::local_io(
                    &format!("open {}", src.display()),
                    &e,
                ))
            }
        };
        let now = raw
            .metadata()
            .and_then(|m| Ok((m.len(), m.modified()?)))
            .map_err(|e| TransferError::local_io(&format!("stat {}", src.display()), &e))?;
        let then = *carry.source.get_or_insert(now);
        let algorithm = self.algorithm(task);
        // One attempt at a time on this task's remote temporary name (a duplicate of the
        // task waits), claimed before a session is taken.
        let _claim = self
            .claims
            .claim(format!("remote:{}:{}", task.task_id, route.remote_path))
            .await;
        let mut lease = self.pool.acquire(self.transfer_timeout).await?;
        let session = lease.session();
        let remote = session.remote_path(&route.remote_path)?;
        let (dir, name) = split_remote(&remote);
        if name.is_empty() {
            lease.release();
            return Err(TransferError::new(
                ErrorCode::InvalidConfig,
                format!("remote path {remote:?} names a directory, not a file"),
            ));
        }
        let dir = dir.to_string();
        let tmp = format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            temp_name(name, &task.task_id)
        );
        let kept = carry.remote_tmp.take().filter(|t| *t == tmp && self.resume);
        // From here a cancelled attempt (its time limit) leaves the file for the next.
        carry.remote_tmp = self.resume.then(|| tmp.clone());
        let mut known = self.known_dirs.lock().expect("dirs lock").contains(&dir);
        let mut may_append = kept.is_some() && !self.append_refused.load(Ordering::Relaxed);
        let r = loop {
            let session = lease.session();
            let mut append = false;
            let r = async {
                if !known {
                    session.mkdir_all(&dir).await?;
                    self.known_dirs
                        .lock()
                        .expect("dirs lock")
                        .insert(dir.clone());
                }
                let mut offset = 0;
                let mut digester = algorithm.map(Digester::new);
                if may_append {
                    if let Some((d, at)) = self
                        .upload_resume_point(session, &tmp, &mut raw, then, now, algorithm)
                        .await?
                    {
                        (digester, offset, append) = (d, at, true);
                    }
                }
                if !append {
                    raw.seek(SeekFrom::Start(0))
                        .map_err(|e| TransferError::local_io("seek the source", &e))?;
                }
                let source = raw
                    .try_clone()
                    .map_err(|e| TransferError::local_io("open the source", &e))?;
                let mut file = Hashed::resuming(
                    crate::localio::SyncFile::at(source, offset),
                    digester,
                    offset,
                );
                let sent = if append {
                    session.append(&mut file, &tmp).await? + offset
                } else {
                    session.upload(&mut file, &tmp).await?
                };
                if append {
                    self.resumes.inc();
                }
                let size = session.size(&tmp).await?;
                if size != sent {
                    return Err(TransferError::new(
                        ErrorCode::IoError,
                        format!("server has {size} bytes of {tmp}, {sent} were sent"),
                    ));
                }
                // The bytes sent are the bytes read: checked before the rename, so other
                // bytes than the producer expected never take the remote name.
                let checksum = file.take_checksum();
                expected(task, checksum.as_ref())?;
                self.against_server(session, &tmp, checksum.as_ref(), sent)
                    .await?;
                session.rename(&tmp, &remote).await?;
                Ok(Done {
                    bytes: sent,
                    checksum,
                })
            }
            .await;
            match r {
                // The server refuses to append (proftpd without AllowStoreRestart: "451
                // Append/Restart not permitted"): the whole file now, on another session,
                // and no more APPE on this connection.
                Err(e) if append && e.reply.is_some() && e.message.starts_with("APPE") => {
                    if !self.append_refused.swap(true, Ordering::Relaxed) {
                        tracing::info!(error = %e, "the server refuses APPE: interrupted uploads start again from zero on this connection");
                    }
                    lease.release();
                    lease = self.pool.acquire(self.transfer_timeout).await?;
                    may_append = false;
                    known = true;
                }
                r => break r,
            }
        };
        let session = lease.session();
        let e = match r {
            Ok(done) => {
                carry.remote_tmp = None;
                lease.release();
                return Ok(done);
            }
            Err(e) => e,
        };
        self.known_dirs.lock().expect("dirs lock").remove(&dir);
        if carry.remote_tmp.is_some() && keeps_partial(&e) {
            // Kept for the next attempt to continue.
            if !session.is_poisoned() {
                lease.release();
            }
            return Err(e);
        }
        carry.remote_tmp = None;
        if !session.is_poisoned() {
            let _ = session.delete(&tmp).await;
            lease.release();
        } else {
            // The session is gone; remove the temporary file over another one, if the
            // server answers soon (a retry of this task would overwrite it anyway).
            drop(lease);
            self.remove_remote_temp(&tmp).await;
        }
        Err(e)
    }

    /// Whether (and from where) an upload continues the remote temporary file `tmp`: its
    /// SIZE now and the source's size and mtime ([`plan_upload`]), then the remote file's
    /// last bytes (REST + RETR) against the source's. Some((digest of the source's first
    /// `kept` bytes, kept)) to resume, the source positioned at `kept`.
    async fn upload_resume_point(
        &self,
        session: &mut Session,
        tmp: &str,
        raw: &mut std::fs::File,
        then: (u64, SystemTime),
        now: (u64, SystemTime),
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<Option<(Option<Digester>, u64)>, TransferError> {
        let kept = match session.size(tmp).await {
            Ok(n) => Some(n),
            Err(_) if !session.is_poisoned() => None,
            Err(e) => return Err(e),
        };
        let (kept, overlap) = match plan_upload(kept, then, now) {
            Plan::Fresh(why) => {
                tracing::debug!(path = tmp, why, "the retry uploads from zero");
                return Ok(None);
            }
            Plan::Resume { kept, overlap } => (kept, overlap),
        };
        if !session.rest(kept - overlap).await? {
            return Ok(None);
        }
        let mut theirs = Vec::with_capacity(overlap as usize);
        session.download(tmp, &mut theirs).await?;
        let mut f = raw
            .try_clone()
            .map_err(|e| TransferError::local_io("open the source", &e))?;
        let prepared = tokio::task::spawn_blocking(move || {
            let ours = read_range(&mut f, kept - overlap, overlap)?;
            let digester = rehash_prefix(&mut f, kept, algorithm)?;
            f.seek(SeekFrom::Start(kept))?;
            Ok::<_, std::io::Error>((ours, digester))
        })
        .await
        .map_err(|e| TransferError::local_io("read the source", &std::io::Error::other(e)))?
        .map_err(|e| TransferError::local_io("read the source", &e))?;
        let (ours, digester) = prepared;
        if ours != theirs {
            tracing::debug!(
                path = tmp,
                "the server's kept bytes differ from the source's; uploading from zero"
            );
            return Ok(None);
        }
        tracing::debug!(path = tmp, kept, "the retry resumes the upload");
        Ok(Some((digester, kept)))
    }
}
