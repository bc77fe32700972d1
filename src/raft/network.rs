//! Outbound peer traffic: openraft's `RaftNetworkFactory` over our `Peer`
//! gRPC service, and the pool of long-lived channels it shares with the
//! follower's calls to the leader (`node/to_leader.rs`). Followers' replies
//! are stamped in `acks`; AppendEntries carry at most `APPEND_BATCH_BYTES`
//! of entries each.
//!
//! One tonic channel per peer, created lazily on first use and reused for
//! every RPC after. A peer that refuses the connection is `Unreachable` (so
//! openraft backs off); any other transport failure is a `NetworkError`; an
//! error the peer's Raft returned is a `RemoteError`.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use prometheus::Histogram;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::acks::Acks;
use super::inbound::MAX_TERM;
use super::typ::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, InstallSnapshotError,
    InstallSnapshotRequest, InstallSnapshotResponse, RPCError, RaftError, Vote, VoteRequest,
    VoteResponse,
};
use super::{MemberAddr, NodeId, TypeConfig};
use crate::codec;
use crate::metrics::Metrics;
use crate::pb::peer::peer_client::PeerClient;
use crate::pb::peer::Payload;
use crate::tls::PeerTls;
use crate::transport::is_connect_error;

/// An AppendEntries stops taking entries once their encoding passes this
/// (it always takes one): openraft hands over up to 300 entries at a time,
/// and each may hold a whole proposal batch.
pub const APPEND_BATCH_BYTES: usize = 4 << 20;
/// The largest snapshot chunk sent (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 3 << 20;
/// Largest reply taken from a peer this member dialed itself (a forwarded
/// write's reply carries what it read or deleted, with no other bound).
const MAX_REPLY_BYTES: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Long-lived channels to peers, keyed by node id. Cheap to clone.
#[derive(Clone)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Addresses to dial instead of a peer's advertised one (tests route
    /// peer traffic through a fault-injecting proxy this way).
    dial_overrides: Arc<BTreeMap<String, String>>,
    /// The largest message a peer accepts (see `server::serve`).
    max_message_bytes: usize,
    /// TLS to peers, if the peer port uses it.
    tls: Option<Arc<PeerTls>>,
    /// Whether each peer answered the last Raft RPC sent to it: its changes
    /// are logged, once each way.
    reachable: Arc<Mutex<HashMap<NodeId, bool>>>,
}

impl PeerClients {
    /// A pool that dials a peer advertised at `addr` at
    /// `dial_overrides[addr]` when present,
    /// over `tls` if given, and sends messages of up to `max_message_bytes`.
    pub fn new(
        dial_overrides: BTreeMap<String, String>,
        max_message_bytes: usize,
        tls: Option<Arc<PeerTls>>,
    ) -> Self {
        PeerClients {
            channels: Arc::default(),
            dial_overrides: Arc::new(dial_overrides),
            max_message_bytes,
            tls,
            reachable: Arc::default(),
        }
    }

    /// Records whether peer `id` answered a Raft RPC; logs a change (a peer
    /// going away once, not at every retry, and coming back).
    fn note_reachable(&self, id: NodeId, addr: &str, outcome: Result<(), &str>) {
        let now = outcome.is_ok();
        let before = self
            .reachable
            .lock()
            .expect("invariant: reachability lock is never poisoned")
            .insert(id, now);
        match (before, outcome) {
            (Some(true) | None, Err(why)) => {
                tracing::warn!(peer = id, %addr, reason = why, "peer unreachable")
            }
            (Some(false), Ok(())) => tracing::info!(peer = id, %addr, "peer reachable again"),
            _ => {}
        }
    }

