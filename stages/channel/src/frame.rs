//! The byte format of every stage channel: a handshake, then length-prefixed bincode frames.
//!
//! ```text
//! handshake (12 bytes, each side sends one, then reads the peer's):
//!   b"FTPPOOLR"  protocol version (u16 BE)  role (u8)  reserved (u8, 0)
//! frame:
//!   length (u32 BE, 1..=MAX_FRAME)  bincode 2.0.1 payload (serde, standard config)
//! ```
//!
//! Invariants: the length is checked before the payload buffer is allocated; a length
//! inside the payload (a string's) is bounded by [`DECODE_LIMIT`] before anything is
//! allocated for it; a payload must decode exactly (trailing bytes are an error); a clean
//! end of stream is only accepted on a frame boundary.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// First bytes of every connection.
pub const MAGIC: [u8; 8] = *b"FTPPOOLR";
/// Bumped on any change to the frame format or to a message type.
pub const PROTOCOL_VERSION: u16 = 10;
/// Largest payload accepted (a DLQ record keeps a whole original message).
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;
/// How long a peer may take to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Most bytes that decoding one payload may claim. bincode allocates a string's declared
/// length before reading it, so without a limit a 10-byte payload declaring a 2^63-byte
/// string panics (capacity overflow) or aborts the process (allocation failure). Decoding
/// claims each value's in-memory size (a u64 counts 8 even when its varint is 1 byte), at
/// most 8 per payload byte (no message has a 128-bit integer), so 8 * MAX_FRAME never
/// refuses a frame `encode_frame` wrote, and bounds what a short payload can allocate.
pub const DECODE_LIMIT: usize = 8 * MAX_FRAME as usize;

/// The decoding configuration: BINCODE's wire format, with claims bounded by DECODE_LIMIT.
const BINCODE_DECODE: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> = BINCODE.with_limit::<DECODE_LIMIT>();

/// Who is speaking on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Supervisor = 1,
    Ingest = 2,
    Transfer = 3,
    Publish = 4,
    /// `ftp-pooler ctl`.
    Ctl = 5,
}

impl Role {
    fn from_u8(b: u8) -> Option<Role> {
        Some(match b {
            1 => Role::Supervisor,
            2 => Role::Ingest,
            3 => Role::Transfer,
            4 => Role::Publish,
            5 => Role::Ctl,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer is not an ftp-pooler channel (bad magic {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("peer speaks protocol version {theirs}, this build speaks {ours}")]
    Version { ours: u16, theirs: u16 },
    #[error("peer announced unknown role {0}")]
    UnknownRole(u8),
    #[error("peer is {got:?}, expected one of {expected:?}")]
    UnexpectedRole { got: Role, expected: Vec<Role> },
    #[error("no handshake from peer within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("empty frame")]
    Empty,
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("cannot decode frame: {0}")]
    Decode(String),
    #[error("peer closed the channel in the middle of a frame")]
    Truncated,
}

/// The 12 handshake bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub version: u16,
    pub role: Role,
}

impl Handshake {
    pub fn new(role: Role) -> Handshake {
        Handshake {
            version: PROTOCOL_VERSION,
            role,
        }
    }

    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_be_bytes());
        b[10] = self.role as u8;
        b
    }

