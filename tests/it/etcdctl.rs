//! etcd's own `etcdctl` (v3, Debian's etcd-client) against raftkv: it must
//! work unmodified and print what it prints against etcd.

use std::process::Command;

use crate::cluster::{eventually, TestCluster, LIVENESS};
use crate::tools::{etcdctl, etcdctl_ok, etcdctl_path, etcdctl_stdin, line_reader};

/// Scenario: put, get (single, --prefix, --keys-only, -w json), del
/// (--prefix, --prev-kv), each sent to a different node, print exactly what
/// etcdctl prints against etcd; an empty key fails with etcd's message.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_put_get_del_print_what_etcd_prints() {
    let cluster = TestCluster::start(3).await;
    let node = |i: usize| cluster.nodes[i].client_addr.clone();

    assert_eq!(etcdctl_ok(&node(0), &["put", "foo", "bar"]), "OK\n");
    assert_eq!(etcdctl_ok(&node(1), &["put", "foo/a", "1"]), "OK\n");
    assert_eq!(etcdctl_ok(&node(2), &["put", "foo/b", "2"]), "OK\n");
    assert_eq!(
        etcdctl_ok(&node(1), &["put", "fop", "3", "--prev-kv"]),
        "OK\n"
    );
    assert_eq!(
        etcdctl_ok(&node(1), &["put", "fop", "4", "--prev-kv"]),
        "OK\nfop\n3\n"
    );

    assert_eq!(etcdctl_ok(&node(2), &["get", "foo"]), "foo\nbar\n");
    assert_eq!(etcdctl_ok(&node(0), &["get", "missing"]), "");
    assert_eq!(
        etcdctl_ok(&node(0), &["get", "foo", "--prefix"]),
        "foo\nbar\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(
        etcdctl_ok(&node(0), &["get", "foo/", "--prefix", "--keys-only"]),
        "foo/a\n\nfoo/b\n\n"
    );
    assert_eq!(
        etcdctl_ok(&node(0), &["get", "", "--prefix", "--limit", "1"]),
        "foo\nbar\n"
    );
    assert_eq!(
        etcdctl_ok(&node(1), &["get", "foo", "--consistency", "s"]),
        "foo\nbar\n"
    );

    let json = etcdctl_ok(&node(2), &["get", "foo", "-w", "json"]);
    let expected_header = format!("\"member_id\":{},\"revision\":6,", cluster.nodes[2].id);
    assert!(json.contains(&expected_header), "{json}");
    assert!(json.contains(r#""kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1"#), "{json}");

    assert_eq!(
        etcdctl_ok(&node(0), &["del", "foo/", "--prefix", "--prev-kv"]),
        "2\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(etcdctl_ok(&node(1), &["del", "nothing"]), "0\n");
    assert_eq!(
        etcdctl_ok(
            &cluster.endpoints(),
            &["get", "", "--from-key", "--keys-only"]
        ),
        "foo\n\nfop\n\n"
    );

    let (rc, _, err) = etcdctl(&node(0), &["put", "", "x"]);
    assert_eq!(rc, 1);
    assert_eq!(err.trim(), "Error: etcdserver: key is not provided");
}

/// Scenario: `etcdctl endpoint status` and `member list` against all three
/// nodes: each node reports itself, exactly one is leader, and the members
/// carry the client URLs they published through Raft.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_endpoint_status_and_member_list() {
    let cluster = TestCluster::start(3).await;
    let out = etcdctl_ok(&cluster.endpoints(), &["endpoint", "status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let leaders = lines
        .iter()
        .filter(|l| l.split(", ").nth(4) == Some("true"))
        .count();
    assert_eq!(leaders, 1, "{out}");
    for (line, node) in lines.iter().zip(&cluster.nodes) {
        assert!(
            line.starts_with(&format!("{}, {:x}, ", node.client_addr, node.id)),
            "{line}"
        );
    }

    let list = eventually(
        "every member published its client URL",
        LIVENESS,
        || async {
            let out = etcdctl_ok(&cluster.endpoints(), &["member", "list"]);
            (out.matches(", started, ").count() == 3).then_some(out)
        },
    )
    .await;
    for node in &cluster.nodes {
        assert!(
            list.contains(&format!("http://{}", node.client_addr)),
            "{list}"
        );
        assert!(
            list.contains(&format!("http://{}", node.peer_addr)),
            "{list}"
        );
    }
}

/// Scenario: `etcdctl txn -i` takes the success branch, then (the compare no
/// longer holding) the failure branch, printing what etcd prints;
/// `get --rev` reads the past; `compaction` then makes that read fail with
/// etcd's error. Outputs are those of etcd 3.4 for the same commands.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_txn_history_and_compaction() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    assert_eq!(etcdctl_ok(&eps, &["put", "user1", "bad"]), "OK\n"); // rev 2
    let prompts =
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";
    let txn = "value(\"user1\") = \"bad\"\n\nput user1 good\nget user1\n\nget user1\n\n";
    let (rc, out, err) = etcdctl_stdin(&eps, &["txn", "-i"], txn);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, format!("{prompts}SUCCESS\n\nOK\n\nuser1\ngood\n"));
    let (rc, out, _) = etcdctl_stdin(&eps, &["txn", "-i"], txn);
    assert_eq!(rc, 0);
    assert_eq!(out, format!("{prompts}FAILURE\n\nuser1\ngood\n"));
    // Without -i: no prompts.
    let (_, out, _) = etcdctl_stdin(&eps, &["txn"], "mod(\"user1\") > \"0\"\n\nget user1\n\n\n");
    assert_eq!(out, "SUCCESS\n\nuser1\ngood\n");

    assert_eq!(
        etcdctl_ok(&eps, &["get", "user1", "--rev", "2"]),
        "user1\nbad\n"
    );
    assert_eq!(
        etcdctl_ok(&eps, &["compaction", "3"]),
        "compacted revision 3\n"
    );
    let (rc, _, err) = etcdctl(&eps, &["get", "user1", "--rev", "2"]);
    assert_eq!(rc, 1);
    assert_eq!(
        err.trim(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        etcdctl_ok(&eps, &["get", "user1", "--rev", "3"]),
        "user1\ngood\n"
    );
}

/// Scenario: `etcdctl watch --prefix` runs in the background on one node
/// while puts and a delete go through another; it prints exactly what it
/// prints against etcd. A second watch from a past revision replays them.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_prints_changes_as_etcd() {
    let cluster = TestCluster::start(3).await;
    let start = |args: &[&str]| {
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&cluster.nodes[0].client_addr)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run etcdctl watch")
    };
    let mut live = start(&["watch", "w", "--prefix"]);
    let lines = line_reader(live.stdout.take().unwrap());
    // The watch is in place once a put made after it shows up: keep putting
    // a marker until one does.
    let other = &cluster.nodes[2].client_addr;
    let deadline = std::time::Instant::now() + LIVENESS;
    'ready: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "etcdctl watch never reported a change"
        );
        etcdctl_ok(other, &["put", "w0", "ready"]);
        while let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(300)) {
            if line == "ready" {
                break 'ready;
            }
        }
    }
    // Markers are put one at a time, so none is left in flight now.
    etcdctl_ok(other, &["put", "w1", "a"]);
    etcdctl_ok(other, &["put", "w2", "b"]);
    etcdctl_ok(other, &["del", "w1"]);
    let got: Vec<String> = (0..9)
        .map(|_| lines.recv_timeout(LIVENESS).expect("watch output"))
        .collect();
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(
        got.join("\n") + "\n",
        "PUT\nw1\na\nPUT\nw2\nb\nDELETE\nw1\n\n"
    );

    // Replay from the first put's revision with the previous values.
    let first = etcdctl_ok(&cluster.nodes[1].client_addr, &["get", "w0", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let rev = v["kvs"][0]["mod_revision"].as_i64().unwrap() + 1;
    let mut replay = start(&["watch", "w1", "--rev", &rev.to_string(), "--prev-kv"]);
    let lines = line_reader(replay.stdout.take().unwrap());
    let got: Vec<String> = (0..8)
        .map(|_| lines.recv_timeout(LIVENESS).expect("replay output"))
        .collect();
    let _ = replay.kill();
    let _ = replay.wait();
    assert_eq!(got.join("\n") + "\n", "PUT\nw1\na\nDELETE\nw1\na\nw1\n\n");
}

/// Scenario: etcdctl's `check datascale --load s` (10,000 puts, reading
/// the members' memory from `/metrics` on the client port) passes against
/// a 3-member cluster and leaves no key behind.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_check_datascale_passes() {
    let cluster = TestCluster::start(3).await;
    assert_check_passes(&cluster, "datascale");
}

