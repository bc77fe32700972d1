//! The etcd KV API on a 3-node cluster: forwarding, linearizable reads on
//! every node, revision rules and range semantics, as etcd has them.

use raftkv::pb;

use crate::cluster::{eventually, TestCluster, LIVENESS};
use crate::requests::{all_keys, get_req, get_value, put_req};

/// Scenario:
/// - a write is sent to a follower, which forwards it to the leader;
/// - right after the acknowledgement, a linearizable read on every node
///   (leader and followers) returns it;
/// - every response carries a full header naming the member that answered.
#[tokio::test(flavor = "multi_thread")]
async fn write_through_follower_is_read_linearizably_everywhere() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.follower_of(leader);
    let mut kv = cluster.kv(follower).await;
    for round in 0..5 {
        let value = format!("v{round}");
        let resp = kv
            .put(put_req("greeting", &value))
            .await
            .unwrap()
            .into_inner();
        let header = resp.header.unwrap();
        assert_eq!(header.member_id, cluster.nodes[follower].id);
        assert_ne!(header.cluster_id, 0);
        assert!(header.raft_term >= 1);
        for i in 0..3 {
            let mut node = cluster.kv(i).await;
            let got = node.range(get_req("greeting")).await.unwrap().into_inner();
            assert_eq!(got.header.as_ref().unwrap().member_id, cluster.nodes[i].id);
            assert_eq!(
                got.header.as_ref().unwrap().revision,
                header.revision,
                "node {}",
                i + 1
            );
            let values: Vec<_> = got.kvs.iter().map(|kv| kv.value.clone()).collect();
            assert_eq!(
                values,
                vec![value.clone().into_bytes()],
                "node {} round {round}",
                i + 1
            );
        }
    }
}

