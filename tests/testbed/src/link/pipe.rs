//! One direction of one proxied connection: read, pace, delay, write.
//!
//! A reader task stamps each chunk it reads with its due time and queues it; a writer
//! task writes each chunk at its due time. So a stream is *delayed* by the one-way delay,
//! not rate-limited by it: many chunks are in flight at once, as on a real link.
//!
//! - The due time of a chunk is when it was read (or, with a bandwidth cap, when its last
//!   byte has left the [`Pacer`]) plus the one-way delay, and never before `not_before`
//!   plus that delay. Due times only grow, so chunks are written in order.
//! - At most [`WINDOW`] bytes are in flight per direction and connection; the reader
//!   stops reading until the writer has written some. Throughput without a cap is at most
//!   `WINDOW / (RTT/2)` (670 MB/s at 50 ms), far above what the test bed's servers send.
//! - The end of the stream (or a read error) is passed on like data, after the delay, as
//!   a TCP FIN (`shutdown`). A write error ends the writer; the reader then stops at its
//!   next chunk.
//! - A [`Tap`] counts the bytes read, and cuts the direction when the link is cut
//!   ([`crate::link::LinkProxy::cut`]): the reader stops at once and resets its socket
//!   (SO_LINGER 0), the writer drops what it still holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The bytes in flight per direction and connection at most.
pub const WINDOW: usize = 16 << 20;

/// How far ahead of the link a paced reader may be: a timer tick and some (the timer
/// would otherwise add up to a tick to every chunk and slow the link down).
const AHEAD: Duration = Duration::from_millis(2);

/// A bandwidth cap shared by every connection (and direction) that paces through it: the
/// link reserves `n / rate` seconds for each chunk of `n` bytes, first come first served,
/// with no burst credit. Idle time is not saved up.
#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    next: Mutex<Instant>,
}

impl Pacer {
    /// A link of `rate` bytes per second.
    pub fn new(rate: u64) -> Pacer {
        assert!(rate > 0, "a bandwidth cap of 0 bytes/s");
        Pacer {
            rate,
            next: Mutex::new(Instant::now()),
        }
    }

    /// The size of the chunks to read: each leaves in at most 5 ms (1 KiB..64 KiB).
    pub fn chunk(&self) -> usize {
        usize::try_from(self.rate / 200)
            .unwrap_or(usize::MAX)
            .clamp(1 << 10, 64 << 10)
    }

    /// Reserves the link for `n` bytes ready at `now`: when their last byte has left.
    pub fn reserve(&self, n: usize, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap();
        let start = (*next).max(now);
        let nanos = n as u128 * 1_000_000_000 / u128::from(self.rate);
        let done = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        *next = done;
        done
    }
}

/// How one direction behaves.
#[derive(Clone)]
pub struct Way {
    /// The one-way delay (RTT/2).
    pub delay: Duration,
    pub pacer: Option<Arc<Pacer>>,
    /// Nothing is due before this plus the delay (a client cannot send before its
    /// connect() has returned: one RTT after it began).
    pub not_before: Instant,
}

impl Way {
    /// When a chunk of `n` bytes read at `now` is due (the pacer's reservation made).
    pub fn due(&self, n: usize, now: Instant) -> (Instant, Instant) {
        let sent = match &self.pacer {
            Some(p) if n > 0 => p.reserve(n, now),
            _ => now,
        };
        (sent, sent.max(self.not_before) + self.delay)
    }
}

/// Rewrites the bytes read before they are timed (the FTP control channel's replies).
pub type Filter = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// A chunk on its way: its due time, the bytes (empty: the end), its share of the window.
type Chunk = (Instant, Vec<u8>, Option<OwnedSemaphorePermit>);

/// A direction's byte count and the link's cut signal.
#[derive(Clone)]
pub struct Tap {
    pub bytes: Arc<AtomicU64>,
    pub cut: watch::Receiver<u64>,
}

