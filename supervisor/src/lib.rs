//! ftp-pooler-supervisor: the parent process (`ftp-pooler run`).
//!
//! Owns the stage processes: it spawns `ftp-pooler stage publish`, one
//! `ftp-pooler stage transfer <id>` per ftp connection and `ftp-pooler stage ingest`
//! (in that order), waits for each to report ready, restarts crashed ones according to
//! the [`policy`], serves `ftp-pooler ctl` on its control socket, and drains on
//! SIGTERM/SIGINT. Invariants:
//! - the supervisor never touches Kafka or FTP; stages reconnect among themselves;
//! - a child that does not report ready within `ready_timeout_seconds` is killed and
//!   counts as a crash; too many crashes of one stage in the window stop everything and
//!   the process exits non-zero;
//! - drain order is the reverse of start: ingest (stops fetching, finishes in-flight work
//!   within `shutdown.drain_timeout_seconds`, commits), then the transfer workers, then
//!   publish (flushes); a stage that overstays its deadline is killed;
//! - children run in their own process group (a terminal's Ctrl-C reaches only the
//!   supervisor, which drains them in order) and stop by themselves when the supervisor's
//!   channel closes.

pub mod api;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod runtime_dir;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_pooler_channel::{
    accept, accept_peer, bind, Accepted, ChannelError, CtlRequest, CtlResponse, Role, RuntimePaths,
    StageReport, StageStatus, StageToSupervisor,
};
use ftp_pooler_config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};

use crate::policy::{Decision, RestartPolicy, Restarts};

/// Environment variable naming the runtime directory (children get it from the supervisor).
pub const ENV_RUNTIME_DIR: &str = "FTP_POOLER_RUNTIME_DIR";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("runtime directory {path}: {problem}")]
    RuntimeDir { path: PathBuf, problem: String },
    #[error("another ftp-pooler supervisor is running with runtime directory {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot start {stage}: {error}")]
    Spawn {
        stage: String,
        error: std::io::Error,
    },
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("cannot listen on {addr} ({key}): {error}")]
    Bind {
        key: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a supervisor run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Drained and stopped on request (exit 0).
    Stopped,
    /// A stage crash-looped (exit non-zero).
    GaveUp { stage: String },
}

/// What the supervisor needs besides the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `ftp-pooler` executable to re-execute for the stages.
    pub exe: PathBuf,
    pub runtime_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

struct Child {
    name: String,
    args: Vec<String>,
    pid: Option<u32>,
    /// Bumped at every spawn; events of older spawns are stale.
    spawn: u64,
    state: State,
    started_at: Instant,
    restarts: Restarts,
    operator_restarts: u32,
    /// An operator asked for a restart: the next exit restarts at once.
    restart_requested: bool,
    /// `ctl restart` callers waiting for the new process to be ready.
    waiters: Vec<oneshot::Sender<CtlResponse>>,
    /// Its connection was removed by a reload: stopped for good, not listed.
    retired: bool,
}

impl Child {
    fn new(name: String, args: Vec<String>) -> Child {
        Child {
            name,
            args,
            pid: None,
            spawn: 0,
            state: State::Stopped,
            started_at: Instant::now(),
            restarts: Restarts::default(),
            operator_restarts: 0,
            restart_requested: false,
            waiters: Vec::new(),
            retired: false,
        }
    }
}

