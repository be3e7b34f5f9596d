//! Local file I/O for the transfer streams, done in place on the runtime thread.
//!
//! Reads and writes of local files hit the page cache and take microseconds; sending each
//! 64 KiB chunk to tokio's blocking pool instead cost two thread hand-offs per chunk and
//! per file operation, which the small-file profile showed as the transfer worker's main
//! CPU cost (context switches, in `docs/BENCHMARKS.md`). The calls that wait for the
//! device (fsync, with the rename after it) still run on the blocking pool (see
//! [`crate::engine`]).

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A local file as an async stream whose calls complete at once.
pub struct SyncFile(pub std::fs::File);

impl AsyncWrite for SyncFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
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
        let n = match self.get_mut().0.read(buf.initialize_unfilled()) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}
