//! The ingest stage's links to the transfer workers, one per connection, and the
//! application of a new configuration in force to them (a reload). Invariants: a worker's
//! events (`Started`, `Finished`, its loss) reach the tracker with the connection they
//! came from; a connection removed by a reload keeps its link until its worker has stopped,
//! then what never ran there fails (INVALID_CONFIG).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ftp_pooler_channel::{
    run_link, Hello, IngestToTransfer, LinkEvent, LinkSpec, Role, RuntimePaths, TransferToIngest,
    PIPELINE_PACE,
};
use ftp_pooler_config::Config;
use tokio::sync::{mpsc, watch};

use super::{window_for, Shared};
use crate::tracker::Tracker;

/// The link to one transfer worker, with its own stop switch (a reload may remove it).
pub(super) struct TransferLink {
    stop: watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl TransferLink {
    pub(super) fn spawn(
        shared: &Arc<Shared>,
        paths: &RuntimePaths,
        hello: &Hello,
        conn: &str,
    ) -> TransferLink {
        let (tx, rx) = mpsc::unbounded_channel();
        shared
            .outlets
            .transfers
            .write()
            .expect("outlets")
            .insert(conn.to_string(), tx);
        let (stop, stop_rx) = watch::channel(false);
        let sh = shared.clone();
        let conn = conn.to_string();
        let conn2 = conn.clone();
        let task = tokio::spawn(run_link(
            LinkSpec {
                path: paths.transfer(&conn),
                me: Role::Ingest,
                peer: Role::Transfer,
                hello: hello.clone(),
                pace: PIPELINE_PACE,
            },
            shared.tracker.clone(),
            rx,
            move |t: &mut Tracker| {
                t.pending_for_transfer(&conn)
                    .into_iter()
                    .map(IngestToTransfer::Job)
                    .collect()
            },
            move |ev: LinkEvent<TransferToIngest>| match ev {
                LinkEvent::Received(TransferToIngest::Started(id)) => {
                    sh.tracker.lock().expect("tracker").started(&conn2, id);
                }
                LinkEvent::Received(TransferToIngest::Finished(id)) => {
                    sh.with(|t| (t.finished(&conn2, id), ()));
                }
                LinkEvent::Connected => {
                    tracing::info!(connection = %conn2, "connected to transfer worker")
                }
                LinkEvent::Lost if sh.retiring.borrow().contains(&conn2) => {
                    // Removed by a reload: its worker finished what it was running. Give
                    // the last acks a moment to arrive, then fail what never ran.
                    tracing::info!(connection = %conn2, "worker of a removed connection stopped");
                    let sh = sh.clone();
                    let conn = conn2.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        sh.with(|t| (t.connection_removed(&conn), ()));
                        sh.acked.notify_all();
                        sh.retiring.send_modify(|r| {
                            r.remove(&conn);
                        });
                    });
                }
                LinkEvent::Lost => {
                    tracing::warn!(connection = %conn2, "lost transfer worker; its jobs will be re-sent");
                    sh.with(|t| (t.transfer_lost(&conn2), ()));
                    sh.acked.notify_all();
                }
            },
            |_: &[IngestToTransfer]| {},
            stop_rx,
        ));
        TransferLink { stop, task }
    }

    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Marks `conn` (removed by a reload) as retiring: the link keeps its connection
    /// until the worker stops (its `Lost` then fails what never ran and ends the
    /// retirement); then the link stops and its outlet goes.
    fn retire(&self, shared: &Arc<Shared>, conn: &str) {
        shared.retiring.send_modify(|r| {
            r.insert(conn.to_string());
        });
        let mut retiring = shared.retiring.subscribe();
        let task_stop = self.stop.clone();
        let sh = shared.clone();
        let conn = conn.to_string();
        tokio::spawn(async move {
            let _ = retiring.wait_for(|r| !r.contains(&conn)).await;
            let _ = task_stop.send(true);
            sh.outlets.transfers.write().expect("outlets").remove(&conn);
        });
    }
}

/// A new configuration in force from the supervisor (it validated it): new connections
/// get a link, removed ones are failed (INVALID_CONFIG) once their worker has stopped,
/// windows follow the new budget.
pub(super) fn reload(
    shared: &Arc<Shared>,
    config: &Config,
    paths: &RuntimePaths,
    hello: &Hello,
    links: &mut HashMap<String, TransferLink>,
) {
    let registry = config.registry.clone();
    let new: std::collections::BTreeSet<String> =
        registry.servers().map(|(id, _)| id.to_string()).collect();
    let old: std::collections::BTreeSet<String> = links.keys().cloned().collect();
    for id in new.difference(&old) {
        links.insert(id.clone(), TransferLink::spawn(shared, paths, hello, id));
    }
    for id in old.difference(&new) {
        if let Some(link) = links.get(id) {
            link.retire(shared, id);
        }
    }
    links.retain(|id, _| new.contains(id) || shared.retiring.borrow().contains(id));
    let window: HashMap<String, usize> =
        ftp_pooler_config::session_budget(&config.settings, &registry)
            .into_iter()
            .map(|(id, sessions)| (id, window_for(sessions)))
            .collect();
    shared.with(|t| {
        t.set_windows(window);
        (Vec::new(), ())
    });
    tracing::info!(
        added = ?new.difference(&old).collect::<Vec<_>>(),
        removed = ?old.difference(&new).collect::<Vec<_>>(),
        "connections reloaded"
    );
    *shared.registry.write().expect("registry") = registry;
}
