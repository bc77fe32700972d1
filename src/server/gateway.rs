//! etcd's JSON gateway on the client port (grpc-gateway, as etcd serves
//! it): `POST /v3/kv/range` with a JSON `RangeRequest` answers a JSON
//! `RangeResponse`, and so on for the unary calls of KV, Lease, Cluster and
//! Maintenance, and Auth (a token from `/v3/auth/authenticate` goes in the
//! `Authorization` header). The JSON is protobuf's mapping as etcd's gateway writes it:
//! the proto's field names, int64 as strings, bytes as base64, defaults
//! left out (serde from pbjson, see `build.rs`). Errors are grpc-gateway's
//! body `{"error","code","message"}` with its HTTP status for the gRPC code.
//! Each route calls the same service the gRPC route does, so checks and
//! errors are the same.
//!
//! `POST /v3/watch` takes one `WatchRequest` and streams the watch's
//! responses as they come, one JSON object a line (`{"result": ...}`, or
//! `{"error": ...}` last), for as long as the client reads.
//! `POST /v3/lease/keepalive` renews once and answers one such line, as
//! etcd's gateway does (its request stream ends after the one request).

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::maintenance::MaintenanceService;
use super::watch::WatchService;
use crate::node::Node;
use crate::pb;
use crate::pb::auth_server::Auth;
use crate::pb::cluster_server::Cluster;
use crate::pb::kv_server::Kv;
use crate::pb::lease_server::Lease;
use crate::pb::maintenance_server::Maintenance;

/// The services the gateway calls.
#[derive(Clone)]
struct Services {
    kv: Arc<KvService>,
    lease: Arc<LeaseService>,
    cluster: Arc<ClusterService>,
    maintenance: Arc<MaintenanceService>,
    watch: Arc<WatchService>,
    auth: Arc<AuthService>,
    node: Arc<Node>,
}

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// grpc-gateway's error body.
fn error(status: &Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    json_response(http_status(status.code()), body.to_string())
}

/// `request` with the HTTP `Authorization` header as gRPC's
/// `authorization` metadata, as grpc-gateway passes it on. (No client
/// certificate stands for a user here, as in etcd's gateway.)
fn with_token<T>(headers: &HeaderMap, request: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok())
    {
        request.metadata_mut().insert("authorization", token);
    }
    request
}

/// Decodes the JSON request (an empty body is the empty request), calls
/// the service, encodes its answer.
async fn unary<Req, Resp, F, Fut>(headers: HeaderMap, body: Bytes, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(&Status::invalid_argument(e.to_string())),
        }
    };
    match call(with_token(&headers, request)).await {
        Ok(resp) => match serde_json::to_string(&resp.into_inner()) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(status) => error(&status),
    }
}

/// `/v3/watch`: one request in, the watch's responses out as JSON lines.
/// The request body ending does not end the watch (as in etcd's gateway):
/// the client closing the connection does.
async fn watch(State(s): State<Services>, headers: HeaderMap, body: Bytes) -> Response {
    use futures::StreamExt;
    let request: pb::WatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&Status::invalid_argument(e.to_string())),
    };
    let who = match super::auth::caller(&s.node, &with_token(&headers, ())) {
        Ok(who) => who,
        Err(e) => return error(&Status::from(e)),
    };
    let requests = futures::stream::iter([Ok(request)]).chain(futures::stream::pending());
    let responses = match s.watch.open(who, Box::pin(requests), false) {
        Ok(r) => r,
        Err(e) => return error(&Status::from(e)),
    };
    let lines = responses.map(|item| {
        let line = match item {
            Ok(resp) => serde_json::json!({ "result": resp }),
            Err(status) => serde_json::json!({ "error": {
                "grpc_code": status.code() as i32,
                "http_code": http_status(status.code()).as_u16(),
                "message": status.message(),
                "http_status": http_status(status.code()).canonical_reason().unwrap_or(""),
            }}),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(line.to_string() + "\n"))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// `/v3/lease/keepalive`: one renewal, as one JSON line.
async fn keep_alive(State(s): State<Services>, headers: HeaderMap, body: Bytes) -> Response {
    let request: pb::LeaseKeepAliveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&Status::invalid_argument(e.to_string())),
    };
    let who = match super::auth::caller(&s.node, &with_token(&headers, ())) {
        Ok(who) => who,
        Err(e) => return error(&Status::from(e)),
    };
    match super::lease::renew(&s.node, who.as_deref(), request.id).await {
        Ok(resp) => json_response(
            StatusCode::OK,
            serde_json::json!({ "result": resp }).to_string() + "\n",
        ),
        Err(status) => error(&status),
    }
}