/// Scenario: as in etcd, a member answers a write only once it has applied
/// it itself: right after each put through a follower, a serializable read
/// (local state, no quorum round) on that follower returns the new value
/// at the put's revision, and after a compaction through it, a read there
/// below the compaction is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_answers_a_write_after_applying_it() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.follower_of(leader)).await;
    let local = || pb::RangeRequest {
        serializable: true,
        ..get_req("ryw")
    };
    for round in 0..50 {
        let value = round.to_string();
        let put = kv.put(put_req("ryw", &value)).await.unwrap().into_inner();
        let got = kv.range(local()).await.unwrap().into_inner();
        assert_eq!(got.kvs.len(), 1, "round {round}");
        assert_eq!(got.kvs[0].value, value.as_bytes(), "round {round}");
        assert_eq!(got.kvs[0].mod_revision, put.header.unwrap().revision);
    }
    let revision = kv
        .range(local())
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    kv.compact(pb::CompactionRequest {
        revision,
        physical: false,
    })
    .await
    .unwrap();
    let err = kv
        .range(pb::RangeRequest {
            revision: revision - 1,
            ..local()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
}

/// Scenario: 200 puts sent at once through one follower, which forwards
/// them to the leader many per call. Each key was written before with its
/// own old value; each response carries that key's old value (`prev_kv`),
/// so every answer went back to the request it belongs to; the revisions
/// are all different, and each key reads back at the revision its put got.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.follower_of(leader);
    let channel = cluster.channel(follower).await;
    const N: usize = 200;
    let mut kv = pb::kv_client::KvClient::new(channel.clone());
    for i in 0..N {
        kv.put(put_req(&format!("k{i:03}"), &format!("old{i}")))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..N {
        let mut kv = pb::kv_client::KvClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let req = pb::PutRequest {
                prev_kv: true,
                ..put_req(&format!("k{i:03}"), &format!("new{i}"))
            };
            (i, kv.put(req).await.expect("put").into_inner())
        }));
    }
    let mut revisions = std::collections::BTreeSet::new();
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        let prev = resp.prev_kv.expect("prev_kv");
        assert_eq!(prev.key, format!("k{i:03}").into_bytes());
        assert_eq!(prev.value, format!("old{i}").into_bytes(), "put {i}");
        let revision = resp.header.unwrap().revision;
        assert!(
            revisions.insert(revision),
            "revision {revision} given twice"
        );
        let got = kv
            .range(get_req(&format!("k{i:03}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.kvs[0].value, format!("new{i}").into_bytes());
        assert_eq!(got.kvs[0].mod_revision, revision, "key {i}");
    }
    assert_eq!(revisions.len(), N);
}

/// Scenario: etcd's revision rules through the API. A new cluster is at
/// revision 1; each put adds one (even of the same value); a delete that
/// removes keys adds exactly one; deleting nothing adds none; a re-created
/// key starts again at version 1 with a new create revision.
#[tokio::test(flavor = "multi_thread")]
async fn revisions_follow_etcd_rules() {
    let cluster = TestCluster::start(3).await;
    let mut kv = cluster.kv(0).await;
    let rev = |h: &Option<pb::ResponseHeader>| h.as_ref().unwrap().revision;

    let first = kv.range(get_req("a")).await.unwrap().into_inner();
    assert_eq!(rev(&first.header), 1);
    assert!(first.kvs.is_empty());

    assert_eq!(
        rev(&kv.put(put_req("a", "1")).await.unwrap().into_inner().header),
        2
    );
    assert_eq!(
        rev(&kv.put(put_req("a", "1")).await.unwrap().into_inner().header),
        3
    );
    assert_eq!(
        rev(&kv.put(put_req("b", "x")).await.unwrap().into_inner().header),
        4
    );
    let got = kv
        .range(get_req("a"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .remove(0);
    assert_eq!(
        (got.create_revision, got.mod_revision, got.version),
        (2, 3, 2)
    );

    let nothing = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "zzz".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((nothing.deleted, rev(&nothing.header)), (0, 4));

    let both = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "a".into(),
            range_end: "c".into(),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((both.deleted, rev(&both.header)), (2, 5));
    let prev: Vec<_> = both
        .prev_kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(
        prev,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"x".to_vec())
        ]
    );

    let again = kv
        .put(pb::PutRequest {
            key: "a".into(),
            value: "2".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev(&again.header), 6);
    assert!(
        again.prev_kv.is_none(),
        "a re-created key has no previous pair"
    );
    let got = kv
        .range(get_req("a"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .remove(0);
    assert_eq!(
        (got.create_revision, got.mod_revision, got.version),
        (6, 6, 1)
    );

    let replaced = kv
        .put(pb::PutRequest {
            key: "a".into(),
            value: "3".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.prev_kv.unwrap().value, b"2");
}

/// Scenario: ranges as etcdctl sends them: a prefix, from-key, all keys,
/// `limit` with `more` and `count`, `keys_only`, `count_only`, and a
/// serializable read; reads of a future revision fail with etcd's error.
#[tokio::test(flavor = "multi_thread")]
async fn ranges_follow_etcd_rules() {
    let cluster = TestCluster::start(3).await;
    let mut kv = cluster.kv(1).await;
    for key in ["app/a", "app/b", "app/c", "apq", "zeta"] {
        kv.put(put_req(key, &format!("value of {key}")))
            .await
            .unwrap();
    }
    let keys = |r: &pb::RangeResponse| {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect::<Vec<_>>()
    };

    let prefix = pb::RangeRequest {
        key: "app/".into(),
        range_end: "app0".into(),
        ..Default::default()
    };
    let r = kv.range(prefix.clone()).await.unwrap().into_inner();
    assert_eq!(keys(&r), ["app/a", "app/b", "app/c"]);
    assert_eq!((r.count, r.more), (3, false));

    let r = kv
        .range(pb::RangeRequest {
            limit: 2,
            ..prefix.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&r), ["app/a", "app/b"]);
    assert_eq!((r.count, r.more), (3, true));

    let r = kv
        .range(pb::RangeRequest {
            keys_only: true,
            ..prefix.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()) && r.kvs.len() == 3);

    let r = kv
        .range(pb::RangeRequest {
            count_only: true,
            ..prefix.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.kvs.len(), r.count), (0, 3));

    let from = pb::RangeRequest {
        key: "apq".into(),
        range_end: vec![0],
        ..Default::default()
    };
    assert_eq!(
        keys(&kv.range(from).await.unwrap().into_inner()),
        ["apq", "zeta"]
    );

    let all = kv.range(all_keys()).await.unwrap().into_inner();
    assert_eq!(all.count, 5);

    // range_end <= key is an empty result, not an error.
    let empty = pb::RangeRequest {
        key: "zeta".into(),
        range_end: "a".into(),
        ..Default::default()
    };
    assert!(kv.range(empty).await.unwrap().into_inner().kvs.is_empty());

    let local = pb::RangeRequest {
        serializable: true,
        ..prefix
    };
    assert_eq!(kv.range(local).await.unwrap().into_inner().count, 3);

    let future = pb::RangeRequest {
        revision: 1000,
        ..get_req("zeta")
    };
    let err = kv.range(future).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    assert_eq!(
        get_value(&mut kv, "zeta").await.as_deref(),
        Some("value of zeta")
    );
}

/// Scenario: through a follower, a compare-and-swap Txn succeeds once and
/// fails the second time with the current value in the failure branch; a
/// read at a past revision sees the value of then; after a Compact, reads
/// below it fail with etcd's error, at it succeed; a future revision fails.
#[tokio::test(flavor = "multi_thread")]
async fn txn_history_and_compaction() {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use pb::request_op::Request;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.follower_of(leader)).await;
    kv.put(put_req("lock", "free")).await.unwrap(); // rev 2
    let cas = |from: &str, to: &str| pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: "lock".into(),
            target_union: Some(TargetUnion::Value(from.into())),
            range_end: vec![],
        }],
        success: vec![pb::RequestOp {
            request: Some(Request::RequestPut(put_req("lock", to))),
        }],
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestRange(get_req("lock"))),
        }],
    };
    let won = kv.txn(cas("free", "taken")).await.unwrap().into_inner();
    assert!(won.succeeded);
    assert_eq!(won.header.unwrap().revision, 3);
    let lost = kv.txn(cas("free", "taken")).await.unwrap().into_inner();
    assert!(!lost.succeeded);
    assert_eq!(
        lost.header.as_ref().unwrap().revision,
        3,
        "a failed compare changes nothing"
    );
    match &lost.responses[0].response {
        Some(pb::response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"taken"),
        other => panic!("{other:?}"),
    }

    kv.put(put_req("lock", "released")).await.unwrap(); // rev 4
    let at = |rev| pb::RangeRequest {
        revision: rev,
        ..get_req("lock")
    };
    let r = kv.range(at(2)).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"free");
    assert_eq!(
        r.header.unwrap().revision,
        4,
        "the header has the current revision"
    );

    let compacted = kv
        .compact(pb::CompactionRequest {
            revision: 3,
            physical: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compacted.header.unwrap().revision, 4);
    let err = kv.range(at(2)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    assert_eq!(
        kv.range(at(3)).await.unwrap().into_inner().kvs[0].value,
        b"taken"
    );
    let err = kv.range(at(9)).await.unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let err = kv
        .compact(pb::CompactionRequest {
            revision: 3,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // Every member agrees, once it has applied the compaction (a follower
    // may still be a step behind the leader that answered).
    for i in 0..3 {
        let node = cluster.kv(i).await;
        let what = format!("node {} refuses the compacted revision", i + 1);
        let code = eventually(&what, LIVENESS, || {
            let mut node = node.clone();
            async move {
                let local = pb::RangeRequest {
                    serializable: true,
                    ..at(2)
                };
                node.range(local).await.err().map(|e| e.code())
            }
        })
        .await;
        assert_eq!(code, tonic::Code::OutOfRange, "node {}", i + 1);
    }
}

/// Scenario: keys and values are bytes, as etcd's: a key and a value that
/// are not UTF-8 (with NUL and 0xff bytes) go through a follower's Put, come
/// back unchanged from Range (by key and by a binary prefix), from a Txn
/// that compares the binary value and reads it, and from a Watch on the
/// binary key.
#[tokio::test(flavor = "multi_thread")]
async fn binary_keys_and_values_round_trip() {
    use pb::watch_client::WatchClient;
    use pb::watch_request::RequestUnion;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.follower_of(leader);
    let key = vec![0xff, 0x00, b'k', 0xc3, 0x28];
    let value = vec![0x00, 0xfe, 0xff, 0x80, 0x00];

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.clone(),
            ..Default::default()
        })),
    };
    tx.send(create).await.unwrap();
    let mut events = WatchClient::new(cluster.channel(0).await)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = events.message().await.unwrap().unwrap();
    assert!(created.created);

    let mut kv = cluster.kv(follower).await;
    kv.put(pb::PutRequest {
        key: key.clone(),
        value: value.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = kv
        .range(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((&got.kvs[0].key, &got.kvs[0].value), (&key, &value));
    let by_prefix = kv
        .range(pb::RangeRequest {
            key: vec![0xff, 0x00],
            range_end: vec![0xff, 0x01],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_prefix.kvs.len(), 1);
    assert_eq!(by_prefix.kvs[0].key, key);

    let txn = kv
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                key: key.clone(),
                target: pb::compare::CompareTarget::Value as i32,
                result: pb::compare::CompareResult::Equal as i32,
                target_union: Some(pb::compare::TargetUnion::Value(value.clone())),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(txn.succeeded);
    match &txn.responses[0].response {
        Some(pb::response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, value),
        other => panic!("{other:?}"),
    }

    let event = tokio::time::timeout(LIVENESS, async {
        loop {
            let resp = events
                .message()
                .await
                .unwrap()
                .expect("the watch stream ended");
            if let Some(event) = resp.events.into_iter().next() {
                return event;
            }
        }
    })
    .await
    .expect("the watch sees the put");
    let kv = event.kv.unwrap();
    assert_eq!((kv.key, kv.value), (key, value));
}