pub(crate) enum Event {
    Exited {
        idx: usize,
        spawn: u64,
        status: std::io::Result<ExitStatus>,
    },
    Ready {
        name: String,
        pid: u32,
    },
    Report {
        name: String,
        pid: u32,
        report: Box<StageReport>,
    },
    RestartDue {
        idx: usize,
        spawn: u64,
    },
    ReadyDeadline {
        idx: usize,
        spawn: u64,
    },
    KillDeadline {
        idx: usize,
        spawn: u64,
    },
    Ctl(CtlRequest, oneshot::Sender<CtlResponse>),
    Signal(&'static str),
    /// Time to tell systemd the event loop is alive.
    Watchdog,
    /// SIGHUP (None) or `ctl reload`: re-read connections.ini.
    Reload(Option<oneshot::Sender<CtlResponse>>),
    /// Ingest no longer routes to this worker's connection: stop it for good.
    Retire {
        idx: usize,
    },
}

struct Supervisor {
    opts: Options,
    config: Config,
    paths: RuntimePaths,
    policy: RestartPolicy,
    children: Vec<Child>,
    events: mpsc::UnboundedSender<Event>,
    ready_timeout: Duration,
    drain: Duration,
    observed: Arc<Mutex<api::Observed>>,
    restarts_metric: prometheus::IntCounterVec,
    own_metrics: prometheus::Registry,
    notifier: notify::Notifier,
    /// READY=1 was sent (once, when every stage was first ready).
    announced: bool,
    /// The API's view of the configuration (replaced on reload).
    api_config: Arc<Mutex<Arc<Config>>>,
}

/// Runs the supervisor until it is stopped or gives up.
pub async fn run(config: Config, opts: Options) -> Result<Outcome, SupervisorError> {
    let paths = runtime_dir::prepare(&opts.runtime_dir)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let observed = Arc::new(Mutex::new(api::Observed {
        running: true,
        ..Default::default()
    }));
    let host = config.settings.api.host.clone();
    let bind_tcp = |key: &'static str, port: u64| {
        let addr = format!("{host}:{port}");
        let std_listener =
            std::net::TcpListener::bind(&addr).map_err(|error| SupervisorError::Bind {
                key,
                addr: addr.clone(),
                error,
            })?;
        std_listener.set_nonblocking(true)?;
        Ok::<_, SupervisorError>(tokio::net::TcpListener::from_std(std_listener)?)
    };
    let api_listener = bind_tcp("api.host/api.port", config.settings.api.port)?;
    let metrics_listener = bind_tcp("api.host/metrics.port", config.settings.metrics.port)?;
    let api_state = api::ApiState {
        observed: observed.clone(),
        events: tx.clone(),
        config: Arc::new(Mutex::new(Arc::new(config.clone()))),
    };
    let api_config = api_state.config.clone();
    tokio::spawn(serve_http(
        api_listener,
        api::api_router(api_state.clone()),
        "api",
    ));
    tokio::spawn(serve_http(
        metrics_listener,
        api::metrics_router(api_state),
        "metrics",
    ));
    let stage_listener = bind(&paths.supervisor())?;
    let ctl_listener = bind(&paths.ctl())?;
    tokio::spawn(accept_stages(stage_listener, tx.clone()));
    tokio::spawn(accept_ctl(ctl_listener, tx.clone()));
    tokio::spawn(forward_signals(tx.clone()));

