//! etcd's own `etcdctl` (v3, Debian's etcd-client) against raftkv: it must
//! work unmodified and print what it prints against etcd.

use std::path::PathBuf;
use std::process::Command;

use crate::cluster::{eventually, TestCluster, LIVENESS};

fn etcdctl_path() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcdctl"))
        .find(|p| p.is_file());
    found.expect(
        "etcdctl not found on PATH: install etcd's CLI (Debian: apt-get install etcd-client)",
    )
}

/// Runs etcdctl; returns (exit code, stdout, stderr without clientv3's JSON
/// retry warnings).
fn etcdctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--dial-timeout")
        .arg("5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .collect::<Vec<_>>()
        .join("\n");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    let (rc, out, err) = etcdctl(endpoints, args);
    assert_eq!(rc, 0, "etcdctl {args:?} failed: {err}");
    out
}

/// Scenario: put, get (single, --prefix, --keys-only, -w json), del
/// (--prefix, --prev-kv), each sent to a different node, print exactly what
/// etcdctl prints against etcd; an empty key fails with etcd's message.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_put_get_del_print_what_etcd_prints() {
    let cluster = TestCluster::start(3).await;
    let node = |i: usize| cluster.nodes[i].client_addr.clone();

    assert_eq!(ok(&node(0), &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&node(1), &["put", "foo/a", "1"]), "OK\n");
    assert_eq!(ok(&node(2), &["put", "foo/b", "2"]), "OK\n");
    assert_eq!(ok(&node(1), &["put", "fop", "3", "--prev-kv"]), "OK\n");
    assert_eq!(
        ok(&node(1), &["put", "fop", "4", "--prev-kv"]),
        "OK\nfop\n3\n"
    );

    assert_eq!(ok(&node(2), &["get", "foo"]), "foo\nbar\n");
    assert_eq!(ok(&node(0), &["get", "missing"]), "");
    assert_eq!(
        ok(&node(0), &["get", "foo", "--prefix"]),
        "foo\nbar\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(
        ok(&node(0), &["get", "foo/", "--prefix", "--keys-only"]),
        "foo/a\n\nfoo/b\n\n"
    );
    assert_eq!(
        ok(&node(0), &["get", "", "--prefix", "--limit", "1"]),
        "foo\nbar\n"
    );
    assert_eq!(
        ok(&node(1), &["get", "foo", "--consistency", "s"]),
        "foo\nbar\n"
    );

    let json = ok(&node(2), &["get", "foo", "-w", "json"]);
    let expected_header = format!("\"member_id\":{},\"revision\":6,", cluster.nodes[2].id);
    assert!(json.contains(&expected_header), "{json}");
    assert!(json.contains(r#""kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1"#), "{json}");

    assert_eq!(
        ok(&node(0), &["del", "foo/", "--prefix", "--prev-kv"]),
        "2\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(ok(&node(1), &["del", "nothing"]), "0\n");
    assert_eq!(
        ok(
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
    let out = ok(&cluster.endpoints(), &["endpoint", "status"]);
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
            let out = ok(&cluster.endpoints(), &["member", "list"]);
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
