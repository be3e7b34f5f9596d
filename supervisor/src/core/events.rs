//! The vocabulary of the core: what happens ([`Event`]), what to do ([`Action`]), the
//! timers it arms ([`Timer`]) and its lifecycle states ([`Lifecycle`], [`Phase`]).
//!
//! Invariant: every event and timer that concerns one process names its stage and its
//! spawn number (or pid), so the core can tell a stale one from a current one.

use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_channel::{ConfigInForce, CtlResponse, StageId};
use ftp_pooler_config::Config;

use crate::reload::ReloadPlan;
use crate::Outcome;

/// Identifies a caller waiting for an answer (the shell maps it to its reply channel).
pub type ReplyId = u64;

/// The supervisor's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Not every stage has been ready yet.
    Starting,
    /// Every stage was ready once (READY=1 sent).
    Running,
    /// The files are being read for a reload; `was_running` is the state to go back to.
    Reloading { was_running: bool },
    /// Stopping the stages; `phase` is the group being stopped.
    Draining { phase: Phase, outcome: Outcome },
    /// Every stage stopped; the exit action was given.
    Stopped(Outcome),
}

/// The groups stopped in turn when draining (or all at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ingest,
    Transfers,
    Publish,
    /// Every stage at once (giving up, or a second stop signal).
    All,
}

impl Phase {
    pub fn holds(self, id: &StageId) -> bool {
        match self {
            Phase::Ingest => *id == StageId::Ingest,
            Phase::Transfers => matches!(id, StageId::Transfer(_)),
            Phase::Publish => *id == StageId::Publish,
            Phase::All => true,
        }
    }

    pub fn next(self) -> Option<Phase> {
        match self {
            Phase::Ingest => Some(Phase::Transfers),
            Phase::Transfers => Some(Phase::Publish),
            Phase::Publish | Phase::All => None,
        }
    }
}

/// A stop signal or SIGHUP, as received by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Int,
    Hup,
}

/// A request of `ctl` or the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    /// Restart the stage of this name (as typed by the operator).
    Restart(String),
    Reload,
}

/// Timers the core arms; each names what it concerns, so a late one is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    RestartDue {
        id: StageId,
        spawn: u64,
    },
    ReadyDeadline {
        id: StageId,
        spawn: u64,
    },
    KillDeadline {
        id: StageId,
        spawn: u64,
    },
    /// The stage went down (`down` counts its downs) and may not stay down past it.
    DownDeadline {
        id: StageId,
        down: u64,
    },
    /// A removed connection's worker stops now, even if ingest still routes to it.
    RetireDeadline {
        id: StageId,
        spawn: u64,
    },
    /// The group being stopped (`stop` counts the stop phases) gets SIGKILL.
    StopDeadline {
        stop: u64,
    },
    /// Stop waiting for killed processes and exit.
    ExitDeadline {
        stop: u64,
    },
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The process of `spawn` runs as `pid`.
    Spawned {
        id: StageId,
        spawn: u64,
        pid: u32,
    },
    /// The process of `spawn` could not be started.
    SpawnFailed {
        id: StageId,
        spawn: u64,
        error: String,
    },
    /// The process of `spawn` ended (`how`: exit code or signal).
    Exited {
        id: StageId,
        spawn: u64,
        how: String,
    },
    /// The stage's process `pid` reported ready.
    Ready {
        id: StageId,
        pid: u32,
    },
    /// The stage's process `pid` reported (ingest: the connections it routes to).
    Reported {
        id: StageId,
        pid: u32,
        routes: Option<Vec<String>>,
    },
    Timer(Timer),
    Command {
        command: Command,
        reply: Option<ReplyId>,
    },
    Signal(Sig),
    /// The files were read for a reload: the validated configuration, or every error.
    ReloadRead(Result<Box<Config>, Vec<String>>),
}

/// A signal for a stage process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageSignal {
    Term,
    Kill,
}

/// Something for the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the stage's process; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        id: StageId,
        spawn: u64,
    },
    Signal {
        id: StageId,
        pid: u32,
        signal: StageSignal,
    },
    Arm {
        after: Duration,
        timer: Timer,
    },
    Reply {
        to: ReplyId,
        response: CtlResponse,
    },
    /// A line for systemd's notify socket.
    Notify(String),
    /// Read and validate both files; answer with `ReloadRead`.
    ReadConfig,
    /// A new configuration is in force: hand it to every stage and the API.
    PublishConfig(Arc<ConfigInForce>),
    /// A reload was rejected: log, count, show in the API.
    ReloadRejected {
        errors: Vec<String>,
    },
    /// A reload was applied.
    ReloadApplied {
        generation: u64,
        plan: ReloadPlan,
    },
    /// The supervisor restarted the stage (a crash, a request or a reload).
    CountRestart(StageId),
    /// Store the report just received (it came from the stage's current process).
    RecordReport(StageId),
    /// The stage's process is gone: its live metrics and detail go.
    ForgetProcess(StageId),
    /// The supervisor gave up on a stage: `/live` turns 503.
    GaveUp(StageId),
    /// Draining began: `/ready` turns 503.
    Draining,
    /// Everything stopped: exit.
    Exit(Outcome),
}

/// Timings that are not the restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub ready_timeout: Duration,
    /// `shutdown.drain_timeout_seconds`.
    pub drain: Duration,
}

impl Timings {
    pub fn from_config(c: &Config) -> Timings {
        Timings {
            ready_timeout: Duration::from_secs(c.settings.supervisor.ready_timeout_seconds),
            drain: Duration::from_secs(c.settings.shutdown.drain_timeout_seconds),
        }
    }

    /// How long a stage asked to stop may take (its own drain, and some).
    pub fn stop_grace(&self) -> Duration {
        self.drain + Duration::from_secs(5)
    }
}

/// How long ingest may keep routing to a removed connection before its worker stops.
pub const RETIRE_WAIT: Duration = Duration::from_secs(10);
/// Grace of the stages when giving up, and after a second stop signal.
pub const GIVE_UP_GRACE: Duration = Duration::from_secs(10);
pub const HURRY_GRACE: Duration = Duration::from_secs(2);
/// How long killed processes are waited for before exiting anyway.
pub const EXIT_WAIT: Duration = Duration::from_secs(5);
