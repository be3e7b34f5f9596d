//! The paced writer: the one place where a pipeline socket is written (jobs, `Finished`
//! notices, results, acks).
//!
//! A [`PacedWriter`] writes at most once per pace ([`PIPELINE_PACE`]), and a write
//! carries everything queued meanwhile (up to [`MAX_BATCH`] messages): under load the
//! peer wakes once per batch instead of once per message; an idle writer writes at once,
//! so at low rates pacing adds nothing, and under load at most one pace per hop.
//!
//! Invariants, which the ordering rules of docs/PIPELINE.md build on:
//! - messages are written in their queue order, each exactly once per writer;
//! - a batch is returned to the caller only after the write of all of it has completed
//!   (it is then in the peer's receive queue, which outlives this process): what must
//!   follow a message and never overtake it (a worker's `Finished` after its result,
//!   publish's ack to a worker after ingest's) is sent from there;
//! - a batch whose write failed comes back unwritten, and so does every later one, at
//!   once and without pacing: a writer whose peer is gone writes nothing more (the
//!   caller reconnects with a new writer and re-sends what it still holds).

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::Sender;
use crate::frame::ChannelError;
use crate::messages::{
    FromPublish, IngestToPublish, IngestToTransfer, StageToSupervisor, ToPublish, TransferToIngest,
};

/// The least time between two writes on a pipeline socket. Under load a batch of jobs,
/// notices, results or acks then wakes the peer once instead of once per message, which
/// on two CPUs shared by a dozen processes was worth about a tenth of the small-upload
/// rate (docs/BENCHMARKS.md); an idle link writes at once, so at low rates it adds
/// nothing, and under load at most this much per hop.
pub const PIPELINE_PACE: Duration = Duration::from_millis(1);

/// Most messages in one write (a re-send after a reconnect is written in such chunks).
pub const MAX_BATCH: usize = 256;

/// A queued item and the frame it is written as: a message itself, or a message with
/// what its sender needs once it is written (a waiter, the worker to ack next).
pub trait Outgoing {
    type Frame: Serialize + Clone;
    fn frame(&self) -> Cow<'_, Self::Frame>;
}

macro_rules! outgoing_as_itself {
    ($($t:ty),*) => {$(
        impl Outgoing for $t {
            type Frame = $t;
            fn frame(&self) -> Cow<'_, $t> {
                Cow::Borrowed(self)
            }
        }
    )*};
}
outgoing_as_itself!(
    IngestToTransfer,
    IngestToPublish,
    TransferToIngest,
    ToPublish,
    FromPublish,
    StageToSupervisor
);

/// What a write gave back: the batch, written; or the batch, unwritten, and why.
pub type Written<M> = Result<Vec<M>, (Vec<M>, ChannelError)>;

/// Writes one connection's queue, paced (see the module header).
pub struct PacedWriter<T> {
    tx: Sender<T>,
    pace: Duration,
    last: Option<Instant>,
    broken: bool,
}

impl<T: Serialize + Clone> PacedWriter<T> {
    /// `pace`: the least time between two writes ([`Duration::ZERO`]: none).
    pub fn new(tx: Sender<T>, pace: Duration) -> PacedWriter<T> {
        PacedWriter {
            tx,
            pace,
            last: None,
            broken: false,
        }
    }

    /// Waits for the next item of `queue` and writes it (see [`PacedWriter::write`]);
    /// None once the queue is closed and empty. Cancel-safe until an item has arrived.
    pub async fn next<M: Outgoing<Frame = T>>(
        &mut self,
        queue: &mut mpsc::UnboundedReceiver<M>,
    ) -> Option<Written<M>> {
        let first = queue.recv().await?;
        Some(self.write(first, queue).await)
    }

