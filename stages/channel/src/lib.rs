//! ftp-pooler-channel: the wire between the supervisor and the stage processes.
//!
//! Owns three things, and nothing else:
//! - [`frame`]: the byte format. A connection opens with a fixed 12-byte handshake
//!   (magic, protocol version, role) read *before* any bincode, so a stranger or an
//!   incompatible build is refused with a clear error; then each message is a frame:
//!   a big-endian u32 length, checked against [`frame::MAX_FRAME`] before anything is
//!   allocated, followed by a bincode 2.0.1 payload (standard config) that must be
//!   consumed exactly.
//! - [`messages`]: the typed messages of each direction (ingest -> transfer,
//!   transfer -> ingest, ingest/transfer -> publish, publish -> ingest/transfer,
//!   stage <-> supervisor, ctl <-> supervisor).
//! - [`paths`]: where each socket lives inside the private runtime directory.
//! - [`stage_id`]: the typed names ([`StageId`]) and states ([`StageState`]) of stages.
//! - [`link`]: reconnecting client links between stages (re-sending what the peer has
//!   not confirmed), and the stage end of the supervisor channel.
//!
//! Invariants: a frame's bytes are pinned by golden tests (`tests/golden.rs`); a change to
//! any message type bumps [`frame::PROTOCOL_VERSION`]; peers of different versions never
//! exchange a frame.

pub mod frame;
pub mod link;
pub mod messages;
pub mod paths;
pub mod stage_id;

pub use frame::{
    accept, bind, connect, ChannelError, FrameReader, FrameWriter, Handshake, Role, MAX_FRAME,
    PROTOCOL_VERSION,
};
pub use link::{
    accept_peer, accept_until, run_link, Accepted, LinkEvent, LinkSpec, Pacer, SupervisorLink,
    PIPELINE_PACE,
};
pub use messages::*;
pub use paths::RuntimePaths;
pub use stage_id::{StageId, StageState};
