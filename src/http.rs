//! The HTTP side: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
//! (Prometheus text format). Optional: only with `[http] listen`.
//!
//! Liveness is not readiness: `/healthz` answers 200 while the process runs;
//! `/readyz` answers 503 unless every discovery target has data (from AWS, or from
//! a cache file saved for the same config) and names those that have none, so a
//! load balancer only sends queries to a replica that knows the endpoints' addresses.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::refresh::RefreshStats;
use crate::snapshot::SnapshotStore;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub stats: Arc<RefreshStats>,
    pub store: Arc<SnapshotStore>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let snap = s.store.load();
    let served = s.stats.served();
    if served.ready() {
        let source = if served.targets.is_empty() {
            "static config"
        } else if served.from_cache() {
            "the cache file (the EC2 API has not answered yet)"
        } else {
            "AWS"
        };
        let body = format!(
            "ready: {} zones, {} records, data from {source}\n",
            snap.zones.len(),
            snap.record_count()
        );
        return (StatusCode::OK, body);
    }
    let why = s
        .stats
        .last_error()
        .unwrap_or_else(|| "no attempt finished yet".to_string());
    let missing = served.missing();
    let body = if served.published {
        format!(
            "not ready: no discovery data (and no cache file saved for this config) for {}; last error: {why}\n",
            missing.join("; ")
        )
    } else {
        format!("not ready: starting; last error: {why}\n")
    };
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