    let mut names: Vec<(String, Vec<String>)> =
        vec![("publish".into(), vec!["stage".into(), "publish".into()])];
    for (id, _) in config.registry.ftp() {
        names.push((
            format!("transfer:{id}"),
            vec!["stage".into(), "transfer".into(), id.to_string()],
        ));
    }
    names.push(("ingest".into(), vec!["stage".into(), "ingest".into()]));
    let s = &config.settings;
    let restarts_metric = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "ftp_stage_restarts_total",
            "Stage processes restarted by the supervisor",
        ),
        &["stage"],
    )
    .expect("a valid metric");
    let pool_size = prometheus::IntGauge::new("ftp_session_pool_size", "Maximum pool size")
        .expect("a valid metric");
    pool_size.set(s.pool.max_sessions_per_pod as i64);
    let own_metrics = prometheus::Registry::new();
    own_metrics
        .register(Box::new(restarts_metric.clone()))
        .expect("unique");
    own_metrics.register(Box::new(pool_size)).expect("unique");
    for (name, _) in &names {
        restarts_metric.with_label_values(&[name.as_str()]);
    }
    let notifier = notify::Notifier::from_env();
    if let Some(every) = notifier.watchdog_every() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.send(Event::Watchdog).is_err() {
                    return;
                }
            }
        });
    }
    let mut sup = Supervisor {
        observed,
        restarts_metric,
        own_metrics,
        notifier,
        announced: false,
        api_config,
        policy: RestartPolicy::from_settings(&s.supervisor),
        ready_timeout: Duration::from_secs(s.supervisor.ready_timeout_seconds),
        drain: Duration::from_secs(s.shutdown.drain_timeout_seconds),
        children: names
            .into_iter()
            .map(|(name, args)| Child::new(name, args))
            .collect(),
        events: tx,
        paths,
        config,
        opts,
    };
    tracing::info!(
        runtime_dir = %sup.paths.root().display(),
        stages = sup.children.len(),
        "supervisor starting"
    );
    for idx in 0..sup.children.len() {
        if let Err(e) = sup.spawn(idx) {
            sup.stop_all(&mut rx, Duration::from_secs(5)).await;
            return Err(e);
        }
    }
    let outcome = loop {
        sup.publish_state();
        let Some(ev) = rx.recv().await else {
            break Outcome::Stopped;
        };
        match ev {
            Event::Signal(sig) => {
                tracing::info!(signal = sig, "draining");
                sup.notifier.send("STOPPING=1\nSTATUS=draining");
                sup.observed.lock().expect("observed").running = false;
                sup.drain(&mut rx).await;
                break Outcome::Stopped;
            }
            Event::Exited { idx, spawn, status } => {
                if let Some(stage) = sup.on_exit(idx, spawn, status) {
                    tracing::error!(child = %stage, "stage is crash-looping: stopping everything");
                    sup.notifier.send(&format!(
                        "STOPPING=1\nSTATUS=stage {stage} kept crashing; giving up"
                    ));
                    sup.stop_all(&mut rx, Duration::from_secs(10)).await;
                    break Outcome::GaveUp { stage };
                }
            }
            Event::Ready { name, pid } => sup.on_ready(&name, pid),
            Event::Report { name, pid, report } => sup.on_report(&name, pid, *report),
            Event::RestartDue { idx, spawn } => {
                let c = &sup.children[idx];
                if c.spawn == spawn && c.state == State::Backoff {
                    if let Err(e) = sup.spawn(idx) {
                        tracing::error!(error = %e, "restart failed");
                        sup.schedule_restart_after_failure(idx);
                    }
                }
            }
            Event::ReadyDeadline { idx, spawn } => {
                let c = &sup.children[idx];
                if c.spawn == spawn && c.state == State::Starting {
                    tracing::error!(child = %c.name, timeout_s = sup.ready_timeout.as_secs(), "not ready in time: killing it");
                    sup.signal(idx, Signal::SIGKILL);
                }
            }
            Event::KillDeadline { idx, spawn } => {
                let c = &sup.children[idx];
                if c.spawn == spawn && c.state == State::Stopping {
                    tracing::warn!(child = %c.name, "did not stop in time: killing it");
                    sup.signal(idx, Signal::SIGKILL);
                }
            }
            Event::Ctl(req, reply) => sup.on_ctl(req, reply),
            Event::Watchdog => sup.notifier.send("WATCHDOG=1"),
            Event::Reload(reply) => sup.reload(reply),
            Event::Retire { idx } => sup.retire(idx),
        }
    };
    let _ = std::fs::remove_file(sup.paths.ctl());
    let _ = std::fs::remove_file(sup.paths.supervisor());
    Ok(outcome)
}

impl Supervisor {
    /// Makes the current state visible to the API.
    fn publish_state(&self) {
        let stages = self.status();
        let own = prometheus::TextEncoder::new()
            .encode_to_string(&self.own_metrics.gather())
            .unwrap_or_default();
        let mut o = self.observed.lock().expect("observed");
        o.stages = stages;
        o.metrics.update("supervisor", &own);
    }

