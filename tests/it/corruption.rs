//! The corruption check: the leader compares members' data periodically;
//! one that differs gets a CORRUPT alarm that names it, and client writes
//! stop everywhere until it is disarmed.

use raftkv::pb;
use raftkv::pb::maintenance_client::MaintenanceClient;
use tonic::Code;

use crate::cluster::{eventually, Options, TestCluster, LIVENESS};
use crate::requests::put_req;
use crate::tools::etcdctl_ok;

/// Scenario: a 3-member cluster checking every 300 ms holds some keys; a
/// follower is restarted with its copy of a key written after its restart
/// corrupted in memory as it applies it (a test-only flag). The leader raises a CORRUPT alarm naming
/// that member, and logs it; every member then refuses a put with etcd's
/// "etcdserver: corrupt cluster" (DATA_LOSS) while reads go on. The
/// members whose data agree get no alarm. `etcdctl endpoint hashkv` shows
/// the same hash everywhere before, and the corrupted member's differ
/// after.
async fn alarms(cluster: &TestCluster, i: usize) -> Option<Vec<pb::AlarmMember>> {
    MaintenanceClient::new(cluster.channel(i).await)
        .alarm(pb::AlarmRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner().alarms)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_data_differs_gets_a_corrupt_alarm_and_writes_stop() {
    let opts = Options {
        extra_args: vec!["--corrupt-check-interval".into(), "300".into()],
        ..Default::default()
    };
    let mut cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let mut kv = cluster.kv(li).await;
    for i in 0..10 {
        kv.put(put_req(&format!("k{i}"), "value")).await.unwrap();
    }
    // etcdctl's hashkv: every member alike.
    let hashes = |cluster: &TestCluster| -> Vec<(String, String)> {
        etcdctl_ok(&cluster.endpoints(), &["endpoint", "hashkv"])
            .lines()
            .map(|l| {
                let (ep, hash) = l.split_once(", ").expect("ep, hash");
                (ep.to_string(), hash.to_string())
            })
            .collect()
    };
    let before = hashes(&cluster);
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, h)| *h == before[0].1), "{before:?}");

    let f = cluster.follower_of(leader);
    let bad = cluster.nodes[f].id;
    cluster.kill(f);
    cluster.nodes[f]
        .extra_args
        .extend(["--test-corrupt-key".into(), "late".into()]);
    cluster.restart(f);
    kv.put(put_req("late", "value")).await.unwrap();
    let raised = eventually("the leader raises a CORRUPT alarm", LIVENESS, || async {
        let a = alarms(&cluster, li).await?;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(
        raised,
        vec![pb::AlarmMember {
            member_id: bad,
            alarm: pb::AlarmType::Corrupt as i32
        }]
    );
    // Now hashkv tells the corrupted member apart.
    let after = hashes(&cluster);
    let (bad_hash, good): (Vec<_>, Vec<_>) = after
        .iter()
        .partition(|(ep, _)| *ep == cluster.nodes[f].client_addr);
    assert_eq!((bad_hash.len(), good.len()), (1, 2), "{after:?}");
    assert_eq!(good[0].1, good[1].1, "{after:?}");
    assert_ne!(bad_hash[0].1, good[0].1, "{after:?}");
    let leader_now = cluster.wait_leader().await;
    let log = cluster.nodes[cluster.index_of(leader_now)].log();
    assert!(log.contains("data differs from the leader's"), "{log}");
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        let err = kv.put(put_req("after", "x")).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "member {i}: {err:?}");
        assert_eq!(err.message(), "etcdserver: corrupt cluster");
        let got = kv.range(crate::requests::all_keys()).await.unwrap();
        assert_eq!(got.into_inner().kvs.len(), 11);
    }
}

/// Scenario: a follower of a 3-member cluster, with a snapshot on its disk,
/// restarts with one key's value corrupted in its state (the test-only
/// flag, on a key its snapshot holds):
/// before it serves, it compares its hash with the two others', finds that
/// both differ, and refuses to start, saying so and how to rebuild it.
/// Started again without the damage, it passes the check and serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_data_differs_refuses_to_start() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.index_of(leader)).await;
    for i in 0..10 {
        kv.put(put_req(&format!("k{i}"), "value")).await.unwrap();
    }
    let f = cluster.follower_of(leader);
    eventually("the follower applied every put", LIVENESS, || async {
        let s = cluster.status(f).await?;
        (s.header?.revision == 11).then_some(())
    })
    .await;
    // A snapshot on its disk holds k3 (the log past the last commit point
    // it recorded is replayed only once a leader confirms it).
    MaintenanceClient::new(cluster.channel(f).await)
        .defragment(pb::DefragmentRequest {})
        .await
        .unwrap();
    cluster.kill(f);
    let flag = ["--test-corrupt-key".to_string(), "k3".to_string()];
    cluster.nodes[f].extra_args.extend(flag.clone());
    cluster.restart(f);
    let code = cluster.wait_exit(f, LIVENESS).await;
    assert_ne!(code, 0);
    let log = cluster.nodes[f].log();
    assert!(log.contains("corruption check at start-up"), "{log}");
    assert!(log.contains("while 0 agree; it does not serve"), "{log}");

    cluster.nodes[f].extra_args.retain(|a| !flag.contains(a));
    cluster.restart(f);
    eventually("the member serves again", LIVENESS, || async {
        let s = cluster.status(f).await?;
        (s.header?.revision == 11).then_some(())
    })
    .await;
    assert!(cluster.nodes[f]
        .log()
        .contains("start-up corruption check passed"));
}
