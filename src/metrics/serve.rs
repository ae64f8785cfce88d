//! `/metrics`, `/healthz` and `/readyz`: the handlers, which the HTTP face
//! mounts too (its `/metrics` behind an API token), and [`serve`], a small
//! server of its own on `[metrics] listen`, open, for a Prometheus on the
//! same host or network.
//!
//! `/metrics` answers in OpenMetrics text when the scraper asks for it
//! (Prometheus does, in its `Accept`), else in the Prometheus text format
//! 0.0.4 (`curl`, `promtool check metrics`). `/healthz` is 200 `ok` while
//! the process serves; `/readyz` is 200 `ok`, or 503 with one reason a line
//! (on the HTTP face, only the kinds of reason: it is open to the world).

use super::{Metrics, Readiness};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The scrape, in the format the `Accept` header asks for. Made from
/// memory only (the outbox's figures are the refresher's), so it is quick.
pub async fn metrics_text(metrics: Arc<Metrics>, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (body, ctype) = if openmetrics {
        (metrics.encode_openmetrics(), OPENMETRICS)
    } else {
        (metrics.encode(), prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
    };
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

/// The process is up and serving.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// Ready to take calls: 200 `ok`, or 503 with the reasons, one a line (for `[metrics] listen`).
pub async fn readyz(metrics: Arc<Metrics>) -> (StatusCode, String) {
    let r = readiness(&metrics);
    (status(&r), r.body())
}

/// `/readyz` on the public HTTP face: the 503 names only the kinds of reason.
pub fn readyz_brief(metrics: &Metrics) -> (StatusCode, String) {
    let r = readiness(metrics);
    (status(&r), r.brief_body())
}

fn status(r: &Readiness) -> StatusCode {
    if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// The health conditions and the outbox's last background check (never a database read here).
pub fn readiness(metrics: &Metrics) -> Readiness {
    let mut problems = metrics.health.problems();
    problems.extend(metrics.sources.outbox_problem());
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
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = crate::http::bind(listen).await?;
    let router = routes(metrics);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(crate::http::stopped(stop)).await {
            tracing::error!("metrics server: {e}");
        }
    }))
}