    /// Writes `first` and whatever is queued behind it (at most [`MAX_BATCH`] in all) in
    /// one write, once the pace has passed since the previous write; what is queued
    /// while it waits goes along. Once a write has failed, returns at once, unwritten.
    pub async fn write<M: Outgoing<Frame = T>>(
        &mut self,
        first: M,
        queue: &mut mpsc::UnboundedReceiver<M>,
    ) -> Written<M> {
        if !self.broken {
            if let Some(next) = self.last.map(|l| l + self.pace) {
                if next > Instant::now() {
                    tokio::time::sleep_until(next).await;
                }
            }
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        self.write_batch(batch).await
    }

    /// Writes `items` now (a reconnect's re-send of what is held), in writes of at most
    /// [`MAX_BATCH`], handing each chunk to `on_written` once it is written. The pace
    /// applies from the next [`PacedWriter::write`] on.
    pub async fn write_now<M: Outgoing<Frame = T>>(
        &mut self,
        items: &[M],
        mut on_written: impl FnMut(&[M]),
    ) -> Result<(), ChannelError> {
        for chunk in items.chunks(MAX_BATCH) {
            self.send(chunk).await?;
            on_written(chunk);
        }
        Ok(())
    }

    async fn write_batch<M: Outgoing<Frame = T>>(&mut self, batch: Vec<M>) -> Written<M> {
        self.last = (!self.pace.is_zero()).then(Instant::now);
        match self.send(&batch).await {
            Ok(()) => Ok(batch),
            Err(e) => Err((batch, e)),
        }
    }

    async fn send<M: Outgoing<Frame = T>>(&mut self, items: &[M]) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "an earlier write on this connection failed",
            )));
        }
        let sent = self.tx.send_all(items.iter().map(Outgoing::frame)).await;
        self.broken = sent.is_err();
        sent
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conn::Receiver;
    use crate::frame::{FrameReader, FrameWriter};
    use crate::messages::MessageId;

    /// An ack of `offset` (the test message of this module and of `link`'s tests).
    pub(crate) fn ack(offset: i64) -> FromPublish {
        FromPublish::Acked(MessageId {
            generation: 1,
            partition: 0,
            offset,
        })
    }

    fn offsets(batch: &[FromPublish]) -> Vec<i64> {
        batch
            .iter()
            .map(|m| match m {
                FromPublish::Acked(id) => id.offset,
                other => panic!("not an ack: {other:?}"),
            })
            .collect()
    }

    /// A writer on one end of a socket pair, a typed reader on the other.
    fn pair(pace: Duration) -> (PacedWriter<FromPublish>, Receiver<FromPublish>) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, w) = a.into_split();
        let (r, _) = b.into_split();
        (
            PacedWriter::new(Sender::new(FrameWriter::new(w)), pace),
            Receiver::new(FrameReader::new(r)),
        )
    }

    const PACE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn an_idle_writer_writes_at_once() {
        let (mut w, mut r) = pair(PACE);
        let (tx, mut q) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        tx.send(ack(1)).unwrap();
        let batch = w.next(&mut q).await.unwrap().unwrap();
        assert_eq!(offsets(&batch), [1]);
        assert!(t0.elapsed() < PACE, "the first write waits for nothing");
        assert_eq!(r.recv().await.unwrap(), Some(ack(1)));

        tokio::time::sleep(PACE).await;
        let t1 = Instant::now();
        tx.send(ack(2)).unwrap();
        let batch = w.next(&mut q).await.unwrap().unwrap();
        assert_eq!(offsets(&batch), [2]);
        assert!(t1.elapsed() < PACE, "after a pause a write goes at once");

        let (mut none, _r) = pair(Duration::ZERO);
        let t2 = Instant::now();
        for i in 0..100 {
            tx.send(ack(i)).unwrap();
            none.next(&mut q).await.unwrap().unwrap();
        }
        assert!(t2.elapsed() < PACE, "no pace, no wait");
    }

    #[tokio::test]
    async fn under_load_one_write_per_pace_carries_everything_queued_in_order() {
        let (mut w, mut r) = pair(PACE);
        let (tx, mut q) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        tx.send(ack(0)).unwrap();
        assert_eq!(offsets(&w.next(&mut q).await.unwrap().unwrap()), [0]);
        // Queued before the next write, and while it waits out the pace.
        for i in 1..=10 {
            tx.send(ack(i)).unwrap();
        }
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PACE / 4).await;
            late.send(ack(11)).unwrap();
        });
        let batch = w.next(&mut q).await.unwrap().unwrap();
        assert!(t0.elapsed() >= PACE, "the second write waits out the pace");
        assert_eq!(offsets(&batch), (1..=11).collect::<Vec<_>>());
        let t1 = Instant::now();
        tx.send(ack(12)).unwrap();
        assert_eq!(offsets(&w.next(&mut q).await.unwrap().unwrap()), [12]);
        assert!(t1.elapsed() >= PACE * 3 / 4, "and so does the third");
        // At most MAX_BATCH in one write; the rest follows, in order.
        for i in 13..13 + MAX_BATCH as i64 + 5 {
            tx.send(ack(i)).unwrap();
        }
        assert_eq!(w.next(&mut q).await.unwrap().unwrap().len(), MAX_BATCH);
        assert_eq!(w.next(&mut q).await.unwrap().unwrap().len(), 5);
        drop((tx, w));
        let mut got = Vec::new();
        while let Some(m) = r.recv().await.unwrap() {
            got.push(m);
        }
        assert_eq!(
            offsets(&got),
            (0..13 + MAX_BATCH as i64 + 5).collect::<Vec<_>>(),
            "every message once, in queue order"
        );
    }

    #[tokio::test]
    async fn a_gone_peer_gets_nothing_more_and_batches_come_back_unwritten_at_once() {
        let (mut w, r) = pair(PACE);
        let (tx, mut q) = mpsc::unbounded_channel();
        tx.send(ack(1)).unwrap();
        w.next(&mut q).await.unwrap().unwrap();
        drop(r);
        tx.send(ack(2)).unwrap();
        tx.send(ack(3)).unwrap();
        let (back, _) = w.next(&mut q).await.unwrap().unwrap_err();
        assert_eq!(offsets(&back), [2, 3], "the failed batch comes back whole");
        let t0 = Instant::now();
        for i in 4..10 {
            tx.send(ack(i)).unwrap();
            let (back, _) = w.next(&mut q).await.unwrap().unwrap_err();
            assert_eq!(offsets(&back), [i]);
        }
        assert!(
            t0.elapsed() < PACE,
            "a broken writer does not wait out the pace"
        );
        drop(tx);
        assert!(w.next(&mut q).await.is_none(), "a closed queue ends it");
    }

    #[tokio::test]
    async fn a_resend_is_written_at_once_in_chunks() {
        let (mut w, mut r) = pair(PACE);
        let held: Vec<FromPublish> = (0..MAX_BATCH as i64 * 2 + 1).map(ack).collect();
        let mut chunks = Vec::new();
        let t0 = Instant::now();
        w.write_now(&held, |c| chunks.push(c.len())).await.unwrap();
        assert!(t0.elapsed() < PACE);
        assert_eq!(chunks, [MAX_BATCH, MAX_BATCH, 1]);
        for i in 0..held.len() as i64 {
            assert_eq!(r.recv().await.unwrap(), Some(ack(i)));
        }
    }
}
