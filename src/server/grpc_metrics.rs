//! A tower layer on the client gRPC server that counts every RPC and times
//! it, by method and status code (`grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, as go-grpc-prometheus names them).
//!
//! An RPC is counted when its response ends, with the code it ended with:
//! from the head (tonic sends an error as a trailers-only response) or
//! from the trailers; a stream such as Watch counts when it closes, not
//! when it opens.

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
    ResBody: http_body::Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
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
        let call = grpc.then(|| {
            let (service, method) = service_and_method(request.uri().path());
            Call {
                metrics: self.metrics.clone(),
                service: service.to_string(),
                method: method.to_string(),
                started: Instant::now(),
                code: None,
            }
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut call = call;
            if let Some(call) = &mut call {
                // An error comes as a trailers-only response: the code is
                // in the head.
                call.code = grpc_status(response.headers());
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// The gRPC status code in a header map, if it has one.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// One RPC being measured: counted once, when its response ends.
struct Call {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    started: Instant,
    /// The code the response carried (in its head or its trailers).
    code: Option<tonic::Code>,
}

impl Call {
    /// Counts the RPC with the code it carried, else `otherwise`.
    fn finish(self, otherwise: tonic::Code) {
        self.metrics.observe_grpc(
            rpc_type(&self.method),
            &self.service,
            &self.method,
            code_name(self.code.unwrap_or(otherwise)),
            self.started.elapsed(),
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its RPC when it ends: a unary call when
    /// its trailers are sent, a stream (Watch, LeaseKeepAlive, Snapshot)
    /// when it closes, with the code it closed with; one the client
    /// abandons counts as `Canceled`, as grpc-go's server counts it.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut()) {
                    call.code = grpc_status(trailers).or(call.code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish(tonic::Code::Unknown);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish(tonic::Code::Ok);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
