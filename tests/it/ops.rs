//! Operating a node: Prometheus metrics, `/health`, gRPC health, JSON logs
//! and `kvctl endpoint health`.

use std::collections::BTreeMap;
use std::process::Command;

use raftkv::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::cluster::{eventually, free_ports, http_get, scrape, Options, TestCluster, LIVENESS};
use crate::requests::put_req;
use crate::tools::run_output;

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

fn grpc(metric: &str, method: &str, code: &str) -> String {
    format!(
        r#"{metric}{{grpc_code="{code}",grpc_method="{method}",grpc_service="etcdserverpb.KV",grpc_type="unary"}}"#
    )
}

/// Scenario: scrape a follower, write through it, scrape again: the
/// request counters and latency histogram for Put (OK and InvalidArgument),
/// the applied and committed indexes, the key count, fsync and sizes all
/// moved, and so did the follower's time handling appends. The leader built
/// a snapshot, timed each proposal, and timed heartbeats and appends to the
/// follower under its member id. After the leader is killed, the new
/// leader reports itself as leader and has seen one more leader change.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_writes_and_elections() {
    let opts = Options {
        snapshot_count: 20,
        ..Default::default()
    };
    let mut cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_leader().await;
    let leader_index = cluster.index_of(leader);
    let follower = cluster.follower_of(leader);

    let before = scrape(&cluster, follower);
    assert_eq!(value(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(value(&before, "etcd_server_is_leader"), 0.0);
    assert!(value(&before, "etcd_server_leader_changes_seen_total") >= 1.0);

    let mut kv = cluster.kv(follower).await;
    for i in 0..30 {
        kv.put(put_req(&format!("m{i}"), "v")).await.unwrap();
    }
    kv.put(put_req("", "v")).await.unwrap_err();

    // The follower applies the last put when the leader next tells it the
    // commit index, a heartbeat after the put was acknowledged.
    let applied = "etcd_server_proposals_applied_total";
    let after = eventually("the follower applied the 30 puts", LIVENESS, || async {
        let after = scrape(&cluster, follower);
        (value(&after, applied) - value(&before, applied) >= 30.0).then_some(after)
    })
    .await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved(&grpc("grpc_server_handled_total", "Put", "OK")), 30.0);
    assert_eq!(
        moved(&grpc("grpc_server_handled_total", "Put", "InvalidArgument")),
        1.0
    );
    assert_eq!(
        moved(&grpc("grpc_server_handling_seconds_count", "Put", "OK")),
        30.0
    );
    assert!(moved("etcd_server_proposals_committed_total") >= 30.0);
    assert!(moved("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert_eq!(value(&after, "etcd_debugging_mvcc_keys_total"), 30.0);
    assert_eq!(value(&after, "etcd_server_proposals_failed_total"), 0.0);
    assert!(value(&after, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(value(&after, "raftkv_data_dir_size_bytes") > 0.0);
    assert!(value(&after, "raftkv_raft_term") >= 1.0);
    assert!(moved("raftkv_peer_append_handling_seconds_count") >= 1.0);
    assert!(moved("raftkv_peer_append_handling_seconds_sum") > 0.0);

    let on_leader = scrape(&cluster, leader_index);
    assert_eq!(value(&on_leader, "etcd_server_is_leader"), 1.0);
    // One client, one write at a time: a proposal each.
    assert!(value(&on_leader, "raftkv_proposal_duration_seconds_count") >= 30.0);
    assert!(value(&on_leader, "raftkv_proposal_duration_seconds_sum") > 0.0);
    let to = format!("{:x}", cluster.nodes[follower].id);
    for metric in [
        "etcd_network_peer_round_trip_time_seconds_count",
        "raftkv_peer_append_duration_seconds_count",
    ] {
        let series = format!(r#"{metric}{{To="{to}"}}"#);
        assert!(value(&on_leader, &series) >= 1.0, "{series}");
    }
    assert!(
        value(
            &on_leader,
            "etcd_debugging_snap_save_total_duration_seconds_count"
        ) >= 1.0
    );

    let changes = "etcd_server_leader_changes_seen_total";
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_index).collect();
    let changes_before: Vec<f64> = survivors
        .iter()
        .map(|&i| value(&scrape(&cluster, i), changes))
        .collect();
    cluster.kill(leader_index);
    let new_leader = cluster.wait_leader().await;
    let new_index = cluster.index_of(new_leader);
    let on_new = scrape(&cluster, new_index);
    assert_eq!(value(&on_new, "etcd_server_is_leader"), 1.0);
    let before = changes_before[survivors.iter().position(|&i| i == new_index).unwrap()];
    assert!(
        value(&on_new, changes) > before,
        "the new leader saw the change"
    );
}

/// Scenario: `/health` is 200 `{"health":"true"}` on every node of a healthy
/// cluster. With the two other nodes paused, the remaining one turns 503
/// `{"health":"false"}` with a reason; after they resume it is 200 again.
/// gRPC health follows the same rule.
#[tokio::test(flavor = "multi_thread")]
async fn health_reports_whether_a_node_can_serve() {
    let cluster = TestCluster::start(3).await;
    for node in &cluster.nodes {
        let (status, body) = http_get(&node.metrics_addr, "/health").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["health"], "true");
    }
    let mut grpc_health = HealthClient::new(cluster.channel(0).await);
    let serving = |s: i32| s == ServingStatus::Serving as i32;
    let resp = grpc_health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert!(serving(resp.into_inner().status));

    cluster.pause(1);
    cluster.pause(2);
    let body = eventually("node 1 reports itself unhealthy", LIVENESS, || async {
        let (status, body) = http_get(&cluster.nodes[0].metrics_addr, "/health").ok()?;
        (status == 503).then_some(body)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health"], "false");
    assert!(!v["reason"].as_str().unwrap().is_empty());

    cluster.resume(1);
    cluster.resume(2);
    eventually("node 1 is healthy again", LIVENESS, || async {
        let (status, _) = http_get(&cluster.nodes[0].metrics_addr, "/health").ok()?;
        (status == 200).then_some(())
    })
    .await;
    let resp = grpc_health
        .check(HealthCheckRequest {
            service: "etcdserverpb.KV".into(),
        })
        .await
        .unwrap();
    assert!(serving(resp.into_inner().status));
}

/// Runs kvctl with `args` as they are (endpoints included).
fn kvctl(args: &[&str]) -> (i32, String, String) {
    run_output(Command::new(env!("CARGO_BIN_EXE_kvctl")).args(args), None)
}

/// Scenario: `kvctl endpoint health` says each endpoint is healthy and how
/// long the read took; `--cluster` finds every member from one endpoint;
/// with a follower down it names it unhealthy and exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_endpoint_health() {
    let mut cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    let (rc, out, err) = kvctl(&["--endpoints", &eps, "endpoint", "health"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        out.matches("is healthy: successfully committed proposal: took = ")
            .count(),
        3,
        "{out}"
    );

    let one = cluster.nodes[0].client_addr.clone();
    let (rc, out, _) = kvctl(&[
        "--endpoints",
        &one,
        "endpoint",
        "health",
        "--cluster",
        "-w",
        "json",
    ]);
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{out}");
    let (rc, out, _) = kvctl(&["--endpoints", &one, "endpoint", "status", "--cluster"]);
    assert_eq!(rc, 0);
    for node in &cluster.nodes {
        assert!(out.contains(&node.client_addr), "{out}");
    }

    // A follower goes down: the other two keep their leader and answer.
    let leader = cluster.wait_leader().await;
    let down = (0..3)
        .rev()
        .find(|&i| cluster.nodes[i].id != leader)
        .unwrap();
    cluster.kill(down);
    let (rc, out, err) = kvctl(&[
        "--endpoints",
        &eps,
        "--dial-timeout",
        "1s",
        "endpoint",
        "health",
    ]);
    assert_eq!(rc, 1);
    assert!(
        out.contains(&format!("{} is unhealthy", cluster.nodes[down].client_addr)),
        "{out}"
    );
    assert_eq!(out.matches("is healthy").count(), 2, "{out}");
    assert_eq!(err.trim(), "Error: unhealthy cluster");
}

/// Scenario: with `--log-format json` every log line is a JSON object with
/// a level and a message, including the leader-change line.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs() {
    let opts = Options {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    };
    let cluster = TestCluster::start_with(1, opts).await;
    let mut kv = cluster.kv(0).await;
    kv.range(pb::RangeRequest {
        key: "x".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let log = cluster.nodes[0].log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["message"].is_string()));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "this node became leader"),
        "{log}"
    );
}

/// Scenario: a data dir whose snapshot file is intact (its checksum holds)
/// but holds bytes this build cannot decode, as one written by an
/// incompatible version would. kvd refuses to start, and says which data
/// dir, which part, and the likely cause, not just "deserialization error".
#[test]
fn kvd_names_a_data_dir_it_cannot_decode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("node1");
    let snapshot_dir = data_dir.join("snapshot");
    std::fs::create_dir_all(&snapshot_dir).expect("create dirs");
    let (meta, data): (&[u8], &[u8]) = (b"meta", b"\xff\xff\xff\xff not a state");
    let mut crc = crc32fast::Hasher::new();
    crc.update(meta);
    crc.update(data);
    let mut file = b"RKVSNAP1".to_vec();
    file.extend((meta.len() as u64).to_le_bytes());
    file.extend((data.len() as u64).to_le_bytes());
    file.extend(crc.finalize().to_le_bytes());
    file.extend(meta);
    file.extend(data);
    std::fs::write(snapshot_dir.join("snapshot"), file).expect("write snapshot");
    let ports = free_ports(3);
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let (code, _, err) = run_output(
        Command::new(env!("CARGO_BIN_EXE_kvd"))
            .arg("--id")
            .arg("1")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client", &addr(ports[0])])
            .args(["--listen-peer", &addr(ports[1])])
            .args(["--listen-metrics", &addr(ports[2])])
            .args(["--initial-cluster", &format!("1={}", addr(ports[1]))]),
        None,
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&data_dir.display().to_string())
            && err.contains("cannot decode its snapshot")
            && err.contains("incompatible raftkv version"),
        "{err}"
    );
}

