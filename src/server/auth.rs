//! etcd's `Auth` service (enable, disable, status, authenticate, users,
//! roles, permissions), and `caller`: who a request on any service comes
//! from, read from its `token` (or `authorization`) metadata, or with
//! `--client-cert-auth` from the common name of its certificate. Changes
//! go through Raft as `AuthCommand`s on behalf of their caller, and need
//! `root` once auth is on; passwords are hashed here, before they reach
//! the log.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::header;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::pb;
use crate::pb::auth_server::Auth;
use crate::store::{AuthCommand, AuthError, PermKind, Permission};

/// Who sent `request` (see `Node::caller`); an invalid token is refused.
pub fn caller<T>(node: &Node, request: &Request<T>) -> Result<Option<String>> {
    let md = request.metadata();
    let token = md
        .get("token")
        .or_else(|| md.get("authorization"))
        .map(|v| v.to_str().map_err(|_| Error::Auth(AuthError::InvalidToken)))
        .transpose()?
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t));
    let cn = if token.is_none() && node.client_cert_auth() {
        request
            .peer_certs()
            .and_then(|chain| common_name(chain.first()?))
    } else {
        None
    };
    node.caller(token, cn.as_deref())
}

/// The common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The `etcdserverpb.Auth` service of one node.
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        header(&self.node, revision)
    }

    /// Applies `change` on behalf of `request`'s caller; the header of the
    /// revision it was applied at.
    async fn change<T>(
        &self,
        request: &Request<T>,
        change: AuthCommand,
    ) -> Result<Option<pb::ResponseHeader>> {
        let who = caller(&self.node, request)?;
        let revision = self.node.change_auth(who.as_deref(), change).await?;
        Ok(self.header(revision))
    }

    /// The caller of `request`, who must be an admin (checked against the
    /// state as of a read barrier).
    async fn admin<T>(&self, request: &Request<T>) -> Result<Option<String>> {
        let who = caller(&self.node, request)?;
        self.node.read_barrier().await?;
        self.node.check_admin(who.as_deref())?;
        Ok(who)
    }

    fn current_header(&self) -> Option<pb::ResponseHeader> {
        self.header(self.node.store().revision())
    }

    async fn password(&self, password: String, no_password: bool) -> Result<Option<String>> {
        if no_password {
            return Ok(None);
        }
        Ok(Some(self.node.hash_password(password).await?))
    }
}

fn perm_kind(t: i32) -> Result<PermKind> {
    match pb::authpb::permission::Type::try_from(t) {
        Ok(pb::authpb::permission::Type::Read) => Ok(PermKind::Read),
        Ok(pb::authpb::permission::Type::Write) => Ok(PermKind::Write),
        Ok(pb::authpb::permission::Type::Readwrite) => Ok(PermKind::ReadWrite),
        Err(_) => Err(AuthError::InvalidAuthMgmt.into()),
    }
}

