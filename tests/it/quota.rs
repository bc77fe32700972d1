//! The space quota and alarms: past `--quota-backend-bytes` writes that add
//! data raise the NOSPACE alarm and fail on every member, while reads,
//! deletes and compaction go on; freeing space and disarming brings writes
//! back. etcdctl's `alarm list|disarm` and `endpoint status` show it.

use raftkv::pb;
use raftkv::pb::maintenance_client::MaintenanceClient;
use tonic::Code;

use crate::cluster::{Options, TestCluster};
use crate::requests::put_req;
use crate::tools::{etcdctl, etcdctl_ok};

/// Scenario: a 3-member cluster with a 20 kB quota takes 1 kB values until
/// a put fails with etcd's "database space exceeded"
/// (RESOURCE_EXHAUSTED); the NOSPACE alarm is raised through Raft, so
/// every member refuses a put (even a tiny one) and lists the alarm, and
/// etcdctl's `alarm list` and `endpoint status` show it. Reads, deletes
/// and a compaction still work; `alarm disarm` before space is freed does
/// not help for long (the next put that does not fit raises it again);
/// after deleting, compacting and `defrag`, disarming brings puts back.
#[tokio::test(flavor = "multi_thread")]
async fn the_space_quota_raises_nospace_and_disarming_after_freeing_space_clears_it() {
    let opts = Options {
        extra_args: vec!["--quota-backend-bytes".into(), "20000".into()],
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, opts).await;
    let eps = cluster.endpoints();
    let mut kv = cluster.kv(0).await;
    let value = "v".repeat(1000);
    let mut written = 0;
    let refusal = loop {
        match kv.put(put_req(&format!("big/{written:03}"), &value)).await {
            Ok(_) => written += 1,
            Err(s) => break s,
        }
        assert!(written < 100, "the quota never bit");
    };
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert_eq!(
        refusal.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert!(
        (15..=20).contains(&written),
        "{written} puts of 1 kB in 20 kB"
    );

    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        let err = kv.put(put_req("tiny", "1")).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "member {i}: {err:?}");
        let alarms = MaintenanceClient::new(cluster.channel(i).await)
            .alarm(pb::AlarmRequest::default())
            .await
            .unwrap()
            .into_inner()
            .alarms;
        assert_eq!(alarms.len(), 1, "member {i}: {alarms:?}");
        assert_eq!(alarms[0].alarm, pb::AlarmType::Nospace as i32);
    }
    let listed = etcdctl_ok(&eps, &["alarm", "list"]);
    assert!(listed.contains("alarm:NOSPACE"), "{listed}");
    let status = etcdctl_ok(&cluster.nodes[1].client_addr, &["endpoint", "status"]);
    assert!(status.contains("alarm:NOSPACE"), "{status}");

    // Reads, deletes and compaction are not refused.
    let all = kv
        .range(crate::requests::all_keys())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.kvs.len(), written);
    // Disarming without freeing space: the next put that does not fit
    // raises it again.
    etcdctl_ok(&eps, &["alarm", "disarm"]);
    let err = kv.put(put_req("big/again", &value)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let (_, out, err) = etcdctl(&eps, &["alarm", "list"]);
    assert!(out.contains("alarm:NOSPACE"), "raised again: {out} {err}");

    let mut del = pb::DeleteRangeRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        ..Default::default()
    };
    del.prev_kv = false;
    let deleted = kv.delete_range(del).await.unwrap().into_inner();
    assert_eq!(deleted.deleted as usize, written);
    let revision = deleted.header.unwrap().revision;
    kv.compact(pb::CompactionRequest {
        revision,
        physical: false,
    })
    .await
    .unwrap();
    etcdctl_ok(&eps, &["defrag"]);
    // Still refused until disarmed.
    let err = kv.put(put_req("tiny", "1")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let disarmed = etcdctl_ok(&eps, &["alarm", "disarm"]);
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        kv.put(put_req(&format!("after/{i}"), "1")).await.unwrap();
    }
    assert_eq!(etcdctl_ok(&eps, &["alarm", "list"]), "");
}
