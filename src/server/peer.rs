//! The peer-facing service: decodes Raft RPCs and hands them to openraft, and
//! serves followers' forwarded writes, read-index requests, lease calls and
//! membership changes on the leader, and the leader's removal notices.
//!
//! Served on the peer port only, never with the client services. Bytes that
//! do not decode are answered with `INVALID_ARGUMENT`; Raft messages pass
//! `raft::Inbound`, forwarded writes the client API's checks; nothing a
//! peer sends can crash the node. Under peer TLS every call first passes
//! the certificate name checks (`tls::PeerTls::check_peer`).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::{Request, Response, Status};

use crate::codec;
use crate::error::Error;
use crate::node::{
    ForwardRequest, ForwardResults, LeaseCall, MemberChange, Node, PeerError, RemovedNotice,
};
use crate::pb::peer::peer_server::{Peer, PeerServer};
use crate::pb::peer::Payload;
use crate::raft::typ::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

/// The `raftkv.peer.Peer` service of one node.
pub struct PeerService {
    node: Arc<Node>,
}

/// The peer service of `node`, with its message size limit and, under
/// peer TLS, the peer certificate name checks on every call.
pub fn service(
    node: Arc<Node>,
) -> InterceptedService<PeerServer<PeerService>, impl Interceptor + Clone> {
    let limit = node.peer_message_limit();
    let checker = node.clone();
    let server = PeerServer::new(PeerService { node })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    InterceptedService::new(server, move |request: Request<()>| {
        if let Some(tls) = checker.peer_tls() {
            tls.check_peer(request.peer_certs().as_deref().map(Vec::as_slice))?;
        }
        Ok(request)
    })
}

fn decode<T: DeserializeOwned>(request: Request<Payload>) -> Result<T, Status> {
    codec::decode(&request.into_inner().data)
        .map_err(|e| Error::BadPeerMessage(format!("undecodable: {e}")).into())
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = codec::encode(value).map_err(Error::from)?;
    Ok(Response::new(Payload { data }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let started = std::time::Instant::now();
        let rpc: AppendEntriesRequest = decode(request)?;
        let carries_entries = !rpc.entries.is_empty();
        let answer = reply(&self.node.inbound().append_entries(rpc).await?);
        if carries_entries {
            self.node
                .metrics()
                .peer_append_handling
                .observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest = decode(request)?;
        reply(&self.node.inbound().vote(rpc).await?)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest = decode(request)?;
        reply(&self.node.inbound().install_snapshot(rpc).await?)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let request: ForwardRequest = decode(request)?;
        let results: ForwardResults = self
            .node
            .propose_forwarded(request.from, request.cmds)
            .await?
            .into_iter()
            .map(|r| r.map_err(|e| PeerError::from(&e)))
            .collect();
        reply(&results)
    }

    async fn lease(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let call: LeaseCall = decode(request)?;
        let answer = self
            .node
            .answer_lease_call(call)
            .await
            .map_err(|e| PeerError::from(&e));
        reply(&answer)
    }

    async fn members(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: MemberChange = decode(request)?;
        let answer = self
            .node
            .lead_member_change(change)
            .await
            .map_err(|e| PeerError::from(&e));
        reply(&answer)
    }

    async fn removed(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let notice: RemovedNotice = decode(request)?;
        self.node.hear_removed(notice)?;
        reply(&())
    }

    async fn hash_kv(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let revision: i64 = decode(request)?;
        let answer = self
            .node
            .hash_at(revision)
            .await
            .map_err(|e| PeerError::from(&e));
        reply(&answer)
    }

    async fn cluster_info(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        reply(&self.node.cluster_info()?)
    }

    async fn read_index(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let result = self
            .node
            .read_index()
            .await
            .map_err(|e| PeerError::from(&e));
        reply(&result)
    }
}
