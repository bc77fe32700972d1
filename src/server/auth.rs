//! The part of etcd's `Auth` service clients call when they connect:
//! authentication is off, so `Authenticate` answers etcd's exact "not
//! enabled" error (etcdctl then carries on without a token).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::header;
use crate::error::Error;
use crate::node::Node;
use crate::pb;
use crate::pb::auth_server::Auth;

/// The `etcdserverpb.Auth` service of one node.
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_status(
        &self,
        _: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        Ok(Response::new(pb::AuthStatusResponse {
            header: header(&self.node, 0),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Error::Auth(crate::store::AuthError::NotEnabled).into())
    }
}
