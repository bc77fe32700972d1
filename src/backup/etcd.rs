//! etcd's database schema over `bbolt`: raftkv's state as the buckets an
//! etcd snapshot holds (what `etcdctl snapshot status` and `etcdutl
//! snapshot restore` read), and an etcd database, from etcd or from
//! raftkv, back into a state.
//!
//! - `key`: every version of every key under its revision (8 bytes main
//!   revision, `_`, 8 bytes sub-revision, big-endian; a `t` after them
//!   marks a deletion), the value an `mvccpb.KeyValue` (for a deletion only
//!   its key);
//! - `meta`: `finishedCompactRev` and `scheduledCompactRev` (revisions as
//!   above, sub 0), `consistent_index` and `term` (big-endian u64);
//! - `lease`: a lease's id (big-endian) to its `leasepb.Lease`;
//! - `members`: a member's id in hex to etcd's JSON of it;
//! - `auth`: `authEnabled` (one byte, 1 or 0) and `authRevision`
//!   (big-endian u64); `authUsers`: a user's name to its `authpb.User`
//!   (the password its bcrypt hash, as etcd keeps it); `authRoles`: a
//!   role's name to its `authpb.Role`;
//! - `alarm`, `cluster`, `members_removed`: present, empty from raftkv
//!   (its alarms name its own members), not restored.
//!
//! Sub-revisions: raftkv keeps the key of each `(revision, sub)` change
//! since the last compaction (its watch events); a version older than that
//! gets the next free sub-revision of its revision, which only has to be
//! unique (nothing reads below the compaction point).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use prost::Message;
use serde::{Deserialize, Serialize};

use super::bbolt::{Buckets, Entries};
use crate::pb;
use crate::store::{
    valid_perm_range, AuthState, Lease, PermKind, Permission, Revision, Role, State, User, Version,
    Versions, INITIAL_REVISION, ROOT,
};

/// Why a database is not one of etcd's that raftkv can restore.
#[derive(Debug, thiserror::Error)]
#[error("not a valid etcd database: {0}")]
pub struct SchemaError(String);

fn bad<T>(why: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError(why.into()))
}

const KEY: &[u8] = b"key";
const META: &[u8] = b"meta";
const LEASE: &[u8] = b"lease";
const MEMBERS: &[u8] = b"members";
const AUTH: &[u8] = b"auth";
const AUTH_USERS: &[u8] = b"authUsers";
const AUTH_ROLES: &[u8] = b"authRoles";
const AUTH_ENABLED: &[u8] = b"authEnabled";
const AUTH_REVISION: &[u8] = b"authRevision";
const EMPTY_BUCKETS: [&[u8]; 3] = [b"alarm", b"cluster", b"members_removed"];
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const TERM: &[u8] = b"term";
const REV_LEN: usize = 17;
const TOMBSTONE: u8 = b't';

/// A member as etcd's `members` bucket records it (etcd's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "clientURLs", default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where in the log a backup was taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position {
    /// The last applied log index (etcd's consistent index).
    pub index: u64,
    /// Its term.
    pub term: u64,
}

fn rev_bytes(main: Revision, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(REV_LEN + 1);
    b.extend_from_slice(&main.to_be_bytes());
    b.push(b'_');
    b.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        b.push(TOMBSTONE);
    }
    b
}

