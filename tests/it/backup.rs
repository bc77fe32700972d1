//! Backup and restore in etcd's snapshot format: a backup taken from a
//! follower while writes go on restores into a new cluster with the same
//! keys, values, revisions and leases; damaged files are refused when saved
//! and when restored; and snapshots move both ways between raftkv and real
//! etcd 3.4 and 3.5 servers.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use raftkv::pb;
use raftkv::pb::kv_client::KvClient;
use raftkv::pb::lease_client::LeaseClient;
use tonic::transport::Channel;

use crate::cluster::{Options, TestCluster};
use crate::etcd_server::{Etcd, EtcdServer};
use crate::requests::put_req;
use crate::tools::{etcdctl_ok, kvctl, kvctl_ok, run_output};

/// Every key at `revision` (0: now), and the revision the answer is at.
async fn all_at(channel: Channel, revision: i64) -> (i64, Vec<pb::KeyValue>) {
    let resp = KvClient::new(channel)
        .range(pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
        .await
        .expect("range everything")
        .into_inner();
    (resp.header.unwrap().revision, resp.kvs)
}

/// Writes a little of everything a backup must carry: puts, a
/// transaction's two puts at one revision, a delete, a key on a lease, and
/// history both before and after a compaction. Returns the lease's id and
/// the compaction revision.
async fn fill(channel: Channel) -> (i64, i64) {
    let mut kv = KvClient::new(channel.clone());
    for i in 0..5 {
        kv.put(put_req(&format!("fill/{i}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    kv.put(put_req("fill/1", "again")).await.unwrap();
    let put_op = |k: &str, v: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put_req(k, v))),
    };
    kv.txn(pb::TxnRequest {
        success: vec![put_op("txn/a", "1"), put_op("txn/b", "2")],
        ..Default::default()
    })
    .await
    .unwrap();
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"fill/2".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let compact_at = kv
        .put(put_req("fill/3", "before compaction"))
        .await
        .unwrap();
    let compact_at = compact_at.into_inner().header.unwrap().revision;
    kv.compact(pb::CompactionRequest {
        revision: compact_at,
        physical: true,
    })
    .await
    .unwrap();
    let lease = LeaseClient::new(channel)
        .lease_grant(pb::LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    kv.put(pb::PutRequest {
        lease,
        ..put_req("leased", "held")
    })
    .await
    .unwrap();
    kv.put(put_req("fill/4", "after compaction")).await.unwrap();
    kv.put(put_req("binary", "\u{1}\u{2}")).await.unwrap();
    (lease, compact_at)
}

/// The leases a server holds.
async fn leases(channel: Channel) -> Vec<i64> {
    let mut ids: Vec<i64> = LeaseClient::new(channel)
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    ids
}

/// `kvctl snapshot restore` of `file` into every node of a planned
/// cluster, then the cluster started.
async fn restore_cluster(file: &Path, n: usize) -> TestCluster {
    restore_cluster_with(file, n, Options::default()).await
}

async fn restore_cluster_with(file: &Path, n: usize, opts: Options) -> TestCluster {
    let mut restored = TestCluster::plan(n, opts);
    for node in &restored.nodes {
        let out = kvctl_ok(
            "127.0.0.1:1",
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                node.data_dir().to_str().unwrap(),
                "--id",
                &node.id.to_string(),
                "--initial-cluster",
                restored.initial_cluster(),
            ],
        );
        assert!(out.starts_with("Restored "), "{out}");
    }
    restored.launch().await;
    restored
}

/// `snapshot status -w json`'s revision, by kvctl or etcdctl.
fn status_revision(json: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect(json);
    v["revision"].as_i64().expect(json)
}

/// Scenario: a 3-member cluster with history, a compaction, a transaction
/// and a leased key takes writes without pause while `kvctl snapshot save`
/// asks a follower for a backup; the backup is verified and saved. Its
/// revision R (from `snapshot status`) is one the writes reached. Restored
/// into a new 3-member cluster, it serves exactly what the source served at
/// R (keys, values, create and mod revisions, versions, leases), the
/// history after the compaction too, under a new cluster id, and takes
/// writes at R+1. etcdctl's `snapshot save` and `status` agree with
/// kvctl's.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_on_a_follower_under_writes_restores_into_a_new_cluster() {
    let source = TestCluster::start(3).await;
    let leader = source.wait_leader().await;
    let follower = source.follower_of(leader);
    let (lease, compact_at) = fill(source.channel(0).await).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, channel) = (stop.clone(), source.channel(0).await);
        tokio::spawn(async move {
            let mut kv = KvClient::new(channel);
            let mut acked = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load/{:05}", acked % 200);
                if kv.put(put_req(&key, &acked.to_string())).await.is_ok() {
                    acked += 1;
                }
            }
            acked
        })
    };
    // Let the load get going, then save while it runs.
    crate::cluster::eventually("the load writes", crate::cluster::LIVENESS, || async {
        let (rev, _) = all_at(source.channel(1).await, 0).await;
        (rev > 40).then_some(())
    })
    .await;
    let file = source.scratch_dir().join("backup.db");
    let endpoint = source.nodes[follower].client_addr.clone();
    let out = kvctl_ok(&endpoint, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved at"), "{out}");
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked > 0);

    let status = kvctl_ok(
        "127.0.0.1:1",
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    );
    let r = status_revision(&status);
    let (now, _) = all_at(source.channel(0).await, 0).await;
    assert!(r > compact_at && r <= now, "backup at {r}, source at {now}");
    // etcd's own etcdctl saves and reads raftkv's backups alike.
    let etcd_file = source.scratch_dir().join("etcdctl.db");
    etcdctl_ok(
        &endpoint,
        &["snapshot", "save", etcd_file.to_str().unwrap()],
    );
    let etcd_status = etcdctl_ok(
        "127.0.0.1:1",
        &[
            "snapshot",
            "status",
            etcd_file.to_str().unwrap(),
            "-w",
            "json",
        ],
    );
    assert!(status_revision(&etcd_status) >= r, "{etcd_status}");
    let same_file_status = etcdctl_ok(
        "127.0.0.1:1",
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(same_file_status.trim()).unwrap(),
        serde_json::from_str::<serde_json::Value>(status.trim()).unwrap(),
        "etcdctl and kvctl read the same file differently"
    );

    let (_, want) = all_at(source.channel(0).await, r).await;
    let (_, want_history) = all_at(source.channel(0).await, compact_at).await;
    let restored = restore_cluster(&file, 3).await;
    for i in 0..3 {
        let (rev, got) = all_at(restored.channel(i).await, 0).await;
        assert_eq!(rev, r, "member {i}'s revision");
        assert_eq!(got, want, "member {i}'s keys");
        let (_, history) = all_at(restored.channel(i).await, compact_at).await;
        assert_eq!(
            history, want_history,
            "member {i}'s history at {compact_at}"
        );
    }
    assert_eq!(leases(restored.channel(0).await).await, vec![lease]);
    let resp = KvClient::new(restored.channel(1).await)
        .put(put_req("after/restore", "1"))
        .await
        .unwrap()
        .into_inner();
    let header = resp.header.unwrap();
    assert_eq!(header.revision, r + 1);
    let source_header = source.status(0).await.unwrap().header.unwrap();
    assert_ne!(
        header.cluster_id, source_header.cluster_id,
        "a restore makes a new cluster"
    );
}

