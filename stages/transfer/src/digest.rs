//! The digest of a transfer's bytes, computed as they pass (issue 21).
//!
//! [`Hashed`] wraps the local side of a transfer: the file a download writes (every byte
//! written is hashed) or the file an upload reads (every byte read is hashed), so the
//! digest covers exactly the bytes that went between the server and the local file, with
//! no second read of the file. The algorithms come from crates made for them: `sha2`
//! (SHA-256, with the CPU's SHA extensions where present), `md-5` and `xxhash-rust`
//! (XXH3, 64 bits).
//!
//! A large transfer is hashed on a thread of its own ([`Background`]) once it passes
//! [`BACKGROUND_AFTER`] bytes: hashed in line, SHA-256 (about 2 GB/s on one core with the
//! SHA extensions) held a 1 GiB loopback download at 0.55x its speed without a digest
//! (docs/BENCHMARKS.md); on its own thread it overlaps the transfer. The thread gets copies
//! of the bytes through a bounded channel ([`BACKGROUND_CHUNKS`] chunks in flight, buffers
//! reused): a transfer faster than the hash waits for it, memory stays bounded.
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

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Digester::Sha256(_) => ChecksumAlgorithm::Sha256,
            Digester::Md5(_) => ChecksumAlgorithm::Md5,
            Digester::Xxh3(_) => ChecksumAlgorithm::Xxh3,
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

/// Bytes hashed in line before the rest goes to a thread of its own.
pub const BACKGROUND_AFTER: u64 = 4 * 1024 * 1024;
/// Chunks in flight to the hashing thread.
pub const BACKGROUND_CHUNKS: usize = 8;

/// A digester on a thread of its own, fed copies of the bytes in order.
pub struct Background {
    chunks: Option<crossbeam_channel::Sender<Vec<u8>>>,
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Option<Checksum>>>,
}

impl Background {
    /// Moves `digester` to a new thread; gives it back if no thread can be had.
    #[allow(clippy::result_large_err)] // once per large transfer; the Err is rare
    fn start(digester: Digester) -> Result<Background, (std::io::Error, Digester)> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(BACKGROUND_CHUNKS);
        let (spare_tx, spare) = crossbeam_channel::bounded::<Vec<u8>>(BACKGROUND_CHUNKS + 1);
        let (hand_tx, hand_rx) = crossbeam_channel::bounded::<Digester>(1);
        let spawned = std::thread::Builder::new()
            .name("digest".into())
            .spawn(move || {
                let mut digester = hand_rx.recv().ok()?;
                for chunk in rx {
                    digester.update(&chunk);
                    let _ = spare_tx.try_send(chunk);
                }
                Some(digester.finish())
            });
        match spawned {
            Ok(thread) => {
                let _ = hand_tx.send(digester);
                Ok(Background {
                    chunks: Some(tx),
                    spare,
                    thread: Some(thread),
                })
            }
            Err(e) => Err((e, digester)),
        }
    }

    /// Hands a copy of `bytes` to the thread (waits while it is [`BACKGROUND_CHUNKS`]
    /// behind).
    fn update(&mut self, bytes: &[u8]) {
        let mut chunk = self.spare.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(bytes);
        if let Some(tx) = &self.chunks {
            let _ = tx.send(chunk);
        }
    }

    fn finish(mut self) -> Option<Checksum> {
        drop(self.chunks.take());
        self.thread.take()?.join().ok().flatten()
    }
}

/// Where a [`Hashed`] stream's digest is computed.
enum State {
    Off,
    Inline(Digester, u64),
    Background(Background),
}

/// A stream whose bytes are hashed as they pass (no digest: passes them untouched).
pub struct Hashed<S> {
    inner: S,
    state: State,
}

impl State {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            State::Off => {}
            State::Background(b) => b.update(bytes),
            State::Inline(d, n) => {
                d.update(bytes);
                *n += bytes.len() as u64;
                if *n >= BACKGROUND_AFTER {
                    let State::Inline(d, _) = std::mem::replace(self, State::Off) else {
                        unreachable!()
                    };
                    // Without a thread (none to be had), the hash stays in line.
                    *self = match Background::start(d) {
                        Ok(b) => State::Background(b),
                        Err((e, d)) => {
                            tracing::warn!(error = %e, "no thread for the digest; hashing in line");
                            State::Inline(d, 0)
                        }
                    };
                }
            }
        }
    }
}

impl<S> Hashed<S> {
    pub fn new(inner: S, algorithm: Option<ChecksumAlgorithm>) -> Self {
        Hashed {
            inner,
            state: match algorithm {
                Some(a) => State::Inline(Digester::new(a), 0),
                None => State::Off,
            },
        }
    }

    /// A stream whose digest goes on from `digester`, which has hashed the `hashed` bytes
    /// before this stream's first (a resumed transfer; None: no digest).
    pub fn resuming(inner: S, digester: Option<Digester>, hashed: u64) -> Self {
        Hashed {
            inner,
            state: match digester {
                Some(d) => State::Inline(d, hashed),
                None => State::Off,
            },
        }
    }

    /// The digest of every byte so far (None without an algorithm, or once taken). With
    /// a hashing thread, waits for it to finish the bytes in flight.
    pub fn take_checksum(&mut self) -> Option<Checksum> {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Off => None,
            State::Inline(d, _) => Some(d.finish()),
            State::Background(b) => b.finish(),
        }
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
        this.state.update(&buf[..n]);
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
        this.state.update(&buf.filled()[before..]);
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
        // Past BACKGROUND_AFTER: the tail is hashed on the thread.
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Digester::new(ChecksumAlgorithm::Sha256);
        whole.update(&data);
        let want = whole.finish();

        let mut w = Hashed::new(Vec::new(), Some(ChecksumAlgorithm::Sha256));
        for chunk in data.chunks(65_537) {
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
