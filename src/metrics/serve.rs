//! `/metrics`, `/healthz` and `/readyz`: the handlers, which the HTTP face
//! mounts too (its `/metrics` behind an API token), and [`serve`], a small
//! server of its own on `[metrics] listen`, open, for a Prometheus on the
//! same host or network.
//!
//! `/metrics` answers in OpenMetrics text when the scraper asks for it
//! (Prometheus does, in its `Accept`), else in the Prometheus text format
//! 0.0.4 (`curl`, `promtool check metrics`). `/healthz` is 200 `ok` while
//! the process serves; `/readyz` is 200 `ok`, or 503 with one reason a line.

use super::{Metrics, Readiness};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The scrape, in the format the `Accept` header asks for.
pub async fn metrics_text(metrics: Arc<Metrics>, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // The collectors read the outbox (SQLite, behind a mutex): not on a runtime thread.
    let body =
        tokio::task::spawn_blocking(move || if openmetrics { metrics.encode_openmetrics() } else { metrics.encode() })
            .await;
    match body {
        Ok(body) => {
            let ctype =
                if openmetrics { OPENMETRICS } else { prometheus_client::encoding::prometheus_text::CONTENT_TYPE };
            ([(header::CONTENT_TYPE, ctype)], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: the scrape failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the scrape failed\n").into_response()
        }
    }
}

/// The process is up and serving.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// Ready to take calls: 200 `ok`, or 503 with the reasons, one a line.
pub async fn readyz(metrics: Arc<Metrics>) -> (StatusCode, String) {
    let r = readiness(&metrics).await;
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, r.body())
}

/// The health conditions and the outbox check (bounded: a busy outbox is a reason too).
pub async fn readiness(metrics: &Arc<Metrics>) -> Readiness {
    let mut problems = metrics.health.problems();
    let sources = metrics.sources.clone();
    let check = tokio::task::spawn_blocking(move || sources.outbox_problem());
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(p))) => problems.push(p),
        Ok(Err(e)) => problems.push(format!("outbox: the check failed: {e}")),
        Err(_) => problems.push("outbox: busy for over 2 s".into()),
    }
    Readiness { problems }
}

/// The three routes, open (for `[metrics] listen`).
pub fn routes(metrics: Arc<Metrics>) -> Router {
    use axum::routing::get;
    let (m, r) = (metrics.clone(), metrics);
    Router::new()
        .route("/metrics", get(move |headers: HeaderMap| async move { metrics_text(m, &headers).await }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || async move { readyz(r).await }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listen` until `stop` flips.
pub async fn serve(
    metrics: Arc<Metrics>,
    listen: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!("listen {listen}: address in use"),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!("listen {listen}: no such local address"),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!("listen {listen}: permission denied"),
        _ => anyhow::anyhow!("listen {listen}: {e}"),
    })?;
    let router = routes(metrics);
    Ok(tokio::spawn(async move {
        let stopped = async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
            tracing::error!("metrics server: {e}");
        }
    }))
}
