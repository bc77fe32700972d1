//! A member's disk after a fault: a torn log record, a damaged log, a data
//! dir wiped and rebuilt. The member recovers what it safely can, from the
//! leader, and refuses (changing nothing) what it cannot.

use std::time::Duration;

use crate::cluster::{eventually, Options, TestCluster, LIVENESS};
use crate::requests::{all_keys_local, put_req};

/// The revision node `i` reports for a serializable read of every key, and
/// how many keys it serves from its own state, if it answers.
async fn local_state(cluster: &TestCluster, i: usize) -> Option<(i64, i64)> {
    let mut kv = cluster.kv(i).await;
    let resp = tokio::time::timeout(Duration::from_secs(2), kv.range(all_keys_local()))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((resp.header?.revision, resp.count))
}

async fn local_keys(cluster: &TestCluster, i: usize) -> Option<i64> {
    local_state(cluster, i).await.map(|(_, count)| count)
}

/// A 3-node cluster with `opts` holding `n` keys, and a follower (returned)
/// that has applied every one of them.
async fn cluster_with_keys(opts: Options, n: i64) -> (TestCluster, usize) {
    let cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.index_of(leader)).await;
    for i in 0..n {
        kv.put(put_req(&format!("k{i:03}"), "some value"))
            .await
            .unwrap();
    }
    let f = cluster.follower_of(leader);
    eventually("the follower applied every write", LIVENESS, || async {
        (local_keys(&cluster, f).await == Some(n)).then_some(())
    })
    .await;
    (cluster, f)
}

/// Scenario: a follower's last Raft log record, which the cluster had
/// committed, is cut short on disk while the follower is down (a disk that
/// lost a synced write). Restarted, the follower cuts the torn record,
/// starts, fetches the entry again from the leader and serves all 50 keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_torn_committed_record_is_fetched_again() {
    let (mut cluster, f) = cluster_with_keys(Options::default(), 50).await;
    cluster.kill(f);
    let segment = cluster.nodes[f].last_wal_segment().expect("a log segment");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    cluster.restart(f);
    eventually("the follower serves every key again", LIVENESS, || async {
        (local_keys(&cluster, f).await == Some(50)).then_some(())
    })
    .await;
    assert!(cluster.is_alive(f));
    let log = cluster.nodes[f].log();
    assert!(log.contains("cutting an unfinished append"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.index_of(leader)).await;
    kv.put(put_req("after", "torn")).await.unwrap();
    eventually("the follower takes new writes", LIVENESS, || async {
        (local_keys(&cluster, f).await == Some(51)).then_some(())
    })
    .await;
}

/// Scenario: a bit flipped in the middle of a stopped follower's Raft log.
/// kvd refuses to start, exits non-zero naming the file and offset, and
/// leaves the file exactly as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_log_is_refused_and_left_alone() {
    let (mut cluster, f) = cluster_with_keys(Options::default(), 50).await;
    cluster.kill(f);
    let segment = cluster.nodes[f].last_wal_segment().expect("a log segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    cluster.restart(f);
    let code = cluster.wait_exit(f, LIVENESS).await;
    assert_ne!(code, 0);
    let log = cluster.nodes[f].log();
    assert!(
        log.contains(&*segment.to_string_lossy()) && log.contains("damaged at byte"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "the log was modified"
    );
}

/// Scenario: one member's disk fills up (a 3 MiB data dir) under a stream
/// of 64 KiB writes. It does not linger as a zombie: it exits non-zero,
/// saying the disk is full, and the other two go on serving every write
/// they acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_disk_fills_up_exits() {
    let mut cluster = TestCluster::plan(3, Options::default());
    cluster.nodes[2].disk_bytes = Some(3 << 20);
    cluster.launch().await;
    let value = "x".repeat(64 << 10);
    let mut acked = Vec::new();
    for i in 0..200 {
        if !cluster.is_alive(2) {
            break;
        }
        // The full node may be the one a write goes to, or lead: retry
        // elsewhere, and count only what was acknowledged.
        for n in 0..2 {
            let mut kv = cluster.kv(n).await;
            let key = format!("big{i:03}");
            if kv.put(put_req(&key, &value)).await.is_ok() {
                acked.push(key);
                break;
            }
        }
    }
    let code = cluster.wait_exit(2, LIVENESS).await;
    assert_ne!(code, 0);
    let log = cluster.nodes[2].log();
    assert!(
        log.contains("fatal") && log.contains("No space left on device"),
        "{log}"
    );
    cluster.wait_leader().await;
    let mut kv = cluster.kv(0).await;
    kv.put(put_req("after", "full disk")).await.unwrap();
    let all = kv
        .range(crate::requests::all_keys())
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<String> = all
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    for key in &acked {
        assert!(keys.contains(key), "acknowledged {key} is gone");
    }
}

/// A cluster that snapshots every 100 entries and holds 500 keys, with a
/// follower (returned) that has every one of them.
async fn snapshotted_cluster() -> (TestCluster, usize) {
    let opts = Options {
        snapshot_count: 100,
        ..Default::default()
    };
    cluster_with_keys(opts, 500).await
}

/// Scenario: a follower's disk is replaced (its data dir wiped) after the
/// leader took snapshots and purged its log. Started again with
/// `--initial-cluster-state existing`, it does not form a cluster: it waits
/// for the leader, installs its snapshot and serves all 500 keys at the
/// leader's revision; no member panics.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_rejoins_with_existing() {
    let (mut cluster, f) = snapshotted_cluster().await;
    cluster.kill(f);
    cluster.nodes[f].wipe_data_dir();
    cluster.nodes[f]
        .extra_args
        .extend(["--initial-cluster-state".into(), "existing".into()]);
    let earlier = cluster.nodes[f].log().len();
    cluster.restart(f);
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let (revision, count) = local_state(&cluster, li).await.expect("the leader answers");
    assert_eq!(count, 500);
    eventually("the rebuilt member serves every key", LIVENESS, || async {
        (local_state(&cluster, f).await == Some((revision, 500))).then_some(())
    })
    .await;
    for node in &cluster.nodes {
        assert!(
            !node.log().contains("panicked"),
            "node {}: {}",
            node.id,
            node.log()
        );
    }
    assert!(cluster.is_alive(f));
    let log = cluster.nodes[f].log()[earlier..].to_string();
    assert!(log.contains("joining the running cluster"), "{log}");
    let installed = crate::cluster::scrape(&cluster, f)["raftkv_snapshots_installed_total"];
    assert!(installed >= 1.0, "caught up without a snapshot?");
    assert!(!log.contains("forming a new cluster"), "{log}");
}

/// Scenario: the same wiped follower started as `new` (the default)
/// refuses: the cluster knows it as started, so it exits non-zero telling
/// the operator to use `--initial-cluster-state existing`, and the cluster
/// carries on.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_started_as_new_refuses() {
    let (mut cluster, f) = snapshotted_cluster().await;
    cluster.kill(f);
    cluster.nodes[f].wipe_data_dir();
    cluster.restart(f);
    let code = cluster.wait_exit(f, LIVENESS).await;
    assert_ne!(code, 0);
    let log = cluster.nodes[f].log();
    assert!(log.contains("--initial-cluster-state existing"), "{log}");
    let leader = cluster.wait_leader().await;
    let mut kv = cluster.kv(cluster.index_of(leader)).await;
    kv.put(put_req("after", "refusal")).await.unwrap();
}