/// Carries `from` to the write half `to` yields (None: nowhere; the bytes are dropped)
/// through `way`, until the end of `from`, a write error or a cut of the link.
pub async fn run<T>(mut from: OwnedReadHalf, to: T, way: Way, mut filter: Option<Filter>, tap: Tap)
where
    T: std::future::Future<Output = Option<OwnedWriteHalf>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    tokio::spawn(write(to, rx, tap.cut.clone()));
    let mut cut = tap.cut;
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut buf = vec![0u8; way.pacer.as_ref().map_or(64 << 10, |p| p.chunk())];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => r.unwrap_or(0),
            _ = cut.changed() => {
                let _ = from.as_ref().set_zero_linger();
                return;
            }
        };
        tap.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let bytes = match (&mut filter, n) {
            (_, 0) => Vec::new(),
            (Some(f), _) => f(&buf[..n]),
            (None, _) => buf[..n].to_vec(),
        };
        if n > 0 && bytes.is_empty() {
            continue; // a partial line, held by the filter
        }
        let permit = if bytes.is_empty() {
            None
        } else {
            let want = u32::try_from(bytes.len().min(WINDOW)).expect("a chunk fits the window");
            match window.clone().acquire_many_owned(want).await {
                Ok(p) => Some(p),
                Err(_) => return,
            }
        };
        let (sent, due) = way.due(bytes.len(), Instant::now());
        // Read on when the link has (nearly) sent this chunk: the sender feels the cap.
        wait_until(sent.checked_sub(AHEAD).unwrap_or(sent)).await;
        let end = bytes.is_empty();
        if tx.send((due, bytes, permit)).is_err() || end {
            return;
        }
    }
}

/// Sleeps until `t`, unless it has passed: tokio's timer ticks in milliseconds, and even
/// a deadline passed would wait for the next tick.
async fn wait_until(t: Instant) {
    if t > Instant::now() {
        tokio::time::sleep_until(t).await;
    }
}

/// The writer task: each chunk at its due time; the end as a FIN; nothing more once the
/// link is cut.
async fn write<T>(to: T, mut rx: mpsc::UnboundedReceiver<Chunk>, mut cut: watch::Receiver<u64>)
where
    T: std::future::Future<Output = Option<OwnedWriteHalf>>,
{
    let Some(mut to) = to.await else { return };
    let cut_off = loop {
        let next = tokio::select! {
            c = rx.recv() => c,
            _ = cut.changed() => break true,
        };
        let Some((due, bytes, _permit)) = next else {
            break false;
        };
        tokio::select! {
            _ = wait_until(due) => {}
            _ = cut.changed() => break true,
        }
        if bytes.is_empty() {
            let _ = to.shutdown().await;
            break false;
        }
        let failed = tokio::select! {
            r = to.write_all(&bytes) => r.is_err(),
            _ = cut.changed() => break true,
        };
        if failed {
            break false;
        }
    };
    if cut_off {
        // A reset, not a FIN: the far end must not take the cut for the end of a file.
        // `forget`: dropping the half would shut it down first (a FIN).
        let _ = to.as_ref().set_zero_linger();
        to.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_chunks_by_their_size_and_saves_no_idle_time() {
        let p = Pacer::new(1_000_000);
        let t0 = Instant::now();
        let a = p.reserve(1000, t0);
        assert_eq!(a - t0, Duration::from_millis(1));
        // Queued behind the first chunk, although ready at the same time.
        assert_eq!(p.reserve(2000, t0) - t0, Duration::from_millis(3));
        // Ready long after: starts when ready, no credit for the idle link.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(p.reserve(1000, later) - later, Duration::from_millis(1));
    }

    #[test]
    fn chunks_leave_in_at_most_five_ms() {
        assert_eq!(Pacer::new(20_000_000).chunk(), 64 << 10);
        assert_eq!(Pacer::new(1_000_000).chunk(), 5_000);
        assert_eq!(Pacer::new(10_000).chunk(), 1 << 10);
    }

    #[test]
    fn a_chunk_is_due_one_delay_after_it_left_and_not_before_the_floor() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let d = Duration::from_millis(25);
        let free = Way {
            delay: d,
            pacer: None,
            not_before: t0,
        };
        assert_eq!(free.due(100, t0 + d), (t0 + d, t0 + 2 * d));
        let early = Way {
            not_before: t0 + 2 * d,
            ..free.clone()
        };
        assert_eq!(early.due(100, t0).1, t0 + 3 * d);
        let capped = Way {
            pacer: Some(Arc::new(Pacer::new(1_000_000))),
            ..free
        };
        let (sent, due) = capped.due(10_000, t0);
        assert_eq!(sent - t0, Duration::from_millis(10));
        assert_eq!(due - t0, Duration::from_millis(35));
        // The end of the stream takes no link time.
        assert_eq!(capped.due(0, t0).0, t0);
    }
}