/// Scenario: a member streams damaged backups (kvd's hidden
/// --test-corrupt-snapshot): `kvctl snapshot save` from it fails, saying
/// the backup does not check out, and leaves no file behind, while a save
/// from a healthy member works. A truncated file, a flipped bit, a bare
/// database without its trailer (unless --skip-hash-check) and a restore
/// into a data dir that is not empty are all refused, leaving no data dir.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_backup_is_refused_at_save_and_at_restore() {
    let mut cluster = TestCluster::plan(3, Options::default());
    cluster.nodes[2].extra_args = vec!["--test-corrupt-snapshot".into()];
    cluster.launch().await;
    fill(cluster.channel(0).await).await;
    let dir = cluster.scratch_dir().to_path_buf();
    let bad = dir.join("bad.db");
    let (rc, _, err) = kvctl(
        &cluster.nodes[2].client_addr,
        &["snapshot", "save", bad.to_str().unwrap()],
    );
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("does not check out"), "{err}");
    assert!(!bad.exists() && !dir.join("bad.db.part").exists());

    let good = dir.join("good.db");
    kvctl_ok(
        &cluster.nodes[0].client_addr,
        &["snapshot", "save", good.to_str().unwrap()],
    );
    let bytes = std::fs::read(&good).unwrap();
    let restore = |file: &Path, data_dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--id",
            "1",
            "--initial-cluster",
            "1=127.0.0.1:2380",
        ];
        args.extend_from_slice(extra);
        kvctl("127.0.0.1:1", &args)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() - 5000].to_vec(),
            "no SHA-256 trailer",
        ),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                b[bytes.len() / 3] ^= 0x10;
                b
            },
            "does not match",
        ),
        (
            "bare",
            bytes[..bytes.len() - 32].to_vec(),
            "--skip-hash-check",
        ),
    ];
    for (what, content, message) in cases {
        let file = dir.join(format!("{what}.db"));
        std::fs::write(&file, content).unwrap();
        let data_dir = dir.join(format!("restored-{what}"));
        let (rc, _, err) = restore(&file, &data_dir, &[]);
        assert_eq!(rc, 1, "{what}: {err}");
        assert!(err.contains(message), "{what}: {err}");
        assert!(!data_dir.exists(), "{what} left a data dir");
    }
    // A bare database restores when asked to skip the check; a truncated
    // one still does not.
    let (rc, _, err) = restore(
        &dir.join("bare.db"),
        &dir.join("restored-bare"),
        &["--skip-hash-check"],
    );
    assert_eq!(rc, 0, "{err}");
    let cut = dir.join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (rc, _, err) = restore(&cut, &dir.join("restored-cut"), &["--skip-hash-check"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("damaged"), "{err}");
    // Never over a data dir that holds something.
    let (rc, _, err) = restore(&good, &dir.join("restored-bare"), &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("not empty"), "{err}");
}

