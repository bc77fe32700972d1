//! etcd's `v3lockpb.Lock` service: `Lock` waits until the caller holds the
//! lock (`Node::lock`), `Unlock` deletes its key.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::header;
use crate::node::Node;
use crate::pb::v3lockpb;
use crate::pb::v3lockpb::lock_server::Lock;

/// The lock service of one node.
pub struct LockService {
    node: Arc<Node>,
}

impl LockService {
    pub fn new(node: Arc<Node>) -> Self {
        LockService { node }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock(
        &self,
        request: Request<v3lockpb::LockRequest>,
    ) -> Result<Response<v3lockpb::LockResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        crate::store::check_key(&req.name)?;
        let (key, revision) = self.node.lock(who.as_deref(), &req.name, req.lease).await?;
        Ok(Response::new(v3lockpb::LockResponse {
            header: header(&self.node, revision),
            key,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unlock(
        &self,
        request: Request<v3lockpb::UnlockRequest>,
    ) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        let who = caller(&self.node, &request)?;
        let req = request.into_inner();
        crate::store::check_key(&req.key)?;
        let revision = self.node.delete_key(who.as_deref(), &req.key).await?;
        Ok(Response::new(v3lockpb::UnlockResponse {
            header: header(&self.node, revision),
        }))
    }
}
