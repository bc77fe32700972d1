//! Unit tests of leases in the state machine: grant, attach, revoke (every
//! key at one revision), checkpoints, transactions, snapshots, and reading
//! log entries written before leases.

use super::apply::apply;
use super::*;

fn run(s: &KvStore, cmd: Command) -> Response {
    let mut b = s.batch();
    apply(&mut b, cmd)
}

fn grant(s: &KvStore, id: i64, ttl: i64) -> Response {
    run(s, Command::LeaseGrant { id, ttl })
}

fn put(s: &KvStore, key: &str, lease: Option<i64>) -> Response {
    run(
        s,
        Command::Put {
            key: key.into(),
            value: Some(b"v".to_vec()),
            lease,
            must_exist: false,
            prev_kv: false,
        },
    )
}

fn lease_of(s: &KvStore, key: &str) -> Option<i64> {
    s.get(key.as_bytes()).map(|kv| kv.lease)
}

#[test]
fn grant_attach_and_detach() {
    let s = KvStore::default();
    assert!(matches!(
        grant(&s, 7, 10),
        Response::LeaseGranted {
            id: 7,
            ttl: 10,
            revision: 1
        }
    ));
    assert_eq!(grant(&s, 7, 5), Response::Rejected(Rejection::LeaseExists));
    assert_eq!(
        put(&s, "a", Some(8)),
        Response::Rejected(Rejection::LeaseNotFound)
    );
    assert_eq!(s.revision(), 1, "a refused put changes nothing");
    put(&s, "a", Some(7));
    put(&s, "b", Some(7));
    assert_eq!(lease_of(&s, "a"), Some(7));
    // ignore_lease keeps it; lease 0 detaches; a delete detaches.
    put(&s, "a", None);
    assert_eq!(lease_of(&s, "a"), Some(7));
    assert_eq!(
        put(&s, "missing", None),
        Response::Rejected(Rejection::KeyNotFound)
    );
    put(&s, "b", Some(0));
    assert_eq!(lease_of(&s, "b"), Some(0));
    let leases = s.leases();
    assert_eq!(leases[&7].keys, [b"a".to_vec()].into());
    assert_eq!(leases[&7].ttl, 10);
    assert_eq!(s.revision(), 5, "grants never move the revision");
}

#[test]
fn an_expiry_counts_only_in_the_term_it_was_decided_in() {
    let s = KvStore::default();
    grant(&s, 7, 10);
    put(&s, "a", Some(7));
    let before = s.revision();
    let expire = |term| Command::LeaseExpire { id: 7, term };
    // Proposed late by a member that led in term 3, committed in term 4:
    // nothing changes.
    let stale = apply::apply_in_term(&mut s.batch(), expire(3), Some(4));
    assert_eq!(stale, Response::Applied { revision: before });
    assert!(s.get(b"a").is_some());
    assert_eq!(lease_of(&s, "a"), Some(7));
    // Outside any term (a test's apply): nothing either.
    assert_eq!(run(&s, expire(4)), Response::Applied { revision: before });
    // In its own term: revoked, its key deleted.
    let ended = apply::apply_in_term(&mut s.batch(), expire(4), Some(4));
    assert_eq!(
        ended,
        Response::LeaseRevoked {
            revision: before + 1
        }
    );
    assert!(s.get(b"a").is_none());
    assert!(s.leases().is_empty());
}

#[test]
fn revoking_deletes_every_attached_key_at_one_revision() {
    let s = KvStore::default();
    grant(&s, 7, 10);
    for k in ["c", "a", "b"] {
        put(&s, k, Some(7));
    }
    put(&s, "other", Some(0));
    let before = s.revision();
    assert_eq!(
        run(&s, Command::LeaseRevoke { id: 7 }),
        Response::LeaseRevoked {
            revision: before + 1
        }
    );
    let deletes: Vec<(i64, Vec<u8>)> = s
        .events(before + 1, i64::MAX, 1 << 20, |_, kind| {
            kind == EventKind::Delete
        })
        .0
        .into_iter()
        .map(|e| (e.kv.mod_revision, e.kv.key))
        .collect();
    assert_eq!(
        deletes,
        vec![
            (before + 1, b"a".to_vec()),
            (before + 1, b"b".to_vec()),
            (before + 1, b"c".to_vec())
        ]
    );
    assert!(s.get(b"other").is_some());
    assert!(s.leases().is_empty());
    assert_eq!(
        run(&s, Command::LeaseRevoke { id: 7 }),
        Response::Rejected(Rejection::LeaseNotFound)
    );
    // A lease with no keys is revoked without a new revision.
    grant(&s, 8, 10);
    let now = s.revision();
    assert_eq!(
        run(&s, Command::LeaseRevoke { id: 8 }),
        Response::LeaseRevoked { revision: now }
    );
}

