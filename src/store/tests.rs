//! Unit tests of the state machine's logic on a real sled tree: etcd's
//! revision rules, range semantics, reads at past revisions, compaction,
//! events, and transactions (compare semantics, atomicity, one revision).

use super::apply::apply;
use super::*;

fn store() -> KvStore {
    KvStore::default()
}

/// Applies one command in its own batch.
fn run(s: &KvStore, cmd: Command) -> Response {
    let mut b = s.batch();
    let r = apply(&mut b, cmd);
    drop(b);
    r
}

fn put_cmd(key: &str, value: &str) -> Command {
    Command::Put {
        lease: Some(0),
        key: key.into(),
        value: Some(value.into()),
        must_exist: false,
        prev_kv: true,
    }
}

fn put(s: &KvStore, key: &str, value: &str) -> Option<KeyValue> {
    match run(s, put_cmd(key, value)) {
        Response::Put { prev_kv, .. } => prev_kv,
        other => panic!("{other:?}"),
    }
}

fn del(s: &KvStore, key: &str, end: &str) -> Vec<KeyValue> {
    match run(
        s,
        Command::DeleteRange {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
        },
    ) {
        Response::DeleteRange { prev_kvs, .. } => prev_kvs,
        other => panic!("{other:?}"),
    }
}

/// Every change from `from` on, within `max_bytes`.
fn all_events(s: &KvStore, from: Revision, max_bytes: usize) -> Vec<Event> {
    s.events(from, i64::MAX, max_bytes, |_, _| true).0
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn query(key: &str, end: &[u8]) -> RangeQuery {
    RangeQuery::new(KeyRange::new(key.as_bytes(), end))
}

fn range(s: &KvStore, key: &str, end: &[u8]) -> RangeResult {
    s.range(&query(key, end)).unwrap()
}

fn range_at(
    s: &KvStore,
    key: &str,
    end: &[u8],
    revision: Revision,
) -> Result<RangeResult, Rejection> {
    s.range(&RangeQuery {
        revision,
        ..query(key, end)
    })
}

fn values(r: &RangeResult) -> Vec<(String, String)> {
    r.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_new_store_is_at_revision_one() {
    let s = store();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.get(b"foo"), None);
}

#[test]
fn put_creates_then_bumps_version_and_revision() {
    let s = store();
    assert_eq!(put(&s, "foo", "a"), None);
    let kv = s.get(b"foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    assert_eq!(kv.value, b"a");
    // Same value again still counts as a write.
    let prev = put(&s, "foo", "a").unwrap();
    assert_eq!(prev.mod_revision, 2);
    let kv = s.get(b"foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(s.revision(), 3);
}

#[test]
fn delete_and_recreate_resets_version() {
    let s = store();
    put(&s, "re", "1"); // rev 2
    put(&s, "re", "2"); // rev 3
    let deleted = del(&s, "re", ""); // rev 4
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].value, b"2");
    assert_eq!(s.revision(), 4);
    put(&s, "re", "3"); // rev 5
    let kv = s.get(b"re").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_nothing_changes_nothing() {
    let s = store();
    put(&s, "a", "1");
    assert!(del(&s, "missing", "").is_empty());
    assert!(del(&s, "x", "\0").is_empty());
    assert_eq!(s.revision(), 2);
    assert!(all_events(&s, 3, 10).is_empty());
}

#[test]
fn a_range_delete_shares_one_revision() {
    let s = store();
    for k in ["p/1", "p/2", "p/3", "q"] {
        put(&s, k, "v");
    }
    assert_eq!(s.key_count(), 4);
    assert_eq!(del(&s, "p/", "p0").len(), 3);
    assert_eq!(s.revision(), 6);
    assert_eq!(s.key_count(), 1);
    assert_eq!(keys(&range(&s, "\0", b"\0")), vec!["q"]);
    let events = all_events(&s, 6, 100);
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 6));
}

#[test]
fn commands_in_one_batch_read_earlier_writes() {
    let s = store();
    let mut b = s.batch();
    apply(&mut b, put_cmd("k", "1"));
    let r = apply(&mut b, put_cmd("k", "2"));
    assert!(matches!(r, Response::Put { revision: 3, prev_kv: Some(ref p) } if p.value == b"1"));
    apply(&mut b, put_cmd("k2", "x"));
    let r = apply(
        &mut b,
        Command::DeleteRange {
            key: "k".into(),
            range_end: vec![0],
            prev_kv: false,
        },
    );
    assert!(matches!(
        r,
        Response::DeleteRange {
            revision: 5,
            deleted: 2,
            ..
        }
    ));
    drop(b);
    assert_eq!(s.revision(), 5);
    assert_eq!(s.get(b"k"), None);
    assert_eq!(
        values(&range_at(&s, "k", b"\0", 4).unwrap()),
        vec![("k".into(), "2".into()), ("k2".into(), "x".into())]
    );
}

