//! Unit tests of etcd's revision rules and range semantics on a real sled tree.

use super::*;

fn store() -> KvStore {
    let db = sled::Config::new().temporary(true).open().unwrap();
    KvStore::open(&db).unwrap()
}

fn put(s: &KvStore, key: &str, value: &str) -> Option<KeyValue> {
    let mut b = s.batch().unwrap();
    let prev = b
        .put(key.as_bytes(), Some(value.as_bytes().to_vec()), false)
        .unwrap()
        .unwrap();
    s.commit(b).unwrap();
    prev
}

fn del(s: &KvStore, key: &str, end: &str) -> Vec<KeyValue> {
    let mut b = s.batch().unwrap();
    let d = b
        .delete_range(&KeyRange::new(key.as_bytes(), end.as_bytes()))
        .unwrap();
    s.commit(b).unwrap();
    d
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn range(s: &KvStore, key: &str, end: &[u8]) -> RangeResult {
    s.range(&RangeQuery::new(KeyRange::new(key.as_bytes(), end)))
        .unwrap()
}

#[test]
fn a_new_store_is_at_revision_one() {
    let s = store();
    assert_eq!(s.revision().unwrap(), 1);
    assert_eq!(s.get(b"foo").unwrap(), None);
}

#[test]
fn put_creates_then_bumps_version_and_revision() {
    let s = store();
    assert_eq!(put(&s, "foo", "a"), None);
    let kv = s.get(b"foo").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    assert_eq!(kv.value, b"a");

    // Same value again still counts as a write.
    let prev = put(&s, "foo", "a").unwrap();
    assert_eq!(prev.mod_revision, 2);
    let kv = s.get(b"foo").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(s.revision().unwrap(), 3);
}

#[test]
fn delete_and_recreate_resets_version() {
    let s = store();
    put(&s, "re", "1"); // rev 2
    put(&s, "re", "2"); // rev 3
    let deleted = del(&s, "re", ""); // rev 4
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].value, b"2");
    assert_eq!(s.revision().unwrap(), 4);
    put(&s, "re", "3"); // rev 5
    let kv = s.get(b"re").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_nothing_changes_nothing() {
    let s = store();
    put(&s, "a", "1");
    assert!(del(&s, "missing", "").is_empty());
    assert!(del(&s, "x", "\0").is_empty());
    assert_eq!(s.revision().unwrap(), 2);
}

#[test]
fn a_range_delete_shares_one_revision() {
    let s = store();
    for k in ["p/1", "p/2", "p/3", "q"] {
        put(&s, k, "v");
    }
    assert_eq!(s.revision().unwrap(), 5);
    assert_eq!(s.key_count().unwrap(), 4);
    let deleted = del(&s, "p/", "p0");
    assert_eq!(deleted.len(), 3);
    assert_eq!(s.revision().unwrap(), 6);
    assert_eq!(s.key_count().unwrap(), 1);
    assert_eq!(keys(&range(&s, "\0", b"\0")), vec!["q"]);
}

