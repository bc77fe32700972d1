//! The HTTP listener on `--listen-metrics`, as etcd's: `GET /health` and
//! `GET /metrics` (Prometheus text format).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::error::Result;
use crate::node::Node;

/// How long `/health` waits for a linearizable read before calling the node
/// unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `/health` and `/metrics` until `shutdown` completes.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(node);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// 200 `{"health":"true"}` when this node knows a leader and serves a
/// linearizable read in time; otherwise 503 with the reason.
async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let (status, body) = match node.check_health(HEALTH_TIMEOUT).await {
        Ok(()) => (
            StatusCode::OK,
            serde_json::json!({"health": "true", "reason": ""}),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": reason}),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    node.refresh_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics().render(),
    )
}
