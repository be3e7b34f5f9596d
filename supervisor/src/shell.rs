//! The thin I/O shell around [`crate::core`]: the one event loop of the supervisor.
//!
//! It binds the listeners, starts the socket and signal tasks ([`crate::channels`]),
//! then loops: take one [`Inbound`] event, hand it to [`Core::handle`] with the current
//! time, run the actions it returns (spawn and signal processes, arm timers, answer
//! callers, hand a new configuration to the stages and the API, notify systemd, exit),
//! and publish the core's view to the API. Invariants:
//! - there is one loop, in every lifecycle state (draining included): no event is ever
//!   dropped unseen, only the core decides what an event means;
//! - an action's outcome that the core must know (a spawned pid, a spawn error, the
//!   files read for a reload) goes back into the core before the next event;
//! - stages get no configuration file: their environment names none, and the
//!   configuration in force reaches them over their channel.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::CommandExt as _;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ftp_pooler_channel::{bind, CtlRequest, CtlResponse, RuntimePaths, StageId, StageReport};
use ftp_pooler_config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{self, LastReload, Observed};
use crate::core::{Action, Command, Core, Event, ReplyId, Sig, StageSignal, Timer};
use crate::{channels, notify, runtime_dir, Options, Outcome, SupervisorError, ENV_RUNTIME_DIR};

/// What arrives at the event loop.
pub(crate) enum Inbound {
    Exited {
        id: StageId,
        spawn: u64,
        how: String,
    },
    Ready {
        id: StageId,
        pid: u32,
    },
    Report {
        id: StageId,
        pid: u32,
        routes: Option<Vec<String>>,
        report: Box<StageReport>,
    },
    Timer(Timer),
    Ctl(CtlRequest, oneshot::Sender<CtlResponse>),
    Signal(Sig),
    /// Watched configuration files changed (settled): reload, as SIGHUP.
    FilesChanged(Vec<std::path::PathBuf>),
    /// Time to tell systemd the event loop is alive.
    Watchdog,
}

/// The override of `logging.format` (`FTP_POOLER_LOGGING__FORMAT`), set on each stage.
const ENV_LOG_FORMAT: &str = "FTP_POOLER_LOGGING__FORMAT";

/// The supervisor's own metrics.
struct OwnMetrics {
    registry: prometheus::Registry,
    restarts: prometheus::IntCounterVec,
    pool_size: prometheus::IntGauge,
    generation: prometheus::IntGauge,
    reload_failures: prometheus::IntCounter,
}

/// `ftp_pooler_build_info{version,commit,rustc,librdkafka} 1`: what this build is.
fn build_info(labels: &[(String, String)]) -> prometheus::IntGauge {
    let opts = prometheus::Opts::new(
        "ftp_pooler_build_info",
        "The build of this service (version, git commit, rustc, librdkafka); always 1",
    )
    .const_labels(labels.iter().cloned().collect());
    let gauge = prometheus::IntGauge::with_opts(opts).expect("a valid metric");
    gauge.set(1);
    gauge
}

impl OwnMetrics {
    fn new(build: &[(String, String)]) -> OwnMetrics {
        let restarts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "ftp_stage_restarts_total",
                "Stage processes restarted by the supervisor",
            ),
            &["stage"],
        )
        .expect("a valid metric");
        let pool_size = prometheus::IntGauge::new("ftp_session_pool_size", "Maximum pool size")
            .expect("a valid metric");
        let generation = prometheus::IntGauge::new(
            "ftp_config_generation",
            "Generation of the configuration in force (1 at start, +1 per applied reload)",
        )
        .expect("a valid metric");
        let reload_failures = prometheus::IntCounter::new(
            "ftp_config_reload_failures_total",
            "Reloads rejected because the edited configuration is invalid",
        )
        .expect("a valid metric");
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(restarts.clone()))
            .expect("unique");
        registry
            .register(Box::new(pool_size.clone()))
            .expect("unique");
        registry
            .register(Box::new(generation.clone()))
            .expect("unique");
        registry
            .register(Box::new(reload_failures.clone()))
            .expect("unique");
        registry
            .register(Box::new(build_info(build)))
            .expect("unique");
        OwnMetrics {
            registry,
            restarts,
            pool_size,
            generation,
            reload_failures,
        }
    }
}

struct Shell {
    opts: Options,
    paths: RuntimePaths,
    events: mpsc::UnboundedSender<Inbound>,
    observed: Arc<Mutex<Observed>>,
    metrics: OwnMetrics,
    notifier: notify::Notifier,
    config: watch::Sender<Arc<ftp_pooler_channel::ConfigInForce>>,
    replies: HashMap<ReplyId, oneshot::Sender<CtlResponse>>,
    next_reply: ReplyId,
    /// The report being handled (stored if the core says it is current).
    report: Option<Box<StageReport>>,
}

