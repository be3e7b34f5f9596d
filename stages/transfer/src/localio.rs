//! Local file I/O for the transfer streams, done in place on the runtime thread.
//!
//! Reads and writes of local files hit the page cache and take microseconds; sending each
//! 64 KiB chunk to tokio's blocking pool instead cost two thread hand-offs per chunk and
//! per file operation, which the small-file profile showed as the transfer worker's main
//! CPU cost (context switches, in `docs/BENCHMARKS.md`). The calls that wait for the
//! device (the sync, with the rename after it) run off the runtime threads (see
//! [`crate::commit`]).
//!
//! Write-behind: a download asks the kernel to start writing each [`WRITE_BEHIND`] bytes
//! to the device as soon as they are written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`,
//! which does not wait for the device), so the device works while the file is still
//! arriving and the sync before the rename only waits for the tail. Without it, a large
//! file sat in the page cache until its fsync and the download took the sum of network
//! and device time instead of the larger of the two (`docs/BENCHMARKS.md`). It is a hint:
//! its errors are ignored, the sync reports them. Small files never reach it.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes written between two write-behind requests.
pub const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// A local file as an async stream whose calls complete at once.
pub struct SyncFile {
    file: std::fs::File,
    /// Bytes written so far, and up to where write-behind has been requested.
    written: u64,
    flushed_to: u64,
}

impl SyncFile {
    pub fn new(file: std::fs::File) -> Self {
        SyncFile {
            file,
            written: 0,
            flushed_to: 0,
        }
    }

    /// A file positioned at `pos` already (a resumed download writes on from there).
    pub fn at(file: std::fs::File, pos: u64) -> Self {
        SyncFile {
            file,
            written: pos,
            flushed_to: pos,
        }
    }

    pub fn into_inner(self) -> std::fs::File {
        self.file
    }

    /// Starts the device write of the bytes written since the last request, once there
    /// are [`WRITE_BEHIND`] of them.
    fn write_behind(&mut self) {
        let pending = self.written - self.flushed_to;
        if pending < WRITE_BEHIND {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor this struct owns; it touches no
            // memory of ours.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed_to as libc::off64_t,
                    pending as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.flushed_to = self.written;
    }
}

impl AsyncWrite for SyncFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = this.file.write(buf);
        if let Ok(n) = r {
            this.written += n as u64;
            this.write_behind();
        }
        Poll::Ready(r)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SyncFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = match self.get_mut().file.read(buf.initialize_unfilled()) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_read_back_whole_across_write_behind_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = SyncFile::new(std::fs::File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        for _ in 0..(2 * WRITE_BEHIND / (1 << 20) + 3) {
            f.write_all(&chunk).await.unwrap();
        }
        assert_eq!(f.flushed_to, 2 * WRITE_BEHIND);
        f.into_inner().sync_all().unwrap();
        let mut back = Vec::new();
        SyncFile::new(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back.len() as u64, 2 * WRITE_BEHIND + 3 * (1 << 20));
        assert!(back.chunks(1 << 20).all(|c| c == &chunk[..c.len()]));
    }
}