/// (main, sub, tombstone) of a `key` bucket key.
fn parse_rev(b: &[u8]) -> Option<(Revision, i64, bool)> {
    let tombstone = match b.len() {
        REV_LEN => false,
        n if n == REV_LEN + 1 && b[REV_LEN] == TOMBSTONE => true,
        _ => return None,
    };
    if b[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(b[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(b[9..17].try_into().ok()?);
    Some((main, sub, tombstone))
}

/// `state` (taken at `at`, with `members`) as etcd's buckets.
pub fn to_buckets(state: &State, members: &[Member], at: Position) -> Buckets {
    let mut buckets = Buckets::new();
    buckets.insert(KEY.to_vec(), key_bucket(state));
    let mut meta: Entries = vec![
        (CONSISTENT_INDEX.to_vec(), at.index.to_be_bytes().to_vec()),
        (TERM.to_vec(), at.term.to_be_bytes().to_vec()),
    ];
    if state.compacted > 0 {
        for name in [FINISHED_COMPACT, SCHEDULED_COMPACT] {
            meta.push((name.to_vec(), rev_bytes(state.compacted, 0, false)));
        }
    }
    buckets.insert(META.to_vec(), sorted(meta));
    let now = Instant::now();
    let leases = state
        .leases
        .iter()
        .map(|(id, lease)| {
            let elapsed = lease
                .recorded_at
                .map_or(0, |at| now.saturating_duration_since(at).as_millis() as i64);
            let left_ms = lease.remaining_ms.saturating_sub(elapsed).max(1);
            let record = pb::leasepb::Lease {
                id: *id,
                ttl: lease.ttl,
                remaining_ttl: (left_ms + 999) / 1000,
            };
            ((*id as u64).to_be_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(LEASE.to_vec(), sorted(leases));
    let members = members
        .iter()
        .map(|m| {
            let json = serde_json::to_vec(m).expect("invariant: a member always encodes");
            (format!("{:x}", m.id).into_bytes(), json)
        })
        .collect();
    buckets.insert(MEMBERS.to_vec(), sorted(members));
    auth_buckets(&state.auth, &mut buckets);
    for name in EMPTY_BUCKETS {
        buckets.insert(name.to_vec(), Vec::new());
    }
    buckets
}

/// Users, roles and whether auth is on, as etcd's `auth`, `authUsers`
/// and `authRoles` buckets.
fn auth_buckets(auth: &AuthState, buckets: &mut Buckets) {
    let flags = vec![
        (AUTH_ENABLED.to_vec(), vec![u8::from(auth.enabled)]),
        (AUTH_REVISION.to_vec(), auth.revision.to_be_bytes().to_vec()),
    ];
    buckets.insert(AUTH.to_vec(), sorted(flags));
    let users = auth
        .users
        .iter()
        .map(|(name, u)| {
            let record = pb::authpb::User {
                name: name.as_bytes().to_vec(),
                password: u.password.clone().unwrap_or_default().into_bytes(),
                roles: u.roles.iter().cloned().collect(),
                options: Some(pb::authpb::UserAddOptions {
                    no_password: u.password.is_none(),
                }),
            };
            (name.as_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(AUTH_USERS.to_vec(), sorted(users));
    let roles = auth
        .roles
        .iter()
        .map(|(name, r)| {
            let kind = |k| match k {
                PermKind::Read => pb::authpb::permission::Type::Read,
                PermKind::Write => pb::authpb::permission::Type::Write,
                PermKind::ReadWrite => pb::authpb::permission::Type::Readwrite,
            };
            let record = pb::authpb::Role {
                name: name.as_bytes().to_vec(),
                key_permission: r
                    .perms
                    .iter()
                    .map(|p| pb::authpb::Permission {
                        perm_type: kind(p.kind) as i32,
                        key: p.key.clone(),
                        range_end: p.range_end.clone(),
                    })
                    .collect(),
            };
            (name.as_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(AUTH_ROLES.to_vec(), sorted(roles));
}

/// etcd's `auth`, `authUsers` and `authRoles` buckets back into users,
/// roles and whether auth is on (without a token key: the restoring
/// member picks one). Refuses anything malformed.
fn auth_from_buckets(buckets: &Buckets) -> Result<AuthState, SchemaError> {
    let mut auth = AuthState::default();
    for (k, v) in buckets.get(AUTH).into_iter().flatten() {
        match k.as_slice() {
            AUTH_ENABLED => auth.enabled = v.as_slice() == [1],
            AUTH_REVISION => {
                let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) else {
                    return bad("`auth` bucket: authRevision is not 8 bytes");
                };
                auth.revision = u64::from_be_bytes(b);
            }
            _ => {}
        }
    }
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| SchemaError(format!("{what} is not UTF-8")))
    };
    for (k, v) in buckets.get(AUTH_USERS).into_iter().flatten() {
        let u = pb::authpb::User::decode(v.as_slice())
            .map_err(|e| SchemaError(format!("`authUsers` bucket: {e}")))?;
        let name = text(&u.name, "a user name")?;
        if name.as_bytes() != k.as_slice() || name.is_empty() {
            return bad(format!(
                "`authUsers` bucket: user {name:?} under another key"
            ));
        }
        let password = if u.password.is_empty() {
            None
        } else {
            Some(text(&u.password, "a password hash")?)
        };
        let user = User {
            password,
            roles: u.roles.into_iter().collect(),
            password_revision: 0,
        };
        auth.users.insert(name, user);
    }
    for (k, v) in buckets.get(AUTH_ROLES).into_iter().flatten() {
        let r = pb::authpb::Role::decode(v.as_slice())
            .map_err(|e| SchemaError(format!("`authRoles` bucket: {e}")))?;
        let name = text(&r.name, "a role name")?;
        if name.as_bytes() != k.as_slice() || name.is_empty() {
            return bad(format!(
                "`authRoles` bucket: role {name:?} under another key"
            ));
        }
        let mut perms = Vec::with_capacity(r.key_permission.len());
        for p in r.key_permission {
            let kind = match pb::authpb::permission::Type::try_from(p.perm_type) {
                Ok(pb::authpb::permission::Type::Read) => PermKind::Read,
                Ok(pb::authpb::permission::Type::Write) => PermKind::Write,
                Ok(pb::authpb::permission::Type::Readwrite) => PermKind::ReadWrite,
                Err(_) => return bad(format!("role {name:?}: unknown permission type")),
            };
            if !valid_perm_range(&p.key, &p.range_end) {
                return bad(format!("role {name:?}: a permission over no keys"));
            }
            perms.push(Permission {
                kind,
                key: p.key,
                range_end: p.range_end,
            });
        }
        auth.roles.insert(name, Role { perms });
    }
    if auth.enabled && !auth.is_admin(ROOT) {
        return bad("auth is on but there is no root user with the root role");
    }
    Ok(auth)
}

fn sorted(mut entries: Entries) -> Entries {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

fn key_bucket(state: &State) -> Entries {
    let mut known: HashMap<(Revision, &[u8]), u32> = HashMap::new();
    let mut used: HashSet<(Revision, u32)> = HashSet::new();
    for ((rev, sub), key) in &state.events {
        known.insert((*rev, key.as_slice()), *sub);
        used.insert((*rev, *sub));
    }
    let mut entries = Vec::with_capacity(state.versions);
    for (key, versions) in &state.history {
        for (rev, version) in versions.iter() {
            let sub = match known.get(&(*rev, key.as_slice())) {
                Some(sub) => *sub,
                None => {
                    let free = (0..).find(|s| !used.contains(&(*rev, *s))).unwrap_or(0);
                    used.insert((*rev, free));
                    free
                }
            };
            let (tombstone, kv) = match version {
                Version::Put {
                    create_revision,
                    version,
                    value,
                    lease,
                } => (
                    false,
                    pb::KeyValue {
                        key: key.clone(),
                        create_revision: *create_revision,
                        mod_revision: *rev,
                        version: *version,
                        value: value.clone(),
                        lease: *lease,
                    },
                ),
                Version::Delete => (
                    true,
                    pb::KeyValue {
                        key: key.clone(),
                        ..Default::default()
                    },
                ),
            };
            entries.push((rev_bytes(*rev, sub.into(), tombstone), kv.encode_to_vec()));
        }
    }
    sorted(entries)
}

/// An etcd database read back as raftkv's state.
#[derive(Debug)]
pub struct Restored {
    pub state: State,
    /// The members it names (not restored: a restore makes a new cluster).
    pub members: Vec<Member>,
}

/// Reads etcd's buckets into a state: every version still held, the
/// compaction point, the leases. Refuses anything malformed.
pub fn from_buckets(buckets: &Buckets) -> Result<Restored, SchemaError> {
    let Some(keys) = buckets.get(KEY) else {
        return bad("it has no `key` bucket");
    };
    let meta: BTreeMap<&[u8], &[u8]> = buckets
        .get(META)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let compact_rev = |name: &[u8]| -> Result<Revision, SchemaError> {
        match meta.get(name) {
            None => Ok(0),
            Some(v) => match parse_rev(v) {
                Some((main, _, false)) if main >= 0 => Ok(main),
                _ => bad(format!(
                    "meta {} is not a revision",
                    String::from_utf8_lossy(name)
                )),
            },
        }
    };
    let finished = compact_rev(FINISHED_COMPACT)?;
    let scheduled = compact_rev(SCHEDULED_COMPACT)?;

    let mut state = State {
        compacted: finished,
        ..State::default()
    };
    let mut top = INITIAL_REVISION.max(finished);
    for (k, v) in keys {
        let Some((main, sub, tombstone)) = parse_rev(k) else {
            return bad(format!("`key` bucket: {k:02x?} is not a revision"));
        };
        let sub = u32::try_from(sub)
            .ok()
            .filter(|_| main >= 1)
            .ok_or_else(|| {
                SchemaError(format!("`key` bucket: revision {main}.{sub} out of range"))
            })?;
        let kv = pb::KeyValue::decode(v.as_slice())
            .map_err(|e| SchemaError(format!("revision {main}: {e}")))?;
        if kv.key.is_empty() {
            return bad(format!("revision {main}: empty key"));
        }
        let version = if tombstone {
            Version::Delete
        } else {
            if kv.mod_revision != main
                || !(1..=main).contains(&kv.create_revision)
                || kv.version < 1
                || kv.lease < 0
            {
                return bad(format!(
                    "revision {main}: inconsistent key metadata (create {}, mod {}, version {})",
                    kv.create_revision, kv.mod_revision, kv.version
                ));
            }
            Version::Put {
                create_revision: kv.create_revision,
                version: kv.version,
                value: kv.value,
                lease: kv.lease,
            }
        };
        let versions: &mut Versions = state.history.entry(kv.key.clone()).or_default();
        if versions.insert(main, version).is_some() {
            return bad(format!("revision {main}: two versions of one key"));
        }
        if main >= finished {
            state.events.insert((main, sub), kv.key);
        }
        top = top.max(main);
    }
    state.revision = top;
    if scheduled > finished && scheduled <= top {
        // A compaction etcd had begun but not finished: finish it.
        state.history.retain(|_, versions| {
            versions.compact(scheduled);
            !versions.is_empty()
        });
        state.events = state.events.split_off(&(scheduled, 0));
        state.compacted = scheduled;
    }

    for (k, v) in buckets.get(LEASE).into_iter().flatten() {
        let id = <[u8; 8]>::try_from(k.as_slice())
            .map(|b| u64::from_be_bytes(b) as i64)
            .map_err(|_| SchemaError(format!("`lease` bucket: {k:02x?} is not a lease id")))?;
        let record = pb::leasepb::Lease::decode(v.as_slice())
            .map_err(|e| SchemaError(format!("lease {id:x}: {e}")))?;
        if record.id != id || id <= 0 || record.ttl <= 0 {
            return bad(format!("lease {id:x}: inconsistent record"));
        }
        let left = match record.remaining_ttl {
            r if r > 0 => r.min(record.ttl),
            _ => record.ttl,
        };
        let lease = Lease {
            ttl: record.ttl,
            remaining_ms: left.saturating_mul(1000),
            recorded_at: Some(Instant::now()),
            keys: Default::default(),
        };
        state.leases.insert(id, lease);
    }
    state.recount();

    let members = buckets
        .get(MEMBERS)
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect();
    state.auth = auth_from_buckets(buckets)?;
    Ok(Restored { state, members })
}
