//! The REST API (`api.host:api.port`) and the Prometheus endpoint (`metrics.port`).
//!
//! Routes and bodies are the Python ftp-pooler's (DESIGN.md section 7), with additions
//! (`GET /stages`, `POST /stages/{name}/restart`, extra keys in some bodies). Everything
//! comes from what the stages report to the supervisor (about once a second), so a slow
//! or hung server never blocks the API. No body ever holds a password.
//!
//! Readiness: 200 only when the service is running, every stage is up and reporting, and
//! both ingest and publish reach the broker; 503 with the reason otherwise
//! (`broker_authentication_failed` or `broker_tls_failed` when a Kafka client saw the
//! broker refuse it, `broker_unreachable` when it simply does not answer). A connection
//! whose server rejects logins does not hold readiness back; it shows in `/pool/health`.
//!
//! Liveness: `/live` (and `/health`) answer 503 once the supervisor has given up on a
//! stage that cannot stay up (so Kubernetes restarts the pod while the supervisor stops).
//! `GET /config` shows the configuration in force (its generation, the files) and the
//! last reload (applied, or rejected with every error); no secret.
//!
//! Access: the read-only routes (every `GET`, as in the Python version) are open; the
//! mutating one (`POST /stages/{name}/restart`) passes [`crate::access`]'s rule first
//! (a bearer token when one is configured, else loopback peers only).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ftp_pooler_channel::{
    BrokerProblem, ConfigInForce, CtlRequest, CtlResponse, StageId, TransferDetail,
};
use ftp_pooler_config::{Config, ConnectionKind, Secret};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::access::{decide, Access, Configured};
pub use crate::observed::{LastReload, Observed, REPORT_STALE};
use crate::process_metrics;
use crate::shell::Inbound;

/// The configuration in force, read through its `Arc`.
struct ConfigRef(Arc<ConfigInForce>);

impl std::ops::Deref for ConfigRef {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0.config
    }
}

#[derive(Clone)]
pub(crate) struct ApiState {
    pub observed: Arc<Mutex<Observed>>,
    pub events: mpsc::UnboundedSender<Inbound>,
    /// The configuration in force (an applied reload replaces it).
    pub config: watch::Receiver<Arc<ConfigInForce>>,
    /// `FTP_POOLER_ADMIN_TOKEN` as the supervisor started (wins over the token file).
    pub env_token: Option<Secret>,
}

impl ApiState {
    fn in_force(&self) -> Arc<ConfigInForce> {
        self.config.borrow().clone()
    }

    /// The configuration in force (shared, not copied).
    fn config(&self) -> ConfigRef {
        ConfigRef(self.in_force())
    }

    /// The admin token for this request: the environment's, else the file's, read now
    /// (a rotated Secret applies at once).
    fn admin_token(&self) -> Configured {
        if let Some(t) = &self.env_token {
            return Configured::Token(t.clone());
        }
        let file = self.in_force().config.settings.api.admin_token_file.clone();
        match file {
            None => Configured::None,
            Some(f) => match ftp_pooler_config::admin_token::read_file(std::path::Path::new(&f)) {
                Ok(t) => Configured::Token(t),
                Err(problem) => Configured::Unreadable(problem),
            },
        }
    }
}

/// Lets a mutating request through only as [`crate::access`] decides.
async fn admin_only(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let detail = |text: &str| Json(json!({ "detail": text }));
    let route = req.uri().path().to_string();
    match decide(&s.admin_token(), authorization, peer.ip()) {
        Access::Allowed => next.run(req).await,
        Access::Unauthorized(why) => {
            tracing::warn!(%peer, route, reason = why, "admin request refused");
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"ftp-pooler admin\"",
                )],
                detail(why),
            )
                .into_response()
        }
        Access::Forbidden(why) => {
            tracing::warn!(%peer, route, "admin request refused: not loopback and no admin token configured");
            (StatusCode::FORBIDDEN, detail(why)).into_response()
        }
        Access::Unavailable(problem) => {
            tracing::error!(%peer, route, problem, "admin request refused: the admin token cannot be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                detail("the admin token configured (api.admin_token_file) cannot be read"),
            )
                .into_response()
        }
    }
}

/// The REST API's routes.
pub(crate) fn api_router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/pool/stats", get(pool_stats))
        .route("/pool/health", get(pool_health))
        .route("/pool/connections", get(connections))
        .route("/pool/connections/{id}/health", get(connection_health))
        .route("/stages", get(stages))
        .route("/config", get(config_in_force))
        // Every mutating route goes here, behind the access rule.
        .merge(
            Router::new()
                .route("/stages/{name}/restart", post(restart))
                .route_layer(middleware::from_fn_with_state(state.clone(), admin_only)),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))) })
        .with_state(state)
}

/// The metrics endpoint's routes.
pub(crate) fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
        .with_state(state)
}

