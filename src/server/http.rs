//! etcd's plain HTTP endpoints, served on the client port beside gRPC and,
//! if given, on `--listen-metrics` alone: `/health` (etcd's JSON), `/livez`
//! and `/readyz` (etcd 3.6's, `?verbose` lists the checks), `/metrics`
//! (Prometheus text format) and `/version` (etcd's JSON).

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

/// The HTTP routes; anything else is a 404 (or, for a gRPC request,
/// gRPC's UNIMPLEMENTED).
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .fallback(not_found)
        .with_state(node)
}

/// Serves the HTTP routes alone on `listener` until `shutdown` completes.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// `/version`, etcd's shape.
async fn version() -> impl IntoResponse {
    let body = serde_json::json!({
        "etcdserver": super::ETCD_VERSION,
        "etcdcluster": cluster_version(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The cluster version etcd reports: the server's major.minor.0.
fn cluster_version() -> String {
    let mut parts = super::ETCD_VERSION.splitn(3, '.');
    let (major, minor) = (parts.next().unwrap_or("3"), parts.next().unwrap_or("5"));
    format!("{major}.{minor}.0")
}

#[derive(serde::Deserialize)]
struct Verbose {
    verbose: Option<String>,
}

/// `/livez`: the process serves (its Raft core runs). etcd 3.6's shape:
/// `ok`, or with `?verbose` each check and `livez check passed`.
async fn livez(
    State(node): State<Arc<Node>>,
    axum::extract::Query(q): axum::extract::Query<Verbose>,
) -> impl IntoResponse {
    let checks = vec![("serializable_read", node.check_live())];
    probe("livez", checks, q.verbose.is_some())
}

/// `/readyz`: the member knows a leader and serves a linearizable read.
async fn readyz(
    State(node): State<Arc<Node>>,
    axum::extract::Query(q): axum::extract::Query<Verbose>,
) -> impl IntoResponse {
    let checks = vec![
        ("serializable_read", node.check_live()),
        ("linearizable_read", node.check_health(HEALTH_TIMEOUT).await),
    ];
    probe("readyz", checks, q.verbose.is_some())
}

/// etcd's probe answer: 200 `ok` when every check passed, else 503; with
/// `verbose`, a line per check (`[+]name ok` or `[-]name failed: reason`)
/// and the verdict.
fn probe(
    what: &str,
    checks: Vec<(&str, std::result::Result<(), String>)>,
    verbose: bool,
) -> (StatusCode, String) {
    let passed = checks.iter().all(|(_, r)| r.is_ok());
    let status = if passed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !verbose && passed {
        return (status, "ok".into());
    }
    let mut body = String::new();
    for (name, result) in &checks {
        match result {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => body.push_str(&format!("[-]{name} failed: {reason}\n")),
        }
    }
    body.push_str(&if passed {
        format!("{what} check passed\n")
    } else {
        format!("{what} check failed\n")
    });
    (status, body)
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