    /// The client for peer `id` at `addr`, reusing its channel if the address
    /// has not changed. Connects lazily: this never blocks.
    pub fn get(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        // A certificate names the address the peer advertises, whatever
        // address it is dialed at.
        let host = crate::config::host_of(addr);
        let addr = self.dial_overrides.get(addr).map_or(addr, String::as_str);
        let mut channels = self
            .channels
            .lock()
            .expect("invariant: peer pool lock is never poisoned");
        let channel = match channels.get(&id) {
            Some((known, channel)) if known == addr => channel.clone(),
            _ => {
                let endpoint = match &self.tls {
                    Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?
                        .tls_config(tls.client_config(host))?,
                    None => Endpoint::from_shared(format!("http://{addr}"))?,
                };
                let channel = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                channels.insert(id, (addr.to_string(), channel.clone()));
                channel
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_REPLY_BYTES)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// How many of `entries`, from the first, fit in `budget` encoded bytes;
/// at least one.
fn fitting_entries(entries: &[Entry], budget: usize) -> usize {
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        total = total.saturating_add(codec::encoded_len(entry));
        if total > budget {
            return i.max(1);
        }
    }
    entries.len()
}

/// Creates a `PeerConnection` per replication target.
pub struct PeerNetwork {
    clients: PeerClients,
    acks: Acks,
    metrics: Arc<Metrics>,
}

impl PeerNetwork {
    /// Sends over `clients`; stamps followers' acknowledgements in `acks`
    /// and times AppendEntries calls in `metrics`.
    pub fn new(clients: PeerClients, acks: Acks, metrics: Arc<Metrics>) -> Self {
        PeerNetwork {
            clients,
            acks,
            metrics,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberAddr) -> PeerConnection {
        let to = format!("{target:x}");
        PeerConnection {
            target,
            addr: node.addr.clone(),
            clients: self.clients.clone(),
            acks: self.acks.clone(),
            rtt: self.metrics.peer_rtt.with_label_values(&[&to]),
            append: self.metrics.peer_append.with_label_values(&[&to]),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    clients: PeerClients,
    acks: Acks,
    /// Times heartbeats to the target.
    rtt: Histogram,
    /// Times AppendEntries with entries to the target.
    append: Histogram,
}

/// Which peer RPC to invoke.
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned + Reply,
        E: StdError + DeserializeOwned,
    {
        let mut client = self
            .clients
            .get(self.target, &self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(ttl);
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let unreachable = |status: &tonic::Status| {
            is_connect_error(status)
                || matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                )
        };
        match &reply {
            Err(status) if unreachable(status) => {
                let why = crate::transport::innermost_cause(status);
                self.clients
                    .note_reachable(self.target, &self.addr, Err(&why));
            }
            _ => self.clients.note_reachable(self.target, &self.addr, Ok(())),
        }
        let reply = reply.map_err(|status| {
            if is_connect_error(&status) {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<E>> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))?;
        // A reply's higher vote becomes ours: never one whose term could
        // overflow (see `inbound`).
        if let Some(vote) = resp.vote().filter(|v| v.leader_id.term >= MAX_TERM) {
            let e = std::io::Error::other(format!("a reply with an out-of-range vote {vote}"));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        Ok(resp)
    }
}

/// A reply that may carry the peer's vote.
trait Reply {
    fn vote(&self) -> Option<&Vote>;
}

impl Reply for AppendEntriesResponse {
    fn vote(&self) -> Option<&Vote> {
        match self {
            openraft::raft::AppendEntriesResponse::HigherVote(v) => Some(v),
            _ => None,
        }
    }
}

impl Reply for VoteResponse {
    fn vote(&self) -> Option<&Vote> {
        Some(&self.vote)
    }
}

impl Reply for InstallSnapshotResponse {
    fn vote(&self) -> Option<&Vote> {
        Some(&self.vote)
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        // Send what fits; openraft sends the rest next.
        let all = rpc.entries.len();
        rpc.entries
            .truncate(fitting_entries(&rpc.entries, APPEND_BATCH_BYTES));
        let sent = std::time::Instant::now();
        let reply = self
            .call(Rpc::AppendEntries, &rpc, option.hard_ttl())
            .await?;
        let took = sent.elapsed().as_secs_f64();
        if rpc.entries.is_empty() {
            self.rtt.observe(took);
        } else {
            self.append.observe(took);
        }
        if !matches!(reply, AppendEntriesResponse::HigherVote(_)) {
            self.acks.record(self.target, rpc.vote, sent);
        }
        match reply {
            AppendEntriesResponse::Success if rpc.entries.len() < all => Ok(
                AppendEntriesResponse::PartialSuccess(rpc.entries.last().map(|e| e.log_id)),
            ),
            other => Ok(other),
        }
    }

    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}
