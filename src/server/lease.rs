//! etcd's `Lease` service: grant, revoke, keep-alive (a stream), time to
//! live and the list of leases, each delegated to the node (which asks the
//! leader where only the leader knows).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::caller;
use super::convert::header;
use crate::error::Result;
use crate::node::Node;
use crate::pb;
use crate::pb::lease_server::Lease;
use crate::store::Need;

/// Keep-alive responses queued for a slow client before the stream waits.
const STREAM_BUFFER: usize = 64;

/// The `etcdserverpb.Lease` service of one node.
pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }

    fn current_header(&self) -> Option<pb::ResponseHeader> {
        header(&self.node, self.node.store().revision())
    }

    async fn serve_grant(
        &self,
        who: Option<&str>,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse> {
        let (id, ttl, revision) = self.node.grant_lease(who, req.id, req.ttl).await?;
        Ok(pb::LeaseGrantResponse {
            header: header(&self.node, revision),
            id,
            ttl,
            error: String::new(),
        })
    }

    async fn serve_revoke(
        &self,
        who: Option<&str>,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse> {
        let revision = self.node.revoke_lease(who, req.id).await?;
        Ok(pb::LeaseRevokeResponse {
            header: header(&self.node, revision),
        })
    }

    async fn serve_time_to_live(
        &self,
        who: Option<&str>,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse> {
        // Its keys only to whom may read each of them.
        self.node.check_user(who)?;
        if req.keys {
            self.node.check_lease_keys(who, req.id, Need::Read)?;
        }
        let status = self.node.lease_status(req.id).await?;
        // An unknown lease is TTL -1, not an error (etcdctl prints that it
        // already expired).
        let (ttl, granted_ttl, keys) = match status {
            Some(s) => (
                s.remaining,
                s.granted,
                if req.keys { s.keys } else { vec![] },
            ),
            None => (-1, 0, vec![]),
        };
        Ok(pb::LeaseTimeToLiveResponse {
            header: self.current_header(),
            id: req.id,
            ttl,
            granted_ttl,
            keys,
        })
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

/// Answers each keep-alive on `requests` in order, until the client closes
/// its side (the stream then ends OK) or goes away. An unknown lease gets
/// TTL 0, not an error, and the stream stays open.
/// Renews lease `id` once on behalf of `who` (who must be allowed to
/// write each key attached to it): its TTL, or why not.
pub(super) async fn renew(
    node: &Node,
    who: Option<&str>,
    id: i64,
) -> std::result::Result<pb::LeaseKeepAliveResponse, Status> {
    node.check_lease_keys(who, id, Need::Write)?;
    node.keep_lease_alive(id)
        .await
        .map(|ttl| pb::LeaseKeepAliveResponse {
            header: header(node, node.store().revision()),
            id,
            ttl,
        })
        .map_err(Status::from)
}

async fn keep_alive(
    node: Arc<Node>,
    who: Option<String>,
    mut requests: Streaming<pb::LeaseKeepAliveRequest>,
    tx: mpsc::Sender<std::result::Result<pb::LeaseKeepAliveResponse, Status>>,
) {
    while let Some(request) = requests.next().await {
        let response = match request {
            Ok(req) => renew(&node, who.as_deref(), req.id).await,
            Err(_) => return,
        };
        if tx.send(response).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> std::result::Result<Response<pb::LeaseGrantResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_grant(who.as_deref(), request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> std::result::Result<Response<pb::LeaseRevokeResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_revoke(who.as_deref(), request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> std::result::Result<Response<KeepAliveStream>, Status> {
        let who = caller(&self.node, &request)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(keep_alive(self.node.clone(), who, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> std::result::Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_time_to_live(who.as_deref(), request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> std::result::Result<Response<pb::LeaseLeasesResponse>, Status> {
        // The list only to whom may read every key of every lease.
        let who = caller(&self.node, &request)?;
        self.node.check_user(who.as_deref())?;
        let ids = self.node.lease_ids();
        for id in &ids {
            self.node
                .check_lease_keys(who.as_deref(), *id, Need::Read)?;
        }
        let leases = ids.into_iter().map(|id| pb::LeaseStatus { id }).collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.current_header(),
            leases,
        }))
    }
}
