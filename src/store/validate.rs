//! What makes a client write well-formed, checked before it is proposed.
//!
//! The client services check every write here once they have turned the
//! request into a `Command`, and the leader checks the writes a follower
//! forwards here too, so the peer port lets through nothing the client port
//! would refuse. Pure: nothing here reads the state. Whether a well-formed
//! write applies (a key that must exist, a revision already compacted) is
//! decided when it is applied, as `Response` data.

use std::collections::BTreeSet;

use super::auth::{valid_perm_range, AuthCommand, AuthError};
use super::command::{Command, ALARM_CORRUPT, ALARM_NOSPACE};
use super::kv::KeyRange;
use super::state::{LeaseId, MemberInfo};
use super::txn::{Txn, TxnOp};
use crate::error::{Error, Result};

/// How deep transactions may nest in one request.
pub const MAX_TXN_DEPTH: usize = 32;

/// How much bigger than its wire request a write's own encoding may be.
/// Our encoding spends a byte on every field, set or not, where protobuf
/// skips unset ones: a transaction of bare one-byte-key reads comes to under
/// three times its request. No real request comes near it.
const ENCODING_RATIO: usize = 3;

/// The per-request limits a member enforces (`--max-request-bytes`,
/// `--max-txn-ops`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most key and value bytes one write may carry.
    pub max_request_bytes: usize,
    /// Most compares, and most operations in each branch, of a transaction.
    pub max_txn_ops: usize,
}

impl Limits {
    /// The most bytes one well-formed write encodes to (`check_write`
    /// refuses more): what bounds a Raft entry and a peer message.
    pub fn max_command_bytes(&self) -> usize {
        self.max_request_bytes
            .saturating_mul(ENCODING_RATIO)
            .saturating_add(4096)
    }
}

/// Checks a write a client may send: a put, a delete, a transaction or a
/// compaction, within `limits`. A batch or a member announcement is not a
/// client's to send.
pub fn check_write(cmd: &Command, limits: &Limits) -> Result<()> {
    if cmd.payload_size() > limits.max_request_bytes
        || crate::codec::encoded_len(cmd) > limits.max_command_bytes()
    {
        return Err(Error::RequestTooLarge);
    }
    match cmd {
        Command::Put { key, .. } => check_key(key),
        Command::DeleteRange { key, .. } => check_key(key),
        Command::Txn(txn) => check_txn(txn, limits),
        Command::Compact { .. } => Ok(()),
        Command::LeaseGrant { id, ttl } => check_lease_grant(*id, *ttl),
        Command::LeaseRevoke { .. } => Ok(()),
        Command::Alarm { alarm, .. } => {
            if matches!(*alarm, ALARM_NOSPACE | ALARM_CORRUPT) {
                Ok(())
            } else {
                Err(Error::UnknownAlarm)
            }
        }
        Command::PutV1 { .. } => Err(Error::NotAClientWrite("put in the old layout")),
        Command::LeaseCheckpoint { .. } => Err(Error::NotAClientWrite("lease checkpoint")),
        Command::LeaseExpire { .. } => Err(Error::NotAClientWrite("lease expiry")),
        Command::Batch(_) => Err(Error::NotAClientWrite("batch")),
        Command::PublishMember { .. } => Err(Error::NotAClientWrite("member announcement")),
        Command::Auth(change) => check_auth_change(change),
        Command::AsUser { cmd, .. } => match **cmd {
            Command::AsUser { .. } | Command::Batch(_) => {
                Err(Error::NotAClientWrite("a caller's write inside another"))
            }
            ref inner => check_write(inner, limits),
        },
    }
}

/// Length of the key tokens are signed with (`AuthCommand::Enable`).
pub const TOKEN_KEY_BYTES: usize = 32;

/// An auth change as the Auth service makes them: a token key of the
/// right length, permissions over ranges a permission may name.
fn check_auth_change(change: &AuthCommand) -> Result<()> {
    match change {
        AuthCommand::Enable { token_key } if token_key.len() != TOKEN_KEY_BYTES => Err(
            Error::NotAClientWrite("auth enable without a proper token key"),
        ),
        AuthCommand::RoleGrantPermission { perm, .. }
            if !valid_perm_range(&perm.key, &perm.range_end) =>
        {
            Err(Error::Auth(AuthError::InvalidAuthMgmt))
        }
        _ => Ok(()),
    }
}