/// Scenario: three nodes started with only `--listen-client` and
/// `--listen-peer` (no metrics listener) all come up; each client port
/// serves plain HTTP beside gRPC, as etcd's: `/health` (etcd's JSON),
/// `/livez` and `/readyz` (`ok`; `?verbose` lists the checks), `/metrics`,
/// `/version` (etcd's JSON) and a 404 for anything else, while gRPC puts
/// and gets go on over the same port. With the two other nodes paused,
/// the remaining one stays live but not ready (503, naming the failed
/// check).
#[tokio::test(flavor = "multi_thread")]
async fn the_client_port_serves_http_beside_grpc() {
    let opts = Options {
        listen_metrics: false,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, opts).await;
    for node in &cluster.nodes {
        let addr = &node.client_addr;
        let (status, body) = http_get(addr, "/health").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["health"], "true");
        assert_eq!(http_get(addr, "/livez").unwrap(), (200, "ok".to_string()));
        let (status, body) = http_get(addr, "/readyz?verbose").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            "[+]serializable_read ok\n[+]linearizable_read ok\nreadyz check passed\n"
        );
        let (status, body) = http_get(addr, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("etcd_server_has_leader 1"), "{body}");
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
        let (status, body) = http_get(addr, "/version").unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["etcdserver"], raftkv::server::ETCD_VERSION);
        assert_eq!(v["etcdcluster"], "3.5.0");
        assert_eq!(http_get(addr, "/nothing/here").unwrap().0, 404);
        // No listener where --listen-metrics would have been.
        assert!(std::net::TcpStream::connect(&node.metrics_addr).is_err());
    }
    let mut kv = cluster.kv(1).await;
    kv.put(put_req("over", "grpc")).await.unwrap();
    assert_eq!(
        crate::requests::get_value(&mut kv, "over").await.as_deref(),
        Some("grpc")
    );

    cluster.pause(1);
    cluster.pause(2);
    let addr = &cluster.nodes[0].client_addr;
    let body = eventually("node 1 is not ready", LIVENESS, || async {
        let (status, body) = http_get(addr, "/readyz?verbose").ok()?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("[-]linearizable_read failed"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(http_get(addr, "/livez").unwrap(), (200, "ok".to_string()));
    cluster.resume(1);
    cluster.resume(2);
}

/// Scenario: logs tell the truth. The leader of a 3-member cluster is
/// killed: each survivor logs the change once, from the old leader to the
/// new (`leader changed old=A new=B`, or on the new leader `this node
/// became leader ... previous=A`), never through "none"; the new leader
/// reports the dead peer unreachable once, not at every retry, while writes
/// and linearizable reads go on, and logs no ERROR for them; and logs
/// written to a file carry no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn logs_report_each_leader_change_and_an_unreachable_peer_once() {
    let mut cluster = TestCluster::start(3).await;
    let old = cluster.wait_leader().await;
    let oi = cluster.index_of(old);
    cluster.kill(oi);
    let new = eventually("a new leader", LIVENESS, || async {
        let leader = cluster.wait_leader().await;
        (leader != old).then_some(leader)
    })
    .await;
    let ni = cluster.index_of(new);
    let dead = format!("peer unreachable peer={old} ");
    eventually("the new leader notices the dead peer", LIVENESS, || async {
        cluster.nodes[ni].log().contains(&dead).then_some(())
    })
    .await;
    let mut kv = cluster.kv(ni).await;
    for i in 0..50 {
        kv.put(put_req(&format!("k{i}"), "v")).await.unwrap();
        // A linearizable read: confirmed by a quorum without the dead peer.
        crate::requests::get_value(&mut kv, "k0").await.unwrap();
    }
    for node in cluster.nodes.iter().filter(|n| n.id != old) {
        let log = node.log();
        assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
        assert!(
            !log.contains("ERROR"),
            "an ERROR in a healthy majority: {log}"
        );
        assert!(!log.contains("new=none"), "{log}");
        // (openraft may elect more than one leader in a term, one after
        // the other, so the first election can show up twice.)
        let change = if node.id == new {
            "this node became leader term=".to_string()
        } else {
            format!("leader changed old={old} new={new} ")
        };
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(&change) && (node.id != new || l.ends_with(&format!("previous={old}")))
            })
            .collect();
        assert_eq!(lines.len(), 1, "node {}: {lines:?}\n{log}", node.id);
    }
    let log = cluster.nodes[ni].log();
    assert_eq!(log.matches(&dead).count(), 1, "{log}");
}

