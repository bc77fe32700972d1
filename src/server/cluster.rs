//! etcd's `Cluster` service: `MemberList` from Raft's membership and the
//! attributes members published; `MemberAdd`, `MemberPromote`,
//! `MemberRemove` and `MemberUpdate` made by the leader (`node::membership`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::header;
use crate::node::{peer_addr_of, MemberChange, Node};
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

    /// Every member, sorted by id, as etcd lists them.
    fn members(&self) -> Result<Vec<pb::Member>, Status> {
        Ok(self
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
            .collect())
    }

    /// Makes `change`, then lists the members as this member sees them
    /// once it caught up with the leader (briefly: a member that removed
    /// itself has no leader to catch up with).
    async fn change(&self, change: MemberChange) -> Result<(u64, Vec<pb::Member>), Status> {
        let id = self.node.change_members(change).await?;
        let settle = self.node.election_timeout();
        let _ = tokio::time::timeout(settle, self.node.read_barrier()).await;
        Ok((id, self.members()?))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let who = caller(&self.node, &request)?;
        self.node.check_admin(who.as_deref())?;
        let req = request.into_inner();
        let addr = peer_addr_of(&req.peer_ur_ls)?;
        let change = MemberChange::Add {
            addr,
            learner: req.is_learner,
        };
        let (id, members) = self.change(change).await?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .or(Some(pb::Member {
                id,
                peer_ur_ls: req.peer_ur_ls,
                is_learner: req.is_learner,
                ..Default::default()
            }));
        Ok(Response::new(pb::MemberAddResponse {
            header: header(&self.node, 0),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let who = caller(&self.node, &request)?;
        self.node.check_admin(who.as_deref())?;
        let (_, members) = self
            .change(MemberChange::Remove(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: header(&self.node, 0),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let who = caller(&self.node, &request)?;
        self.node.check_admin(who.as_deref())?;
        let req = request.into_inner();
        let addr = peer_addr_of(&req.peer_ur_ls)?;
        let (_, members) = self
            .change(MemberChange::Update { id: req.id, addr })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: header(&self.node, 0),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let who = caller(&self.node, &request)?;
        self.node.check_user(who.as_deref())?;
        // Cluster responses carry no revision, as in etcd.
        Ok(Response::new(pb::MemberListResponse {
            header: header(&self.node, 0),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let who = caller(&self.node, &request)?;
        self.node.check_admin(who.as_deref())?;
        let (_, members) = self
            .change(MemberChange::Promote(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: header(&self.node, 0),
            members,
        }))
    }
}