    fn on_report(&mut self, name: &str, pid: u32, report: StageReport) {
        if !self
            .children
            .iter()
            .any(|c| c.name == name && c.pid == Some(pid))
        {
            return;
        }
        let mut o = self.observed.lock().expect("observed");
        o.metrics.update(name, &report.metrics);
        o.details
            .insert(name.to_string(), (Instant::now(), report.detail));
    }

    /// A stage process ended: its counters move into the base, its detail goes.
    fn forget_process(&self, idx: usize) {
        let name = &self.children[idx].name;
        let mut o = self.observed.lock().expect("observed");
        o.metrics.retire(name);
        o.details.remove(name);
    }

    /// Re-reads connections.ini: workers for new connections start, those of removed
    /// ones stop once ingest no longer routes to them, changed ones restart; the others
    /// keep running. An invalid file changes nothing.
    fn reload(&mut self, reply: Option<oneshot::Sender<CtlResponse>>) {
        let answer = |r: CtlResponse| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        let registry = match ftp_pooler_config::Registry::load(&self.config.connections_file) {
            Ok(r) => r,
            Err(errors) => {
                let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                for l in &lines {
                    tracing::error!(error = %l, "reload rejected; the running connections stay");
                }
                answer(CtlResponse::Error(format!(
                    "reload rejected, the running connections stay:\n{}",
                    lines.join("\n")
                )));
                return;
            }
        };
        let settings = &self.config.settings;
        let old_budget = ftp_pooler_config::session_budget(settings, &self.config.registry);
        let new_budget = ftp_pooler_config::session_budget(settings, &registry);
        let locals = |r: &ftp_pooler_config::Registry| -> Vec<(String, String)> {
            r.iter()
                .filter_map(|c| {
                    c.as_local()
                        .map(|l| (c.id.clone(), l.base_path.display().to_string()))
                })
                .collect()
        };
        let locals_changed = locals(&self.config.registry) != locals(&registry);
        let old_ftp: std::collections::BTreeMap<&str, &ftp_pooler_config::FtpConnection> =
            self.config.registry.ftp().collect();
        let new_ftp: std::collections::BTreeMap<&str, &ftp_pooler_config::FtpConnection> =
            registry.ftp().collect();
        let added: Vec<String> = new_ftp
            .keys()
            .filter(|k| !old_ftp.contains_key(*k))
            .map(|k| k.to_string())
            .collect();
        let removed: Vec<String> = old_ftp
            .keys()
            .filter(|k| !new_ftp.contains_key(*k))
            .map(|k| k.to_string())
            .collect();
        let changed: Vec<String> = new_ftp
            .iter()
            .filter(|(k, c)| {
                old_ftp.get(*k).is_some_and(|o| o != *c)
                    || (old_ftp.contains_key(*k)
                        && (old_budget.get(**k) != new_budget.get(**k) || locals_changed))
            })
            .map(|(k, _)| k.to_string())
            .collect();
        let mut config = self.config.clone();
        config.registry = registry;
        self.config = config;
        *self.api_config.lock().expect("config") = Arc::new(self.config.clone());
        tracing::info!(?added, ?removed, restarted = ?changed, "connections reloaded");

        // New workers first (ingest's links find them), then ingest re-reads the file.
        for id in &added {
            // Appended (indices of running children never move); status lists by role.
            let idx = self.children.len();
            self.children.push(Child::new(
                format!("transfer:{id}"),
                vec!["stage".into(), "transfer".into(), id.clone()],
            ));
            self.restarts_metric
                .with_label_values(&[format!("transfer:{id}").as_str()]);
            if let Err(e) = self.spawn(idx) {
                tracing::error!(error = %e, "starting a new worker failed");
                self.schedule_restart_after_failure(idx);
            }
        }
        for id in &changed {
            if let Some(idx) = self
                .children
                .iter()
                .position(|c| c.name == format!("transfer:{id}") && !c.retired)
            {
                self.restart_child(idx);
            }
        }
        if let Some(i) = self.children.iter().position(|c| c.name == "ingest") {
            self.signal(i, Signal::SIGHUP);
        }
        for id in &removed {
            let Some(idx) = self
                .children
                .iter()
                .position(|c| c.name == format!("transfer:{id}") && !c.retired)
            else {
                continue;
            };
            // Stop it once ingest has stopped routing to it (or after 10 s).
            let observed = self.observed.clone();
            let tx = self.events.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(10) {
                    let routed = {
                        let o = observed.lock().expect("observed");
                        match o.details.get("ingest") {
                            Some((_, ftp_pooler_channel::StageDetail::Ingest(i))) => {
                                i.connections.contains(&id)
                            }
                            _ => false,
                        }
                    };
                    if !routed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = tx.send(Event::Retire { idx });
            });
        }
        answer(CtlResponse::Reloaded {
            added,
            removed,
            restarted: changed,
        });
    }

    fn retire(&mut self, idx: usize) {
        let grace = self.drain + Duration::from_secs(5);
        let c = &mut self.children[idx];
        c.retired = true;
        c.restart_requested = false;
        tracing::info!(child = %c.name, "connection removed: stopping its worker");
        if c.pid.is_some() {
            c.state = State::Stopping;
            let spawn = c.spawn;
            self.signal(idx, Signal::SIGTERM);
            self.after(grace, Event::KillDeadline { idx, spawn });
        } else {
            c.state = State::Stopped;
        }
    }

    /// Stops a running child and starts it again at once (not a crash).
    fn restart_child(&mut self, idx: usize) {
        match self.children[idx].state {
            State::Backoff | State::Stopped => {
                self.children[idx].operator_restarts += 1;
                self.restarts_metric
                    .with_label_values(&[self.children[idx].name.as_str()])
                    .inc();
                if let Err(e) = self.spawn(idx) {
                    tracing::error!(error = %e, "restart failed");
                    self.schedule_restart_after_failure(idx);
                }
            }
            State::Starting | State::Running | State::Stopping => {
                let grace = self.drain + Duration::from_secs(5);
                let c = &mut self.children[idx];
                c.restart_requested = true;
                c.state = State::Stopping;
                let spawn = c.spawn;
                self.signal(idx, Signal::SIGTERM);
                self.after(grace, Event::KillDeadline { idx, spawn });
            }
        }
    }

    fn spawn(&mut self, idx: usize) -> Result<(), SupervisorError> {
        let c = &mut self.children[idx];
        let mut cmd = tokio::process::Command::new(&self.opts.exe);
        cmd.args(&c.args)
            .env(ENV_RUNTIME_DIR, self.paths.root())
            .env(
                ftp_pooler_config::ENV_CONNECTIONS,
                &self.config.connections_file,
            )
            .stdin(std::process::Stdio::null())
            .process_group(0);
        match &self.config.config_file {
            Some(f) => cmd.env(ftp_pooler_config::ENV_CONFIG, f),
            None => cmd.env_remove(ftp_pooler_config::ENV_CONFIG),
        };
        // `ps` shows `ftp-pooler stage transfer <id>`.
        cmd.as_std_mut().arg0("ftp-pooler");
        let mut child = cmd.spawn().map_err(|error| SupervisorError::Spawn {
            stage: c.name.clone(),
            error,
        })?;
        c.spawn += 1;
        c.pid = child.id();
        c.state = State::Starting;
        c.started_at = Instant::now();
        tracing::info!(child = %c.name, child_pid = c.pid, "stage started");
        let (spawn, tx) = (c.spawn, self.events.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Event::Exited { idx, spawn, status });
        });
        self.after(self.ready_timeout, Event::ReadyDeadline { idx, spawn });
        Ok(())
    }

    fn after(&self, pause: Duration, ev: Event) {
        let tx = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let _ = tx.send(ev);
        });
    }

    fn signal(&self, idx: usize, sig: Signal) {
        if let Some(pid) = self.children[idx].pid {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Handles a child's exit; returns the stage's name when it must give up.
    fn on_exit(
        &mut self,
        idx: usize,
        spawn: u64,
        status: std::io::Result<ExitStatus>,
    ) -> Option<String> {
        let policy = self.policy;
        if self.children[idx].spawn != spawn {
            return None;
        }
        self.forget_process(idx);
        let c = &mut self.children[idx];
        if c.retired {
            c.pid = None;
            c.state = State::Stopped;
            tracing::info!(child = %c.name, "worker of a removed connection stopped");
            return None;
        }
        let uptime = c.started_at.elapsed();
        let how = match &status {
            Ok(s) => describe(s),
            Err(e) => e.to_string(),
        };
        c.pid = None;
        if c.restart_requested {
            c.restart_requested = false;
            c.operator_restarts += 1;
            self.restarts_metric
                .with_label_values(&[c.name.as_str()])
                .inc();
            tracing::info!(child = %c.name, exit = %how, "stopped for a restart; starting it again");
            if let Err(e) = self.spawn(idx) {
                tracing::error!(error = %e, "restart failed");
                self.schedule_restart_after_failure(idx);
            }
            return None;
        }
        match c
            .restarts
            .on_crash(&policy, Instant::now(), uptime, fastrand::f64())
        {
            Decision::Restart { after } => {
                self.restarts_metric
                    .with_label_values(&[c.name.as_str()])
                    .inc();
                tracing::warn!(child = %c.name, exit = %how, uptime_s = uptime.as_secs(), restart_in_ms = after.as_millis() as u64, "stage exited; restarting");
                c.state = State::Backoff;
                self.after(after, Event::RestartDue { idx, spawn });
                None
            }
            Decision::GiveUp { restarts, window } => {
                tracing::error!(child = %c.name, exit = %how, restarts, window_s = window.as_secs(), "too many restarts");
                c.state = State::Stopped;
                Some(c.name.clone())
            }
        }
    }

    fn schedule_restart_after_failure(&mut self, idx: usize) {
        let c = &mut self.children[idx];
        c.state = State::Backoff;
        let spawn = c.spawn;
        self.after(self.policy.max, Event::RestartDue { idx, spawn });
    }

    fn on_ready(&mut self, name: &str, pid: u32) {
        let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.name == name && c.pid == Some(pid))
        else {
            tracing::debug!(
                child = name,
                child_pid = pid,
                "ready from an unknown or old process"
            );
            return;
        };
        if c.state == State::Starting {
            c.state = State::Running;
            tracing::info!(child = %c.name, child_pid = pid, "stage ready");
            if !self.announced && self.children.iter().all(|c| c.state == State::Running) {
                self.announced = true;
                self.notifier.send("READY=1\nSTATUS=all stages ready");
                tracing::info!("all stages ready");
            }
            let c = self
                .children
                .iter_mut()
                .find(|c| c.name == name && c.pid == Some(pid))
                .expect("found above");
            for w in c.waiters.drain(..) {
                let _ = w.send(CtlResponse::Restarted {
                    stage: c.name.clone(),
                    pid,
                });
            }
        }
    }

    /// The stages in start order (publish, transfer workers, ingest); retired ones hidden.
    fn status(&self) -> Vec<StageStatus> {
        let rank = |name: &str| match name {
            "publish" => 0,
            "ingest" => 2,
            _ => 1,
        };
        let mut live: Vec<&Child> = self.children.iter().filter(|c| !c.retired).collect();
        live.sort_by_key(|c| rank(&c.name));
        live.into_iter()
            .map(|c| StageStatus {
                name: c.name.clone(),
                pid: c.pid,
                state: c.state.as_str().into(),
                restarts: c.restarts.total() + c.operator_restarts,
                uptime_seconds: if c.pid.is_some() {
                    c.started_at.elapsed().as_secs()
                } else {
                    0
                },
            })
            .collect()
    }

    fn on_ctl(&mut self, req: CtlRequest, reply: oneshot::Sender<CtlResponse>) {
        match req {
            CtlRequest::Status => {
                let _ = reply.send(CtlResponse::Status {
                    pid: std::process::id(),
                    stages: self.status(),
                });
            }
            CtlRequest::Reload => self.reload(Some(reply)),
            CtlRequest::Restart { stage } => {
                let Some(idx) = self
                    .children
                    .iter()
                    .position(|c| c.name == stage && !c.retired)
                else {
                    let known: Vec<&str> = self.children.iter().map(|c| c.name.as_str()).collect();
                    let _ = reply.send(CtlResponse::Error(format!(
                        "no stage named {stage:?}; stages: {}",
                        known.join(", ")
                    )));
                    return;
                };
                tracing::info!(child = %stage, "restart requested by an operator");
                self.children[idx].waiters.push(reply);
                self.restart_child(idx);
            }
        }
    }

    /// Stops the stages in reverse start order: ingest, transfer workers, publish.
    async fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) {
        let by = |f: &dyn Fn(&str) -> bool| -> Vec<usize> {
            (0..self.children.len())
                .filter(|&i| f(&self.children[i].name))
                .collect()
        };
        let ingest = by(&|n| n == "ingest");
        let transfers = by(&|n| n.starts_with("transfer:"));
        let publish = by(&|n| n == "publish");
        let grace = self.drain + Duration::from_secs(10);
        for group in [ingest, transfers, publish] {
            if !self.stop_group(&group, rx, grace).await {
                // A second signal: hurry.
                self.stop_all(rx, Duration::from_secs(2)).await;
                return;
            }
        }
        tracing::info!("all stages stopped");
    }

    /// Kills everything (SIGTERM, then SIGKILL after `grace`).
    async fn stop_all(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>, grace: Duration) {
        let all: Vec<usize> = (0..self.children.len()).rev().collect();
        self.stop_group(&all, rx, grace).await;
        let still: Vec<usize> = all
            .into_iter()
            .filter(|&i| self.children[i].pid.is_some())
            .collect();
        for &i in &still {
            self.signal(i, Signal::SIGKILL);
        }
        self.wait_exits(&still, rx, Duration::from_secs(5)).await;
    }

    /// SIGTERM to a group, waits for their exits (SIGKILL after `grace`). False when
    /// another stop signal arrived meanwhile.
    async fn stop_group(
        &mut self,
        group: &[usize],
        rx: &mut mpsc::UnboundedReceiver<Event>,
        grace: Duration,
    ) -> bool {
        for &i in group {
            let c = &mut self.children[i];
            c.restart_requested = false;
            if c.pid.is_some() {
                c.state = State::Stopping;
                tracing::info!(child = %c.name, "stopping");
                self.signal(i, Signal::SIGTERM);
            } else {
                c.state = State::Stopped;
            }
            for w in self.children[i].waiters.drain(..) {
                let _ = w.send(CtlResponse::Error("the service is stopping".into()));
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if group.iter().all(|&i| self.children[i].pid.is_none()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    for &i in group {
                        if self.children[i].pid.is_some() {
                            tracing::warn!(child = %self.children[i].name, "did not stop within the deadline: killing it");
                            self.signal(i, Signal::SIGKILL);
                        }
                    }
                    let pending: Vec<usize> = group.to_vec();
                    self.wait_exits(&pending, rx, Duration::from_secs(5)).await;
                    return true;
                }
                Ok(None) => return true,
                Ok(Some(ev)) => {
                    if !self.while_stopping(ev) {
                        return false;
                    }
                }
            }
        }
    }

    async fn wait_exits(
        &mut self,
        group: &[usize],
        rx: &mut mpsc::UnboundedReceiver<Event>,
        limit: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while group.iter().any(|&i| self.children[i].pid.is_some()) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) => {
                    self.while_stopping(ev);
                }
                _ => return,
            }
        }
    }

    /// Events while stopping: exits are recorded, nothing restarts. False on a second
    /// stop signal.
    fn while_stopping(&mut self, ev: Event) -> bool {
        match ev {
            Event::Exited { idx, spawn, status } => {
                if self.children[idx].spawn == spawn {
                    self.forget_process(idx);
                }
                let c = &mut self.children[idx];
                if c.spawn == spawn {
                    c.pid = None;
                    c.state = State::Stopped;
                    let how = match &status {
                        Ok(s) => describe(s),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(child = %c.name, exit = %how, "stage stopped");
                }
                true
            }
            Event::Ctl(CtlRequest::Status, reply) => {
                let _ = reply.send(CtlResponse::Status {
                    pid: std::process::id(),
                    stages: self.status(),
                });
                true
            }
            Event::Ctl(_, reply) => {
                let _ = reply.send(CtlResponse::Error("the service is stopping".into()));
                true
            }
            Event::Watchdog => {
                self.notifier.send("WATCHDOG=1");
                true
            }
            Event::Signal(sig) => {
                tracing::warn!(signal = sig, "second stop signal: killing the stages");
                false
            }
            _ => true,
        }
    }
}

