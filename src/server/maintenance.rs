//! etcd's `Maintenance` service: `Status` (what `etcdctl endpoint status`
//! shows), `HashKV`/`Hash` for comparing members, and `Alarm`/`Defragment`
//! answered the way an etcd with no alarms and nothing to defragment would.

use std::sync::Arc;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::convert::header;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::pb::maintenance_server::Maintenance;

/// The etcd API version raftkv reports.
pub const ETCD_VERSION: &str = "3.5.0";

/// The `etcdserverpb.Maintenance` service of one node.
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }

    fn status(&self) -> Result<pb::StatusResponse> {
        let st = self.node.status()?;
        let db_size = i64::try_from(st.db_size).unwrap_or(i64::MAX);
        Ok(pb::StatusResponse {
            header: header(&self.node, st.revision),
            version: ETCD_VERSION.into(),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.last_log_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: if st.leader.is_none() {
                vec![Error::NoLeader.to_string()]
            } else {
                Vec::new()
            },
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        })
    }

    fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse> {
        let store = self.node.store();
        let current = store.revision();
        let hash = store.hash(revision).map_err(super::status::rejected)?;
        let compacted = store.compacted();
        Ok(pb::HashKvResponse {
            header: header(&self.node, current),
            hash,
            // etcd reports -1 before any compaction.
            compact_revision: if compacted == 0 { -1 } else { compacted },
            hash_revision: if revision > 0 { revision } else { current },
        })
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let revision = self.node.store().revision();
        if request.into_inner().action == pb::alarm_request::AlarmAction::Activate as i32 {
            return Err(Error::Unimplemented("raising alarms").into());
        }
        // raftkv raises no alarms, so there is never one to list or disarm.
        Ok(Response::new(pb::AlarmResponse {
            header: header(&self.node, revision),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status()?))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // sled reclaims space on its own; there is nothing to defragment.
        let revision = self.node.store().revision();
        Ok(Response::new(pb::DefragmentResponse {
            header: header(&self.node, revision),
        }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let resp = self.hash_kv(0)?;
        Ok(Response::new(pb::HashResponse {
            header: resp.header,
            hash: resp.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Ok(Response::new(self.hash_kv(request.into_inner().revision)?))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
        Err(Error::Unimplemented("Snapshot").into())
    }

    async fn move_leader(
        &self,
        _request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Error::Unsupported(
            "MoveLeader is not supported: openraft 0.9, raftkv's Raft, has no leadership \
             transfer. To move leadership off a member, restart it (the others elect a \
             leader among themselves)",
        )
        .into())
    }
}
