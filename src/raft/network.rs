//! Outbound peer traffic: openraft's `RaftNetworkFactory` over our `Peer`
//! gRPC service, and the pool of long-lived channels it shares with write
//! forwarding (`node.rs`).
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
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, RPCError, RaftError, VoteRequest, VoteResponse,
};
use super::{Node, NodeId, TypeConfig};
use crate::codec;
use crate::pb::peer::peer_client::PeerClient;
use crate::pb::peer::Payload;

/// Largest peer message either side accepts: a batch of entries or a snapshot
/// chunk may be far over tonic's 4 MiB default.
pub const PEER_MAX_MESSAGE_BYTES: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Long-lived channels to peers, keyed by node id. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Addresses to dial instead of a peer's advertised one (tests route
    /// peer traffic through a fault-injecting proxy this way).
    dial_overrides: Arc<BTreeMap<NodeId, String>>,
}

impl PeerClients {
    /// A pool that dials peer `id` at `dial_overrides[id]` when present.
    pub fn new(dial_overrides: BTreeMap<NodeId, String>) -> Self {
        PeerClients {
            channels: Arc::default(),
            dial_overrides: Arc::new(dial_overrides),
        }
    }

    /// The client for peer `id` at `addr`, reusing its channel if the address
    /// has not changed. Connects lazily: this never blocks.
    pub fn get(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        let addr = self.dial_overrides.get(&id).map_or(addr, String::as_str);
        let mut channels = self
            .channels
            .lock()
            .expect("invariant: peer pool lock is never poisoned");
        let channel = match channels.get(&id) {
            Some((known, channel)) if known == addr => channel.clone(),
            _ => {
                let channel = Endpoint::from_shared(format!("http://{addr}"))?
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
            .max_decoding_message_size(PEER_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MAX_MESSAGE_BYTES))
    }
}

/// Whether a failed call never reached the peer (the connection could not be
/// made), so it certainly had no effect there.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        if err.to_string().contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}

/// Creates a `PeerConnection` per replication target.
pub struct PeerNetwork {
    clients: PeerClients,
}

impl PeerNetwork {
    pub fn new(clients: PeerClients) -> Self {
        PeerNetwork { clients }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            clients: self.clients.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    clients: PeerClients,
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
        Resp: DeserializeOwned,
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
        let reply = reply.map_err(|status| {
            if is_connect_error(&status) {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<E>> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await
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
