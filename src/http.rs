//! The HTTP side: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
//! (Prometheus text format). Optional: only with `[http] listen`.
//!
//! Liveness is not readiness: `/healthz` answers 200 while the process runs;
//! `/readyz` answers 503 until the first snapshot with discovered data (from AWS or
//! the cache file) is served, so a load balancer only sends queries to a replica
//! that knows the endpoints' addresses.

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
    if s.stats.is_loaded() {
        let source = if !s.stats.aws.load(std::sync::atomic::Ordering::Relaxed) {
            "static config"
        } else if s
            .stats
            .from_cache
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            "the cache file (the EC2 API has not answered yet)"
        } else {
            "AWS"
        };
        let body = format!(
            "ready: {} zones, {} records, data from {source}\n",
            snap.zones.len(),
            snap.record_count()
        );
        (StatusCode::OK, body)
    } else {
        let why = s
            .stats
            .last_error()
            .unwrap_or_else(|| "no attempt finished yet".to_string());
        let body = format!(
            "not ready: no discovery data yet and no usable cache file; last error: {why}\n"
        );
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
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
