//! `Client`: a small client for etcd's v3 API with endpoint failover, used by
//! `kvctl` and the tests. It works against raftkv and etcd alike.
//!
//! Failover: a call goes to the last endpoint that worked. If that endpoint
//! cannot be connected to, the next one is tried, for every call. A read
//! (`Range`, `MemberList`) also moves on when the endpoint answers
//! `UNAVAILABLE`; a write never does once it was sent, because it may have
//! been applied.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::pb;
use crate::pb::auth_client::AuthClient;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::kv_client::KvClient;
use crate::pb::lease_client::LeaseClient;
use crate::pb::maintenance_client::MaintenanceClient;
use crate::transport::innermost_cause;

/// The endpoints `kvctl` uses by default: the local cluster of `make run`.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379";

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{}", .0.message())]
    Status(Status),
    /// No endpoint could be reached.
    #[error("no endpoint is reachable ({})", .0.join("; "))]
    Unreachable(Vec<String>),
    /// The one endpoint asked could not be reached.
    #[error("unreachable: {0}")]
    Down(String),
    /// An endpoint is not a valid address.
    #[error("invalid endpoint '{0}'")]
    InvalidEndpoint(String),
    /// The TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The gRPC code, if the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// A user name and password to authenticate with (`--user`).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, .. }}", self.user)
    }
}

/// The token a client got by authenticating, sent with each call after.
#[derive(Clone, Default, Debug)]
pub struct Token(Arc<RwLock<Option<AsciiMetadataValue>>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = self.0.read().unwrap_or_else(|e| e.into_inner()).clone() {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

impl Token {
    /// Authenticates over `ch` with `credentials`, unless there are none
    /// or a token is held already. A server with auth off is no error
    /// (the client carries on without a token, as etcdctl does).
    async fn obtain(&self, ch: &Channel, credentials: Option<&Credentials>) -> Result<(), Status> {
        let Some(c) = credentials else {
            return Ok(());
        };
        if self.0.read().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Ok(());
        }
        let req = pb::AuthenticateRequest {
            name: c.user.clone(),
            password: c.password.clone(),
        };
        match AuthClient::new(ch.clone()).authenticate(req).await {
            Ok(resp) => {
                let token = AsciiMetadataValue::try_from(resp.into_inner().token)
                    .map_err(|_| Status::internal("the server's token is not ASCII"))?;
                *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
                Ok(())
            }
            Err(s) if s.message() == "etcdserver: authentication is not enabled" => Ok(()),
            Err(s) => Err(s),
        }
    }
}

/// A connection whose calls carry the client's token, if it has one.
pub type Conn = InterceptedService<Channel, Token>;

/// How to reach the servers: timeouts for connecting and for each call,
/// TLS, and as whom.
#[derive(Debug, Clone)]
pub struct Dial {
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// TLS settings (`--cacert`, `--cert`, `--key`): with them an endpoint
    /// without a scheme is dialed over TLS; an `https://` endpoint always
    /// is (trusting the system's CAs when no `--cacert` is given).
    pub tls: Option<ClientTlsConfig>,
    /// Whom to authenticate as (`None`: send no token; with a client
    /// certificate, the server may take its common name as the user).
    pub credentials: Option<Credentials>,
}

impl Default for Dial {
    fn default() -> Self {
        Dial {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(10),
            tls: None,
            credentials: None,
        }
    }
}

impl Dial {
    /// TLS settings from PEM files: the CA to trust and the client's own
    /// certificate and key (both or neither).
    pub fn with_tls_files(
        mut self,
        cacert: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let read = |path: &std::path::Path, flag: &str| {
            std::fs::read(path)
                .map_err(|e| ClientError::Tls(format!("{flag} {}: {e}", path.display())))
        };
        let mut tls = ClientTlsConfig::new();
        match cacert {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--cacert")?)),
            None => tls = tls.with_native_roots(),
        }
        match (cert, key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--cert")?,
                    read(key, "--key")?,
                ))
            }
            (None, None) => {}
            _ => return Err(ClientError::Tls("--cert and --key go together".into())),
        }
        if cacert.is_some() || cert.is_some() {
            self.tls = Some(tls);
        }
        Ok(self)
    }
}

/// Whether a call is safe to send again to another endpoint after an
/// `UNAVAILABLE` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Read,
    Write,
}

/// An etcd v3 API client over a list of endpoints.
pub struct Client {
    endpoints: Vec<String>,
    dial: Dial,
    channels: HashMap<usize, Channel>,
    /// The endpoint that last worked.
    preferred: usize,
    /// The token from authenticating with `dial.credentials`.
    token: Token,
}