/// Scenario: etcdctl's `check perf --load s` (60 s of puts from 50
/// clients at 150 writes/s, with bounds on throughput, the slowest request
/// and the spread) passes against a 3-member cluster of this (debug) build
/// and deletes its keys. It runs with no other test cluster beside it:
/// the bounds are wall-clock ones, and on two cores the rest of the suite
/// would be measured too.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_check_perf_passes() {
    let cluster = TestCluster::start_alone(3).await;
    assert_check_passes(&cluster, "perf");
}

/// Runs `etcdctl check <what> --load s` against `cluster`: every verdict
/// must be PASS and no key left behind.
fn assert_check_passes(cluster: &TestCluster, what: &str) {
    let eps = cluster.endpoints();
    let (rc, out, err) = etcdctl(&eps, &["check", what, "--load", "s"]);
    let verdicts: Vec<&str> = out
        .split(['\r', '\n'])
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(rc, 0, "{verdicts:?} {err}");
    assert!(!verdicts.is_empty(), "{out}");
    assert!(
        verdicts.iter().all(|l| l.starts_with("PASS")),
        "{verdicts:?}"
    );
    let left = etcdctl_ok(&eps, &["get", "", "--from-key", "--keys-only"]);
    assert_eq!(left, "", "keys left behind");
}

