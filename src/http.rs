//! The HTTP side: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
//! (Prometheus text format). Optional: only with `[http] listen`.
//!
//! Liveness is not readiness: `/healthz` answers 200 while the process runs;
//! `/readyz` answers 503 unless every discovery target has data (from AWS, or from
//! a cache file saved for the same config) and names those that have none, so a
//! load balancer only sends queries to a replica that knows the endpoints' addresses.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::metrics::Metrics;
use crate::refresh::{RefreshStats, rfc3339};
use crate::server::Sources;
use crate::snapshot::SnapshotStore;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub stats: Arc<RefreshStats>,
    pub store: Arc<SnapshotStore>,
}

/// What a client may hold of the HTTP side.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections one source holds at once; more from it are closed on accept.
    pub max_per_source: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
}

/// Largest request head we buffer (hyper's minimum is 8 KiB); longer ones are refused.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// A connection's whole life (one request: no keep-alive), whatever the client does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves until `shutdown` is cancelled. Our own accept loop, not `axum::serve`:
/// that has no connection cap and no header timeout, so slow or partial requests
/// could hold any number of connections (and file descriptors the DNS side needs).
/// One request per connection; probes and scrapers reconnect.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Sources::new(limits.max_per_source);
    let tracker = TaskTracker::new();
    while let Some((stream, peer)) = crate::server::accept(&listener, &shutdown, "http").await {
        let Some(mine) = sources.take(peer.ip()) else {
            debug!(%peer, "http connections per source reached; closing new connection");
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "http connection cap reached; closing new connection");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {
                    if let Ok(Err(error)) = r {
                        debug!(%error, %peer, "http connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
            drop((permit, mine));
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let snap = s.store.load();
    let served = &snap.served;
    let held = s.stats.held().map_or(String::new(), |(addresses, names, since, until)| {
        format!(
            "removal held: the EC2 API's last answer would take {addresses} addresses from {names} names; the previous data serves since {} until {} if that answer persists (SIGHUP applies it now)\n",
            rfc3339(since),
            rfc3339(until)
        )
    });
    let follow = s.metrics.follow_status();
    let following = follow.enabled.load(std::sync::atomic::Ordering::Relaxed);
    let expired = snap.expired_zones();
    if following && !follow.loaded.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the zones of the primary's catalog are not all transferred yet (and cache-dir has none of them)\n".to_string(),
        );
    }
    if !expired.is_empty() {
        let names: Vec<String> = expired.iter().map(|z| z.to_string()).collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: zones past their SOA expire without contact with the primary (answered SERVFAIL): {}\n",
                names.join(" ")
            ),
        );
    }
    if served.ready() {
        let source = if served.targets.is_empty() {
            "static config"
        } else if served.from_cache() && !held.is_empty() {
            "the cache file (the EC2 API answered; its answer is held, see below)"
        } else if served.from_cache() {
            "the cache file (the EC2 API has not answered yet)"
        } else {
            "AWS"
        };
        let body = format!(
            "ready: {} zones, {} records, data from {source}\n{held}",
            snap.zone_count(),
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
            "not ready: no discovery data (and no cache file saved for this config) for {}; last error: {why}\n{held}",
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
