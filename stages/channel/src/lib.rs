//! ftp-pooler-channel: the wire between the supervisor and the stage processes.
//!
//! Owns these things, and nothing else:
//! - [`frame`]: the byte format. A connection opens with a fixed 12-byte handshake
//!   (magic, protocol version, role) read *before* any bincode, so a stranger or an
//!   incompatible build is refused with a clear error; then each message is a frame:
//!   a big-endian u32 length, checked against [`frame::MAX_FRAME`] before anything is
//!   allocated, followed by a bincode 2.0.1 payload (standard config) that must be
//!   consumed exactly.
//! - [`messages`]: the typed messages of each direction (ingest -> transfer,
//!   transfer -> ingest, ingest/transfer -> publish, publish -> ingest/transfer,
//!   stage <-> supervisor, ctl <-> supervisor).
//! - [`conn`]: typed channel ends ([`Conn<Tx, Rx>`]): a connection sends only its own
//!   outgoing message type and receives only its own incoming one.
//! - [`paced`]: the one writer of every pipeline socket ([`PacedWriter`]): at most one
//!   write per [`PIPELINE_PACE`], carrying everything queued meanwhile, in order.
//! - [`offsets`]: [`OffsetSet`], offsets of a partition as ranges (what is done).
//! - [`paths`]: where each socket lives inside the private runtime directory.
//! - [`route`]: the [`Route`] a job carries to its worker (resolved by ingest).
//! - [`stage_id`]: the typed names ([`StageId`]) and states ([`StageState`]) of stages.
//! - [`link`]: reconnecting client links between stages (re-sending what the peer has
//!   not confirmed), and the stage end of the supervisor channel.
//!
//! Invariants: a frame's bytes are pinned by golden tests (`tests/golden.rs`); a change to
//! any message type bumps [`frame::PROTOCOL_VERSION`]; peers of different versions never
//! exchange a frame.

pub mod conn;
pub mod frame;
pub mod link;
pub mod messages;
pub mod offsets;
pub mod paced;
pub mod paths;
pub mod route;
pub mod stage_id;

pub use conn::{Conn, Receiver, Sender};

pub use frame::{
    accept, bind, connect, ChannelError, FrameReader, FrameWriter, Handshake, Role, MAX_FRAME,
    PROTOCOL_VERSION,
};
pub use link::{
    accept_peer, accept_until, run_link, Accepted, LinkEvent, LinkSpec, SupervisorLink,
};
pub use messages::*;
pub use offsets::OffsetSet;
pub use paced::{Outgoing, PacedWriter, Written, MAX_BATCH, PIPELINE_PACE};
pub use paths::RuntimePaths;
pub use route::{Direction, Route};
pub use stage_id::{StageId, StageState};