/// Longest member name, and most client URLs a member may announce.
const MAX_MEMBER_NAME: usize = 256;
const MAX_CLIENT_URLS: usize = 16;
const MAX_URL: usize = 512;

/// Checks what a member announces about itself.
pub fn check_member_info(info: &MemberInfo) -> Result<()> {
    if info.name.len() > MAX_MEMBER_NAME {
        return Err(Error::InvalidMember("name too long"));
    }
    if info.client_urls.len() > MAX_CLIENT_URLS {
        return Err(Error::InvalidMember("too many client URLs"));
    }
    if info
        .client_urls
        .iter()
        .any(|u| u.is_empty() || u.len() > MAX_URL)
    {
        return Err(Error::InvalidMember("a client URL is empty or too long"));
    }
    Ok(())
}

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A grant names a lease (the leader picks one for a client that did not)
/// and a TTL no larger than etcd's limit (the minimum is raised to, not
/// refused).
pub fn check_lease_grant(id: LeaseId, ttl: i64) -> Result<()> {
    if ttl > MAX_LEASE_TTL {
        return Err(Error::LeaseTtlTooLarge);
    }
    if id <= 0 {
        return Err(Error::LeaseNotFound);
    }
    Ok(())
}

/// A key must be present; any bytes, as etcd's.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

fn first_key(range: &KeyRange) -> &[u8] {
    match range {
        KeyRange::Single(key) => key,
        KeyRange::Span { start, .. } => start,
    }
}

/// Checks a transaction with etcd's rules: operation limits and keys at
/// every level, nesting at most `MAX_TXN_DEPTH` deep, and no key written
/// twice in a branch (`check_intervals`).
pub fn check_txn(txn: &Txn, limits: &Limits) -> Result<()> {
    check_txn_level(txn, limits, 1)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

/// Limits and keys of `txn` and the transactions nested in it; `depth` is
/// its own nesting level, 1 at the top.
fn check_txn_level(txn: &Txn, limits: &Limits, depth: usize) -> Result<()> {
    if depth > MAX_TXN_DEPTH {
        return Err(Error::TxnTooDeep { max: MAX_TXN_DEPTH });
    }
    let longest = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if longest > limits.max_txn_ops {
        return Err(Error::TooManyOps);
    }
    for c in &txn.compare {
        check_key(first_key(&c.range))?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Range(q) => check_key(first_key(&q.range))?,
            TxnOp::Put { key, .. } => check_key(key)?,
            TxnOp::PutV1 { .. } => return Err(Error::NotAClientWrite("put in the old layout")),
            TxnOp::DeleteRange { range, .. } => check_key(first_key(range))?,
            TxnOp::Txn(inner) => check_txn_level(inner, limits, depth + 1)?,
        }
    }
    Ok(())
}