    /// Parses and checks a peer's handshake (magic, version, a known role).
    pub fn parse(b: &[u8; 12]) -> Result<Handshake, ChannelError> {
        let magic: [u8; 8] = b[..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(ChannelError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([b[8], b[9]]);
        if version != PROTOCOL_VERSION {
            return Err(ChannelError::Version {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        let role = Role::from_u8(b[10]).ok_or(ChannelError::UnknownRole(b[10]))?;
        Ok(Handshake { version, role })
    }
}

/// Encodes one message as a whole frame (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ChannelError> {
    let mut out = vec![0u8; 4];
    bincode::serde::encode_into_std_write(msg, &mut out, BINCODE)
        .map_err(|e| ChannelError::Encode(e.to_string()))?;
    let len = out.len() - 4;
    if len as u64 > MAX_FRAME as u64 {
        return Err(ChannelError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Checks a frame's length prefix before anything is allocated for it.
pub fn check_len(len: u32) -> Result<usize, ChannelError> {
    match len {
        0 => Err(ChannelError::Empty),
        n if n > MAX_FRAME => Err(ChannelError::TooLarge {
            len: n as u64,
            max: MAX_FRAME,
        }),
        n => Ok(n as usize),
    }
}

/// Decodes a frame's payload (without its length prefix); it must be consumed exactly.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ChannelError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, BINCODE_DECODE)
        .map_err(|e| ChannelError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(ChannelError::Decode(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

/// The reading half of a channel.
#[derive(Debug)]
pub struct FrameReader<R = OwnedReadHalf> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next message; `Ok(None)` when the peer closed the channel between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ChannelError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.inner.read(&mut len[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(ChannelError::Truncated)
                };
            }
            got += n;
        }
        let len = check_len(u32::from_be_bytes(len))?;
        // The buffer grows with the bytes that arrive, not with the declared length: a
        // peer that declares 64 MiB and sends 5 bytes costs 5 bytes (found by fuzzing).
        self.buf.clear();
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut self.buf)
            .await?;
        if self.buf.len() < len {
            return Err(ChannelError::Truncated);
        }
        let msg = decode_payload(&self.buf);
        if self.buf.capacity() > 1024 * 1024 {
            // Do not keep a large DLQ record's buffer around.
            self.buf = Vec::new();
        }
        msg.map(Some)
    }
}

/// The writing half of a channel.
#[derive(Debug)]
pub struct FrameWriter<W = OwnedWriteHalf> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter { inner }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ChannelError> {
        let frame = encode_frame(msg)?;
        self.inner.write_all(&frame).await?;
        Ok(())
    }

    /// Writes whole frames made by [`encode_frame`] in one write (several messages in one
    /// write: [`crate::Sender::send_all`]).
    pub(crate) async fn write_bytes(&mut self, frames: &[u8]) -> Result<(), ChannelError> {
        self.inner.write_all(frames).await?;
        Ok(())
    }
}

async fn exchange(
    stream: &mut UnixStream,
    me: Role,
    expected: &[Role],
) -> Result<Role, ChannelError> {
    stream.write_all(&Handshake::new(me).to_bytes()).await?;
    let mut theirs = [0u8; 12];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut theirs))
        .await
        .map_err(|_| ChannelError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;
    let peer = Handshake::parse(&theirs)?;
    if !expected.contains(&peer.role) {
        return Err(ChannelError::UnexpectedRole {
            got: peer.role,
            expected: expected.to_vec(),
        });
    }
    Ok(peer.role)
}

/// Connects to the socket at `path` as `me`, expecting the listener to be `peer`.
pub async fn connect(
    path: &Path,
    me: Role,
    peer: Role,
) -> Result<(FrameReader, FrameWriter), ChannelError> {
    let mut stream = UnixStream::connect(path).await?;
    exchange(&mut stream, me, &[peer]).await?;
    let (r, w) = stream.into_split();
    Ok((FrameReader::new(r), FrameWriter::new(w)))
}

/// Completes the handshake of an accepted connection; the peer must be one of `allowed`.
pub async fn accept(
    mut stream: UnixStream,
    me: Role,
    allowed: &[Role],
) -> Result<(Role, FrameReader, FrameWriter), ChannelError> {
    let role = exchange(&mut stream, me, allowed).await?;
    let (r, w) = stream.into_split();
    Ok((role, FrameReader::new(r), FrameWriter::new(w)))
}

/// Binds a listening socket at `path`, replacing a stale socket file left by a dead
/// process; the socket is readable and writable by the owner only.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{CtlRequest, Hello, ToPublish};

    /// Found by fuzz/fuzz_targets/frame_decoder.rs (kept as
    /// fuzz/seeds/frame_decoder/regress-string-length-overflow): a Hello whose name declares
    /// 0xff01ff0102746e72 bytes made bincode panic with "capacity overflow" before reading.
    #[test]
    fn a_huge_string_length_is_an_error_not_a_panic() {
        let payload = b"\xfd\x6e\x72\x74\x02\x01\xff\x01\xff";
        let err = decode_payload::<Hello>(payload).unwrap_err();
        assert!(matches!(err, ChannelError::Decode(_)), "{err:?}");
    }

    /// A length under isize::MAX that no allocator can satisfy aborted the process
    /// ("memory allocation of ... bytes failed"): CtlRequest::Restart with a 2^62-byte name.
    #[test]
    fn an_unsatisfiable_string_length_is_an_error_not_an_abort() {
        let mut payload = vec![0x02, 0xfd];
        payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
        payload.extend_from_slice(b"stage");
        let err = decode_payload::<CtlRequest>(&payload).unwrap_err();
        assert!(matches!(err, ChannelError::Decode(_)), "{err:?}");
        // The whole fuzzer input (a ToPublish::Result whose task_id declares
        // 8029185251240496779 bytes) behaves the same.
        let mut payload = vec![0x00, 0x07, 0x04, 0xfb, 0x58, 0x02, 0xfd];
        payload.extend_from_slice(&8_029_185_251_240_496_779u64.to_le_bytes());
        payload.extend_from_slice(b"remote-server-a");
        let err = decode_payload::<ToPublish>(&payload).unwrap_err();
        assert!(matches!(err, ChannelError::Decode(_)), "{err:?}");
    }

    /// The limit does not refuse a valid frame of the largest size.
    #[test]
    fn a_frame_of_max_size_still_decodes() {
        let hello = Hello {
            name: "x".repeat(MAX_FRAME as usize - 16),
            pid: 1,
            generation: u64::MAX,
        };
        let frame = encode_frame(&hello).unwrap();
        assert!(frame.len() - 4 <= MAX_FRAME as usize);
        assert!(frame.len() - 4 > MAX_FRAME as usize - 16);
        let back: Hello = decode_payload(&frame[4..]).unwrap();
        assert_eq!(back, hello);
    }
}
