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
//! what is held. Every held item is therefore sent exactly once per connection. Every
//! write goes through the connection's [`PacedWriter`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::conn::{Conn, Sender};
use crate::frame::{ChannelError, FrameWriter, Role};
use crate::messages::{ConfigInForce, Hello, StageReport, StageToSupervisor, SupervisorToStage};
use crate::paced::{Outgoing, PacedWriter};
use crate::RuntimePaths;

/// Where a link goes, and who it says it is.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub path: PathBuf,
    pub me: Role,
    pub peer: Role,
    pub hello: Hello,
    /// Least time between two writes ([`Duration::ZERO`]: none; pipeline links use
    /// [`crate::PIPELINE_PACE`]): see [`PacedWriter`].
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
    T: Outgoing<Frame = T> + serde::Serialize + Clone,
    R: DeserializeOwned + Send + 'static,
{
    let mut delay = Duration::from_millis(20);
    let mut warned = false;
    while !*stop.borrow() {
        let conn = match Conn::<T, R>::connect(&spec.path, spec.me, spec.peer, &spec.hello).await {
            Ok(c) => c,
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
        let (tx, mut reader) = conn.split();
        let mut writer = PacedWriter::new(tx, spec.pace);
        let held = {
            let mut s = state.lock().expect("link state lock");
            while rx.try_recv().is_ok() {}
            snapshot(&mut s)
        };
        if let Err(e) = writer.write_now(&held, &mut on_written).await {
            tracing::debug!(peer = ?spec.peer, error = %e, "link broke while re-sending");
            on_event(LinkEvent::Lost);
            continue;
        }
        on_event(LinkEvent::Connected);
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<R>();
        let read_task = tokio::spawn(async move {
            loop {
                match reader.recv().await {
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
                    match writer.write(m, &mut rx).await {
                        Ok(batch) => on_written(&batch),
                        Err((_, e)) => {
                            tracing::debug!(peer = ?spec.peer, error = %e, "link write failed");
                            break true;
                        }
                    }
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

/// A peer that connected, completed the handshake and said hello.
pub struct Accepted {
    pub role: Role,
    pub hello: Hello,
    pub reader: crate::FrameReader,
    pub writer: FrameWriter,
}

impl Accepted {
    /// The typed ends of the connection: `Tx` to the peer, `Rx` from it.
    pub fn into_conn<Tx: serde::Serialize, Rx: DeserializeOwned>(self) -> Conn<Tx, Rx> {
        Conn::new(self.reader, self.writer)
    }
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
    writer: tokio::sync::Mutex<Sender<StageToSupervisor>>,
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
        let hello = Hello {
            name: name.to_string(),
            pid: std::process::id(),
            generation,
        };
        let conn = Conn::<StageToSupervisor, SupervisorToStage>::connect(
            &paths.supervisor(),
            me,
            Role::Supervisor,
            &hello,
        )
        .await?;
        let (writer, mut reader) = conn.split();
        let first = loop {
            match reader.recv().await? {
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
            while let Ok(Some(msg)) = reader.recv().await {
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::messages::FromPublish;
    use crate::paced::tests::ack;

    fn offset(m: &FromPublish) -> i64 {
        match m {
            FromPublish::Acked(id) => id.offset,
            other => panic!("not an ack: {other:?}"),
        }
    }

    /// Held items (by offset) and the link's queue, changed together under one lock.
    struct Held {
        items: BTreeMap<i64, FromPublish>,
        queue: mpsc::UnboundedSender<FromPublish>,
    }

    fn hold(state: &Mutex<Held>, o: i64) {
        let mut s = state.lock().unwrap();
        s.items.insert(o, ack(o));
        let _ = s.queue.send(ack(o));
    }

    /// Accepts one link connection as its peer.
    async fn accept_one(
        listener: &tokio::net::UnixListener,
    ) -> (Sender<FromPublish>, crate::Receiver<FromPublish>) {
        let (stream, _) = listener.accept().await.unwrap();
        let a = accept_peer(stream, Role::Publish, &[Role::Transfer])
            .await
            .unwrap();
        assert_eq!(a.hello.name, "t");
        a.into_conn::<FromPublish, FromPublish>().split()
    }

    #[tokio::test]
    async fn a_reconnected_link_resends_what_is_held_once_and_then_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let (qtx, qrx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(Held {
            items: BTreeMap::new(),
            queue: qtx,
        }));
        let (events_tx, mut events) = mpsc::unbounded_channel::<String>();
        let (written_tx, mut written) = mpsc::unbounded_channel::<Vec<i64>>();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Held (and queued) while the peer is down: the link keeps retrying.
        for o in 1..=3 {
            hold(&state, o);
        }
        let s2 = state.clone();
        let link = tokio::spawn(run_link(
            LinkSpec {
                path: path.clone(),
                me: Role::Transfer,
                peer: Role::Publish,
                hello: Hello {
                    name: "t".into(),
                    pid: 1,
                    generation: 0,
                },
                pace: crate::PIPELINE_PACE,
            },
            state.clone(),
            qrx,
            |s: &mut Held| s.items.values().cloned().collect(),
            move |ev: LinkEvent<FromPublish>| {
                let text = match ev {
                    LinkEvent::Received(m) => {
                        s2.lock().unwrap().items.remove(&offset(&m));
                        format!("acked {}", offset(&m))
                    }
                    LinkEvent::Connected => "connected".into(),
                    LinkEvent::Lost => "lost".into(),
                };
                let _ = events_tx.send(text);
            },
            move |w: &[FromPublish]| {
                let _ = written_tx.send(w.iter().map(offset).collect());
            },
            stop_rx,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listener = crate::bind(&path).unwrap();

        // First peer: the held items once (the queue was emptied), then new ones.
        let (mut tx, mut rx) = accept_one(&listener).await;
        for o in 1..=3 {
            assert_eq!(rx.recv().await.unwrap(), Some(ack(o)));
        }
        assert_eq!(events.recv().await.unwrap(), "connected");
        assert_eq!(written.recv().await.unwrap(), [1, 2, 3]);
        hold(&state, 4);
        assert_eq!(rx.recv().await.unwrap(), Some(ack(4)));
        assert_eq!(written.recv().await.unwrap(), [4]);
        tx.send(&ack(1)).await.unwrap();
        assert_eq!(events.recv().await.unwrap(), "acked 1");
        // The peer dies; what it had not confirmed is held, plus what came meanwhile.
        drop((tx, rx));
        assert_eq!(events.recv().await.unwrap(), "lost");
        hold(&state, 5);

        let (_tx, mut rx) = accept_one(&listener).await;
        for o in 2..=5 {
            assert_eq!(rx.recv().await.unwrap(), Some(ack(o)), "re-sent in order");
        }
        assert_eq!(events.recv().await.unwrap(), "connected");
        hold(&state, 6);
        assert_eq!(
            rx.recv().await.unwrap(),
            Some(ack(6)),
            "5 was not sent twice"
        );
        let _ = stop_tx.send(true);
        link.await.unwrap();
    }
}
