//! etcd's `KV` service: validate, turn the request into a read or a
//! `Command`, hand it to the node, and turn the result back into etcd's
//! response with a full header. No business logic lives here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::{
    check_size, header, key_value, put_fields, range_query, range_response, PutFields,
};
use super::txn;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::pb::kv_server::Kv;
use crate::store::{check_key, check_txn, check_write, Command, Limits, Response as Applied};

/// The `etcdserverpb.KV` service of one node.
pub struct KvService {
    node: Arc<Node>,
    limits: Limits,
}

fn unexpected(response: Applied) -> Error {
    match response {
        Applied::Rejected(r) => r.into(),
        other => Error::UnexpectedResponse(format!("{other:?}")),
    }
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        let limits = node.limits();
        KvService { node, limits }
    }

    /// Checks a write with the rules forwarded writes follow too, then
    /// commits it on behalf of `who`.
    async fn write(&self, who: Option<&str>, cmd: Command) -> Result<Applied> {
        check_write(&cmd, &self.limits)?;
        self.node.write_as(who, cmd).await
    }

    async fn serve_range(
        &self,
        who: Option<&str>,
        req: pb::RangeRequest,
    ) -> Result<pb::RangeResponse> {
        check_size(&req, self.limits.max_request_bytes)?;
        check_key(&req.key)?;
        if req.serializable {
            self.node.check_running()?;
        } else {
            self.node.read_barrier().await?;
        }
        let query = range_query(&req);
        self.node.check_read(who, &query.range)?;
        let store = self.node.store();
        // The revision first: the data read after it is at least as new.
        let revision = store.revision();
        let result = store.range(&query).map_err(Error::from)?;
        Ok(range_response(result, header(&self.node, revision)))
    }

    async fn serve_put(&self, who: Option<&str>, req: pb::PutRequest) -> Result<pb::PutResponse> {
        check_size(&req, self.limits.max_request_bytes)?;
        let PutFields {
            key,
            value,
            lease,
            must_exist,
        } = put_fields(
            req.key,
            req.value,
            req.lease,
            req.ignore_value,
            req.ignore_lease,
        )?;
        let cmd = Command::Put {
            key,
            value,
            lease,
            must_exist,
            prev_kv: req.prev_kv,
        };
        match self.write(who, cmd).await? {
            Applied::Put { revision, prev_kv } => Ok(pb::PutResponse {
                header: header(&self.node, revision),
                prev_kv: prev_kv.map(key_value),
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn serve_delete_range(
        &self,
        who: Option<&str>,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse> {
        check_size(&req, self.limits.max_request_bytes)?;
        let cmd = Command::DeleteRange {
            key: req.key,
            range_end: req.range_end,
            prev_kv: req.prev_kv,
        };
        match self.write(who, cmd).await? {
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

    async fn serve_txn(&self, who: Option<&str>, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        check_size(&req, self.limits.max_request_bytes)?;
        let serializable = txn::is_serializable(&req);
        let t = txn::from_pb(req)?;
        check_txn(&t, &self.limits)?;
        if crate::store::txn_is_read_only(&t) {
            // Reads only: no proposal, just a read barrier, as etcd does.
            if serializable {
                self.node.check_running()?;
            } else {
                self.node.read_barrier().await?;
            }
            self.node.check_txn(who, &t)?;
            if let Some((revision, result)) = self.node.read_only_txn(&t) {
                let result = result.map_err(Error::from)?;
                return Ok(txn::to_pb(result, revision, header(&self.node, revision)));
            }
        }
        // Checked above (the read-only path needs the same checks).
        match self.node.write_as(who, Command::Txn(t)).await? {
            Applied::Txn { revision, result } => {
                Ok(txn::to_pb(result, revision, header(&self.node, revision)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn serve_compact(
        &self,
        who: Option<&str>,
        req: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse> {
        match self
            .write(
                who,
                Command::Compact {
                    revision: req.revision,
                },
            )
            .await?
        {
            Applied::Compacted { revision } => Ok(pb::CompactionResponse {
                header: header(&self.node, revision),
            }),
            other => Err(unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_range(who.as_deref(), request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_put(who.as_deref(), request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_delete_range(who.as_deref(), request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_txn(who.as_deref(), request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let who = caller(&self.node, &request)?;
        Ok(Response::new(
            self.serve_compact(who.as_deref(), request.into_inner())
                .await?,
        ))
    }
}
