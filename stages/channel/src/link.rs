//! Reconnecting links and the stage side of the supervisor channel.
//!
//! [`run_link`] keeps one client connection to a peer stage alive: it connects (retrying
//! with a short capped backoff while the peer is down or restarting), says [`Hello`],
//! re-sends everything the caller still holds for that peer, then forwards new messages
//! and hands every received message to the caller.
//!
//! Invariant (nothing lost, nothing doubled on a reconnect): callers put an item into
//! their shared state *and* push it into the link's queue while holding the state's lock;
//! on connect the link, under the same lock, empties its queue and takes the snapshot of
//! what is held. Every held item is therefore sent exactly once per connection.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::frame::{connect, ChannelError, FrameWriter, Role};
use crate::messages::{ConfigInForce, Hello, StageReport, StageToSupervisor, SupervisorToStage};
use crate::RuntimePaths;

/// Where a link goes, and who it says it is.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub path: PathBuf,
    pub me: Role,
    pub peer: Role,
    pub hello: Hello,
    /// Least time between two writes ([`Duration::ZERO`]: none). A message that comes
    /// sooner waits for the rest of it, and goes out with whatever else came meanwhile:
    /// under load the peer wakes once per batch instead of once per message, and an idle
    /// link writes at once.
    pub pace: Duration,
}

/// What a link reports to its owner.
pub enum LinkEvent<R> {
    /// Connected (again): the snapshot was sent.
    Connected,
    Received(R),
    /// An established connection broke (the peer died or restarted).
    Lost,
}

/// Runs the link until `stop` turns true. `snapshot` runs under the state's lock right
/// after the queue is emptied; `on_event` sees every connect, message and loss;
/// `on_written` sees every message once its write to the socket has completed (it is then
/// in the peer's receive queue, which outlives this process: what must follow a message,
/// and never overtake it, goes from there).
pub async fn run_link<S, T, R>(
    spec: LinkSpec,
    state: Arc<Mutex<S>>,
    mut rx: mpsc::UnboundedReceiver<T>,
    snapshot: impl Fn(&mut S) -> Vec<T>,
    mut on_event: impl FnMut(LinkEvent<R>),
    mut on_written: impl FnMut(&[T]),
    mut stop: watch::Receiver<bool>,
) where
    T: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    let mut delay = Duration::from_millis(20);
    let mut warned = false;
    while !*stop.borrow() {
        let (mut reader, mut writer) = match connect(&spec.path, spec.me, spec.peer).await {
            Ok(rw) => rw,
            Err(e) => {
                if !warned && delay >= Duration::from_secs(1) {
                    tracing::warn!(peer = ?spec.peer, path = %spec.path.display(), error = %e, "peer not reachable yet; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        delay = Duration::from_millis(20);
        warned = false;
        let held = {
            let mut s = state.lock().expect("link state lock");
            while rx.try_recv().is_ok() {}
            snapshot(&mut s)
        };
        let sent = async {
            writer.send(&spec.hello).await?;
            for chunk in held.chunks(256) {
                writer.send_all(chunk).await?;
                on_written(chunk);
            }
            Ok::<_, ChannelError>(())
        }
        .await;
        if let Err(e) = sent {
            tracing::debug!(peer = ?spec.peer, error = %e, "link broke while re-sending");
            on_event(LinkEvent::Lost);
            continue;
        }
        on_event(LinkEvent::Connected);
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<R>();
        let mut pacer = Pacer::new(spec.pace);
        let read_task = tokio::spawn(async move {
            loop {
                match reader.recv::<R>().await {
                    Ok(Some(m)) => {
                        if in_tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "link read failed");
                        return;
                    }
                }
            }
        });
        let broke = loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break false };
                    pacer.wait().await;
                    let mut batch = vec![m];
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = writer.send_all(&batch).await {
                        tracing::debug!(peer = ?spec.peer, error = %e, "link write failed");
                        break true;
                    }
                    on_written(&batch);
                }
                r = in_rx.recv() => match r {
                    Some(m) => on_event(LinkEvent::Received(m)),
                    None => break true,
                },
                _ = stop.changed() => {
                    if *stop.borrow() { break false; }
                }
            }
        };
        read_task.abort();
        if broke {
            on_event(LinkEvent::Lost);
        } else {
            return;
        }
    }
}

/// The least time between two writes on a pipeline socket (see [`LinkSpec::pace`]).
/// Under load a batch of jobs, notices, results or acks then wakes the peer once instead
/// of once per message, which on two CPUs shared by a dozen processes was worth about a
/// tenth of the small-upload rate (docs/BENCHMARKS.md); an idle link writes at once, so
/// at low rates it adds nothing, and under load at most this much per hop.
pub const PIPELINE_PACE: Duration = Duration::from_millis(1);

/// Spaces a writer's writes at least `pace` apart (see [`LinkSpec::pace`]).
pub struct Pacer {
    pace: Duration,
    last: Option<tokio::time::Instant>,
}

impl Pacer {
    pub fn new(pace: Duration) -> Pacer {
        Pacer { pace, last: None }
    }