#[test]
fn range_end_rules() {
    let s = store();
    for k in ["a", "foo", "foo/bar", "fop", "z"] {
        put(&s, k, "v");
    }
    assert_eq!(keys(&range(&s, "foo", b"")), vec!["foo"]);
    assert_eq!(keys(&range(&s, "foo", b"fop")), vec!["foo", "foo/bar"]);
    assert_eq!(
        keys(&range(&s, "foo", b"\0")),
        vec!["foo", "foo/bar", "fop", "z"]
    );
    assert_eq!(range(&s, "\0", b"\0").count, 5);
    // range_end <= key is empty, not an error.
    assert!(range(&s, "fop", b"a").kvs.is_empty());
    assert!(range(&s, "fop", b"fop").kvs.is_empty());
    // A computed prefix end need not be UTF-8.
    put(&s, "\u{7f}", "v");
    assert_eq!(range(&s, "\u{7f}", &[0x80]).count, 1);
}

#[test]
fn limit_sets_more_and_count_counts_everything() {
    let s = store();
    for k in ["p/1", "p/2", "p/3"] {
        put(&s, k, "v");
    }
    let mut q = query("p/", b"p0");
    q.limit = 1;
    let r = s.range(&q).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["p/1".to_string()], true, 3)
    );
    q.limit = 3;
    let r = s.range(&q).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (3, false, 3));
    q.count_only = true;
    let r = s.range(&q).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 3));
}

#[test]
fn keys_only_sorting_and_filters() {
    let s = store();
    put(&s, "b", "1"); // rev 2
    put(&s, "a", "3"); // rev 3
    put(&s, "c", "2"); // rev 4
    put(&s, "b", "9"); // rev 5
    let all = || query("\0", b"\0");
    let sorted = |f: &dyn Fn(&mut RangeQuery)| {
        let mut q = all();
        f(&mut q);
        s.range(&q).unwrap()
    };
    let r = sorted(&|q| q.keys_only = true);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(keys(&r), vec!["a", "b", "c"]);
    assert_eq!(
        keys(&sorted(&|q| q.sort_order = SortOrder::Descend)),
        vec!["c", "b", "a"]
    );
    // A non-key target with no order sorts ascending.
    assert_eq!(
        keys(&sorted(&|q| q.sort_target = SortTarget::Mod)),
        vec!["a", "c", "b"]
    );
    let r = sorted(&|q| {
        q.sort_target = SortTarget::Value;
        q.sort_order = SortOrder::Descend;
        q.limit = 2;
    });
    assert_eq!(
        (keys(&r), r.more),
        (vec!["b".to_string(), "a".to_string()], true)
    );
    let r = sorted(&|q| q.min_create_revision = 3);
    assert_eq!(
        (keys(&r), r.count),
        (vec!["a".to_string(), "c".to_string()], 3)
    );
    assert_eq!(keys(&sorted(&|q| q.max_mod_revision = 4)), vec!["a", "c"]);
}

#[test]
fn reads_at_past_revisions_see_the_state_of_then() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "b", "1"); // 3
    put(&s, "a", "2"); // 4
    del(&s, "b", ""); // 5
    put(&s, "b", "3"); // 6
    let at = |rev| values(&range_at(&s, "\0", b"\0", rev).unwrap());
    assert_eq!(at(1), vec![]);
    assert_eq!(at(2), vec![("a".into(), "1".into())]);
    assert_eq!(
        at(3),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())]
    );
    assert_eq!(
        at(4),
        vec![("a".into(), "2".into()), ("b".into(), "1".into())]
    );
    assert_eq!(at(5), vec![("a".into(), "2".into())]);
    assert_eq!(
        at(6),
        vec![("a".into(), "2".into()), ("b".into(), "3".into())]
    );
    let a3 = range_at(&s, "a", b"", 3).unwrap().kvs.remove(0);
    assert_eq!((a3.create_revision, a3.mod_revision, a3.version), (2, 2, 1));
    let b6 = range_at(&s, "b", b"", 6).unwrap().kvs.remove(0);
    assert_eq!((b6.create_revision, b6.version), (6, 1));
    assert_eq!(range_at(&s, "a", b"", 7), Err(Rejection::FutureRevision));
    // Count at a past revision counts the keys of then.
    assert_eq!(range_at(&s, "\0", b"\0", 5).unwrap().count, 1);
    let past = |limit, count_only| {
        s.range(&RangeQuery {
            revision: 4,
            limit,
            count_only,
            ..query("\0", b"\0")
        })
        .unwrap()
    };
    let limited = past(1, false);
    assert_eq!(
        (values(&limited), limited.count, limited.more),
        (vec![("a".into(), "2".into())], 2, true)
    );
    let counted = past(0, true);
    assert_eq!(
        (counted.kvs.len(), counted.count, counted.more),
        (0, 2, false)
    );
}