/// Scenario: a Watch stream is counted in `grpc_server_handled_total`
/// when it ends, not when it opens: while one is open nothing is counted
/// for Watch; once the client drops it, it counts once, as `Canceled`
/// (grpc-go's server counts a stream its client abandoned so).
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_stream_is_counted_when_it_ends() {
    use pb::watch_client::WatchClient;
    use pb::watch_request::RequestUnion;
    let cluster = TestCluster::start(1).await;
    let series = |code: &str| {
        format!(
            r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}}"#
        )
    };
    let watches = |samples: &BTreeMap<String, f64>| {
        samples
            .iter()
            .filter(|(k, _)| {
                k.starts_with("grpc_server_handled_total") && k.contains(r#"grpc_method="Watch""#)
            })
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"w".to_vec(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = WatchClient::new(cluster.channel(0).await)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().created);
    cluster.kv(0).await.put(put_req("w", "1")).await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().events.len(), 1);
    assert_eq!(watches(&scrape(&cluster, 0)), 0.0, "counted while open");
    drop(stream);
    drop(tx);
    let after = eventually("the ended watch is counted", LIVENESS, || async {
        let samples = scrape(&cluster, 0);
        (watches(&samples) > 0.0).then_some(samples)
    })
    .await;
    assert_eq!(watches(&after), 1.0, "{after:?}");
    assert_eq!(value(&after, &series("Canceled")), 1.0, "{after:?}");
}