/// Runs the supervisor until it is stopped or gives up.
pub async fn run(config: Config, opts: Options) -> Result<Outcome, SupervisorError> {
    let paths = runtime_dir::prepare(&opts.runtime_dir)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let observed = Arc::new(Mutex::new(Observed {
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

    let mut core = Core::new(
        config,
        std::process::id(),
        fastrand::u64(..),
        Instant::now(),
    );
    let (config_tx, config_rx) = watch::channel(core.config().clone());
    let api_state = api::ApiState {
        observed: observed.clone(),
        events: tx.clone(),
        config: config_rx.clone(),
        env_token: ftp_pooler_config::admin_token::from_env(),
    };
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
    tokio::spawn(channels::accept_stages(
        stage_listener,
        tx.clone(),
        config_rx.clone(),
    ));
    tokio::spawn(channels::accept_ctl(ctl_listener, tx.clone()));
    tokio::spawn(channels::watch_files(
        opts.watched.clone(),
        config_rx,
        tx.clone(),
    ));
    tokio::spawn(channels::forward_signals(tx.clone()));
    let notifier = notify::Notifier::from_env();
    if let Some(every) = notifier.watchdog_every() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.send(Inbound::Watchdog).is_err() {
                    return;
                }
            }
        });
    }
    let metrics = OwnMetrics::new(&opts.build_info);
    let mut shell = Shell {
        opts,
        paths,
        events: tx,
        observed,
        metrics,
        notifier,
        config: config_tx,
        replies: HashMap::new(),
        next_reply: 0,
        report: None,
    };
    for s in core.status(Instant::now()) {
        shell
            .metrics
            .restarts
            .with_label_values(&[&s.name.to_string()]);
    }
    tracing::info!(
        runtime_dir = %shell.paths.root().display(),
        stages = core.status(Instant::now()).len(),
        "supervisor starting"
    );
    let mut actions = core.start(Instant::now());
    let outcome = loop {
        if let Some(outcome) = shell.run_actions(&mut core, actions) {
            break outcome;
        }
        shell.publish_state(&core);
        let Some(inbound) = rx.recv().await else {
            break Outcome::Stopped;
        };
        let Some(event) = shell.event(inbound) else {
            actions = Vec::new();
            continue;
        };
        actions = core.handle(event, Instant::now());
    };
    shell.publish_state(&core);
    let _ = std::fs::remove_file(shell.paths.ctl());
    let _ = std::fs::remove_file(shell.paths.supervisor());
    Ok(outcome)
}

impl Shell {
    /// Turns what arrived into the core's event (None: handled here).
    fn event(&mut self, inbound: Inbound) -> Option<Event> {
        Some(match inbound {
            Inbound::Exited { id, spawn, how } => Event::Exited { id, spawn, how },
            Inbound::Ready { id, pid } => Event::Ready { id, pid },
            Inbound::Report {
                id,
                pid,
                routes,
                report,
            } => {
                self.report = Some(report);
                Event::Reported { id, pid, routes }
            }
            Inbound::Timer(t) => Event::Timer(t),
            Inbound::Ctl(req, reply) => {
                self.next_reply += 1;
                self.replies.insert(self.next_reply, reply);
                let command = match req {
                    CtlRequest::Status => Command::Status,
                    CtlRequest::Reload => Command::Reload,
                    CtlRequest::Restart { stage } => Command::Restart(stage),
                };
                Event::Command {
                    command,
                    reply: Some(self.next_reply),
                }
            }
            Inbound::Signal(sig) => Event::Signal(sig),
            Inbound::FilesChanged(files) => {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                tracing::info!(?files, "configuration files changed: reloading");
                Event::Command {
                    command: Command::Reload,
                    reply: None,
                }
            }
            Inbound::Watchdog => {
                self.notifier.send("WATCHDOG=1");
                return None;
            }
        })
    }

