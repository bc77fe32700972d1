//! Whether a caller may run a command or a read, against one state: the
//! auth checks of etcd's `apply_auth.go` and `v3_server.go`, made at least
//! as strict as etcd's 2026 fixes: every operation of both branches of a
//! transaction, nested ones included; compares need read permission;
//! `prev_kv` needs read permission; attaching a key to a lease, and
//! revoking a lease, need write permission on every key already attached
//! to it (unless the caller is an admin); compaction needs root.
//!
//! Used on the member that takes a request (to refuse early with a clear
//! error) and when a write is applied (`Command::AsUser`), so the verdict
//! that counts is the one of the auth state at the write's place in the
//! log.

use std::collections::BTreeMap;

use super::auth::{AuthError, AuthState, Need};
use super::command::Command;
use super::kv::KeyRange;
use super::state::{Lease, LeaseId};
use super::txn::{Txn, TxnOp};

/// `range` as etcd's (key, range_end) pair for a permission check: an
/// open end is `"\0"`, and the empty start of "every key" is `"\0"` (no
/// key is empty).
fn as_pair(range: &KeyRange) -> (&[u8], &[u8]) {
    match range {
        KeyRange::Single(key) => (key, b""),
        KeyRange::Span { start, end } => {
            let start: &[u8] = if start.is_empty() { b"\0" } else { start };
            (start, end.as_deref().unwrap_or(b"\0"))
        }
    }
}

/// Whether `caller` may read `range`.
pub fn check_read(
    auth: &AuthState,
    caller: Option<&str>,
    range: &KeyRange,
) -> Result<(), AuthError> {
    let (key, end) = as_pair(range);
    auth.check_range(caller, key, end, Need::Read)
}

/// Whether `caller` may attach a key to, or revoke, lease `id`: an admin
/// may; anyone else needs write permission on each key already attached.
/// A lease that does not exist is the write's own error to report.
pub fn check_lease_keys(
    auth: &AuthState,
    leases: &BTreeMap<LeaseId, Lease>,
    caller: Option<&str>,
    id: LeaseId,
    need: Need,
) -> Result<(), AuthError> {
    if !auth.enabled || id == 0 {
        return Ok(());
    }
    auth.check_user(caller)?;
    if caller.is_some_and(|u| auth.is_admin(u)) {
        return Ok(());
    }
    let Some(lease) = leases.get(&id) else {
        return Ok(());
    };
    for key in &lease.keys {
        auth.check_range(caller, key, b"", need)?;
    }
    Ok(())
}

fn check_put(
    auth: &AuthState,
    leases: &BTreeMap<LeaseId, Lease>,
    caller: Option<&str>,
    key: &[u8],
    lease: Option<LeaseId>,
    prev_kv: bool,
) -> Result<(), AuthError> {
    auth.check_range(caller, key, b"", Need::Write)?;
    if let Some(id) = lease {
        check_lease_keys(auth, leases, caller, id, Need::Write)?;
    }
    if prev_kv {
        auth.check_range(caller, key, b"", Need::Read)?;
    }
    Ok(())
}

fn check_delete(
    auth: &AuthState,
    caller: Option<&str>,
    range: &KeyRange,
    prev_kv: bool,
) -> Result<(), AuthError> {
    let (key, end) = as_pair(range);
    auth.check_range(caller, key, end, Need::Write)?;
    if prev_kv {
        auth.check_range(caller, key, end, Need::Read)?;
    }
    Ok(())
}

/// Whether `caller` may run transaction `t`: a user (even for an empty
/// one, which etcd serves to anyone), read permission on every compare,
/// and every operation of both branches allowed, whichever branch would
/// run; nested transactions alike.
pub fn check_txn(
    auth: &AuthState,
    leases: &BTreeMap<LeaseId, Lease>,
    caller: Option<&str>,
    t: &Txn,
) -> Result<(), AuthError> {
    if !auth.enabled {
        return Ok(());
    }
    auth.check_user(caller)?;
    for c in &t.compare {
        check_read(auth, caller, &c.range)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            TxnOp::Range(q) => check_read(auth, caller, &q.range)?,
            TxnOp::PutV1 { key, prev_kv, .. } => {
                check_put(auth, leases, caller, key, None, *prev_kv)?
            }
            TxnOp::Put {
                key,
                lease,
                prev_kv,
                ..
            } => check_put(auth, leases, caller, key, *lease, *prev_kv)?,
            TxnOp::DeleteRange { range, prev_kv } => check_delete(auth, caller, range, *prev_kv)?,
            TxnOp::Txn(inner) => check_txn(auth, leases, caller, inner)?,
        }
    }
    Ok(())
}

/// Whether `caller` may have `cmd` applied. Commands a client cannot ask
/// for (members' bookkeeping) are refused: they never come wrapped.
pub fn check_command(
    auth: &AuthState,
    leases: &BTreeMap<LeaseId, Lease>,
    caller: Option<&str>,
    cmd: &Command,
) -> Result<(), AuthError> {
    match cmd {
        Command::Auth(_) => auth.check_admin(caller),
        _ if !auth.enabled => Ok(()),
        Command::Put {
            key,
            lease,
            prev_kv,
            ..
        } => check_put(auth, leases, caller, key, *lease, *prev_kv),
        Command::PutV1 { key, prev_kv, .. } => check_put(auth, leases, caller, key, None, *prev_kv),
        Command::DeleteRange {
            key,
            range_end,
            prev_kv,
        } => check_delete(auth, caller, &KeyRange::new(key, range_end), *prev_kv),
        Command::Txn(t) => check_txn(auth, leases, caller, t),
        Command::Compact { .. } => auth.check_admin(caller),
        Command::LeaseGrant { .. } => auth.check_user(caller),
        Command::LeaseRevoke { id } => check_lease_keys(auth, leases, caller, *id, Need::Write),
        Command::Batch(_)
        | Command::AsUser { .. }
        | Command::PublishMember { .. }
        | Command::LeaseCheckpoint { .. }
        | Command::LeaseExpire { .. }
        | Command::Alarm { .. } => Err(AuthError::PermissionDenied),
    }
}
