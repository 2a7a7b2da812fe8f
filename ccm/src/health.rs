//! `/healthz`, `/readyz` and `/metrics` over plain HTTP.
//!
//! The upstream CCM serves these over HTTPS with delegated authentication on
//! port 10258; Portway serves plain HTTP on the same port (put it behind the
//! pod network or a NetworkPolicy). `/healthz` fails while this process
//! leads but has not renewed its Lease within the renew deadline, so a
//! kubelet liveness probe restarts a stuck leader.

use crate::leader::LeaderState;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    /// The metrics registry encoded by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Leadership, when leader election is on.
    pub leader: Option<Arc<LeaderState>>,
    /// A leader whose last renewal is older than this is unhealthy.
    pub renew_deadline: Duration,
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    match h.leader.as_ref().and_then(|l| l.since_renewal()) {
        Some(age) if age > h.renew_deadline => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("leader lease renewal overdue: last renewed {age:?} ago\n"),
        ),
        _ => (StatusCode::OK, "ok\n".to_string()),
    }
}

async fn readyz() -> &'static str {
    "ok\n"
}

async fn metrics(State(h): State<Health>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

/// The router, for tests that call it without a socket.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// Binds `addr` and serves until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, health: Health) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::error!(%e, "health server stopped");
        }
    });
    Ok(bound)
}
