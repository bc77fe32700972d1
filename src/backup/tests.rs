//! Unit tests of backups: bbolt files written and read back (small and
//! inline buckets, many keys over several tree levels, values spanning
//! pages), damaged files refused without a panic, and raftkv's state
//! through etcd's buckets and back.

use super::bbolt::{self, Buckets, PAGE_SIZE};
use super::etcd::{self, Member, Position};
use super::file;
use crate::store::{KeyRange, KvStore, State, Version};

fn buckets(sizes: &[(&str, usize, usize)]) -> Buckets {
    sizes
        .iter()
        .map(|(name, n, value_len)| {
            let entries = (0..*n)
                .map(|i| {
                    (
                        format!("k{i:08}").into_bytes(),
                        vec![(i % 251) as u8; *value_len],
                    )
                })
                .collect();
            (name.as_bytes().to_vec(), entries)
        })
        .collect()
}

#[test]
fn databases_read_back_as_written() {
    for shape in [
        vec![],
        vec![("empty", 0, 0)],
        vec![("inline", 3, 10), ("other", 1, 0)],
        vec![("one_page", 40, 50)],
        // Thousands of keys: leaves under two levels of branches.
        vec![("many", 60_000, 8), ("small", 2, 2)],
        // Values larger than a page: overflow pages.
        vec![("big", 5, 3 * PAGE_SIZE + 7), ("after", 10, 1)],
    ] {
        let want = buckets(&shape);
        let bytes = bbolt::write(&want);
        assert_eq!(bytes.len() % PAGE_SIZE, 0);
        let db = bbolt::read(&bytes).unwrap();
        assert_eq!(db.buckets, want, "shape {shape:?}");
        assert_eq!(db.size, bytes.len() as u64);
    }
}

#[test]
fn a_damaged_meta_page_falls_back_to_the_other() {
    let want = buckets(&[("b", 10, 10)]);
    let mut bytes = bbolt::write(&want);
    bytes[PAGE_SIZE + 20] ^= 0xff;
    assert_eq!(bbolt::read(&bytes).unwrap().buckets, want);
    bytes[20] ^= 0xff;
    let err = bbolt::read(&bytes).unwrap_err().to_string();
    assert!(err.contains("no valid meta page"), "{err}");
}

#[test]
fn damaged_files_are_refused_never_panic() {
    let bytes = bbolt::write(&buckets(&[("a", 300, 20), ("b", 2, 5000)]));
    for len in (0..bytes.len()).step_by(509) {
        assert!(bbolt::read(&bytes[..len]).is_err(), "truncated to {len}");
    }
    // Every byte of every page flipped in turn: an error or (for bytes no
    // reader looks at) the same data, but never a panic.
    let mut flipped = 0;
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        if bbolt::read(&bad).is_err() {
            flipped += 1;
        }
    }
    assert!(flipped > 1000, "only {flipped} flips were noticed");
}

#[test]
fn the_trailer_is_checked() {
    let db = bbolt::write(&buckets(&[("key", 1, 1)]));
    let sealed = file::seal(db.clone());
    assert_eq!(file::open(&sealed, false).unwrap(), db.as_slice());
    let mut bad = sealed.clone();
    bad[100] ^= 1;
    assert!(matches!(
        file::open(&bad, false),
        Err(file::BackupError::HashMismatch)
    ));
    assert!(matches!(
        file::open(&sealed[..sealed.len() - 1], false),
        Err(file::BackupError::NoHash(_))
    ));
    assert_eq!(file::open(&db, true).unwrap(), db.as_slice());
    assert!(file::open(&db, false).is_err());
}

/// A state with history, a transaction's several keys at one revision,
/// deletes, a compaction and leases.
fn sample_state() -> State {
    let kv = KvStore::new(State::default());
    let mut b = kv.batch();
    b.grant(7, 30).unwrap();
    for round in 0..3 {
        let mut w = b.write();
        for key in ["a", "b", "c"] {
            let value = format!("{key}{round}").into_bytes();
            w.put(key.as_bytes(), Some(value), Some(0), false, false)
                .unwrap();
        }
        w.finish();
        let mut w = b.write();
        w.put(b"leased", Some(b"x".to_vec()), Some(7), false, false)
            .unwrap();
        w.finish();
    }
    let mut w = b.write();
    w.delete_range(&KeyRange::new(b"b", &[]), false);
    w.finish();
    b.compact(5).unwrap();
    let mut w = b.write();
    w.delete_range(&KeyRange::new(b"c", &[]), false);
    w.finish();
    let mut w = b.write();
    w.put(b"d", Some(Vec::new()), Some(0), false, false)
        .unwrap();
    w.finish();
    drop(b);
    State::decode(&kv.encode().unwrap()).unwrap()
}

#[test]
fn state_goes_through_etcds_buckets_unchanged() {
    let state = sample_state();
    let members = vec![Member {
        id: 0xabc,
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        name: "node1".into(),
        client_urls: vec!["http://127.0.0.1:2379".into()],
        is_learner: false,
    }];
    let at = Position { index: 42, term: 3 };
    let db = bbolt::write(&etcd::to_buckets(&state, &members, at));
    let sealed = file::seal(db);
    let (read, back) = file::verify(&sealed, false).unwrap();
    let got = back.state;
    assert_eq!(got.revision, state.revision);
    assert_eq!(got.compacted, 5);
    assert_eq!(got.history, state.history);
    assert_eq!(got.events, state.events);
    assert_eq!(
        (got.live, got.versions, got.bytes),
        (state.live, state.versions, state.bytes)
    );
    assert_eq!(got.leases.keys().collect::<Vec<_>>(), vec![&7]);
    let lease = &got.leases[&7];
    assert_eq!(lease.ttl, 30);
    assert!(lease.keys.contains(b"leased".as_slice()));
    assert_eq!(back.members, members);
    // What etcdctl snapshot status would print.
    let status = file::status(&read);
    assert_eq!(status.revision, state.revision);
    // The versions, a lease, 4 meta keys, a member, 2 auth keys.
    assert_eq!(status.total_keys as usize, state.versions + 1 + 4 + 1 + 2);
    assert_eq!(status.total_size, (sealed.len() - file::HASH_LEN) as u64);
}