/// Scenario, for etcd 3.4 and for etcd 3.5: a real etcd member gets a
/// little of everything (`fill`); etcd's own `snapshot save` backs it up,
/// `kvctl snapshot restore` makes a 3-member raftkv cluster of it, which
/// serves etcd's keys, values, revisions, history after the compaction and
/// leases. That cluster takes a write, `kvctl snapshot save` backs it up,
/// etcd's own restore tool (`etcdctl snapshot restore` in 3.4, `etcdutl`
/// in 3.5) makes an etcd member of that, which serves what raftkv served.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_move_between_etcd_and_raftkv() {
    for version in [Etcd::V34, Etcd::V35] {
        let dir = tempfile::tempdir().unwrap();
        let etcd = EtcdServer::start(version, dir.path(), "source").await;
        let (lease, compact_at) = fill(etcd.channel().await).await;
        let file = dir.path().join("from-etcd.db");
        version.etcdctl(
            &etcd.client_addr,
            &["snapshot", "save", file.to_str().unwrap()],
        );
        let (rev, want) = all_at(etcd.channel().await, 0).await;
        let (_, want_history) = all_at(etcd.channel().await, compact_at).await;

        let raftkv = restore_cluster(&file, 3).await;
        for i in 0..3 {
            let (got_rev, got) = all_at(raftkv.channel(i).await, 0).await;
            assert_eq!(
                (got_rev, &got),
                (rev, &want),
                "{version:?} -> raftkv member {i}"
            );
            let (_, history) = all_at(raftkv.channel(i).await, compact_at).await;
            assert_eq!(history, want_history, "{version:?} -> raftkv: history");
        }
        assert_eq!(leases(raftkv.channel(0).await).await, vec![lease]);

        KvClient::new(raftkv.channel(0).await)
            .put(put_req("from/raftkv", "yes"))
            .await
            .unwrap();
        let back = dir.path().join("from-raftkv.db");
        kvctl_ok(
            &raftkv.endpoints(),
            &["snapshot", "save", back.to_str().unwrap()],
        );
        let (rev, want) = all_at(raftkv.channel(0).await, 0).await;
        let etcd_again = EtcdServer::restore(version, dir.path(), "restored", &back).await;
        let (got_rev, got) = all_at(etcd_again.channel().await, 0).await;
        assert_eq!((got_rev, &got), (rev, &want), "raftkv -> {version:?}");
        let (_, history) = all_at(etcd_again.channel().await, compact_at + 1).await;
        let (_, raftkv_history) = all_at(raftkv.channel(0).await, compact_at + 1).await;
        assert_eq!(history, raftkv_history, "raftkv -> {version:?}: history");
        assert_eq!(leases(etcd_again.channel().await).await, vec![lease]);
    }
}