#[test]
fn compaction_drops_history_below_it_and_keeps_what_it_needs() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    put(&s, "gone", "x"); // 4
    del(&s, "gone", ""); // 5
    put(&s, "a", "3"); // 6
    let versions_before = s.version_count();
    assert_eq!(versions_before, 5);
    assert!(matches!(
        run(&s, Command::Compact { revision: 5 }),
        Response::Compacted { revision: 6 }
    ));
    assert_eq!(s.compacted(), 5);
    // Below the compaction: refused. At and above: as before.
    assert_eq!(range_at(&s, "a", b"", 4), Err(Rejection::Compacted));
    assert_eq!(
        values(&range_at(&s, "\0", b"\0", 5).unwrap()),
        vec![("a".into(), "2".into())]
    );
    assert_eq!(
        values(&range_at(&s, "\0", b"\0", 6).unwrap()),
        vec![("a".into(), "3".into())]
    );
    // Kept: a@3 (current at 5), gone@5 (a delete at the compaction, which a
    // watch from 5 sees) and a@6; dropped: a@2, gone@4.
    assert_eq!(s.version_count(), 3);
    // Events from the compacted revision on are kept.
    assert_eq!(
        all_events(&s, 1, 100)
            .iter()
            .map(|e| e.kv.mod_revision)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    // Compacting again at or below, or in the future, is refused.
    assert_eq!(
        run(&s, Command::Compact { revision: 5 }),
        Response::Rejected(Rejection::Compacted)
    );
    assert_eq!(
        run(&s, Command::Compact { revision: 9 }),
        Response::Rejected(Rejection::FutureRevision)
    );
    // The current state is untouched.
    assert_eq!(s.get(b"a").unwrap().value, b"3");
    assert_eq!(s.revision(), 6);
}

#[test]
fn events_carry_versions_and_previous_versions() {
    let s = store();
    put(&s, "k", "1"); // 2
    put(&s, "k", "2"); // 3
    del(&s, "k", ""); // 4
    let events = all_events(&s, 2, 100);
    assert_eq!(events.len(), 3);
    assert_eq!(
        (
            events[0].kind,
            events[0].kv.value.as_slice(),
            events[0].kv.version
        ),
        (EventKind::Put, &b"1"[..], 1)
    );
    assert_eq!(
        (
            events[1].kv.create_revision,
            events[1].kv.mod_revision,
            events[1].kv.version
        ),
        (2, 3, 2)
    );
    assert_eq!(
        (
            events[2].kind,
            events[2].kv.mod_revision,
            events[2].kv.value.len()
        ),
        (EventKind::Delete, 4, 0)
    );
    assert_eq!(s.version_before(b"k", 3).unwrap().value, b"1");
    assert_eq!(s.version_before(b"k", 4).unwrap().value, b"2");
    assert_eq!(s.version_before(b"k", 2), None);
    // `max` never splits a revision.
    put(&s, "x", "1"); // 5
    run(
        &s,
        Command::DeleteRange {
            key: "\0".into(),
            range_end: vec![0],
            prev_kv: false,
        },
    ); // 6: x, (k gone)
    assert_eq!(all_events(&s, 5, 1).len(), 1);
    assert_eq!(all_events(&s, 6, 1).len(), 1);
}

#[test]
fn keeping_the_value_needs_an_existing_key() {
    let s = store();
    let keep = |must_exist| Command::Put {
        lease: Some(0),
        key: "k".into(),
        value: None,
        must_exist,
        prev_kv: false,
    };
    assert_eq!(
        run(&s, keep(true)),
        Response::Rejected(Rejection::KeyNotFound)
    );
    let cmd = Command::Put {
        lease: Some(0),
        key: "k".into(),
        value: Some("v".into()),
        must_exist: true,
        prev_kv: false,
    };
    assert_eq!(run(&s, cmd), Response::Rejected(Rejection::KeyNotFound));
    assert_eq!(s.revision(), 1);
    put(&s, "k", "v");
    // ignore_value: a new revision and version, the old value.
    run(&s, keep(true));
    let kv = s.get(b"k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"v"[..], 2, 3)
    );
}

#[test]
fn members_and_meta_do_not_touch_the_revision() {
    let s = store();
    let info = MemberInfo {
        name: "n1".into(),
        client_urls: vec!["http://127.0.0.1:2379".into()],
    };
    assert_eq!(
        run(
            &s,
            Command::PublishMember {
                id: 1,
                info: info.clone()
            }
        ),
        Response::Applied { revision: 1 }
    );
    let mut b = s.batch();
    b.set_meta("x", b"y".to_vec());
    drop(b);
    assert_eq!(s.revision(), 1);
    assert_eq!(s.members()[&1], info);
    assert_eq!(s.meta("x").unwrap(), b"y");
    assert_eq!(range(&s, "\0", b"\0").count, 0);
}

