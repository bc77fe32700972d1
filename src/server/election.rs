//! etcd's `v3electionpb.Election` service: campaign, proclaim, resign, the
//! current leader and a stream of leaders (`Node`'s election recipes).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::{header, key_value};
use crate::error::{Error, Result};
use crate::node::{Leadership, Node};
use crate::pb::v3electionpb;
use crate::pb::v3electionpb::election_server::Election;

/// Leaders queued for a slow observer before the stream waits.
const STREAM_BUFFER: usize = 16;

/// The election service of one node.
pub struct ElectionService {
    node: Arc<Node>,
}

impl ElectionService {
    pub fn new(node: Arc<Node>) -> Self {
        ElectionService { node }
    }
}

fn leadership(key: Option<v3electionpb::LeaderKey>) -> Result<Leadership> {
    let key = key.ok_or(Error::ElectionNotLeader)?;
    Ok(Leadership {
        name: key.name,
        key: key.key,
        rev: key.rev,
        lease: key.lease,
    })
}

type ObserveStream =
    Pin<Box<dyn Stream<Item = std::result::Result<v3electionpb::LeaderResponse, Status>> + Send>>;

/// Sends the leader of `name` whenever it changes (its key or revision),
/// until the observer goes away.
async fn observe(
    node: Arc<Node>,
    who: Option<String>,
    name: Vec<u8>,
    tx: mpsc::Sender<std::result::Result<v3electionpb::LeaderResponse, Status>>,
) {
    let mut applied = node.subscribe_revisions();
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        applied.borrow_and_update();
        let (revision, leader) = match node.election_leader(who.as_deref(), &name) {
            Ok(found) => found,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if let Some(kv) = leader {
            let seen = Some((kv.key.clone(), kv.mod_revision));
            if seen != last {
                last = seen;
                let response = v3electionpb::LeaderResponse {
                    header: header(&node, revision),
                    kv: Some(key_value(kv)),
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn campaign(
        &self,
        request: Request<v3electionpb::CampaignRequest>,
    ) -> std::result::Result<Response<v3electionpb::CampaignResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        crate::store::check_key(&req.name)?;
        let l = self
            .node
            .campaign(who.as_deref(), &req.name, req.lease, &req.value)
            .await?;
        Ok(Response::new(v3electionpb::CampaignResponse {
            header: header(&self.node, self.node.store().revision()),
            leader: Some(v3electionpb::LeaderKey {
                name: l.name,
                key: l.key,
                rev: l.rev,
                lease: l.lease,
            }),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn proclaim(
        &self,
        request: Request<v3electionpb::ProclaimRequest>,
    ) -> std::result::Result<Response<v3electionpb::ProclaimResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        let revision = self
            .node
            .proclaim(who.as_deref(), &leadership(req.leader)?, &req.value)
            .await?;
        Ok(Response::new(v3electionpb::ProclaimResponse {
            header: header(&self.node, revision),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn leader(
        &self,
        request: Request<v3electionpb::LeaderRequest>,
    ) -> std::result::Result<Response<v3electionpb::LeaderResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let (revision, leader) = self.node.election_leader(who.as_deref(), &req.name)?;
        let kv = leader.ok_or(Error::ElectionNoLeader)?;
        Ok(Response::new(v3electionpb::LeaderResponse {
            header: header(&self.node, revision),
            kv: Some(key_value(kv)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn observe(
        &self,
        request: Request<v3electionpb::LeaderRequest>,
    ) -> std::result::Result<Response<ObserveStream>, Status> {
        let who = caller(&self.node, &request)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let name = request.into_inner().name;
        tokio::spawn(observe(self.node.clone(), who, name, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn resign(
        &self,
        request: Request<v3electionpb::ResignRequest>,
    ) -> std::result::Result<Response<v3electionpb::ResignResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        let revision = self
            .node
            .resign(who.as_deref(), &leadership(req.leader)?)
            .await?;
        Ok(Response::new(v3electionpb::ResignResponse {
            header: header(&self.node, revision),
        }))
    }
}