#[test]
fn checkpoints_record_the_time_left_within_the_ttl() {
    let s = KvStore::default();
    grant(&s, 7, 10);
    assert_eq!(s.leases()[&7].remaining_ms, 10_000);
    run(
        &s,
        Command::LeaseCheckpoint {
            remaining_ms: vec![(7, 4_500), (99, 1)],
        },
    );
    assert_eq!(s.leases()[&7].remaining_ms, 4_500);
    run(
        &s,
        Command::LeaseCheckpoint {
            remaining_ms: vec![(7, 60_000)],
        },
    );
    assert_eq!(s.leases()[&7].remaining_ms, 10_000, "never above the TTL");
    assert_eq!(s.leases().len(), 1, "unknown leases are skipped");
}

#[test]
fn transactions_compare_and_attach_leases() {
    let s = KvStore::default();
    grant(&s, 7, 10);
    put(&s, "k", Some(7));
    let on_lease = |lease| Compare {
        range: KeyRange::new(b"k", b""),
        target: CompareTarget::Lease(lease),
        result: CompareResult::Equal,
    };
    let put_op = |key: &str, lease| TxnOp::Put {
        key: key.into(),
        value: Some(b"x".to_vec()),
        lease,
        must_exist: false,
        prev_kv: false,
    };
    let txn = Txn {
        compare: vec![on_lease(7)],
        success: vec![put_op("t", Some(7))],
        failure: vec![],
    };
    assert!(matches!(run(&s, Command::Txn(txn)), Response::Txn { result, .. } if result.succeeded));
    assert_eq!(lease_of(&s, "t"), Some(7));
    // A put to a missing lease refuses the whole transaction.
    let before = s.revision();
    let txn = Txn {
        compare: vec![on_lease(0)],
        success: vec![],
        failure: vec![put_op("u", Some(0)), put_op("v", Some(9))],
    };
    assert_eq!(
        run(&s, Command::Txn(txn)),
        Response::Rejected(Rejection::LeaseNotFound)
    );
    assert_eq!(s.revision(), before);
    assert!(s.get(b"u").is_none());
}

#[test]
fn a_snapshot_keeps_leases_and_their_keys() {
    let s = KvStore::default();
    grant(&s, 7, 10);
    grant(&s, 8, 20);
    put(&s, "a", Some(7));
    put(&s, "b", Some(8));
    run(
        &s,
        Command::LeaseCheckpoint {
            remaining_ms: vec![(8, 12_345)],
        },
    );
    let restored = KvStore::default();
    restored.restore(State::decode(&s.encode().unwrap()).unwrap());
    assert_eq!(restored.leases(), s.leases());
    assert_eq!(restored.leases()[&8].remaining_ms, 12_345);
    assert_eq!(lease_of(&restored, "b"), Some(8));
    run(&restored, Command::LeaseRevoke { id: 7 });
    assert!(restored.get(b"a").is_none());
}

/// A put and a transaction written to the log before leases existed read
/// back (their old layout) and apply as puts without a lease.
#[test]
fn entries_written_before_leases_still_apply() {
    #[derive(serde::Serialize)]
    enum OldCommand {
        Put {
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            #[serde(with = "serde_bytes")]
            value: Option<Vec<u8>>,
            must_exist: bool,
            prev_kv: bool,
        },
    }
    let bytes = crate::codec::encode(&OldCommand::Put {
        key: b"old".to_vec(),
        value: Some(b"v".to_vec()),
        must_exist: false,
        prev_kv: false,
    })
    .unwrap();
    let cmd: Command = crate::codec::decode(&bytes).unwrap();
    assert!(matches!(cmd, Command::PutV1 { .. }));
    let s = KvStore::default();
    assert!(matches!(run(&s, cmd), Response::Put { revision: 2, .. }));
    assert_eq!(lease_of(&s, "old"), Some(0));
}