async fn health(State(s): State<ApiState>) -> Response {
    let gave_up = s.observed.lock().expect("observed").gave_up.clone();
    match gave_up {
        None => Json(json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION")}))
            .into_response(),
        Some(stage) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "version": env!("CARGO_PKG_VERSION"), "gave_up_on": stage})),
        )
            .into_response(),
    }
}

async fn live(State(s): State<ApiState>) -> Response {
    let gave_up = s.observed.lock().expect("observed").gave_up.clone();
    match gave_up {
        None => Json(json!({"status": "alive"})).into_response(),
        Some(stage) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "gave_up", "stage": stage})),
        )
            .into_response(),
    }
}

/// The configuration in force and the last reload (no secret: files and generation).
async fn config_in_force(State(s): State<ApiState>) -> Json<Value> {
    let c = s.in_force();
    let o = s.observed.lock().expect("observed");
    Json(json!({
        "generation": c.generation,
        "config_file": c.config.config_file.as_ref().map(|f| f.display().to_string()),
        "connections_file": c.config.connections_file.display().to_string(),
        "connections": c.config.registry.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        "last_reload": o.last_reload.as_ref().map(|r| r.body.clone()),
    }))
}

async fn ready(State(s): State<ApiState>) -> Response {
    let o = s.observed.lock().expect("observed");
    match o.readiness(Instant::now(), &s.in_force().config) {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Err((reason, which)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason, "stages": which})),
        )
            .into_response(),
    }
}

fn pool_stats_value(o: &Observed, config: &Config) -> Value {
    let settings = &config.settings;
    let mut pools = Map::new();
    let mut breakers = Map::new();
    let (mut total, mut active) = (0, 0);
    for (id, _) in config.registry.servers() {
        let Some(t) = o.transfer(id) else { continue };
        total += t.total_sessions;
        active += t.active_sessions;
        pools.insert(
            id.to_string(),
            json!({
                "connection_id": id,
                "max_sessions": t.max_sessions,
                "total_sessions": t.total_sessions,
                "active_sessions": t.active_sessions,
                "available_sessions": t.available_sessions,
                "current_limit": t.cap,
                "logins": t.logins,
                "discarded_sessions": t.discarded,
                "refused_connections": t.refused,
            }),
        );
        breakers.insert(
            id.to_string(),
            json!({
                "state": t.breaker_state,
                "failure_count": t.breaker_failures,
                "success_count": t.breaker_successes,
                "last_failure": t.last_failure,
            }),
        );
    }
    json!({
        "max_sessions_per_pod": settings.pool.max_sessions_per_pod,
        "max_sessions_per_connection": settings.pool.max_sessions_per_connection,
        "total_sessions": total,
        "active_sessions": active,
        "pools": pools,
        "circuit_breakers": breakers,
    })
}

fn connection_health_value(id: &str, t: &TransferDetail) -> Value {
    let healthy = if t.healthy && t.breaker_state != "open" {
        t.total_sessions
    } else {
        0
    };
    let status = if !t.healthy || t.breaker_state == "open" {
        "unhealthy"
    } else if t.breaker_state == "half_open" {
        "degraded"
    } else {
        "healthy"
    };
    json!({
        "connection_id": id,
        "total_sessions": t.total_sessions,
        "healthy": healthy,
        "unhealthy": t.total_sessions - healthy,
        "active": t.active_sessions,
        "available": t.available_sessions,
        "status": status,
        "circuit_breaker": t.breaker_state,
        "last_error": t.last_error,
    })
}

async fn stats(State(s): State<ApiState>) -> Json<Value> {
    let config = s.config();
    let o = s.observed.lock().expect("observed");
    let k = &config.settings.kafka;
    let consumer = o.ingest().map(|i| {
        let lag: Map<String, Value> = i
            .lag_by_partition
            .iter()
            .map(|(p, l)| (format!("{}-{p}", k.input_topic), json!(l)))
            .collect();
        json!({
            "tasks_received": i.tasks_received,
            "parse_errors": i.parse_errors,
            "total_lag": i.lag_by_partition.values().sum::<i64>(),
            "lag_by_partition": lag,
            "input_topic": k.input_topic,
            "consumer_group": k.consumer_group,
            "running": o.running,
            "invalid_tasks": i.invalid_tasks,
            "in_flight": i.tracked,
            "paused_partitions": i.paused_partitions,
            "committed_offsets": i.committed.iter().map(|(p, c)| (p.to_string(), json!(c))).collect::<Map<_, _>>(),
            "broker_reachable": i.broker_up,
            "broker_problem": i.broker_problem.map(BrokerProblem::as_str),
        })
    });
    let producer = o.publish().map(|p| {
        json!({
            "results_sent": p.results_sent,
            "failures_sent": p.failures_sent,
            "send_errors": p.send_errors,
            "pending_count": p.pending_count,
            "result_topic": k.result_topic,
            "fail_topic": k.fail_topic,
            "broker_reachable": p.broker_up,
            "broker_problem": p.broker_problem.map(BrokerProblem::as_str),
        })
    });
    let dlq = o
        .publish()
        .map(|p| json!({"dlq_messages_sent": p.dlq_messages_sent, "dlq_topic": k.dlq_topic}));
    let transfers: Vec<&TransferDetail> = config
        .registry
        .servers()
        .filter_map(|(id, _)| o.transfer(id))
        .collect();
    let transfer = (!transfers.is_empty()).then(|| {
        json!({
            "tasks_in_progress": transfers.iter().map(|t| t.tasks_in_progress).sum::<u64>(),
            "timeouts": transfers.iter().map(|t| t.timeouts).sum::<u64>(),
            "callback_errors": 0,
        })
    });
    Json(json!({
        "running": o.running,
        "pool": pool_stats_value(&o, &config),
        "consumer": consumer,
        "producer": producer,
        "dlq": dlq,
        "transfer": transfer,
        "stages": stages_value(&o),
    }))
}

