//! Resuming an interrupted transfer (issue 21): what a failed attempt leaves for the next
//! one, whether the next one may continue where it stopped, and the checks that make a
//! continued file as sound as a whole one.
//!
//! A download that fails on the link (CONNECTION_ERROR, TRANSFER_TIMEOUT) keeps its
//! temporary file; an upload keeps its remote temporary file. The retry resumes when:
//!
//! - at least [`RESUME_MIN`] bytes were kept (less is cheaper sent again);
//! - the source is unchanged: a download's source has a size at least what was kept and
//!   a modification time (MDTM) before the first attempt began; an upload's local source
//!   has the size and mtime it had at the first attempt;
//! - the kept part is sound: its last [`OVERLAP`] bytes equal the source's bytes there.
//!   A download asks the server from `kept - OVERLAP` (REST) and compares what arrives
//!   first with what it kept ([`Overlap`]); an upload reads the remote file's last
//!   [`OVERLAP`] bytes (REST + RETR) and compares them with its source's;
//! - the server accepts REST (downloads, and an upload's tail) and APPE (uploads).
//!
//! Anything else starts again from zero: a refused REST, a prefix that differs, a source
//! that changed. The digest of the whole file is then computed from the kept bytes (read
//! again locally, [`rehash_prefix`]) and the new ones, so a resumed result carries the
//! digest of the whole file, checked as any other (the task's expected digest, the
//! server's own); the file's size is checked against the server's as for any transfer.
//!
//! The modification time is compared with the first attempt's start on our clock: a
//! server whose clock runs ahead makes a recently changed file look too new and the retry
//! starts from zero (safe); one whose clock runs behind could hide a change made within
//! that lag, which the overlap, the size and the server's digest (where offered) still
//! catch. Only retries within one run of a task resume: a task run again after the worker
//! died starts from zero.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use ftp_pooler_contract::ChecksumAlgorithm;
use tokio::io::AsyncWrite;

use crate::digest::Digester;

/// A transfer resumes only past this many kept bytes.
pub const RESUME_MIN: u64 = 1024 * 1024;
/// The bytes before the resume point that are compared with the source's.
pub const OVERLAP: u64 = 64 * 1024;

/// What the attempts of one run of a task carry from one to the next.
#[derive(Debug, Default)]
pub struct Carry {
    /// When the first attempt began (our clock).
    pub started: Option<SystemTime>,
    /// A download's temporary file, kept by a failed attempt.
    pub local_tmp: Option<std::path::PathBuf>,
    /// An upload's remote temporary file, kept by a failed attempt.
    pub remote_tmp: Option<String>,
    /// An upload's local source as the first attempt found it: size and mtime.
    pub source: Option<(u64, SystemTime)>,
}

/// What the next attempt does with what was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// From zero, and why.
    Fresh(&'static str),
    /// `kept` bytes stay; the `overlap` bytes before `kept` are compared with the source's.
    Resume { kept: u64, overlap: u64 },
}

/// Whether a download that kept `kept` bytes resumes, given the source's size and MDTM
/// now and the time the first attempt began.
pub fn plan_download(
    kept: u64,
    size: Option<u64>,
    mdtm: Option<SystemTime>,
    started: SystemTime,
) -> Plan {
    if kept < RESUME_MIN {
        return Plan::Fresh("less than 1 MiB was kept");
    }
    let Some(size) = size else {
        return Plan::Fresh("the server gives no size");
    };
    if size < kept {
        return Plan::Fresh("the source is shorter than what was kept");
    }
    let Some(mdtm) = mdtm else {
        return Plan::Fresh("the server gives no modification time");
    };
    // MDTM has whole seconds: a change within the second the first attempt began counts.
    if mdtm + Duration::from_secs(1) > started {
        return Plan::Fresh("the source changed after the first attempt began");
    }
    Plan::Resume {
        kept,
        overlap: OVERLAP.min(kept),
    }
}

/// Whether an upload resumes: the remote temporary file holds `kept` bytes (None: none),
/// its source had size and mtime `then` at the first attempt and has `now`.
pub fn plan_upload(kept: Option<u64>, then: (u64, SystemTime), now: (u64, SystemTime)) -> Plan {
    if then != now {
        return Plan::Fresh("the local source changed since the first attempt");
    }
    let Some(kept) = kept else {
        return Plan::Fresh("the server kept no temporary file");
    };
    if kept < RESUME_MIN {
        return Plan::Fresh("less than 1 MiB was kept");
    }
    if kept > now.0 {
        return Plan::Fresh("the server kept more than the source holds");
    }
    Plan::Resume {
        kept,
        overlap: OVERLAP.min(kept),
    }
}