    /// Runs the actions (and those of the events they cause); the outcome on exit.
    fn run_actions(&mut self, core: &mut Core, actions: Vec<Action>) -> Option<Outcome> {
        let mut queue: VecDeque<Action> = actions.into();
        let mut exit = None;
        while let Some(action) = queue.pop_front() {
            let follow = match action {
                Action::Spawn { id, spawn } => Some(match self.spawn(&id, spawn) {
                    Ok(pid) => Event::Spawned { id, spawn, pid },
                    Err(e) => {
                        tracing::error!(child = %id, error = %e, "cannot start the stage");
                        Event::SpawnFailed {
                            id,
                            spawn,
                            error: e.to_string(),
                        }
                    }
                }),
                Action::Signal { id, pid, signal } => {
                    let sig = match signal {
                        StageSignal::Term => Signal::SIGTERM,
                        StageSignal::Kill => Signal::SIGKILL,
                    };
                    tracing::debug!(child = %id, child_pid = pid, signal = %sig, "signal");
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                    None
                }
                Action::Arm { after, timer } => {
                    let tx = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Inbound::Timer(timer));
                    });
                    None
                }
                Action::Reply { to, response } => {
                    if let Some(tx) = self.replies.remove(&to) {
                        let _ = tx.send(response);
                    }
                    None
                }
                Action::Notify(state) => {
                    self.notifier.send(&state);
                    None
                }
                Action::ReadConfig => {
                    Some(Event::ReloadRead((self.opts.load)().map(Box::new).map_err(
                        |errors| errors.iter().map(|e| e.to_string()).collect(),
                    )))
                }
                Action::PublishConfig(c) => {
                    let s = &c.config.settings;
                    self.metrics
                        .pool_size
                        .set(s.pool.max_sessions_per_pod as i64);
                    self.metrics.generation.set(c.generation as i64);
                    for (id, _) in c.config.registry.servers() {
                        self.metrics.restarts.with_label_values(&[&format!(
                            "{}",
                            StageId::Transfer(
                                id.parse().expect("a registry id is a connection id"),
                            )
                        )]);
                    }
                    self.config.send_replace(c);
                    None
                }
                Action::ReloadRejected { errors } => {
                    for e in &errors {
                        tracing::error!(error = %e, "reload rejected; the configuration in force stays");
                    }
                    self.metrics.reload_failures.inc();
                    self.observed.lock().expect("observed").last_reload =
                        Some(LastReload::rejected(errors));
                    None
                }
                Action::ReloadApplied { generation, plan } => {
                    let names = |v: &[ftp_pooler_config::ConnectionId]| -> Vec<String> {
                        v.iter().map(|c| c.to_string()).collect()
                    };
                    let restarted: Vec<String> =
                        plan.restart.iter().map(|s| s.to_string()).collect();
                    tracing::info!(generation, added = ?names(&plan.added), removed = ?names(&plan.removed), restarted = ?restarted, "configuration reloaded");
                    for key in &plan.next_start {
                        tracing::warn!(
                            settings = key,
                            "changed settings apply at the next start of the service"
                        );
                    }
                    self.observed.lock().expect("observed").last_reload =
                        Some(LastReload::applied(generation, &plan));
                    None
                }
                Action::CountRestart(id) => {
                    self.metrics
                        .restarts
                        .with_label_values(&[&id.to_string()])
                        .inc();
                    None
                }
                Action::RecordReport(id) => {
                    if let Some(report) = self.report.take() {
                        let mut o = self.observed.lock().expect("observed");
                        o.metrics.update(&id.to_string(), &report.metrics);
                        o.details.insert(id, (Instant::now(), report.detail));
                    }
                    None
                }
                Action::ForgetProcess(id) => {
                    let mut o = self.observed.lock().expect("observed");
                    o.metrics.retire(&id.to_string());
                    o.details.remove(&id);
                    None
                }
                Action::GaveUp(id) => {
                    self.observed.lock().expect("observed").gave_up = Some(id);
                    None
                }
                Action::Draining => {
                    self.observed.lock().expect("observed").running = false;
                    None
                }
                Action::Exit(outcome) => {
                    exit = Some(outcome);
                    None
                }
            };
            if let Some(ev) = follow {
                queue.extend(core.handle(ev, Instant::now()));
            }
        }
        self.report = None;
        exit
    }

    /// Starts a stage's process; its exit comes back as an event.
    fn spawn(&self, id: &StageId, spawn: u64) -> Result<u32, SupervisorError> {
        let mut cmd = tokio::process::Command::new(&self.opts.exe);
        // The log format in force, for what a stage writes before it has its
        // configuration (a failure to reach the supervisor, a panic).
        let log_format = match self.config.borrow().config.settings.logging.is_json() {
            Some(false) => "text",
            _ => "json",
        };
        cmd.args(id.command_args())
            .env(ENV_RUNTIME_DIR, self.paths.root())
            .env(ENV_LOG_FORMAT, log_format)
            // Stages run on the configuration the supervisor hands them, never a file.
            .env_remove(ftp_pooler_config::ENV_CONFIG)
            .env_remove(ftp_pooler_config::ENV_CONNECTIONS)
            // Only the supervisor's API checks the admin token.
            .env_remove(ftp_pooler_config::admin_token::ENV_ADMIN_TOKEN)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        // `ps` shows `ftp-pooler stage transfer <id>`.
        cmd.as_std_mut().arg0("ftp-pooler");
        let mut child = cmd.spawn().map_err(|error| SupervisorError::Spawn {
            stage: id.clone(),
            error,
        })?;
        let pid = child.id().unwrap_or(0);
        let (tx, id) = (self.events.clone(), id.clone());
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(s) => describe(&s),
                Err(e) => e.to_string(),
            };
            let _ = tx.send(Inbound::Exited { id, spawn, how });
        });
        Ok(pid)
    }

    /// Makes the core's view visible to the API.
    fn publish_state(&self, core: &Core) {
        let stages = core.status(Instant::now());
        let own = prometheus::TextEncoder::new()
            .encode_to_string(&self.metrics.registry.gather())
            .unwrap_or_default();
        let mut o = self.observed.lock().expect("observed");
        o.stages = stages;
        o.metrics.update("supervisor", &own);
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
    // The peer's address: the admin routes answer loopback peers without a token.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        tracing::error!(server = what, error = %e, "HTTP server stopped");
    }
}