    /// Waits until `pace` has passed since the previous call returned.
    pub async fn wait(&mut self) {
        if let Some(next) = self.last.map(|l| l + self.pace) {
            if next > tokio::time::Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        self.last = (!self.pace.is_zero()).then(tokio::time::Instant::now);
    }
}

/// A peer that connected, completed the handshake and said hello.
pub struct Accepted {
    pub role: Role,
    pub hello: Hello,
    pub reader: crate::FrameReader,
    pub writer: FrameWriter,
}

/// Completes an accepted connection: the handshake (the peer must be one of `allowed`),
/// then its [`Hello`]. None (with a warning for a refused handshake) when it fails.
pub async fn accept_peer(
    stream: tokio::net::UnixStream,
    me: Role,
    allowed: &[Role],
) -> Option<Accepted> {
    let (role, mut reader, writer) = match crate::frame::accept(stream, me, allowed).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "refused a connection");
            return None;
        }
    };
    let hello = match reader.recv::<Hello>().await {
        Ok(Some(h)) => h,
        _ => return None,
    };
    Some(Accepted {
        role,
        hello,
        reader,
        writer,
    })
}

/// Accepts connections on `listener`, handing each to `serve`, until `shutdown`
/// resolves; returns its reason.
pub async fn accept_until<F>(
    listener: &tokio::net::UnixListener,
    shutdown: impl Future<Output = &'static str>,
    mut serve: F,
) -> &'static str
where
    F: FnMut(tokio::net::UnixStream),
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            why = &mut shutdown => return why,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream),
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
        }
    }
}

/// The stage end of the supervisor channel. The supervisor answers the hello with the
/// configuration in force and sends each new one after a reload: a stage runs on what it
/// receives here and never reads the configuration files.
pub struct SupervisorLink {
    writer: tokio::sync::Mutex<FrameWriter>,
    lost: watch::Receiver<bool>,
    config: watch::Receiver<Arc<ConfigInForce>>,
}

impl SupervisorLink {
    /// Connects to the supervisor, says hello as `name` and waits for the configuration
    /// in force (the supervisor's first frame).
    pub async fn connect(
        paths: &RuntimePaths,
        me: Role,
        name: &str,
        generation: u64,
    ) -> Result<SupervisorLink, ChannelError> {
        let (mut reader, mut writer) = connect(&paths.supervisor(), me, Role::Supervisor).await?;
        writer
            .send(&Hello {
                name: name.to_string(),
                pid: std::process::id(),
                generation,
            })
            .await?;
        let first = loop {
            match reader.recv::<SupervisorToStage>().await? {
                Some(SupervisorToStage::Config(c)) => break c,
                Some(SupervisorToStage::Ping) => continue,
                None => {
                    return Err(ChannelError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the supervisor closed the channel before sending the configuration",
                    )))
                }
            }
        };
        let (config_tx, config) = watch::channel(Arc::new(*first));
        let (tx, lost) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = reader.recv::<SupervisorToStage>().await {
                if let SupervisorToStage::Config(c) = msg {
                    config_tx.send_replace(Arc::new(*c));
                }
            }
            let _ = tx.send(true);
        });
        Ok(SupervisorLink {
            writer: tokio::sync::Mutex::new(writer),
            lost,
            config,
        })
    }

    /// The configuration in force (the latest the supervisor sent).
    pub fn config(&self) -> Arc<ConfigInForce> {
        self.config.borrow().clone()
    }

    /// Changes when the supervisor sends a new configuration (a reload).
    pub fn config_changes(&self) -> watch::Receiver<Arc<ConfigInForce>> {
        self.config.clone()
    }

    /// Tells the supervisor this stage is initialised.
    pub async fn ready(&self) -> Result<(), ChannelError> {
        self.writer
            .lock()
            .await
            .send(&StageToSupervisor::Ready)
            .await
    }

    /// Sends one report (state for the API, metrics).
    pub async fn report(&self, report: StageReport) -> Result<(), ChannelError> {
        self.writer
            .lock()
            .await
            .send(&StageToSupervisor::Report(Box::new(report)))
            .await
    }

    /// Reports `make()` every `every` until the channel closes.
    pub fn spawn_reports(
        self: &std::sync::Arc<Self>,
        every: Duration,
        make: impl Fn() -> StageReport + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let link = self.clone();
        tokio::spawn(async move {
            loop {
                if link.report(make()).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Resolves when the stage should stop: SIGTERM, SIGINT, or the supervisor gone.
    pub fn shutdown_requested(&self) -> impl Future<Output = &'static str> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = lost.wait_for(|l| *l) => "supervisor gone",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pacer;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test]
    async fn a_pacer_spaces_writes_and_lets_an_idle_link_write_at_once() {
        let pace = Duration::from_millis(200);
        let mut p = Pacer::new(pace);
        let t0 = Instant::now();
        p.wait().await;
        assert!(t0.elapsed() < pace, "the first write waits for nothing");
        p.wait().await;
        assert!(t0.elapsed() >= pace, "the next one waits out the pace");
        tokio::time::sleep(pace).await;
        let t1 = Instant::now();
        p.wait().await;
        assert!(t1.elapsed() < pace, "after a pause a write goes at once");

        let mut none = Pacer::new(Duration::ZERO);
        let t2 = Instant::now();
        for _ in 0..100 {
            none.wait().await;
        }
        assert!(t2.elapsed() < pace, "no pace, no wait");
    }
}