/// The time in an MDTM reply: "213 YYYYMMDDhhmmss" (UTC; a fraction after a dot is
/// ignored).
pub fn parse_mdtm(reply: &str) -> Option<SystemTime> {
    let t = reply.get(4..)?.trim();
    let t = t.split('.').next()?;
    if t.len() != 14 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The digest of a file's first `len` bytes (read again from the local file), to go on
/// with the bytes that follow; None without an algorithm. Blocking: run off the runtime.
pub fn rehash_prefix(
    file: &mut std::fs::File,
    len: u64,
    algorithm: Option<ChecksumAlgorithm>,
) -> std::io::Result<Option<Digester>> {
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    let mut d = Digester::new(algorithm);
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        file.read_exact(&mut buf[..want])?;
        d.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(Some(d))
}

/// `len` bytes of `file` from `from`. Blocking.
pub fn read_range(file: &mut std::fs::File, from: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut v)?;
    Ok(v)
}

/// A download's sink when it resumes: the first bytes written must equal `expect` (the
/// kept bytes they overwrite), or the write fails and [`Overlap::differed`] says so.
pub struct Overlap<W> {
    inner: W,
    expect: Vec<u8>,
    checked: usize,
    differed: bool,
}

impl<W> Overlap<W> {
    pub fn new(inner: W, expect: Vec<u8>) -> Self {
        Overlap {
            inner,
            expect,
            checked: 0,
            differed: false,
        }
    }

    /// True once the source's bytes differed from the kept ones.
    pub fn differed(&self) -> bool {
        self.differed
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Overlap<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.checked < this.expect.len() {
            let n = buf.len().min(this.expect.len() - this.checked);
            if buf[..n] != this.expect[this.checked..this.checked + n] {
                this.differed = true;
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the source's bytes before the resume point differ from the kept ones",
                )));
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.checked = (this.checked + n).min(this.expect.len());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const MIB: u64 = 1024 * 1024;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_download_resumes_only_from_enough_of_an_unchanged_source() {
        let started = at(1_000_000);
        let old = Some(at(999_000));
        let resume = Plan::Resume {
            kept: 5 * MIB,
            overlap: OVERLAP,
        };
        assert_eq!(plan_download(5 * MIB, Some(9 * MIB), old, started), resume);
        // The whole file kept (the 226 was lost): the overlap still checks it.
        assert_eq!(plan_download(5 * MIB, Some(5 * MIB), old, started), resume);
        for (kept, size, mdtm) in [
            (MIB - 1, Some(9 * MIB), old),
            (5 * MIB, None, old),
            (5 * MIB, Some(4 * MIB), old),
            (5 * MIB, Some(9 * MIB), None),
            // Changed after the first attempt began, or within its second.
            (5 * MIB, Some(9 * MIB), Some(at(1_000_010))),
            (5 * MIB, Some(9 * MIB), Some(at(1_000_000))),
            (
                5 * MIB,
                Some(9 * MIB),
                Some(at(999_999) + Duration::from_millis(1)),
            ),
        ] {
            assert!(
                matches!(plan_download(kept, size, mdtm, started), Plan::Fresh(_)),
                "{kept} {size:?} {mdtm:?}"
            );
        }
    }

    #[test]
    fn an_upload_resumes_only_from_an_unchanged_source() {
        let src = (9 * MIB, at(5));
        assert_eq!(
            plan_upload(Some(2 * MIB), src, src),
            Plan::Resume {
                kept: 2 * MIB,
                overlap: OVERLAP
            }
        );
        for (kept, now) in [
            (Some(2 * MIB), (9 * MIB, at(6))),
            (Some(2 * MIB), (10 * MIB, at(5))),
            (None, src),
            (Some(MIB / 2), src),
            (Some(10 * MIB), src),
        ] {
            assert!(matches!(plan_upload(kept, src, now), Plan::Fresh(_)));
        }
    }

    #[test]
    fn mdtm_replies() {
        assert_eq!(parse_mdtm("213 19700101000000"), Some(at(0)));
        assert_eq!(parse_mdtm("213 20261204031455"), Some(at(1_796_354_095)));
        assert_eq!(parse_mdtm("213 20000229235959.123"), Some(at(951_868_799)));
        for bad in [
            "213 2026120403145",
            "550 No such file",
            "213 20261304031455",
            "213",
        ] {
            assert_eq!(parse_mdtm(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_overlap_passes_equal_bytes_and_stops_at_the_first_difference() {
        let mut ok = Overlap::new(Vec::new(), b"abcdef".to_vec());
        ok.write_all(b"abc").await.unwrap();
        ok.write_all(b"defghi").await.unwrap();
        assert!(!ok.differed());
        assert_eq!(ok.into_inner(), b"abcdefghi");
        let mut bad = Overlap::new(Vec::new(), b"abcdef".to_vec());
        bad.write_all(b"abc").await.unwrap();
        assert!(bad.write_all(b"dXf").await.is_err());
        assert!(bad.differed());
    }

    #[test]
    fn the_prefix_digest_is_the_digest_of_the_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let d = rehash_prefix(&mut f, 2_500_000, Some(ChecksumAlgorithm::Sha256))
            .unwrap()
            .unwrap();
        let mut want = Digester::new(ChecksumAlgorithm::Sha256);
        want.update(&data[..2_500_000]);
        assert_eq!(d.finish(), want.finish());
        assert_eq!(read_range(&mut f, 10, 3).unwrap(), data[10..13].to_vec());
    }
}
