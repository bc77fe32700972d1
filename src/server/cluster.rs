//! etcd's `Cluster` service: `MemberList` from Raft's membership and the
//! attributes members published. Membership changes are not offered yet.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::header;
use crate::error::Error;
use crate::node::Node;
use crate::pb;
use crate::pb::cluster_server::Cluster;

/// The `etcdserverpb.Cluster` service of one node.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(Error::Unimplemented("MemberAdd").into())
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(Error::Unimplemented("MemberRemove").into())
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Error::Unimplemented("MemberUpdate").into())
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self
            .node
            .members()?
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: m.peer_urls,
                client_ur_ls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        // Cluster responses carry no revision, as in etcd.
        Ok(Response::new(pb::MemberListResponse {
            header: header(&self.node, 0),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(Error::Unimplemented("MemberPromote").into())
    }
}