/// etcd's rule for a branch: a key is put at most once, and never inside a
/// range the branch deletes, nested transactions included (their two
/// branches exclude each other, so a key may appear in both). Returns the
/// branch's puts and deletes.
fn check_intervals(ops: &[TxnOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::DeleteRange { range, .. } => Some(range.clone()),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    let deleted = |dels: &[KeyRange], key: &[u8]| dels.iter().any(|r| r.contains(key));
    for op in ops {
        if let TxnOp::Txn(inner) = op {
            let (puts_then, dels_then) = check_intervals(&inner.success)?;
            let (puts_else, dels_else) = check_intervals(&inner.failure)?;
            for k in &puts_then {
                if puts.contains(k) || deleted(&dels, k) {
                    return Err(Error::DuplicateKey);
                }
            }
            for k in &puts_else {
                if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                    return Err(Error::DuplicateKey);
                }
            }
            puts.extend(puts_then);
            puts.extend(puts_else);
            dels.extend(dels_then);
            dels.extend(dels_else);
        }
    }
    for op in ops {
        if let TxnOp::Put { key, .. } = op {
            if !puts.insert(key.clone()) || deleted(&dels, key) {
                return Err(Error::DuplicateKey);
            }
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RangeQuery;

    const LIMITS: Limits = Limits {
        max_request_bytes: 1024,
        max_txn_ops: 4,
    };

    fn put(key: &[u8], value: &[u8]) -> TxnOp {
        TxnOp::Put {
            lease: Some(0),
            key: key.to_vec(),
            value: Some(value.to_vec()),
            must_exist: false,
            prev_kv: false,
        }
    }

    fn del(key: &[u8], end: &[u8]) -> TxnOp {
        TxnOp::DeleteRange {
            range: KeyRange::new(key, end),
            prev_kv: false,
        }
    }

    fn txn(success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Txn {
        Txn {
            compare: vec![],
            success,
            failure,
        }
    }

    fn check(t: Txn) -> Result<()> {
        check_write(&Command::Txn(t), &LIMITS)
    }

    #[test]
    fn keys_sizes_and_limits() {
        let put_cmd = |key: &[u8], value: &[u8]| Command::Put {
            lease: Some(0),
            key: key.to_vec(),
            value: Some(value.to_vec()),
            must_exist: false,
            prev_kv: false,
        };
        assert!(check_write(&put_cmd(b"k", b"v"), &LIMITS).is_ok());
        assert!(matches!(
            check_write(&put_cmd(b"", b"v"), &LIMITS),
            Err(Error::EmptyKey)
        ));
        // Keys and values are bytes, as etcd's.
        assert!(check_write(&put_cmd(b"\xff\x00", b"\xc3"), &LIMITS).is_ok());
        assert!(matches!(
            check_write(&put_cmd(b"k", &[b'v'; 1024]), &LIMITS),
            Err(Error::RequestTooLarge)
        ));
        // Many tiny ops: few key bytes, but far more encoded bytes than a
        // request of the limit's size could hold.
        let tiny = Limits {
            max_request_bytes: 64,
            max_txn_ops: 1000,
        };
        let reads = (0..1000)
            .map(|_| TxnOp::Range(RangeQuery::new(KeyRange::new(b"", b""))))
            .collect();
        assert!(matches!(
            check_write(&Command::Txn(txn(vec![], reads)), &tiny),
            Err(Error::RequestTooLarge)
        ));
        let many = txn((0..5).map(|i| put(&[b'a' + i], b"")).collect(), vec![]);
        assert!(matches!(check(many), Err(Error::TooManyOps)));
        // Every key in a transaction counts: compares, reads, deletes,
        // nested ones, and their bytes count toward the size.
        let mut t = txn(vec![], vec![]);
        t.compare.push(crate::store::Compare {
            range: KeyRange::new(b"", b""),
            target: crate::store::CompareTarget::Version(0),
            result: crate::store::CompareResult::Equal,
        });
        assert!(matches!(check(t), Err(Error::EmptyKey)));
        let read = TxnOp::Range(RangeQuery::new(KeyRange::new(b"", b"")));
        assert!(matches!(
            check(txn(vec![], vec![read])),
            Err(Error::EmptyKey)
        ));
        let inner = TxnOp::Txn(txn(vec![del(b"", b"")], vec![]));
        assert!(matches!(
            check(txn(vec![inner], vec![])),
            Err(Error::EmptyKey)
        ));
        let big = TxnOp::Txn(txn(vec![put(b"k", &[b'v'; 1024])], vec![]));
        assert!(matches!(
            check(txn(vec![big], vec![])),
            Err(Error::RequestTooLarge)
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let nest = |levels: usize| {
            let mut t = txn(vec![put(b"k", b"")], vec![]);
            for _ in 1..levels {
                t = txn(vec![TxnOp::Txn(t)], vec![]);
            }
            t
        };
        assert!(check(nest(MAX_TXN_DEPTH)).is_ok());
        assert!(matches!(
            check(nest(MAX_TXN_DEPTH + 1)),
            Err(Error::TxnTooDeep { .. })
        ));
    }

    #[test]
    fn only_client_writes_pass() {
        let batch = Command::Batch(vec![Command::Compact { revision: 1 }]);
        assert!(matches!(
            check_write(&batch, &LIMITS),
            Err(Error::NotAClientWrite(_))
        ));
        let publish = Command::PublishMember {
            id: 2,
            info: MemberInfo::default(),
        };
        assert!(matches!(
            check_write(&publish, &LIMITS),
            Err(Error::NotAClientWrite(_))
        ));
        assert!(check_write(&Command::Compact { revision: 5 }, &LIMITS).is_ok());
        let mut info = MemberInfo {
            name: "node2".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
        };
        assert!(check_member_info(&info).is_ok());
        info.client_urls.push("x".repeat(MAX_URL + 1));
        assert!(check_member_info(&info).is_err());
    }
}
