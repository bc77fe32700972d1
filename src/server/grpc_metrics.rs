//! A tower layer on the client gRPC server that counts every RPC and times
//! it, by method and status code (`grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, as go-grpc-prometheus names them).
//!
//! The code comes from the response head: tonic sends an error as a
//! trailers-only response with `grpc-status` in the headers, so a head
//! without it is a success.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Services whose methods are labelled by name; anything else is `unknown`,
/// so junk paths cannot grow the label set.
const KNOWN_SERVICES: [&str; 7] = [
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Cluster",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Auth",
    "grpc.health.v1.Health",
];

/// Adds RPC metrics to a service.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service `GrpcMetricsLayer` wraps around the gRPC routes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// `(service, method)` from a gRPC path such as `/etcdserverpb.KV/Put`.
fn service_and_method(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method))
            if KNOWN_SERVICES.contains(&service)
                && method.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (service, method)
        }
        _ => ("unknown", "unknown"),
    }
}

/// go-grpc-prometheus's `grpc_type` for a method.
fn rpc_type(method: &str) -> &'static str {
    match method {
        "Watch" | "LeaseKeepAlive" => "bidi_stream",
        "Snapshot" => "server_stream",
        _ => "unary",
    }
}

/// The name of a gRPC status code, as Go prints it (`OK`, `Unavailable`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The client port also serves plain HTTP (health, metrics): only
        // gRPC requests are RPCs.
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return Box::pin(self.inner.call(request));
        }
        let (service, method) = service_and_method(request.uri().path());
        let (service, method) = (service.to_string(), method.to_string());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.observe_grpc(
                rpc_type(&method),
                &service,
                &method,
                code_name(code),
                started.elapsed(),
            );
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_paths() {
        assert_eq!(
            service_and_method("/etcdserverpb.KV/Put"),
            ("etcdserverpb.KV", "Put")
        );
        assert_eq!(
            service_and_method("/evil.Service/Method"),
            ("unknown", "unknown")
        );
        assert_eq!(
            service_and_method("/etcdserverpb.KV/a%20b"),
            ("unknown", "unknown")
        );
        assert_eq!(service_and_method("garbage"), ("unknown", "unknown"));
        assert_eq!(rpc_type("Watch"), "bidi_stream");
        assert_eq!(code_name(tonic::Code::Unavailable), "Unavailable");
    }
}
