//! etcd's authentication state, replicated: whether auth is enabled, the
//! auth revision, users (with bcrypt password hashes and roles) and roles
//! (with key permissions); the changes the `Auth` service makes to it
//! (`AuthCommand`, applied through Raft); and the permission checks every
//! client request passes.
//!
//! Pure: no I/O, no clock, no hashing (passwords arrive hashed; tokens are
//! the node's). The same checks run twice for a write: on the member that
//! took the request (a fast, clear refusal) and again when the write is
//! applied (`check_command`), against the auth state of that point in the
//! log, so a permission revoked while a write was in flight is never
//! bypassed.
//!
//! Semantics follow etcd's `auth/store.go` and `range_perm_cache.go`: a
//! user's permissions are the union over its roles; a one-key request
//! needs one permission containing the key; a range needs the union to
//! cover all of it with no gap; any user with the `root` role may do
//! anything; the `root` role need not exist as a role to be granted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The user and role that administer a cluster with auth on.
pub const ROOT: &str = "root";

/// What a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    fn allows(self, need: Need) -> bool {
        matches!(
            (self, need),
            (PermKind::ReadWrite, _)
                | (PermKind::Read, Need::Read)
                | (PermKind::Write, Need::Write)
        )
    }
}

/// What a request needs of a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// A key permission of a role: `key` alone (empty `range_end`), the range
/// `[key, range_end)`, or every key from `key` on (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

/// A user as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash of its password; `None` for a user created without
    /// one (it can only authenticate by a client certificate).
    pub password: Option<String>,
    pub roles: BTreeSet<String>,
    /// The auth revision its password was last set at: tokens issued
    /// before that are void.
    pub password_revision: u64,
}

/// A role: its permissions, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub perms: Vec<Permission>,
}

/// The replicated auth state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: 1 for a new store, +1 for every change of
    /// users, roles or permissions, and for disabling auth.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The key tokens are signed with, chosen afresh by every enable (so
    /// disabling auth voids every token).
    #[serde(with = "serde_bytes")]
    pub token_key: Vec<u8>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            token_key: Vec::new(),
        }
    }
}

/// A change to the auth state, as the `Auth` service asks for it.
/// Passwords are bcrypt hashes by now (`None`: no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable {
        #[serde(with = "serde_bytes")]
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Option<String>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
    /// Sets the token key of a state restored from a backup with auth on
    /// (backups do not carry it); a no-op once there is one, so of several
    /// members proposing one the first wins.
    SetTokenKey {
        #[serde(with = "serde_bytes")]
        token_key: Vec<u8>,
    },
}

/// Why an auth change or a permission check failed: etcd's errors (the
/// messages are in `error.rs`, the codes in `server/status.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    NotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
}

/// Whether `[key, range_end)` is a range a permission may name: a key,
/// and an end that is empty (one key), `"\0"` (from the key on) or after
/// the key.
pub fn valid_perm_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == b"\0" || range_end > key)
}

/// One interval of keys: from `start`, up to `end` (exclusive; `None`: no
/// end).
type Interval<'a> = (&'a [u8], Option<std::borrow::Cow<'a, [u8]>>);

fn interval<'a>(key: &'a [u8], range_end: &'a [u8]) -> Interval<'a> {
    if range_end.is_empty() {
        // The one key: [key, key + "\0").
        let mut end = key.to_vec();
        end.push(0);
        (key, Some(end.into()))
    } else if range_end == b"\0" {
        (key, None)
    } else {
        (key, Some(range_end.into()))
    }
}