/// One route per unary call: `$path` decodes `$req` and calls `$service.$method`.
macro_rules! routes {
    ($router:expr, $( $path:literal => $service:ident . $method:ident ($req:ty) ),* $(,)?) => {
        $router
        $(
            .route($path, post(|State(s): State<Services>, headers: HeaderMap, body: Bytes| async move {
                unary(headers, body, |r: tonic::Request<$req>| async move { s.$service.$method(r).await }).await
            }))
        )*
    };
}

/// The gateway's routes.
pub fn router(node: Arc<Node>) -> Router {
    let services = Services {
        kv: Arc::new(KvService::new(node.clone())),
        lease: Arc::new(LeaseService::new(node.clone())),
        cluster: Arc::new(ClusterService::new(node.clone())),
        maintenance: Arc::new(MaintenanceService::new(node.clone())),
        watch: Arc::new(WatchService::new(node.clone())),
        auth: Arc::new(AuthService::new(node.clone())),
        node,
    };
    let router: Router<Services> = Router::new()
        .route("/v3/watch", post(watch))
        .route("/v3/lease/keepalive", post(keep_alive));
    routes!(router,
        "/v3/kv/range" => kv.range(pb::RangeRequest),
        "/v3/kv/put" => kv.put(pb::PutRequest),
        "/v3/kv/deleterange" => kv.delete_range(pb::DeleteRangeRequest),
        "/v3/kv/txn" => kv.txn(pb::TxnRequest),
        "/v3/kv/compaction" => kv.compact(pb::CompactionRequest),
        "/v3/lease/grant" => lease.lease_grant(pb::LeaseGrantRequest),
        "/v3/lease/revoke" => lease.lease_revoke(pb::LeaseRevokeRequest),
        "/v3/kv/lease/revoke" => lease.lease_revoke(pb::LeaseRevokeRequest),
        "/v3/lease/timetolive" => lease.lease_time_to_live(pb::LeaseTimeToLiveRequest),
        "/v3/kv/lease/timetolive" => lease.lease_time_to_live(pb::LeaseTimeToLiveRequest),
        "/v3/lease/leases" => lease.lease_leases(pb::LeaseLeasesRequest),
        "/v3/kv/lease/leases" => lease.lease_leases(pb::LeaseLeasesRequest),
        "/v3/cluster/member/list" => cluster.member_list(pb::MemberListRequest),
        "/v3/cluster/member/add" => cluster.member_add(pb::MemberAddRequest),
        "/v3/cluster/member/remove" => cluster.member_remove(pb::MemberRemoveRequest),
        "/v3/cluster/member/update" => cluster.member_update(pb::MemberUpdateRequest),
        "/v3/cluster/member/promote" => cluster.member_promote(pb::MemberPromoteRequest),
        "/v3/maintenance/status" => maintenance.status(pb::StatusRequest),
        "/v3/maintenance/alarm" => maintenance.alarm(pb::AlarmRequest),
        "/v3/maintenance/defragment" => maintenance.defragment(pb::DefragmentRequest),
        "/v3/maintenance/hash" => maintenance.hash(pb::HashRequest),
        "/v3/maintenance/hashkv" => maintenance.hash_kv(pb::HashKvRequest),
        "/v3/auth/enable" => auth.auth_enable(pb::AuthEnableRequest),
        "/v3/auth/disable" => auth.auth_disable(pb::AuthDisableRequest),
        "/v3/auth/status" => auth.auth_status(pb::AuthStatusRequest),
        "/v3/auth/authenticate" => auth.authenticate(pb::AuthenticateRequest),
        "/v3/auth/user/add" => auth.user_add(pb::AuthUserAddRequest),
        "/v3/auth/user/get" => auth.user_get(pb::AuthUserGetRequest),
        "/v3/auth/user/list" => auth.user_list(pb::AuthUserListRequest),
        "/v3/auth/user/delete" => auth.user_delete(pb::AuthUserDeleteRequest),
        "/v3/auth/user/changepw" => auth.user_change_password(pb::AuthUserChangePasswordRequest),
        "/v3/auth/user/grant" => auth.user_grant_role(pb::AuthUserGrantRoleRequest),
        "/v3/auth/user/revoke" => auth.user_revoke_role(pb::AuthUserRevokeRoleRequest),
        "/v3/auth/role/add" => auth.role_add(pb::AuthRoleAddRequest),
        "/v3/auth/role/get" => auth.role_get(pb::AuthRoleGetRequest),
        "/v3/auth/role/list" => auth.role_list(pb::AuthRoleListRequest),
        "/v3/auth/role/delete" => auth.role_delete(pb::AuthRoleDeleteRequest),
        "/v3/auth/role/grant" => auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest),
        "/v3/auth/role/revoke" => auth.role_revoke_permission(pb::AuthRoleRevokePermissionRequest),
    )
    .with_state(services)
}