#[test]
fn versions_older_than_the_compaction_get_unique_sub_revisions() {
    let state = sample_state();
    let buckets = etcd::to_buckets(&state, &[], Position::default());
    let keys = &buckets[b"key".as_slice()];
    // Revision 2 wrote a, b and c in one transaction; the compaction at 5
    // forgot which was which, but a keeps its version from 5 and the rest
    // were rewritten since, so each key of the bucket is distinct anyway.
    let mut seen = std::collections::HashSet::new();
    for (k, _) in keys {
        assert!(seen.insert(&k[..17]), "revision {k:?} twice");
    }
    assert_eq!(keys.len(), state.versions);
}

#[test]
fn malformed_etcd_records_are_refused() {
    let state = sample_state();
    let good = etcd::to_buckets(&state, &[], Position::default());
    type Damage = Box<dyn Fn(&mut Buckets)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "no key bucket",
            Box::new(|b| {
                b.remove(b"key".as_slice());
            }),
        ),
        (
            "revision key",
            Box::new(|b| {
                b.get_mut(b"key".as_slice()).unwrap()[0].0.pop();
            }),
        ),
        (
            "protobuf",
            Box::new(|b| {
                b.get_mut(b"key".as_slice()).unwrap()[0].1 = vec![0xff; 3];
            }),
        ),
        (
            "mod revision",
            Box::new(|b| {
                let e = &mut b.get_mut(b"key".as_slice()).unwrap()[0];
                e.0[7] = e.0[7].wrapping_add(1);
            }),
        ),
        (
            "lease id",
            Box::new(|b| {
                b.get_mut(b"lease".as_slice()).unwrap()[0].0 = vec![0; 8];
            }),
        ),
        (
            "compaction",
            Box::new(|b| {
                b.get_mut(b"meta".as_slice()).unwrap()[1].1 = b"five".to_vec();
            }),
        ),
    ];
    for (what, damage) in cases {
        let mut b = good.clone();
        damage(&mut b);
        assert!(etcd::from_buckets(&b).is_err(), "{what} accepted");
    }
    assert!(etcd::from_buckets(&good).is_ok());
}

#[test]
fn deletes_are_tombstones() {
    let state = sample_state();
    let buckets = etcd::to_buckets(&state, &[], Position::default());
    let tombstones = buckets[b"key".as_slice()]
        .iter()
        .filter(|(k, _)| k.len() == 18 && k[17] == b't')
        .count();
    let deletes = state
        .history
        .values()
        .flat_map(|v| v.iter())
        .filter(|(_, v)| matches!(v, Version::Delete))
        .count();
    assert_eq!(tombstones, deletes);
    assert!(deletes >= 1);
}

/// Once etcd has written to a database, the freelist moves and page 2 can
/// hold a tree: here the root tree is moved there.
#[test]
fn a_tree_may_live_on_page_two() {
    let want = buckets(&[("a", 2, 3), ("b", 1, 1)]);
    let mut bytes = bbolt::write(&want);
    let root_at = bytes.len() - PAGE_SIZE;
    let root = bytes[root_at..].to_vec();
    bytes[2 * PAGE_SIZE..3 * PAGE_SIZE].copy_from_slice(&root);
    bytes[2 * PAGE_SIZE..2 * PAGE_SIZE + 8].copy_from_slice(&2u64.to_le_bytes());
    for meta in [16, PAGE_SIZE + 16] {
        bytes[meta + 16..meta + 24].copy_from_slice(&2u64.to_le_bytes());
        let sum = bbolt::fnv64a(&bytes[meta..meta + 56]);
        bytes[meta + 56..meta + 64].copy_from_slice(&sum.to_le_bytes());
    }
    assert_eq!(bbolt::read(&bytes).unwrap().buckets, want);
}

/// Users, roles and whether auth is on go into etcd's auth buckets and
/// come back as they were (but for the token key, which a restore never
/// carries, and the revisions passwords were set at).
#[test]
fn auth_round_trips_through_the_buckets() {
    use crate::store::{AuthCommand, PermKind, Permission, ROOT};
    let mut state = State::default();
    for change in [
        AuthCommand::UserAdd {
            name: ROOT.into(),
            password: Some("$2b$04$abcdefghijklmnopqrstuu5TnZcOW8X1hN0sTT1x8ViRxn6fjqOKi".into()),
        },
        AuthCommand::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        },
        AuthCommand::UserAdd {
            name: "cert-only".into(),
            password: None,
        },
        AuthCommand::RoleAdd { name: "r".into() },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: Permission {
                kind: PermKind::ReadWrite,
                key: b"app/".to_vec(),
                range_end: b"app0".to_vec(),
            },
        },
        AuthCommand::UserGrantRole {
            user: "cert-only".into(),
            role: "r".into(),
        },
        AuthCommand::Enable {
            token_key: vec![5; 32],
        },
    ] {
        state.auth.apply(change).unwrap();
    }
    let buckets = etcd::to_buckets(&state, &[], etcd::Position::default());
    let back = etcd::from_buckets(&buckets).unwrap().state.auth;
    let mut want = state.auth.clone();
    want.token_key.clear();
    for user in want.users.values_mut() {
        user.password_revision = 0;
    }
    assert_eq!(back, want);
}