impl Client {
    /// A client for `endpoints` (`host:port` or `http://host:port`). Connects
    /// lazily, on the first call.
    pub fn new(endpoints: Vec<String>, dial: &Dial) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint(String::new()));
        }
        for e in &endpoints {
            url(e, dial)?;
        }
        Ok(Client {
            endpoints,
            dial: dial.clone(),
            channels: HashMap::new(),
            preferred: 0,
            token: Token::default(),
        })
    }

    /// The configured endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn channel(&mut self, index: usize) -> Result<Channel, String> {
        if let Some(ch) = self.channels.get(&index) {
            return Ok(ch.clone());
        }
        let endpoint = &self.endpoints[index];
        let ch = connect(endpoint, &self.dial).await?;
        self.channels.insert(index, ch.clone());
        Ok(ch)
    }

    /// A connection to endpoint `index` with a token (authenticating
    /// first, once, if there are credentials). `Err(Ok(why))`: the endpoint
    /// cannot be reached; `Err(Err(status))`: it refused to authenticate.
    async fn conn(&mut self, index: usize) -> Result<Conn, Result<String, Status>> {
        let ch = self.channel(index).await.map_err(Ok)?;
        if let Err(status) = self.token.obtain(&ch, self.dial.credentials.as_ref()).await {
            if crate::transport::is_connect_error(&status) {
                self.channels.remove(&index);
                return Err(Ok(innermost_cause(&status)));
            }
            return Err(Err(status));
        }
        Ok(InterceptedService::new(ch, self.token.clone()))
    }

    /// Runs `call` on the preferred endpoint, failing over as described in
    /// the module docs.
    async fn call<T, F, Fut>(&mut self, retry: Retry, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut failures = Vec::new();
        let n = self.endpoints.len();
        for attempt in 0..n {
            let index = (self.preferred + attempt) % n;
            let channel = match self.conn(index).await {
                Ok(ch) => ch,
                Err(Ok(e)) => {
                    failures.push(format!("{}: {e}", self.endpoints[index]));
                    continue;
                }
                Err(Err(status)) => return Err(ClientError::Status(status)),
            };
            match call(channel).await {
                Ok(v) => {
                    self.preferred = index;
                    return Ok(v);
                }
                Err(status) => {
                    let unsent = crate::transport::is_connect_error(&status);
                    let may_retry =
                        unsent || (retry == Retry::Read && status.code() == Code::Unavailable);
                    if unsent {
                        // Reconnect on the next use of this endpoint.
                        self.channels.remove(&index);
                    }
                    if !may_retry || attempt + 1 == n {
                        return Err(ClientError::Status(status));
                    }
                    failures.push(format!("{}: {}", self.endpoints[index], status.message()));
                }
            }
        }
        Err(ClientError::Unreachable(failures))
    }

    pub async fn range(&mut self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.call(Retry::Read, |ch| {
            let req = req.clone();
            async move { Ok(kv_client(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn put(&mut self, req: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.call(Retry::Write, |ch| {
            let req = req.clone();
            async move { Ok(kv_client(ch).put(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete_range(
        &mut self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.call(Retry::Write, |ch| {
            let req = req.clone();
            async move { Ok(kv_client(ch).delete_range(req).await?.into_inner()) }
        })
        .await
    }

    /// A transaction. Retried elsewhere only if it was never sent, or if it
    /// only reads.
    pub async fn txn(&mut self, req: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        let retry = if txn_reads_only(&req) {
            Retry::Read
        } else {
            Retry::Write
        };
        self.call(retry, |ch| {
            let req = req.clone();
            async move { Ok(kv_client(ch).txn(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn compact(
        &mut self,
        req: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, ClientError> {
        self.call(Retry::Write, |ch| async move {
            Ok(kv_client(ch).compact(req).await?.into_inner())
        })
        .await
    }

    /// One call to the `Auth` service, made as a write: not sent again
    /// elsewhere once sent.
    pub async fn auth<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthClient<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call(Retry::Write, |ch| call(AuthClient::new(ch)))
            .await
    }

    /// A channel to the first endpoint that accepts a connection, for
    /// streams (a stream is not retried; a caller re-creates it).
    pub async fn any_channel(&mut self) -> Result<Conn, ClientError> {
        let mut failures = Vec::new();
        for attempt in 0..self.endpoints.len() {
            let index = (self.preferred + attempt) % self.endpoints.len();
            match self.conn(index).await {
                Ok(ch) => {
                    self.preferred = index;
                    return Ok(ch);
                }
                Err(Ok(e)) => failures.push(format!("{}: {e}", self.endpoints[index])),
                Err(Err(status)) => return Err(ClientError::Status(status)),
            }
        }
        Err(ClientError::Unreachable(failures))
    }

    pub async fn lease_grant(
        &mut self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, ClientError> {
        self.call(Retry::Write, |ch| async move {
            Ok(LeaseClient::new(ch).lease_grant(req).await?.into_inner())
        })
        .await
    }

    pub async fn lease_revoke(
        &mut self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.call(Retry::Write, |ch| async move {
            Ok(LeaseClient::new(ch).lease_revoke(req).await?.into_inner())
        })
        .await
    }

    pub async fn lease_time_to_live(
        &mut self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ClientError> {
        self.call(Retry::Read, |ch| async move {
            Ok(LeaseClient::new(ch)
                .lease_time_to_live(req)
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn lease_leases(&mut self) -> Result<pb::LeaseLeasesResponse, ClientError> {
        self.call(Retry::Read, |ch| async move {
            Ok(LeaseClient::new(ch)
                .lease_leases(pb::LeaseLeasesRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn member_add(
        &mut self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, ClientError> {
        self.call(Retry::Write, |ch| {
            let req = req.clone();
            async move { Ok(ClusterClient::new(ch).member_add(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn member_remove(
        &mut self,
        id: u64,
    ) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.call(Retry::Write, |ch| async move {
            let req = pb::MemberRemoveRequest { id };
            Ok(ClusterClient::new(ch)
                .member_remove(req)
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn member_update(
        &mut self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ClientError> {
        self.call(Retry::Write, |ch| {
            let req = req.clone();
            async move {
                Ok(ClusterClient::new(ch)
                    .member_update(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    pub async fn member_promote(
        &mut self,
        id: u64,
    ) -> Result<pb::MemberPromoteResponse, ClientError> {
        self.call(Retry::Write, |ch| async move {
            let req = pb::MemberPromoteRequest { id };
            Ok(ClusterClient::new(ch)
                .member_promote(req)
                .await?
                .into_inner())
        })
        .await
    }

    /// `Maintenance.Snapshot` of the first endpoint that answers: the
    /// stream of a snapshot file's pieces.
    pub async fn snapshot(
        &mut self,
    ) -> Result<tonic::Streaming<pb::SnapshotResponse>, ClientError> {
        self.call(Retry::Read, |ch| async move {
            Ok(MaintenanceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .snapshot(pb::SnapshotRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn member_list(&mut self) -> Result<pb::MemberListResponse, ClientError> {
        self.call(Retry::Read, |ch| async move {
            Ok(ClusterClient::new(ch)
                .member_list(pb::MemberListRequest {
                    linearizable: false,
                })
                .await?
                .into_inner())
        })
        .await
    }
}

/// `Status` of one endpoint, without failover, over a channel kept between
/// calls: what `endpoint status` (and its `--watch`) polls.
pub struct StatusProbe {
    endpoint: String,
    dial: Dial,
    channel: Option<Channel>,
    token: Token,
}

impl StatusProbe {
    pub fn new(endpoint: &str, dial: &Dial) -> Result<Self, ClientError> {
        url(endpoint, dial)?;
        Ok(StatusProbe {
            endpoint: endpoint.to_string(),
            dial: dial.clone(),
            channel: None,
            token: Token::default(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint's status; a down endpoint is an error.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, ClientError> {
        let channel = match &self.channel {
            Some(ch) => ch.clone(),
            None => {
                let ch = connect(&self.endpoint, &self.dial)
                    .await
                    .map_err(ClientError::Down)?;
                self.channel = Some(ch.clone());
                ch
            }
        };
        let answer = match self
            .token
            .obtain(&channel, self.dial.credentials.as_ref())
            .await
        {
            Ok(()) => {
                MaintenanceClient::new(InterceptedService::new(channel, self.token.clone()))
                    .status(pb::StatusRequest {})
                    .await
            }
            Err(status) => Err(status),
        };
        match answer {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => {
                // Reconnect next time: the node may have restarted.
                self.channel = None;
                match status.code() {
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                        Err(ClientError::Down(innermost_cause(&status)))
                    }
                    _ => Err(ClientError::Status(status)),
                }
            }
        }
    }
}

fn txn_reads_only(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(t)) => txn_reads_only(t),
            _ => false,
        })
}

fn kv_client(ch: Conn) -> KvClient<Conn> {
    KvClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The endpoint to dial for `endpoint` (`host:port`, `http://host:port` or
/// `https://host:port`): over TLS for `https://`, and for a bare
/// `host:port` when TLS settings were given.
fn url(endpoint: &str, dial: &Dial) -> Result<Endpoint, ClientError> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_string()
    } else if dial.tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    let ep = Endpoint::from_shared(with_scheme)
        .map_err(|_| ClientError::InvalidEndpoint(endpoint.to_string()))?;
    if ep.uri().scheme_str() != Some("https") {
        return Ok(ep);
    }
    let tls = dial
        .tls
        .clone()
        .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
    ep.tls_config(tls)
        .map_err(|e| ClientError::Tls(format!("{endpoint}: {}", innermost_cause(&e))))
}

/// A connection to `endpoint`, made within `dial`'s connect timeout.
pub async fn connect(endpoint: &str, dial: &Dial) -> Result<Channel, String> {
    let ep = url(endpoint, dial)
        .map_err(|e| e.to_string())?
        .connect_timeout(dial.connect_timeout)
        .timeout(dial.command_timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(dial.connect_timeout, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(innermost_cause(&e)),
        Err(_) => Err("connection timed out".into()),
    }
}
