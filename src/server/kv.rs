//! etcd's `KV` service: validate, turn the request into a read or a
//! `Command`, hand it to the node, and turn the result back into etcd's
//! response with a full header. No business logic lives here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{
    check_key, check_size, check_utf8, header, key_value, sort_order, sort_target,
};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::pb::kv_server::Kv;
use crate::store::{Command, KeyRange, RangeQuery, Rejection, Response as Applied};

/// The `etcdserverpb.KV` service of one node.
pub struct KvService {
    node: Arc<Node>,
    max_request_bytes: usize,
}

impl KvService {
    pub fn new(node: Arc<Node>, max_request_bytes: usize) -> Self {
        KvService {
            node,
            max_request_bytes,
        }
    }

    async fn serve_range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        check_size(&req, self.max_request_bytes)?;
        check_key(&req.key)?;
        if !req.serializable {
            self.node.read_barrier().await?;
        }
        let store = self.node.store();
        // The revision first: the data read after it is at least as new.
        let revision = store.revision()?;
        if req.revision > revision {
            return Err(Error::FutureRevision);
        }
        if req.revision > 0 && req.revision < revision {
            return Err(Error::Unimplemented("reading a past revision"));
        }
        let query = RangeQuery {
            range: KeyRange::new(&req.key, &req.range_end),
            limit: req.limit,
            keys_only: req.keys_only,
            count_only: req.count_only,
            sort_order: sort_order(req.sort_order),
            sort_target: sort_target(req.sort_target),
            min_mod_revision: req.min_mod_revision,
            max_mod_revision: req.max_mod_revision,
            min_create_revision: req.min_create_revision,
            max_create_revision: req.max_create_revision,
        };
        let result = store.range(&query)?;
        Ok(pb::RangeResponse {
            header: header(&self.node, revision),
            kvs: result.kvs.into_iter().map(key_value).collect(),
            more: result.more,
            count: result.count,
        })
    }

    async fn serve_put(&self, req: pb::PutRequest) -> Result<pb::PutResponse> {
        check_size(&req, self.max_request_bytes)?;
        check_key(&req.key)?;
        check_utf8(&req.value, "value")?;
        if req.ignore_value && !req.value.is_empty() {
            return Err(Error::ValueProvided);
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(Error::LeaseProvided);
        }
        if req.lease != 0 {
            return Err(Error::LeaseNotFound);
        }
        let cmd = Command::Put {
            key: req.key,
            value: (!req.ignore_value).then_some(req.value),
            must_exist: req.ignore_value || req.ignore_lease,
            prev_kv: req.prev_kv,
        };
        match self.node.write(cmd).await? {
            Applied::Put { revision, prev_kv } => Ok(pb::PutResponse {
                header: header(&self.node, revision),
                prev_kv: prev_kv.map(key_value),
            }),
            Applied::Rejected(Rejection::KeyNotFound) => Err(Error::KeyNotFound),
            other => Err(unexpected(other)),
        }
    }

    async fn serve_delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse> {
        check_size(&req, self.max_request_bytes)?;
        check_key(&req.key)?;
        let cmd = Command::DeleteRange {
            key: req.key,
            range_end: req.range_end,
            prev_kv: req.prev_kv,
        };
        match self.node.write(cmd).await? {
            Applied::DeleteRange {
                revision,
                deleted,
                prev_kvs,
            } => Ok(pb::DeleteRangeResponse {
                header: header(&self.node, revision),
                deleted,
                prev_kvs: prev_kvs.into_iter().map(key_value).collect(),
            }),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(response: Applied) -> Error {
    Error::Raft(format!("unexpected state machine response {response:?}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(self.serve_range(request.into_inner()).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(self.serve_put(request.into_inner()).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.serve_delete_range(request.into_inner()).await?,
        ))
    }

    async fn txn(
        &self,
        _request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Error::Unimplemented("Txn").into())
    }

    async fn compact(
        &self,
        _request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Error::Unimplemented("Compact").into())
    }
}