#[test]
fn a_snapshot_restores_everything() {
    let a = store();
    put(&a, "x", "1");
    put(&a, "y", "2");
    let b = store();
    put(&b, "stale", "0");
    b.restore(crate::codec::decode(&a.encode().unwrap()).unwrap());
    assert_eq!(b.revision(), 3);
    assert_eq!(b.get(b"stale"), None);
    assert_eq!(b.get(b"y").unwrap().value, b"2");
    // History comes along.
    assert_eq!(
        values(&range_at(&b, "\0", b"\0", 2).unwrap()),
        vec![("x".into(), "1".into())]
    );
    assert_eq!(all_events(&b, 2, 1 << 20).len(), 2);
}

/// The layout snapshots had while live keys were kept in a map of their own.
#[derive(serde::Serialize, serde::Deserialize)]
struct OldState {
    revision: Revision,
    compacted: Revision,
    current: std::collections::BTreeMap<Vec<u8>, state::Current>,
    history: std::collections::BTreeMap<Vec<u8>, state::Versions>,
    events: std::collections::BTreeMap<(Revision, u32), Vec<u8>>,
    members: std::collections::BTreeMap<u64, MemberInfo>,
    meta: std::collections::BTreeMap<String, Vec<u8>>,
}

#[test]
fn snapshots_keep_the_layout_with_a_map_of_live_keys() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "b", "2"); // 3
    del(&s, "a", ""); // 4
    put(&s, "c", "3"); // 5
    put(&s, "b", "22"); // 6
    let bytes = s.encode().unwrap();
    // What an earlier build reads: only the live keys, with their versions.
    let old: OldState = crate::codec::decode(&bytes).unwrap();
    let live: Vec<_> = old.current.iter().map(|(k, c)| (k.clone(), *c)).collect();
    let current = |create_revision, mod_revision, version| state::Current {
        lease: 0,
        create_revision,
        mod_revision,
        version,
    };
    assert_eq!(
        live,
        [
            (b"b".to_vec(), current(3, 6, 2)),
            (b"c".to_vec(), current(5, 5, 1))
        ]
    );
    assert_eq!(old.history.len(), 3, "the deleted key's history stays");
    // What an earlier build wrote reads back as the same state.
    assert_eq!(crate::codec::encode(&old).unwrap(), bytes);
    let restored = store();
    restored.restore(crate::codec::decode(&bytes).unwrap());
    assert_eq!(restored.key_count(), 2);
    assert_eq!(
        values(&range(&restored, "\0", b"\0")),
        vec![("b".into(), "22".into()), ("c".into(), "3".into())]
    );
    assert_eq!(restored.hash(0).unwrap(), s.hash(0).unwrap());
}

#[test]
fn key_and_version_counts_follow_puts_deletes_and_compaction() {
    let s = store();
    let counted = |s: &KvStore| {
        let n = s.key_count();
        let all = RangeQuery {
            count_only: true,
            ..query("\0", b"\0")
        };
        assert_eq!(s.range(&all).unwrap().count, n, "range agrees");
        let versions: usize = s.read().history.values().map(|v| v.len()).sum();
        assert_eq!(s.version_count(), versions as i64);
        n
    };
    for k in ["a", "b", "c"] {
        put(&s, k, "1");
    }
    put(&s, "a", "2");
    assert_eq!(counted(&s), 3);
    del(&s, "a", "");
    assert_eq!(counted(&s), 2);
    del(&s, "a", ""); // nothing to delete
    put(&s, "a", "3");
    assert_eq!(counted(&s), 3);
    assert_eq!(del(&s, "a", "c").len(), 2);
    assert_eq!(counted(&s), 1);
    let rev = s.revision();
    assert!(matches!(
        run(&s, Command::Compact { revision: rev }),
        Response::Compacted { .. }
    ));
    assert_eq!(counted(&s), 1);
    assert_eq!(keys(&range(&s, "\0", b"\0")), ["c"]);
    let restored = store();
    restored.restore(crate::codec::decode(&s.encode().unwrap()).unwrap());
    assert_eq!(counted(&restored), 1);
}

#[test]
fn hash_follows_keys_values_and_revisions_only() {
    let (a, b) = (store(), store());
    assert_eq!(a.hash(0).unwrap(), b.hash(0).unwrap());
    put(&a, "k", "v");
    assert_ne!(a.hash(0).unwrap(), b.hash(0).unwrap());
    put(&b, "k", "v");
    assert_eq!(a.hash(0).unwrap(), b.hash(0).unwrap());
    // Same key and value at another revision hashes differently.
    put(&b, "k", "v");
    assert_ne!(a.hash(0).unwrap(), b.hash(0).unwrap());
    let before = a.hash(0).unwrap();
    let mut batch = a.batch();
    batch.set_meta("x", vec![1]);
    drop(batch);
    assert_eq!(a.hash(0).unwrap(), before);
    // A past revision hashes the state of then.
    put(&a, "k", "other");
    assert_eq!(a.hash(2).unwrap(), before);
}

// ---- transactions ----

fn cmp(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare {
        range: KeyRange::new(key.as_bytes(), b""),
        target,
        result,
    }
}

