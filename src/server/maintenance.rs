//! etcd's `Maintenance` service: `Status` (what `etcdctl endpoint status`
//! shows, with raised alarms among its errors), `HashKV`/`Hash` for
//! comparing members, `Alarm` (list, raise, disarm; replicated through
//! Raft), `Defragment` and `Snapshot` (a backup in etcd's format).

use std::sync::Arc;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::header;
use crate::backup::file::HASH_LEN;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::pb::maintenance_server::Maintenance;

/// The size of a snapshot's pieces on the stream, as etcd's.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

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
            errors: {
                let mut errors = Vec::new();
                if st.leader.is_none() {
                    errors.push(Error::NoLeader.to_string());
                }
                for (member, alarm) in self.node.store().alarms() {
                    errors.push(format!("memberID:{member} alarm:{} ", alarm_name(alarm)));
                }
                errors
            },
            db_size_in_use: db_size,
            is_learner: self.node.is_learner(),
            storage_version: String::new(),
            db_size_quota: i64::try_from(self.node.quota_bytes()).unwrap_or(i64::MAX),
            downgrade_info: None,
        })
    }

    fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse> {
        let store = self.node.store();
        let current = store.revision();
        let hash = store.hash(revision).map_err(Error::from)?;
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

impl MaintenanceService {
    /// `request`'s caller must administer the cluster.
    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = caller(&self.node, request)?;
        Ok(self.node.check_admin(who.as_deref())?)
    }

    /// `request`'s caller must be a user.
    fn user<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = caller(&self.node, request)?;
        Ok(self.node.check_user(who.as_deref())?)
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        // Anyone may look; only an admin may raise or clear.
        if request.get_ref().action == AlarmAction::Get as i32 {
            self.user(&request)?;
        } else {
            self.admin(&request)?;
        }
        let req = request.into_inner();
        let member = |(member_id, alarm): (u64, i32)| pb::AlarmMember { member_id, alarm };
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => self
                .node
                .store()
                .alarms()
                .into_iter()
                .filter(|(_, a)| req.alarm == 0 || *a == req.alarm)
                .map(member)
                .collect(),
            // As etcd: the answer names the alarm if this changed it.
            Ok(action @ (AlarmAction::Activate | AlarmAction::Deactivate)) => {
                let activate = action == AlarmAction::Activate;
                let key = (req.member_id, req.alarm);
                let was = self.node.store().alarms().contains(&key);
                self.node
                    .set_alarm(activate, req.member_id, req.alarm)
                    .await?;
                if was != activate {
                    vec![member(key)]
                } else {
                    Vec::new()
                }
            }
            Err(_) => return Err(Error::UnknownAlarm.into()),
        };
        let revision = self.node.store().revision();
        Ok(Response::new(pb::AlarmResponse {
            header: header(&self.node, revision),
            alarms,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.user(&request)?;
        Ok(Response::new(self.status()?))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.admin(&request)?;
        // What compaction freed is freed in memory at once; on disk it goes
        // with the Raft log behind a new snapshot.
        self.node.snapshot_now().await?;
        let revision = self.node.store().revision();
        Ok(Response::new(pb::DefragmentResponse {
            header: header(&self.node, revision),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.admin(&request)?;
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
        self.admin(&request)?;
        Ok(Response::new(self.hash_kv(request.into_inner().revision)?))
    }

    /// The member's state as a snapshot file, streamed as etcd streams
    /// its own: the database in pieces (`remaining_bytes` counting down to
    /// 0), then its SHA-256 as a last piece.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
        self.admin(&request)?;
        let file = self.node.backup().await?;
        let header = header(&self.node, 0);
        let db_len = file.len() - HASH_LEN;
        let mut pieces = Vec::with_capacity(db_len / SNAPSHOT_CHUNK + 2);
        let mut sent = 0;
        for chunk in file[..db_len].chunks(SNAPSHOT_CHUNK) {
            sent += chunk.len();
            pieces.push((db_len - sent, chunk.to_vec()));
        }
        pieces.push((0, file[db_len..].to_vec()));
        let responses = pieces.into_iter().map(move |(remaining, blob)| {
            Ok(pb::SnapshotResponse {
                header,
                remaining_bytes: remaining as u64,
                blob,
                version: ETCD_VERSION.into(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(responses))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.admin(&request)?;
        Err(Error::Unsupported(
            "MoveLeader is not supported: openraft 0.9, raftkv's Raft, has no leadership \
             transfer. To move leadership off a member, restart it (the others elect a \
             leader among themselves)",
        )
        .into())
    }
}

/// etcd's name of an alarm type.
fn alarm_name(alarm: i32) -> &'static str {
    match pb::AlarmType::try_from(alarm) {
        Ok(pb::AlarmType::Nospace) => "NOSPACE",
        Ok(pb::AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}