/// Scenario: etcdctl (Debian's 3.4) with `http://` endpoints, and with
/// `--cluster` (which dials the members' `http://` client URLs), runs
/// `endpoint status`, `endpoint hashkv`, `endpoint health`, `defrag`, a
/// put and a get: etcdctl 3.4 sends the whole URL as the HTTP/2
/// `:authority`, which the server takes as etcd's does.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_works_with_http_endpoints_and_cluster() {
    let cluster = TestCluster::start(3).await;
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("http://{}", n.client_addr))
        .collect();
    let all = urls.join(",");
    assert_eq!(etcdctl_ok(&urls[1], &["put", "k", "v"]), "OK\n");
    assert_eq!(etcdctl_ok(&urls[2], &["get", "k"]), "k\nv\n");
    for (endpoints, extra) in [(all.as_str(), None), (urls[0].as_str(), Some("--cluster"))] {
        let with = |args: &[&str]| -> Vec<String> {
            let mut args = args.to_vec();
            args.extend(extra);
            let (rc, out, err) = etcdctl(endpoints, &args);
            assert_eq!(rc, 0, "{args:?}: {err}");
            assert!(!err.contains("PROTOCOL_ERROR"), "{args:?}: {err}");
            out.lines().map(String::from).collect()
        };
        let status = with(&["endpoint", "status"]);
        assert_eq!(status.len(), 3, "{status:?}");
        for (line, url) in status.iter().zip(&urls) {
            assert!(line.starts_with(&format!("{url}, ")), "{status:?}");
        }
        let hashes = with(&["endpoint", "hashkv"]);
        assert_eq!(hashes.len(), 3, "{hashes:?}");
        let hash = |l: &String| l.rsplit(", ").next().unwrap().to_string();
        assert!(
            hashes.iter().all(|l| hash(l) == hash(&hashes[0])),
            "{hashes:?}"
        );
        let defrag = with(&["defrag"]);
        assert_eq!(defrag.len(), 3, "{defrag:?}");
        assert!(defrag
            .iter()
            .all(|l| l.starts_with("Finished defragmenting")));
    }
    let (rc, _, err) = etcdctl(&all, &["endpoint", "health"]);
    assert_eq!(rc, 0, "{err}");
}
