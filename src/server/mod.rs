//! The front ends: etcd's client services on `--listen-client` (gRPC, and
//! HTTP for health, metrics, version and the JSON gateway on the same
//! port, as etcd; all of it over TLS when `tls` is configured),
//! the peer service on `--listen-peer`, each on its own server so peers'
//! traffic is never reachable through the client port; optionally the
//! HTTP routes alone on `--listen-metrics`.
//!
//! Services are thin (validate, delegate to `Node`, convert back); `status`
//! is the one place errors become gRPC statuses.

mod auth;
mod authority;
mod cluster;
mod convert;
mod election;
mod gateway;
mod grpc_metrics;
mod http;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod peer;
mod status;
mod tls;
mod txn;
mod watch;

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;

pub use maintenance::ETCD_VERSION;
pub use tls::ClientTls;

use crate::config::NodeConfig;
use crate::error::Result;
use crate::node::Node;
use crate::pb;

/// Headroom over `--max-request-bytes` that gRPC itself accepts, as etcd's
/// 2 MiB receive limit over its 1.5 MiB request limit.
const GRPC_RECV_HEADROOM: usize = 512 * 1024;

/// The sockets a node serves on, bound by the caller (so a port in use fails
/// before any data is touched).
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    /// `--listen-metrics`, if given (the client port serves the same).
    pub metrics: Option<TcpListener>,
    /// TLS on the client port, if configured.
    pub client_tls: Option<Arc<ClientTls>>,
}

/// Serves client, peer and HTTP (health, metrics) traffic until `shutdown`
/// completes.
pub async fn serve(
    node: Arc<Node>,
    cfg: &NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let recv_limit = cfg.max_request_bytes + GRPC_RECV_HEADROOM;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_grpc_health(node.clone(), health_reporter));

    // One client port, as etcd's: gRPC (h2c) and plain HTTP/1.1 (health,
    // metrics, version) share it; a request that is neither a known gRPC
    // service nor an HTTP route gets gRPC's UNIMPLEMENTED or a 404.
    let routes = tonic::service::Routes::from(
        http::router(node.clone()).merge(gateway::router(node.clone())),
    )
    .add_service(health_service)
    .add_service(
        pb::kv_server::KvServer::new(kv::KvService::new(node.clone()))
            .max_decoding_message_size(recv_limit)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        pb::watch_server::WatchServer::new(watch::WatchService::new(node.clone()))
            .max_decoding_message_size(recv_limit),
    )
    .add_service(
        pb::maintenance_server::MaintenanceServer::new(maintenance::MaintenanceService::new(
            node.clone(),
        ))
        .max_decoding_message_size(recv_limit),
    )
    .add_service(
        pb::lease_server::LeaseServer::new(lease::LeaseService::new(node.clone()))
            .max_decoding_message_size(recv_limit),
    )
    .add_service(
        pb::v3lockpb::lock_server::LockServer::new(lock::LockService::new(node.clone()))
            .max_decoding_message_size(recv_limit),
    )
    .add_service(
        pb::v3electionpb::election_server::ElectionServer::new(election::ElectionService::new(
            node.clone(),
        ))
        .max_decoding_message_size(recv_limit),
    )
    .add_service(
        pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(node.clone()))
            .max_decoding_message_size(recv_limit),
    )
    .add_service(pb::auth_server::AuthServer::new(auth::AuthService::new(
        node.clone(),
    )));
    let client_router = Server::builder()
        .accept_http1(true)
        .layer(grpc_metrics::GrpcMetricsLayer::new(node.metrics_handle()))
        .add_routes(routes.prepare());
    let client_stopped = stopped(stop_rx.clone());
    let client_server: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match listeners
        .client_tls
    {
        Some(tls) => {
            let conns = tls
                .accept(incoming(listeners.client))
                .map(|conn| conn.map(authority::Http2Authority::new));
            Box::pin(client_router.serve_with_incoming_shutdown(conns, client_stopped))
        }
        None => Box::pin(
            client_router
                .serve_with_incoming_shutdown(client_incoming(listeners.client), client_stopped),
        ),
    };

    let mut peer_builder = Server::builder();
    if let Some(tls) = node.peer_tls() {
        peer_builder = peer_builder
            .tls_config(tls.server_config())
            .map_err(|e| crate::Error::Io(std::io::Error::other(e.to_string())))?;
    }
    let peer_server = peer_builder
        .add_service(peer::service(node.clone()))
        .serve_with_incoming_shutdown(incoming(listeners.peer), stopped(stop_rx.clone()));

    let http_server = async {
        match listeners.metrics {
            Some(listener) => http::serve(node.clone(), listener, stopped(stop_rx)).await,
            None => Ok(()),
        }
    };

    tracing::info!(
        client = %cfg.listen_client,
        client_tls = cfg.client_tls.is_some(),
        peer = %cfg.listen_peer,
        metrics = ?cfg.listen_metrics,
        "serving"
    );
    let grpc = async {
        tokio::try_join!(client_server, peer_server)
            .map_err(|e| crate::Error::Io(std::io::Error::other(e.to_string())))
    };
    tokio::try_join!(grpc, http_server)?;
    Ok(())
}

/// Keeps `grpc.health.v1.Health` in step with the node: SERVING while it
/// knows a leader, NOT_SERVING while it does not.
async fn report_grpc_health(node: Arc<Node>, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut rx = node.raft().metrics();
    let mut last = None;
    loop {
        let status = if crate::node::leader_of(&rx.borrow_and_update()).is_some() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            for service in ["", "etcdserverpb.KV"] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(status);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accepted connections with Nagle's algorithm off: replies are small and
/// latency matters more than packing.
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Client connections, their HTTP/2 `:authority` made acceptable to the
/// server (see `authority.rs`).
fn client_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<authority::Http2Authority<TcpStream>>> {
    incoming(listener).map(|conn| conn.map(authority::Http2Authority::new))
}