fn txn_put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        lease: Some(0),
        key: key.into(),
        value: Some(value.into()),
        must_exist: false,
        prev_kv: false,
    }
}

fn txn_get(key: &str) -> TxnOp {
    TxnOp::Range(query(key, b""))
}

fn run_txn(s: &KvStore, t: Txn) -> (Revision, TxnResult) {
    match run(s, Command::Txn(t)) {
        Response::Txn { revision, result } => (revision, result),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compare_semantics_for_present_and_missing_keys() {
    use CompareResult::*;
    use CompareTarget::*;
    let kv = KeyValue {
        lease: 0,
        key: b"k".to_vec(),
        create_revision: 5,
        mod_revision: 7,
        version: 2,
        value: b"m".to_vec(),
    };
    let c = |t, r| cmp("k", t, r);
    assert!(compare_one(Some(&kv), &c(Value(b"m".to_vec()), Equal)));
    assert!(compare_one(Some(&kv), &c(Value(b"a".to_vec()), Greater)));
    assert!(compare_one(Some(&kv), &c(Value(b"z".to_vec()), Less)));
    assert!(compare_one(Some(&kv), &c(Version(3), NotEqual)));
    assert!(compare_one(Some(&kv), &c(Create(5), Equal)));
    assert!(compare_one(Some(&kv), &c(Mod(6), Greater)));
    assert!(compare_one(Some(&kv), &c(Lease(0), Equal)));
    // A missing key: value compares are always false, others compare 0.
    assert!(!compare_one(None, &c(Value(b"x".to_vec()), NotEqual)));
    assert!(!compare_one(None, &c(Value(Vec::new()), Equal)));
    assert!(compare_one(None, &c(Create(0), Equal)));
    assert!(compare_one(None, &c(Version(1), Less)));
    assert!(!compare_one(None, &c(Mod(0), Greater)));
}

#[test]
fn a_txn_is_one_revision_and_reads_its_own_writes() {
    let s = store();
    put(&s, "counter", "1"); // 2
    let t = Txn {
        compare: vec![cmp(
            "counter",
            CompareTarget::Value(b"1".to_vec()),
            CompareResult::Equal,
        )],
        success: vec![
            txn_put("counter", "2"),
            txn_put("other", "x"),
            txn_get("counter"),
        ],
        failure: vec![txn_get("counter")],
    };
    let (revision, result) = run_txn(&s, t.clone());
    assert!(result.succeeded);
    assert_eq!(revision, 3);
    match &result.responses[2] {
        OpResult::Range(r) => assert_eq!(r.kvs[0].value, b"2"),
        other => panic!("{other:?}"),
    }
    let events = all_events(&s, 3, 100);
    assert_eq!(events.len(), 2, "both puts share revision 3");
    assert_eq!(s.get(b"other").unwrap().mod_revision, 3);
    // Again: the compare now fails; a read-only branch changes nothing.
    let (revision, result) = run_txn(&s, t);
    assert!(!result.succeeded);
    assert_eq!(revision, 3);
    assert_eq!(s.revision(), 3);
}

#[test]
fn every_key_in_a_compare_range_must_pass() {
    let s = store();
    put(&s, "p/a", "1");
    put(&s, "p/b", "2");
    let over_range = |result| Txn {
        compare: vec![Compare {
            range: KeyRange::new(b"p/", b"p0"),
            target: CompareTarget::Value(b"0".to_vec()),
            result,
        }],
        ..Default::default()
    };
    assert!(run_txn(&s, over_range(CompareResult::Greater)).1.succeeded);
    assert!(!run_txn(&s, over_range(CompareResult::Equal)).1.succeeded);
}

#[test]
fn nested_txns_choose_against_the_state_before() {
    let s = store();
    put(&s, "k", "1"); // 2
    let inner = Txn {
        compare: vec![cmp(
            "k",
            CompareTarget::Value(b"1".to_vec()),
            CompareResult::Equal,
        )],
        success: vec![txn_put("inner", "saw-1")],
        failure: vec![txn_put("inner", "saw-other")],
    };
    let outer = Txn {
        compare: vec![],
        success: vec![txn_put("k", "2"), TxnOp::Txn(inner)],
        failure: vec![],
    };
    let (revision, result) = run_txn(&s, outer);
    assert_eq!(revision, 3);
    assert!(matches!(&result.responses[1], OpResult::Txn(t) if t.succeeded));
    assert_eq!(s.get(b"inner").unwrap().value, b"saw-1");
}

#[test]
fn a_refused_txn_changes_nothing() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    run(&s, Command::Compact { revision: 3 });
    let t = Txn {
        success: vec![
            txn_put("b", "x"),
            TxnOp::Range(RangeQuery {
                revision: 2,
                ..query("a", b"")
            }),
        ],
        ..Default::default()
    };
    assert_eq!(
        run(&s, Command::Txn(t)),
        Response::Rejected(Rejection::Compacted)
    );
    let keep = TxnOp::Put {
        lease: Some(0),
        key: "missing".into(),
        value: None,
        must_exist: true,
        prev_kv: false,
    };
    let t = Txn {
        success: vec![txn_put("b", "x"), keep],
        ..Default::default()
    };
    assert_eq!(
        run(&s, Command::Txn(t)),
        Response::Rejected(Rejection::KeyNotFound)
    );
    assert_eq!(s.get(b"b"), None);
    assert_eq!(s.revision(), 3);
}

#[test]
fn a_txn_deleting_nothing_does_not_bump_the_revision() {
    let s = store();
    let t = Txn {
        success: vec![TxnOp::DeleteRange {
            range: KeyRange::new(b"nothing", b""),
            prev_kv: false,
        }],
        ..Default::default()
    };
    assert_eq!(run_txn(&s, t).0, 1);
    assert_eq!(s.revision(), 1);
}

#[test]
fn a_txn_that_only_reads_runs_on_the_applied_state_as_a_proposed_one_would() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "b", "2"); // 3
    let at = |rev| {
        TxnOp::Range(RangeQuery {
            revision: rev,
            ..query("a", b"")
        })
    };
    let reads = Txn {
        compare: vec![cmp(
            "a",
            CompareTarget::Value(b"1".to_vec()),
            CompareResult::Equal,
        )],
        success: vec![
            txn_get("b"),
            at(2),
            TxnOp::Txn(Txn {
                compare: vec![cmp("b", CompareTarget::Version(5), CompareResult::Equal)],
                success: vec![txn_get("a")],
                failure: vec![txn_get("missing"), txn_get("b")],
            }),
        ],
        failure: vec![txn_get("a")],
    };
    assert!(txn_is_read_only(&reads));
    let (revision, read) = s.read_txn(&reads).expect("it only reads");
    let read = read.unwrap();
    assert_eq!(revision, 3);
    // The same transaction through a `Writer` answers alike (and, only
    // reading, does not move the revision either).
    let (proposed_revision, proposed) = run_txn(&s, reads.clone());
    assert_eq!((revision, &read), (proposed_revision, &proposed));
    assert!(read.succeeded);
    match &read.responses[2] {
        OpResult::Txn(inner) => {
            assert!(!inner.succeeded);
            assert_eq!(inner.responses.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    // A read it cannot serve refuses the whole transaction.
    let future = Txn {
        success: vec![at(9)],
        ..Txn::default()
    };
    assert_eq!(
        s.read_txn(&future).unwrap().1,
        Err(Rejection::FutureRevision)
    );
    // One that writes anywhere, even in the branch not taken, is not run.
    let writes = Txn {
        failure: vec![TxnOp::Txn(Txn {
            success: vec![txn_put("a", "x")],
            ..Txn::default()
        })],
        ..reads
    };
    assert!(!txn_is_read_only(&writes));
    assert!(s.read_txn(&writes).is_none());
    assert_eq!(s.get(b"a").unwrap().value, b"1");
}

#[test]
fn events_copy_only_what_the_filter_picks_and_still_say_how_far_they_read() {
    let s = store();
    put(&s, "app/a", "1"); // 2
    put(&s, "other", "x"); // 3
    del(&s, "app/a", ""); // 4
    put(&s, "other", "y"); // 5
    let app = KeyRange::new(b"app/", b"app0");
    let (events, last) = s.events(2, i64::MAX, 1 << 20, |key, _| app.contains(key));
    let got: Vec<_> = events.iter().map(|e| (e.kind, e.kv.mod_revision)).collect();
    assert_eq!(got, [(EventKind::Put, 2), (EventKind::Delete, 4)]);
    assert_eq!(last, Some(5), "read past the changes it skipped");
    let (puts, _) = s.events(2, i64::MAX, 1 << 20, |_, kind| kind == EventKind::Put);
    assert_eq!(puts.len(), 3);
    // Nothing picked: no events, but the read still went to the end.
    let (none, last) = s.events(3, i64::MAX, 1 << 20, |_, _| false);
    assert!(none.is_empty());
    assert_eq!(last, Some(5));
    assert_eq!(s.events(6, i64::MAX, 1 << 20, |_, _| true).1, None);
    // An upper bound stops the read there.
    let (upto, last) = s.events(2, 3, 1 << 20, |_, _| true);
    assert_eq!(upto.len(), 2);
    assert_eq!(last, Some(3));
    assert_eq!(s.events(4, 3, 1 << 20, |_, _| true).1, None);
}

#[test]
fn changed_keys_names_every_changed_key_in_order_in_whole_revisions() {
    let s = store();
    put(&s, "a", "1"); // 2
    put(&s, "b", "1"); // 3
    del(&s, "\0", "\0"); // 4: a and b at one revision
    put(&s, "c", "1"); // 5
    let mut keys = Vec::new();
    let mut revs = Vec::new();
    let scan = s.changed_keys(2, usize::MAX, |rev, k| {
        revs.push(rev);
        keys.push(k.to_vec())
    });
    assert_eq!(keys, [&b"a"[..], b"b", b"a", b"b", b"c"]);
    assert_eq!(revs, [2, 3, 4, 4, 5]);
    assert_eq!(
        scan,
        crate::store::KeyScan {
            through: 5,
            gap: false
        }
    );
    // A budget of three stops after revision 4, never inside it.
    keys.clear();
    let scan = s.changed_keys(2, 3, |_, k| keys.push(k.to_vec()));
    assert_eq!(keys.len(), 4);
    assert_eq!(scan.through, 4);
    // Nothing new: read through the current revision.
    let scan = s.changed_keys(6, 10, |_, _| panic!("no change after 5"));
    assert_eq!(scan.through, 5);
    // Compacted past `from`: the scan says it cannot know.
    run(&s, Command::Compact { revision: 4 });
    assert!(s.changed_keys(2, 10, |_, _| {}).gap);
    assert!(!s.changed_keys(4, 10, |_, _| {}).gap);
}

/// Compaction walks only the keys changed since the last one; over a long
/// random run of puts, deletes and compactions it must leave exactly what
/// compacting every key would.
#[test]
fn compaction_of_changed_keys_matches_compacting_every_key() {
    let s = store();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut compactions = 0;
    for step in 0..3000 {
        let key = format!("k{}", next(40));
        match next(10) {
            0..=5 => {
                put(&s, &key, &step.to_string());
            }
            6 | 7 => {
                del(&s, &key, "");
            }
            8 => {
                // A range delete: several keys at one revision.
                let end = format!("k{}", next(40));
                del(&s, &key, &end);
            }
            _ => {
                let (compacted, current) = (s.compacted(), s.revision());
                if current <= compacted {
                    continue;
                }
                let revision = compacted + 1 + next((current - compacted) as u64) as Revision;
                let mut expected = s.read().history.clone();
                expected.retain(|_, v| {
                    v.compact(revision);
                    !v.is_empty()
                });
                assert!(matches!(
                    run(&s, Command::Compact { revision }),
                    Response::Compacted { .. }
                ));
                let st = s.read();
                assert_eq!(
                    st.history, expected,
                    "step {step}: compaction at {revision}"
                );
                let versions: usize = expected.values().map(|v| v.len()).sum();
                assert_eq!(st.versions, versions, "step {step}");
                compactions += 1;
            }
        }
    }
    assert!(compactions > 100, "only {compactions} compactions ran");
}

/// The size a decoded copy of `s` counts from scratch.
fn recounted_size(s: &KvStore) -> u64 {
    let copy = store();
    copy.restore(crate::codec::decode(&s.encode().unwrap()).unwrap());
    copy.size_bytes()
}

#[test]
fn the_size_follows_every_write_and_compaction() {
    let s = store();
    assert_eq!(s.size_bytes(), 0);
    put(&s, "key", "12345"); // 3 + 5 + overhead
    assert_eq!(s.size_bytes(), 8 + state::VERSION_OVERHEAD);
    put(&s, "key", "1");
    put(&s, "other", "xyz");
    del(&s, "key", "");
    // A transaction that writes one key twice keeps one version.
    let put_op = |v: &str| txn::TxnOp::Put {
        key: b"t".to_vec(),
        value: Some(v.as_bytes().to_vec()),
        lease: Some(0),
        prev_kv: false,
        must_exist: false,
    };
    let twice = Txn {
        compare: vec![],
        success: vec![put_op("long value"), put_op("v")],
        failure: vec![],
    };
    run(&s, Command::Txn(twice));
    let grown = s.size_bytes();
    assert_eq!(grown, recounted_size(&s));
    run(
        &s,
        Command::Compact {
            revision: s.revision(),
        },
    );
    assert!(s.size_bytes() < grown, "compaction frees space");
    assert_eq!(s.size_bytes(), recounted_size(&s));
}

#[test]
fn a_nospace_alarm_refuses_only_what_adds_data_and_survives_snapshots() {
    let s = store();
    put(&s, "a", "1");
    let alarm = |activate| Command::Alarm {
        activate,
        member: 7,
        alarm: ALARM_NOSPACE,
    };
    run(&s, alarm(true));
    assert_eq!(s.alarms(), vec![(7, ALARM_NOSPACE)]);
    assert_eq!(
        run(&s, put_cmd("b", "2")),
        Response::Rejected(Rejection::NoSpace)
    );
    assert_eq!(
        run(&s, Command::LeaseGrant { id: 1, ttl: 10 }),
        Response::Rejected(Rejection::NoSpace)
    );
    let deletes_only = Txn {
        compare: vec![],
        success: vec![txn::TxnOp::DeleteRange {
            range: KeyRange::Single(b"a".to_vec()),
            prev_kv: false,
        }],
        failure: vec![],
    };
    assert!(matches!(
        run(&s, Command::Txn(deletes_only)),
        Response::Txn { .. }
    ));
    // A batch is judged command by command.
    let batch = Command::Batch(vec![put_cmd("c", "3"), alarm(false), put_cmd("d", "4")]);
    match run(&s, batch) {
        Response::Batch(r) => {
            assert_eq!(r[0], Response::Rejected(Rejection::NoSpace));
            assert!(matches!(r[2], Response::Put { .. }), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    run(&s, alarm(true));
    let copy = store();
    copy.restore(State::decode(&s.encode().unwrap()).unwrap());
    assert_eq!(copy.alarms(), vec![(7, ALARM_NOSPACE)]);
}

/// A store with auth on: `root`, and `u` with role `r` that may write
/// `a`..`m` and read `a`.
fn auth_store() -> KvStore {
    let s = store();
    let perm = |kind, key: &str, end: &str| Permission {
        kind,
        key: key.into(),
        range_end: end.into(),
    };
    for change in [
        AuthCommand::UserAdd {
            name: ROOT.into(),
            password: None,
        },
        AuthCommand::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        },
        AuthCommand::UserAdd {
            name: "u".into(),
            password: None,
        },
        AuthCommand::RoleAdd { name: "r".into() },
        AuthCommand::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: perm(PermKind::Write, "a", "m"),
        },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: perm(PermKind::Read, "a", ""),
        },
        AuthCommand::Enable {
            token_key: vec![0; 32],
        },
    ] {
        let who = Some(ROOT.to_string());
        assert!(matches!(
            run(&s, as_user(who, Command::Auth(change))),
            Response::Applied { .. }
        ));
    }
    s
}

fn as_user(user: Option<String>, cmd: Command) -> Command {
    Command::AsUser {
        user,
        cmd: Box::new(cmd),
    }
}

fn denied(r: Response) -> bool {
    matches!(
        r,
        Response::Rejected(Rejection::Auth(AuthError::PermissionDenied))
    )
}

/// Scenario: writes are judged when applied, with the auth state of that
/// point in the log: a put in range goes in; one outside, one asking for
/// the previous value it may not read, a nested transaction hiding a
/// delete it may not make, a lease revoke over a key it may not write, a
/// compaction, and anything from nobody are refused and change nothing.
#[test]
fn writes_are_authorized_when_applied() {
    let s = auth_store();
    let u = || Some("u".to_string());
    assert!(
        matches!(
            run(&s, as_user(u(), put_cmd("b", "1"))),
            Response::Rejected(_)
        ),
        "prev_kv on b needs read"
    );
    let mut plain = put_cmd("b", "1");
    if let Command::Put { prev_kv, .. } = &mut plain {
        *prev_kv = false;
    }
    assert!(matches!(
        run(&s, as_user(u(), plain.clone())),
        Response::Put { .. }
    ));
    let rev = s.revision();
    let mut outside = plain.clone();
    if let Command::Put { key, .. } = &mut outside {
        *key = b"z".to_vec();
    }
    assert!(denied(run(&s, as_user(u(), outside))));
    assert_eq!(
        run(&s, as_user(None, plain.clone())),
        Response::Rejected(Rejection::Auth(AuthError::UserEmpty))
    );
    let nested = Txn {
        compare: vec![],
        success: vec![TxnOp::Txn(Txn {
            compare: vec![],
            success: vec![],
            failure: vec![TxnOp::DeleteRange {
                range: KeyRange::Single(b"z".to_vec()),
                prev_kv: false,
            }],
        })],
        failure: vec![],
    };
    assert!(denied(run(&s, as_user(u(), Command::Txn(nested)))));
    assert!(denied(run(
        &s,
        as_user(u(), Command::Compact { revision: 1 })
    )));
    assert_eq!(s.revision(), rev, "refused writes changed nothing");

    // Root attaches z to a lease; u may not revoke it (z is not u's to
    // write), nor attach its own key to it.
    run(
        &s,
        as_user(Some(ROOT.into()), Command::LeaseGrant { id: 5, ttl: 60 }),
    );
    let mut leased = put_cmd("z", "1");
    if let Command::Put { lease, .. } = &mut leased {
        *lease = Some(5);
    }
    assert!(matches!(
        run(&s, as_user(Some(ROOT.into()), leased)),
        Response::Put { .. }
    ));
    assert!(denied(run(
        &s,
        as_user(u(), Command::LeaseRevoke { id: 5 })
    )));
    let mut attach = plain;
    if let Command::Put { lease, .. } = &mut attach {
        *lease = Some(5);
    }
    assert!(denied(run(&s, as_user(u(), attach))));
    assert!(matches!(
        run(
            &s,
            as_user(Some(ROOT.into()), Command::LeaseRevoke { id: 5 })
        ),
        Response::LeaseRevoked { .. }
    ));
    // Non-root users may not change auth.
    assert!(denied(run(
        &s,
        as_user(
            u(),
            Command::Auth(AuthCommand::RoleAdd { name: "x".into() })
        )
    )));
}