/// Scenario: users, roles and auth move with backups. In etcd (3.4 and
/// 3.5) etcdctl makes root and alice (readwrite on app/) and enables auth;
/// its snapshot restored into raftkv keeps auth on: alice authenticates
/// with the password etcd hashed, writes under app/ and is refused
/// elsewhere, on every member. Back from raftkv into etcd, etcdctl as alice
/// is served and refused alike.
#[tokio::test(flavor = "multi_thread")]
async fn users_and_roles_move_between_etcd_and_raftkv() {
    for version in [Etcd::V34, Etcd::V35] {
        let dir = tempfile::tempdir().unwrap();
        let etcd = EtcdServer::start(version, dir.path(), "source").await;
        let ctl = |addr: &str, args: &[&str]| version.etcdctl(addr, args);
        let root = ["--user", "root:rootpw"];
        ctl(&etcd.client_addr, &["user", "add", "root:rootpw"]);
        ctl(&etcd.client_addr, &["user", "grant-role", "root", "root"]);
        ctl(&etcd.client_addr, &["auth", "enable"]);
        for args in [
            &["role", "add", "app"][..],
            &[
                "role",
                "grant-permission",
                "app",
                "readwrite",
                "--prefix",
                "app/",
            ],
            &["user", "add", "alice:alicepw"],
            &["user", "grant-role", "alice", "app"],
            &["put", "app/x", "1"],
        ] {
            ctl(&etcd.client_addr, &[&root[..], args].concat());
        }
        let file = dir.path().join("from-etcd.db");
        ctl(
            &etcd.client_addr,
            &[&root[..], &["snapshot", "save", file.to_str().unwrap()]].concat(),
        );

        let opts = Options {
            credentials: Some(("root".into(), "rootpw".into())),
            ..Options::default()
        };
        let raftkv = restore_cluster_with(&file, 3, opts).await;
        for node in &raftkv.nodes {
            let at = &node.client_addr;
            let (rc, out, err) = kvctl(at, &["--user", "alice:alicepw", "put", "app/y", "2"]);
            assert_eq!(
                (rc, out.as_str()),
                (0, "OK\n"),
                "{version:?} -> raftkv: {err}"
            );
            let (rc, _, err) = kvctl(at, &["--user", "alice:alicepw", "put", "nope", "2"]);
            assert_ne!(rc, 0, "{version:?} -> raftkv: alice wrote outside app/");
            assert!(err.contains("permission denied"), "{err}");
            let (rc, _, err) = kvctl(at, &["get", "app/x"]);
            assert_ne!(rc, 0);
            assert!(err.contains("user name is empty"), "{err}");
        }

        let back = dir.path().join("from-raftkv.db");
        kvctl_ok(
            &raftkv.endpoints(),
            &[
                "--user",
                "root:rootpw",
                "snapshot",
                "save",
                back.to_str().unwrap(),
            ],
        );
        let etcd_again = EtcdServer::restore(version, dir.path(), "restored", &back).await;
        let alice = ["--user", "alice:alicepw"];
        assert_eq!(
            ctl(
                &etcd_again.client_addr,
                &[&alice[..], &["get", "app/y", "--print-value-only"]].concat()
            ),
            "2\n",
            "raftkv -> {version:?}"
        );
        let (rc, out, _) = run_output(
            std::process::Command::new(version.binary("etcdctl"))
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &etcd_again.client_addr])
                .args(alice)
                .args(["put", "nope", "1"]),
            None,
        );
        assert_ne!(
            rc, 0,
            "raftkv -> {version:?}: alice wrote outside app/: {out}"
        );
    }
}