impl AuthState {
    /// Whether `user` exists and holds the `root` role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `caller` may administer the cluster (auth changes, member
    /// changes, compaction, defragmentation, backups): anyone while auth
    /// is off, else a user with the `root` role.
    pub fn check_admin(&self, caller: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = caller.ok_or(AuthError::UserEmpty)?;
        match self.users.get(user) {
            None => Err(AuthError::UserNotFound),
            Some(u) if u.roles.contains(ROOT) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// Whether `caller` is someone, as calls open to every user need.
    pub fn check_user(&self, caller: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = caller.ok_or(AuthError::UserEmpty)?;
        if self.users.contains_key(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `caller` may `need` the keys `[key, range_end)` (etcd's
    /// range semantics: empty `range_end` one key, `"\0"` every key from
    /// `key`).
    pub fn check_range(
        &self,
        caller: Option<&str>,
        key: &[u8],
        range_end: &[u8],
        need: Need,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = caller.ok_or(AuthError::UserEmpty)?;
        let Some(u) = self.users.get(user) else {
            return Err(AuthError::PermissionDenied);
        };
        if u.roles.contains(ROOT) {
            return Ok(());
        }
        let perms = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.perms)
            .filter(|p| p.kind.allows(need));
        if covered(perms, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Applies an auth change; what it could not do changes nothing.
    pub fn apply(&mut self, cmd: AuthCommand) -> Result<(), AuthError> {
        match cmd {
            AuthCommand::Enable { token_key } => {
                if self.enabled {
                    return Ok(());
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key;
                return Ok(());
            }
            AuthCommand::SetTokenKey { token_key } => {
                if self.enabled && self.token_key.is_empty() {
                    self.token_key = token_key;
                }
                return Ok(());
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
                self.token_key.clear();
            }
            AuthCommand::UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User {
                    password,
                    roles: BTreeSet::new(),
                    password_revision: self.revision + 1,
                };
                self.users.insert(name, user);
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(&name).ok_or(AuthError::UserNotFound)?;
            }
            AuthCommand::UserChangePassword { name, password } => {
                let next = self.revision + 1;
                let user = self.users.get_mut(&name).ok_or(AuthError::UserNotFound)?;
                // A user created without a password keeps none.
                if user.password.is_some() {
                    user.password = password;
                }
                user.password_revision = next;
            }
            AuthCommand::UserGrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(&role) {
                    if !self.users.contains_key(&user) {
                        return Err(AuthError::UserNotFound);
                    }
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.insert(role) {
                    return Ok(());
                }
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(&role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name, Role::default());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(&name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(&name);
                }
            }
            AuthCommand::RoleGrantPermission { role, perm } => {
                if !valid_perm_range(&perm.key, &perm.range_end) {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let r = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                // The same range granted again takes the new kind.
                match r
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.kind = perm.kind,
                    None => {
                        r.perms.push(perm);
                        r.perms
                            .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == key && p.range_end == range_end));
                if r.perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }
}

/// Whether `perms` together allow `[key, range_end)`: for one key, one of
/// them contains it; for a range, their union covers it with no gap.
fn covered<'a>(perms: impl Iterator<Item = &'a Permission>, key: &[u8], range_end: &[u8]) -> bool {
    let mut intervals: Vec<Interval<'a>> = perms.map(|p| interval(&p.key, &p.range_end)).collect();
    if range_end.is_empty() {
        return intervals
            .iter()
            .any(|(start, end)| *start <= key && end.as_deref().is_none_or(|end| key < end));
    }
    let want_end: Option<&[u8]> = (range_end != b"\0").then_some(range_end);
    intervals.sort_by(|a, b| a.0.cmp(b.0));
    // Sweep from `key`: each interval that starts at or before the point
    // reached carries it to its end.
    let mut reached: Option<Vec<u8>> = Some(key.to_vec());
    for (start, end) in &intervals {
        let Some(at) = &reached else { break };
        if *start > at.as_slice() {
            break;
        }
        match end {
            None => reached = None,
            Some(end) if end.as_ref() > at.as_slice() => reached = Some(end.to_vec()),
            Some(_) => {}
        }
        if let (Some(at), Some(want)) = (&reached, want_end) {
            if at.as_slice() >= want {
                return true;
            }
        }
    }
    reached.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermKind, key: &str, end: &str) -> Permission {
        Permission {
            kind,
            key: key.into(),
            range_end: end.into(),
        }
    }

    /// A state with auth on, root, and `u` holding role `r` with `perms`.
    fn state(perms: Vec<Permission>) -> AuthState {
        let mut st = AuthState::default();
        for cmd in [
            AuthCommand::UserAdd {
                name: ROOT.into(),
                password: Some("h".into()),
            },
            AuthCommand::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthCommand::UserAdd {
                name: "u".into(),
                password: Some("h".into()),
            },
            AuthCommand::RoleAdd { name: "r".into() },
            AuthCommand::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
        ] {
            st.apply(cmd).unwrap();
        }
        for p in perms {
            st.apply(AuthCommand::RoleGrantPermission {
                role: "r".into(),
                perm: p,
            })
            .unwrap();
        }
        st.apply(AuthCommand::Enable {
            token_key: vec![1; 32],
        })
        .unwrap();
        st
    }

    #[test]
    fn ranges_must_be_covered_whole() {
        let st = state(vec![
            perm(PermKind::Read, "b", "c"),
            perm(PermKind::ReadWrite, "c", "d"),
            perm(PermKind::Write, "k", ""),
            perm(PermKind::Read, "y", "\0"),
        ]);
        let u = Some("u");
        let ok = |k: &str, e: &str, n| st.check_range(u, k.as_bytes(), e.as_bytes(), n);
        assert_eq!(ok("b", "d", Need::Read), Ok(()));
        assert_eq!(ok("b", "e", Need::Read), Err(AuthError::PermissionDenied));
        assert_eq!(ok("bb", "", Need::Read), Ok(()));
        assert_eq!(ok("b", "", Need::Write), Err(AuthError::PermissionDenied));
        assert_eq!(ok("c", "d", Need::Write), Ok(()));
        assert_eq!(ok("k", "", Need::Write), Ok(()));
        assert_eq!(ok("k", "", Need::Read), Err(AuthError::PermissionDenied));
        // A one-key permission does not cover the key's prefix range.
        assert_eq!(ok("k", "l", Need::Write), Err(AuthError::PermissionDenied));
        assert_eq!(ok("k", "k\0", Need::Write), Ok(()));
        assert_eq!(ok("y", "\0", Need::Read), Ok(()));
        assert_eq!(ok("z", "\0", Need::Read), Ok(()));
        assert_eq!(ok("x", "\0", Need::Read), Err(AuthError::PermissionDenied));
        assert_eq!(ok("zzz", "", Need::Read), Ok(()));
        // "From b on" is not covered by [b, d) and [y, ...): a gap.
        assert_eq!(ok("b", "\0", Need::Read), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn who_may_do_what() {
        let mut st = state(vec![]);
        assert_eq!(st.check_admin(Some(ROOT)), Ok(()));
        assert_eq!(st.check_admin(Some("u")), Err(AuthError::PermissionDenied));
        assert_eq!(st.check_admin(None), Err(AuthError::UserEmpty));
        assert_eq!(st.check_admin(Some("nobody")), Err(AuthError::UserNotFound));
        assert_eq!(
            st.check_range(Some(ROOT), b"any", b"\0", Need::Write),
            Ok(())
        );
        assert_eq!(
            st.check_range(None, b"a", b"", Need::Read),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(
            st.check_range(Some("ghost"), b"a", b"", Need::Read),
            Err(AuthError::PermissionDenied)
        );
        st.apply(AuthCommand::Disable).unwrap();
        assert_eq!(st.check_range(None, b"a", b"", Need::Write), Ok(()));
        assert_eq!(st.check_admin(None), Ok(()));
    }

    #[test]
    fn changes_follow_etcd() {
        let mut st = AuthState::default();
        assert_eq!(st.revision, 1);
        let enable = || AuthCommand::Enable {
            token_key: vec![7; 32],
        };
        assert_eq!(st.apply(enable()), Err(AuthError::RootUserNotExist));
        st.apply(AuthCommand::UserAdd {
            name: ROOT.into(),
            password: None,
        })
        .unwrap();
        assert_eq!(st.apply(enable()), Err(AuthError::RootRoleNotExist));
        // The root role need not exist to be granted.
        st.apply(AuthCommand::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        })
        .unwrap();
        let rev = st.revision;
        st.apply(enable()).unwrap();
        assert_eq!(st.revision, rev, "enabling does not bump the revision");
        assert_eq!(
            st.apply(AuthCommand::UserDelete { name: ROOT.into() }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            st.apply(AuthCommand::UserRevokeRole {
                user: ROOT.into(),
                role: ROOT.into()
            }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            st.apply(AuthCommand::UserGrantRole {
                user: ROOT.into(),
                role: "nope".into()
            }),
            Err(AuthError::RoleNotFound)
        );
        st.apply(AuthCommand::RoleAdd { name: "r".into() }).unwrap();
        let grant = |kind| AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: perm(kind, "a", ""),
        };
        st.apply(grant(PermKind::Read)).unwrap();
        st.apply(grant(PermKind::Write)).unwrap();
        assert_eq!(st.roles["r"].perms, vec![perm(PermKind::Write, "a", "")]);
        assert_eq!(
            st.apply(AuthCommand::RoleGrantPermission {
                role: "r".into(),
                perm: perm(PermKind::Read, "k9", "k1"),
            }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            st.apply(AuthCommand::RoleRevokePermission {
                role: "r".into(),
                key: b"b".to_vec(),
                range_end: vec![],
            }),
            Err(AuthError::PermissionNotGranted)
        );
        st.apply(AuthCommand::UserAdd {
            name: "u".into(),
            password: Some("h".into()),
        })
        .unwrap();
        st.apply(AuthCommand::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        })
        .unwrap();
        st.apply(AuthCommand::RoleDelete { name: "r".into() })
            .unwrap();
        assert!(st.users["u"].roles.is_empty(), "deleting a role revokes it");
        let rev = st.revision;
        st.apply(AuthCommand::Disable).unwrap();
        assert_eq!(st.revision, rev + 1);
        assert!(st.token_key.is_empty());
    }
}
