//! The supervisor's sockets and signals, as tasks that turn what arrives into
//! [`Inbound`] events for the one event loop ([`crate::shell`]), and the `ctl` client.
//!
//! - stage channel: a stage says hello (its [`StageId`] as name), gets the configuration
//!   in force at once and every later one (a reload), and sends ready and its reports.
//!   The connection stays open for the stage's life: when the supervisor dies, the stage
//!   sees its end close and stops;
//! - ctl channel: one request, one answer, as long as the client keeps asking;
//! - signals: SIGTERM and SIGINT drain, SIGHUP reloads;
//! - watched files: read every `supervisor.watch_config` interval; a settled change
//!   ([`crate::watch`]) is a reload, the same as SIGHUP.
//!
//! Invariant: a stage always gets the configuration in force *when it connects* (the
//! watch's current value), then each change; none is skipped between the two.

use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_channel::{
    accept, accept_peer, Accepted, ConfigInForce, CtlRequest, CtlResponse, Role, RuntimePaths,
    StageDetail, StageId, StageToSupervisor, SupervisorToStage,
};
use tokio::sync::{mpsc, watch};

use crate::core::Sig;
use crate::shell::Inbound;
use crate::watch::{FileState, FileWatch, Fingerprint};
use crate::{SupervisorError, WatchedFiles};

pub(crate) async fn forward_signals(tx: mpsc::UnboundedSender<Inbound>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        let sig = tokio::select! {
            _ = term.recv() => Sig::Term,
            _ = int.recv() => Sig::Int,
            _ = hup.recv() => Sig::Hup,
        };
        if tx.send(Inbound::Signal(sig)).is_err() {
            return;
        }
    }
}

/// Reads the watched files every `supervisor.watch_interval_seconds` of the
/// configuration in force (nothing while `supervisor.watch_config` is off) and sends
/// [`Inbound::FilesChanged`] when a change has settled. The first reading, at start (or
/// when watching is turned on), is the baseline: the files as the configuration in force
/// was read.
pub(crate) async fn watch_files(
    files: WatchedFiles,
    config: watch::Receiver<Arc<ConfigInForce>>,
    tx: mpsc::UnboundedSender<Inbound>,
) {
    let mut state: Option<FileWatch> = None;
    loop {
        let (on, every) = {
            let s = &config.borrow().config.settings.supervisor;
            (
                s.watch_config,
                Duration::from_secs(s.watch_interval_seconds.max(1)),
            )
        };
        if !on {
            state = None;
        } else {
            let files = files.clone();
            let reading = tokio::task::spawn_blocking(move || -> Fingerprint {
                files()
                    .into_iter()
                    .map(|p| {
                        let state = FileState::of(std::fs::read(&p));
                        (p, state)
                    })
                    .collect()
            })
            .await
            .unwrap_or_default();
            match &mut state {
                None => state = Some(FileWatch::new(reading)),
                Some(w) => {
                    if let Some(changed) = w.observe(reading) {
                        if tx.send(Inbound::FilesChanged(changed)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Stage connections: hello, the configuration in force, then ready and reports.
pub(crate) async fn accept_stages(
    listener: tokio::net::UnixListener,
    tx: mpsc::UnboundedSender<Inbound>,
    config: watch::Receiver<Arc<ConfigInForce>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        let mut config = config.clone();
        tokio::spawn(async move {
            let Some(Accepted {
                hello,
                mut reader,
                mut writer,
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
            let Ok(id) = hello.name.parse::<StageId>() else {
                tracing::warn!(name = %hello.name, "a stage with an invalid name: refused");
                return;
            };
            // The writer lives as long as the stage's connection: its end closing tells
            // the stage the supervisor is gone.
            let pusher = tokio::spawn(async move {
                loop {
                    let current = config.borrow_and_update().clone();
                    let msg = SupervisorToStage::Config(Box::new((*current).clone()));
                    if writer.send(&msg).await.is_err() {
                        return;
                    }
                    if config.changed().await.is_err() {
                        // The supervisor is exiting: hold the connection until it does.
                        std::future::pending::<()>().await;
                    }
                }
            });
            while let Ok(Some(msg)) = reader.recv::<StageToSupervisor>().await {
                let ev = match msg {
                    StageToSupervisor::Ready => Inbound::Ready {
                        id: id.clone(),
                        pid: hello.pid,
                    },
                    StageToSupervisor::Report(report) => {
                        let routes = match &report.detail {
                            StageDetail::Ingest(i) => Some(i.connections.clone()),
                            _ => None,
                        };
                        Inbound::Report {
                            id: id.clone(),
                            pid: hello.pid,
                            routes,
                            report,
                        }
                    }
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
            pusher.abort();
        });
    }
}

pub(crate) async fn accept_ctl(
    listener: tokio::net::UnixListener,
    tx: mpsc::UnboundedSender<Inbound>,
) {
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
                let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                if tx.send(Inbound::Ctl(req, reply_tx)).is_err() {
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