async fn pool_stats(State(s): State<ApiState>) -> Json<Value> {
    let config = s.config();
    let o = s.observed.lock().expect("observed");
    Json(pool_stats_value(&o, &config))
}

async fn pool_health(State(s): State<ApiState>) -> Json<Value> {
    let config = s.config();
    let o = s.observed.lock().expect("observed");
    let body: Map<String, Value> = config
        .registry
        .servers()
        .filter_map(|(id, _)| {
            o.transfer(id)
                .map(|t| (id.to_string(), connection_health_value(id, t)))
        })
        .collect();
    Json(Value::Object(body))
}

async fn connections(State(s): State<ApiState>) -> Json<Value> {
    let config = s.config();
    let ids: Vec<&str> = config.registry.iter().map(|c| c.id.as_str()).collect();
    let details: Vec<Value> = config
        .registry
        .iter()
        .map(|c| match &c.kind {
            ConnectionKind::Ftp(f) => json!({
                "id": c.id, "type": "ftp", "host": f.host, "port": f.port, "user": f.user,
                "passive": f.passive, "tls": f.tls.as_str(),
                "max_sessions": f.max_sessions.unwrap_or(config.settings.pool.max_sessions_per_connection),
            }),
            ConnectionKind::Sftp(f) => json!({
                "id": c.id, "type": "sftp", "host": f.host, "port": f.port, "user": f.user,
                "max_sessions": f.max_sessions.unwrap_or(config.settings.pool.max_sessions_per_connection),
            }),
            ConnectionKind::Local(l) => json!({
                "id": c.id, "type": "local", "base_path": l.base_path.display().to_string(),
            }),
        })
        .collect();
    Json(json!({"connections": ids, "details": details}))
}

async fn connection_health(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let config = s.config();
    let o = s.observed.lock().expect("observed");
    let is_ftp = config.registry.get(&id).is_some_and(|c| !c.is_local());
    match (is_ftp, o.transfer(&id)) {
        (true, Some(t)) => Json(connection_health_value(&id, t)).into_response(),
        (true, None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"detail": format!("Transfer worker of {id} not reporting")})),
        )
            .into_response(),
        (false, _) => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": format!("Connection not found: {id}")})),
        )
            .into_response(),
    }
}

fn stages_value(o: &Observed) -> Value {
    json!(o.stages)
}

async fn stages(State(s): State<ApiState>) -> Json<Value> {
    let o = s.observed.lock().expect("observed");
    Json(stages_value(&o))
}

async fn restart(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let listed = name.parse::<StageId>().ok().is_some_and(|id| {
        s.observed
            .lock()
            .expect("observed")
            .stages
            .iter()
            .any(|st| st.name == id)
    });
    if !listed {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": format!("no stage named {name:?}")})),
        )
            .into_response();
    }
    let (tx, rx) = oneshot::channel();
    if s.events
        .send(Inbound::Ctl(
            CtlRequest::Restart {
                stage: name.clone(),
            },
            tx,
        ))
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"detail": "the service is stopping"})),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(120), rx).await {
        Ok(Ok(CtlResponse::Restarted { stage, pid })) => {
            Json(json!({"stage": stage, "pid": pid, "status": "restarted"})).into_response()
        }
        Ok(Ok(CtlResponse::Error(e))) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"detail": e}))).into_response()
        }
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({"detail": format!("{name} did not come back in time")})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let (mut text, targets) = {
        let o = s.observed.lock().expect("observed");
        (
            o.metrics.render(),
            process_metrics::targets(&o, Instant::now()),
        )
    };
    // `/proc` is read outside the lock.
    text.push_str(&process_metrics::collect(&targets));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
