//! Fuzzes the frame layer of the stage channels (ftp_pooler_channel::frame) with
//! arbitrary bytes from a peer.
//!
//! Checks, for every input:
//! - `Handshake::parse` of the first 12 bytes never panics, and a handshake it accepts
//!   is this build's version with a known role (it writes back the same 11 bytes);
//! - `check_len` of the first 4 bytes accepts exactly 1..=MAX_FRAME;
//! - `decode_payload::<T>` of the whole input, for every message type of
//!   stages/channel/src/messages.rs, never panics nor aborts (a length inside the
//!   payload must not make it allocate without bound), and a message it accepts
//!   re-encodes with `encode_frame` into a frame that decodes again and re-encodes to
//!   the same bytes;
//! - a decoded `ToPublish` cut by `shrink` / `fit_in_frame` is still a valid frame;
//! - `FrameReader::recv::<T>` over the input as a byte stream (the first byte picks T)
//!   reads frames until the end or the first error without panicking, and every
//!   message it returns passes the same round trip.
//!
//! `FrameReader` grows its buffer with the bytes that arrive (a stream that declares
//! 64 MiB and carries 5 bytes costs 5 bytes); scripts/fuzz runs with -rss_limit_mb, so
//! anything beyond bounded buffers is a crash.
#![no_main]

use std::fmt::Debug;
use std::sync::OnceLock;

use ftp_pooler_channel::frame::{check_len, decode_payload, encode_frame, MAX_FRAME};
use ftp_pooler_channel::{
    CtlRequest, CtlResponse, FrameReader, FromPublish, Handshake, Hello, IngestToTransfer,
    StageToSupervisor, SupervisorToStage, ToPublish, TransferToIngest, PROTOCOL_VERSION,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One current-thread runtime for the whole run (building one per input is slow).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime")
    })
}

/// A decoded message must re-encode into a valid frame that decodes again; the second
/// encoding equals the first (the first may normalise, e.g. a timestamp's precision).
fn round_trip<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + Debug,
{
    let frame =
        encode_frame(msg).unwrap_or_else(|e| panic!("decoded {msg:?} does not encode: {e}"));
    let len = check_len(u32::from_be_bytes(frame[..4].try_into().unwrap()))
        .unwrap_or_else(|e| panic!("encode_frame wrote a bad length: {e}"));
    assert_eq!(len, frame.len() - 4);
    let again: T = decode_payload(&frame[4..])
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    let frame2 = encode_frame(&again).expect("encodes");
    assert_eq!(frame, frame2, "{msg:?} re-encodes differently as {again:?}");
}

fn payload<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + Debug,
{
    let msg = decode_payload::<T>(data).ok()?;
    round_trip(&msg);
    Some(msg)
}

/// What publish does with a record Kafka refuses as too large, and ingest with one that
/// cannot pass a frame: cut it. A cut record is still a valid frame, and is cut once.
fn shrink(mut msg: ToPublish) {
    let mut fitted = msg.clone();
    if msg.shrink() {
        round_trip(&msg);
        assert!(!msg.shrink(), "cut twice: {msg:?}");
    }
    fitted.fit_in_frame();
    round_trip(&fitted);
}

fn stream<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + Debug,
{
    runtime().block_on(async {
        let mut reader = FrameReader::new(data);
        // Each frame consumes at least 5 bytes, so this ends.
        while let Ok(Some(msg)) = reader.recv::<T>().await {
            round_trip(&msg);
        }
    });
}

fuzz_target!(|data: &[u8]| {
    if let Some(hs) = data.get(..12) {
        let hs: &[u8; 12] = hs.try_into().unwrap();
        if let Ok(parsed) = Handshake::parse(hs) {
            assert_eq!(parsed.version, PROTOCOL_VERSION);
            assert_eq!(parsed.to_bytes()[..11], hs[..11]);
        }
    }
    if let Some(len) = data.get(..4) {
        let len = u32::from_be_bytes(len.try_into().unwrap());
        match check_len(len) {
            Ok(n) => assert!((1..=MAX_FRAME).contains(&len) && n == len as usize),
            Err(_) => assert!(len == 0 || len > MAX_FRAME),
        }
    }

    let _ = payload::<Hello>(data);
    let _ = payload::<IngestToTransfer>(data);
    let _ = payload::<TransferToIngest>(data);
    if let Some(msg) = payload::<ToPublish>(data) {
        shrink(msg);
    }
    let _ = payload::<FromPublish>(data);
    let _ = payload::<StageToSupervisor>(data);
    let _ = payload::<SupervisorToStage>(data);
    let _ = payload::<CtlRequest>(data);
    let _ = payload::<CtlResponse>(data);

    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => stream::<Hello>(rest),
        1 => stream::<IngestToTransfer>(rest),
        2 => stream::<TransferToIngest>(rest),
        3 => stream::<ToPublish>(rest),
        4 => stream::<FromPublish>(rest),
        5 => stream::<StageToSupervisor>(rest),
        6 => stream::<SupervisorToStage>(rest),
        7 => stream::<CtlRequest>(rest),
        _ => stream::<CtlResponse>(rest),
    }
});