fn perm_to_pb(p: &Permission) -> pb::authpb::Permission {
    let t = match p.kind {
        PermKind::Read => pb::authpb::permission::Type::Read,
        PermKind::Write => pb::authpb::permission::Type::Write,
        PermKind::ReadWrite => pb::authpb::permission::Type::Readwrite,
    };
    pb::authpb::Permission {
        perm_type: t as i32,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

type Answer<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(r: Result<T>) -> Answer<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Answer<pb::AuthEnableResponse> {
        let run = async {
            let token_key = self.node.new_token_key()?;
            let header = self
                .change(&request, AuthCommand::Enable { token_key })
                .await?;
            Ok(pb::AuthEnableResponse { header })
        };
        ok(run.await)
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Answer<pb::AuthDisableResponse> {
        let run = async {
            let header = self.change(&request, AuthCommand::Disable).await?;
            Ok(pb::AuthDisableResponse { header })
        };
        ok(run.await)
    }

    /// Open to everyone, as in etcd 3.6+ (3.5 asked for root): it tells
    /// only whether auth is on and its revision.
    async fn auth_status(
        &self,
        _: Request<pb::AuthStatusRequest>,
    ) -> Answer<pb::AuthStatusResponse> {
        let run = async {
            self.node.read_barrier().await?;
            let (enabled, auth_revision) = self.node.auth_view(|a| (a.enabled, a.revision));
            Ok(pb::AuthStatusResponse {
                header: self.current_header(),
                enabled,
                auth_revision,
            })
        };
        ok(run.await)
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Answer<pb::AuthenticateResponse> {
        let run = async {
            let req = request.into_inner();
            let token = self.node.authenticate(&req.name, req.password).await?;
            Ok(pb::AuthenticateResponse {
                header: self.current_header(),
                token,
            })
        };
        ok(run.await)
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Answer<pb::AuthUserAddResponse> {
        let run = async {
            let who = caller(&self.node, &request)?;
            // Refuse early, before spending a bcrypt hash on it.
            self.node.check_admin(who.as_deref())?;
            let req = request.get_ref();
            if req.name.is_empty() {
                return Err(AuthError::UserEmpty.into());
            }
            let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
            let password = self.password(req.password.clone(), no_password).await?;
            let name = req.name.clone();
            let header = self
                .change(&request, AuthCommand::UserAdd { name, password })
                .await?;
            Ok(pb::AuthUserAddResponse { header })
        };
        ok(run.await)
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Answer<pb::AuthUserGetResponse> {
        let run = async {
            let who = caller(&self.node, &request)?;
            self.node.read_barrier().await?;
            let name = &request.get_ref().name;
            // A user may look itself up.
            if who.as_deref() != Some(name.as_str()) {
                self.node.check_admin(who.as_deref())?;
            }
            let roles = self
                .node
                .auth_view(|a| a.users.get(name).map(|u| u.roles.iter().cloned().collect()))
                .ok_or(AuthError::UserNotFound)?;
            Ok(pb::AuthUserGetResponse {
                header: self.current_header(),
                roles,
            })
        };
        ok(run.await)
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Answer<pb::AuthUserListResponse> {
        let run = async {
            self.admin(&request).await?;
            let users = self.node.auth_view(|a| a.users.keys().cloned().collect());
            Ok(pb::AuthUserListResponse {
                header: self.current_header(),
                users,
            })
        };
        ok(run.await)
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Answer<pb::AuthUserDeleteResponse> {
        let run = async {
            let name = request.get_ref().name.clone();
            let header = self
                .change(&request, AuthCommand::UserDelete { name })
                .await?;
            Ok(pb::AuthUserDeleteResponse { header })
        };
        ok(run.await)
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Answer<pb::AuthUserChangePasswordResponse> {
        let run = async {
            let who = caller(&self.node, &request)?;
            self.node.check_admin(who.as_deref())?;
            let req = request.get_ref();
            let password = self.password(req.password.clone(), false).await?;
            let name = req.name.clone();
            let header = self
                .change(&request, AuthCommand::UserChangePassword { name, password })
                .await?;
            Ok(pb::AuthUserChangePasswordResponse { header })
        };
        ok(run.await)
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Answer<pb::AuthUserGrantRoleResponse> {
        let run = async {
            let req = request.get_ref();
            let change = AuthCommand::UserGrantRole {
                user: req.user.clone(),
                role: req.role.clone(),
            };
            let header = self.change(&request, change).await?;
            Ok(pb::AuthUserGrantRoleResponse { header })
        };
        ok(run.await)
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Answer<pb::AuthUserRevokeRoleResponse> {
        let run = async {
            let req = request.get_ref();
            let change = AuthCommand::UserRevokeRole {
                user: req.name.clone(),
                role: req.role.clone(),
            };
            let header = self.change(&request, change).await?;
            Ok(pb::AuthUserRevokeRoleResponse { header })
        };
        ok(run.await)
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Answer<pb::AuthRoleAddResponse> {
        let run = async {
            let name = request.get_ref().name.clone();
            let header = self.change(&request, AuthCommand::RoleAdd { name }).await?;
            Ok(pb::AuthRoleAddResponse { header })
        };
        ok(run.await)
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Answer<pb::AuthRoleGetResponse> {
        let run = async {
            let who = caller(&self.node, &request)?;
            self.node.read_barrier().await?;
            let role = &request.get_ref().role;
            // A user may look up a role it holds.
            let holds = who.as_deref().is_some_and(|u| {
                self.node
                    .auth_view(|a| a.users.get(u).is_some_and(|u| u.roles.contains(role)))
            });
            if !holds {
                self.node.check_admin(who.as_deref())?;
            }
            let perm = self
                .node
                .auth_view(|a| {
                    a.roles
                        .get(role)
                        .map(|r| r.perms.iter().map(perm_to_pb).collect())
                })
                .ok_or(AuthError::RoleNotFound)?;
            Ok(pb::AuthRoleGetResponse {
                header: self.current_header(),
                perm,
            })
        };
        ok(run.await)
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Answer<pb::AuthRoleListResponse> {
        let run = async {
            self.admin(&request).await?;
            let roles = self.node.auth_view(|a| a.roles.keys().cloned().collect());
            Ok(pb::AuthRoleListResponse {
                header: self.current_header(),
                roles,
            })
        };
        ok(run.await)
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Answer<pb::AuthRoleDeleteResponse> {
        let run = async {
            let name = request.get_ref().role.clone();
            let header = self
                .change(&request, AuthCommand::RoleDelete { name })
                .await?;
            Ok(pb::AuthRoleDeleteResponse { header })
        };
        ok(run.await)
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Answer<pb::AuthRoleGrantPermissionResponse> {
        let run = async {
            let req = request.get_ref();
            let perm = req.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
            let change = AuthCommand::RoleGrantPermission {
                role: req.name.clone(),
                perm: Permission {
                    kind: perm_kind(perm.perm_type)?,
                    key: perm.key.clone(),
                    range_end: perm.range_end.clone(),
                },
            };
            let header = self.change(&request, change).await?;
            Ok(pb::AuthRoleGrantPermissionResponse { header })
        };
        ok(run.await)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Answer<pb::AuthRoleRevokePermissionResponse> {
        let run = async {
            let req = request.get_ref();
            let change = AuthCommand::RoleRevokePermission {
                role: req.role.clone(),
                key: req.key.clone(),
                range_end: req.range_end.clone(),
            };
            let header = self.change(&request, change).await?;
            Ok(pb::AuthRoleRevokePermissionResponse { header })
        };
        ok(run.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_types_map_both_ways() {
        for kind in [PermKind::Read, PermKind::Write, PermKind::ReadWrite] {
            let p = Permission {
                kind,
                key: b"k".to_vec(),
                range_end: vec![],
            };
            assert_eq!(perm_kind(perm_to_pb(&p).perm_type).unwrap(), kind);
        }
        assert!(perm_kind(7).is_err());
    }
}