fn describe(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "unknown".into(),
    }
}

async fn serve_http(listener: tokio::net::TcpListener, router: axum::Router, what: &'static str) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(server = what, error = %e, "HTTP server stopped");
    }
}

async fn forward_signals(tx: mpsc::UnboundedSender<Event>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        let ev = tokio::select! {
            _ = term.recv() => Event::Signal("SIGTERM"),
            _ = int.recv() => Event::Signal("SIGINT"),
            _ = hup.recv() => Event::Reload(None),
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// Stage connections: hello, then `Ready`. The connection stays open for the stage's
/// life: when the supervisor dies, the stage sees its end close and stops.
async fn accept_stages(listener: tokio::net::UnixListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            // The writer stays open for the stage's life (its end closing tells the stage
            // the supervisor is gone).
            let Some(Accepted {
                hello,
                mut reader,
                writer: _writer,
                ..
            }) = accept_peer(
                stream,
                Role::Supervisor,
                &[Role::Ingest, Role::Transfer, Role::Publish],
            )
            .await
            else {
                return;
            };
            while let Ok(Some(msg)) = reader.recv::<StageToSupervisor>().await {
                let ev = match msg {
                    StageToSupervisor::Ready => Event::Ready {
                        name: hello.name.clone(),
                        pid: hello.pid,
                    },
                    StageToSupervisor::Report(report) => Event::Report {
                        name: hello.name.clone(),
                        pid: hello.pid,
                        report,
                    },
                };
                let _ = tx.send(ev);
            }
        });
    }
}

async fn accept_ctl(listener: tokio::net::UnixListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok((_, mut reader, mut writer)) =
                accept(stream, Role::Supervisor, &[Role::Ctl]).await
            else {
                return;
            };
            while let Ok(Some(req)) = reader.recv::<CtlRequest>().await {
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx.send(Event::Ctl(req, reply_tx)).is_err() {
                    return;
                }
                let reply = reply_rx
                    .await
                    .unwrap_or_else(|_| CtlResponse::Error("the supervisor is gone".into()));
                if writer.send(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `ftp-pooler ctl`: one request to the supervisor behind `paths`.
pub async fn ctl(
    paths: &RuntimePaths,
    req: &CtlRequest,
    limit: Duration,
) -> Result<CtlResponse, SupervisorError> {
    let exchange = async {
        let (mut reader, mut writer) =
            ftp_pooler_channel::connect(&paths.ctl(), Role::Ctl, Role::Supervisor).await?;
        writer.send(req).await?;
        match reader.recv::<CtlResponse>().await? {
            Some(r) => Ok(r),
            None => Ok(CtlResponse::Error(
                "the supervisor closed the connection".into(),
            )),
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Ok(CtlResponse::Error(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}
