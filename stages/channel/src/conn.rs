//! Typed channel ends: a connection that can only send its own outgoing message type and
//! receive its own incoming one.
//!
//! [`Conn<Tx, Rx>`] wraps the untyped frame halves of [`crate::frame`] once the handshake
//! and the [`Hello`] are done: [`Sender<Tx>`] writes only `Tx` frames, [`Receiver<Rx>`]
//! reads only `Rx` frames. The types of each direction are the ones of
//! [`crate::messages`]; a stage that tried to answer a job with a job, or to read an ack
//! where a result comes, does not compile.
//!
//! Invariants: the bytes are exactly those of [`FrameWriter::send`] and
//! [`FrameReader::recv`] (the golden tests pin them); the first frame a connecting side
//! sends is its [`Hello`] ([`Conn::connect`]), before any `Tx`.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{connect, encode_frame, ChannelError, FrameReader, FrameWriter, Role};
use crate::messages::Hello;

/// The writing end of a connection: sends `T` and nothing else.
#[derive(Debug)]
pub struct Sender<T> {
    inner: FrameWriter,
    _sends: PhantomData<fn(&T)>,
}

impl<T: Serialize> Sender<T> {
    pub fn new(inner: FrameWriter) -> Sender<T> {
        Sender {
            inner,
            _sends: PhantomData,
        }
    }

    pub async fn send(&mut self, msg: &T) -> Result<(), ChannelError> {
        self.inner.send(msg).await
    }

    /// Sends several messages in one write, in their order.
    pub async fn send_all<B: Borrow<T>>(
        &mut self,
        msgs: impl IntoIterator<Item = B>,
    ) -> Result<(), ChannelError> {
        let mut bytes = Vec::new();
        for m in msgs {
            bytes.extend_from_slice(&encode_frame(m.borrow())?);
        }
        self.inner.write_bytes(&bytes).await
    }
}

/// The reading end of a connection: receives `T` and nothing else.
#[derive(Debug)]
pub struct Receiver<T> {
    inner: FrameReader,
    _receives: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Receiver<T> {
    pub fn new(inner: FrameReader) -> Receiver<T> {
        Receiver {
            inner,
            _receives: PhantomData,
        }
    }

    /// The next message; `Ok(None)` when the peer closed the channel between frames.
    pub async fn recv(&mut self) -> Result<Option<T>, ChannelError> {
        self.inner.recv().await
    }
}

/// Both ends of one connection: `Tx` out, `Rx` in.
#[derive(Debug)]
pub struct Conn<Tx, Rx> {
    pub tx: Sender<Tx>,
    pub rx: Receiver<Rx>,
}

impl<Tx: Serialize, Rx: DeserializeOwned> Conn<Tx, Rx> {
    /// Types the halves of a connection whose handshake (and hello) is done.
    pub fn new(reader: FrameReader, writer: FrameWriter) -> Conn<Tx, Rx> {
        Conn {
            tx: Sender::new(writer),
            rx: Receiver::new(reader),
        }
    }

    /// Connects to the socket at `path` as `me` (the listener must be `peer`) and says
    /// `hello`.
    pub async fn connect(
        path: &Path,
        me: Role,
        peer: Role,
        hello: &Hello,
    ) -> Result<Conn<Tx, Rx>, ChannelError> {
        let (reader, mut writer) = connect(path, me, peer).await?;
        writer.send(hello).await?;
        Ok(Conn::new(reader, writer))
    }

    pub fn split(self) -> (Sender<Tx>, Receiver<Rx>) {
        (self.tx, self.rx)
    }
}