#[test]
fn a_batch_reads_its_own_writes() {
    let s = store();
    let mut b = s.batch().unwrap();
    b.put(b"k", Some(b"1".to_vec()), false).unwrap().unwrap();
    let prev = b
        .put(b"k", Some(b"2".to_vec()), false)
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((prev.version, prev.value.as_slice()), (1, &b"1"[..]));
    b.put(b"k2", Some(b"x".to_vec()), false).unwrap().unwrap();
    let deleted = b.delete_range(&KeyRange::new(b"k", b"\0")).unwrap();
    assert_eq!(deleted.len(), 2);
    assert_eq!(b.revision(), 5);
    // Nothing is visible before commit.
    assert_eq!(s.get(b"k").unwrap(), None);
    assert_eq!(s.revision().unwrap(), 1);
    s.commit(b).unwrap();
    assert_eq!(s.revision().unwrap(), 5);
    assert_eq!(s.get(b"k").unwrap(), None);
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
    let mut q = RangeQuery::new(KeyRange::new(b"p/", b"p0"));
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
    let all = KeyRange::new(b"\0", b"\0");

    let mut q = RangeQuery::new(all.clone());
    q.keys_only = true;
    let r = s.range(&q).unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(keys(&r), vec!["a", "b", "c"]);

    let mut q = RangeQuery::new(all.clone());
    q.sort_order = SortOrder::Descend;
    assert_eq!(keys(&s.range(&q).unwrap()), vec!["c", "b", "a"]);

    // A non-key target with no order sorts ascending.
    let mut q = RangeQuery::new(all.clone());
    q.sort_target = SortTarget::Mod;
    assert_eq!(keys(&s.range(&q).unwrap()), vec!["a", "c", "b"]);
    q.sort_target = SortTarget::Value;
    q.sort_order = SortOrder::Descend;
    q.limit = 2;
    let r = s.range(&q).unwrap();
    assert_eq!(
        (keys(&r), r.more),
        (vec!["b".to_string(), "a".to_string()], true)
    );

    let mut q = RangeQuery::new(all);
    q.min_create_revision = 3;
    let r = s.range(&q).unwrap();
    assert_eq!(
        (keys(&r), r.count),
        (vec!["a".to_string(), "c".to_string()], 3)
    );
    q.min_create_revision = 0;
    q.max_mod_revision = 4;
    assert_eq!(keys(&s.range(&q).unwrap()), vec!["a", "c"]);
}

#[test]
fn members_and_meta_do_not_touch_the_revision() {
    let s = store();
    let mut b = s.batch().unwrap();
    let info = MemberInfo {
        name: "n1".into(),
        client_urls: vec!["http://127.0.0.1:2379".into()],
    };
    b.set_member(1, &info).unwrap();
    b.set_meta("x", b"y".to_vec());
    s.commit(b).unwrap();
    assert_eq!(s.revision().unwrap(), 1);
    assert_eq!(s.members().unwrap()[&1], info);
    assert_eq!(s.meta("x").unwrap().unwrap().as_ref(), b"y");
    // Member records are not keys.
    assert_eq!(range(&s, "\0", b"\0").count, 0);
}

#[test]
fn export_import_replaces_everything() {
    let a = store();
    put(&a, "x", "1");
    put(&a, "y", "2");
    let b = store();
    put(&b, "stale", "0");
    b.import(a.export().unwrap(), &[("extra", b"e".to_vec())])
        .unwrap();
    assert_eq!(b.revision().unwrap(), 3);
    assert_eq!(b.get(b"stale").unwrap(), None);
    assert_eq!(b.get(b"y").unwrap().unwrap().value, b"2");
    assert_eq!(b.meta("extra").unwrap().unwrap().as_ref(), b"e");
}

#[test]
fn keeping_the_value_needs_an_existing_key() {
    let s = store();
    let mut b = s.batch().unwrap();
    assert_eq!(
        b.put(b"k", None, true).unwrap(),
        Err(Rejection::KeyNotFound)
    );
    assert_eq!(
        b.put(b"k", Some(b"v".to_vec()), true).unwrap(),
        Err(Rejection::KeyNotFound)
    );
    assert_eq!(b.revision(), 1);
    b.put(b"k", Some(b"v".to_vec()), false).unwrap().unwrap();
    // ignore_value: a new revision and version, the old value.
    b.put(b"k", None, true).unwrap().unwrap();
    s.commit(b).unwrap();
    let kv = s.get(b"k").unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"v"[..], 2, 3)
    );
}

#[test]
fn hash_follows_keys_values_and_revisions_only() {
    let (a, b) = (store(), store());
    assert_eq!(a.hash().unwrap(), b.hash().unwrap());
    put(&a, "k", "v");
    assert_ne!(a.hash().unwrap(), b.hash().unwrap());
    put(&b, "k", "v");
    assert_eq!(a.hash().unwrap(), b.hash().unwrap());
    // Same key and value at another revision hashes differently.
    put(&b, "k", "v");
    assert_ne!(a.hash().unwrap(), b.hash().unwrap());
    // Metadata does not count.
    let mut batch = a.batch().unwrap();
    batch.set_meta("x", vec![1]);
    let before = a.hash().unwrap();
    a.commit(batch).unwrap();
    assert_eq!(a.hash().unwrap(), before);
}
