//! The digest of a transfer's bytes, computed as they pass (issue 21).
//!
//! [`Hashed`] wraps the local side of a transfer: the file a download writes (every byte
//! written is hashed) or the file an upload reads (every byte read is hashed), so the
//! digest covers exactly the bytes that went between the server and the local file, with
//! no second read of the file. The algorithms come from crates made for them: `sha2`
//! (SHA-256, with the CPU's SHA extensions where present), `md-5` and `xxhash-rust`
//! (XXH3, 64 bits).
//!
//! Invariants: a [`Hashed`] hashes each byte once, in order, and only bytes the inner
//! stream accepted (a short write hashes only what was written); its digest is taken once
//! ([`Hashed::take_checksum`]) and a new attempt builds a new one.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ftp_pooler_contract::{Checksum, ChecksumAlgorithm};
use md5::Digest as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A running digest of one algorithm.
pub enum Digester {
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
}

impl Digester {
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Md5 => Digester::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Xxh3 => Digester::Xxh3(Box::default()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Digester::Sha256(d) => d.update(bytes),
            Digester::Md5(d) => d.update(bytes),
            Digester::Xxh3(d) => d.update(bytes),
        }
    }

    pub fn finish(self) -> Checksum {
        let (algorithm, value) = match self {
            Digester::Sha256(d) => (ChecksumAlgorithm::Sha256, hex(&d.finalize())),
            Digester::Md5(d) => (ChecksumAlgorithm::Md5, hex(&d.finalize())),
            Digester::Xxh3(d) => (ChecksumAlgorithm::Xxh3, format!("{:016x}", d.digest())),
        };
        Checksum { algorithm, value }
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A stream whose bytes are hashed as they pass (no digest: passes them untouched).
pub struct Hashed<S> {
    inner: S,
    digester: Option<Digester>,
}

impl<S> Hashed<S> {
    pub fn new(inner: S, algorithm: Option<ChecksumAlgorithm>) -> Self {
        Hashed {
            inner,
            digester: algorithm.map(Digester::new),
        }
    }

    /// The digest of every byte so far (None without an algorithm, or once taken).
    pub fn take_checksum(&mut self) -> Option<Checksum> {
        self.digester.take().map(Digester::finish)
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Hashed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some(d) = &mut this.digester {
            d.update(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Hashed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(d) = &mut this.digester {
            d.update(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Known digests of "abc" (FIPS 180-2, RFC 1321, and xxHash's reference
    /// implementation).
    #[test]
    fn known_answers() {
        let digest = |a| {
            let mut d = Digester::new(a);
            d.update(b"a");
            d.update(b"bc");
            d.finish().value
        };
        assert_eq!(
            digest(ChecksumAlgorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest(ChecksumAlgorithm::Md5),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(digest(ChecksumAlgorithm::Xxh3), "78af5f94892f3950");
    }

    #[tokio::test]
    async fn written_and_read_bytes_are_hashed_once_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Digester::new(ChecksumAlgorithm::Sha256);
        whole.update(&data);
        let want = whole.finish();

        let mut w = Hashed::new(Vec::new(), Some(ChecksumAlgorithm::Sha256));
        for chunk in data.chunks(4097) {
            w.write_all(chunk).await.unwrap();
        }
        assert_eq!(w.take_checksum(), Some(want.clone()));
        assert_eq!(w.take_checksum(), None, "taken once");
        assert_eq!(w.into_inner(), data);

        let mut r = Hashed::new(data.as_slice(), Some(ChecksumAlgorithm::Sha256));
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(r.take_checksum(), Some(want));

        let mut none = Hashed::new(Vec::new(), None);
        none.write_all(b"x").await.unwrap();
        assert_eq!(none.take_checksum(), None);
    }
}
