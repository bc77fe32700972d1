//! etcd's JSON gateway on the client port, spoken with a plain HTTP client
//! as curl and etcd3gw speak it: protobuf's JSON mapping (base64 bytes,
//! int64 as strings), grpc-gateway's error body and HTTP statuses.

use serde_json::{json, Value};

use crate::cluster::{http_post, TestCluster};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn post(addr: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = http_post(addr, path, &body.to_string()).unwrap();
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
    (status, v)
}

/// Scenario: on a 3-member cluster, a JSON put through one member is read
/// back as JSON from another (etcd's field names, base64 key and value,
/// revisions as strings); a txn compares and reads; a lease is granted and
/// asked about; members and status are listed; an empty key gets etcd's
/// error in grpc-gateway's body with 400, malformed JSON a 400, and an
/// unknown path a 404.
#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_speaks_etcds_json() {
    let cluster = TestCluster::start(3).await;
    let a = cluster.nodes[0].client_addr.clone();
    let b = cluster.nodes[1].client_addr.clone();

    let (status, put) = post(
        &a,
        "/v3/kv/put",
        json!({"key": b64("foo"), "value": b64("bar")}),
    );
    assert_eq!(status, 200, "{put}");
    let revision = put["header"]["revision"]
        .as_str()
        .expect("int64 as a string")
        .to_string();
    let (status, got) = post(&b, "/v3/kv/range", json!({"key": b64("foo")}));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["count"], "1");
    let kv = &got["kvs"][0];
    assert_eq!(
        (&kv["key"], &kv["value"]),
        (&json!(b64("foo")), &json!(b64("bar")))
    );
    assert_eq!(kv["mod_revision"], json!(revision));
    assert_eq!(kv["version"], "1");

    let txn = json!({
        "compare": [{"key": b64("foo"), "target": "VALUE", "result": "EQUAL", "value": b64("bar")}],
        "success": [{"request_put": {"key": b64("foo"), "value": b64("baz")}}],
        "failure": [{"request_range": {"key": b64("foo")}}],
    });
    let (status, t) = post(&b, "/v3/kv/txn", txn);
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["succeeded"], true, "{t}");

    let (status, lease) = post(&a, "/v3/lease/grant", json!({"TTL": "60"}));
    assert_eq!(status, 200, "{lease}");
    let id = lease["ID"].as_str().unwrap().to_string();
    let (status, ttl) = post(&b, "/v3/lease/timetolive", json!({"ID": id}));
    assert_eq!(status, 200, "{ttl}");
    assert_eq!(ttl["grantedTTL"], "60", "{ttl}");

    let (status, renewed) = post(&b, "/v3/lease/keepalive", json!({"ID": id}));
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(
        (&renewed["result"]["ID"], &renewed["result"]["TTL"]),
        (&json!(id), &json!("60")),
        "{renewed}"
    );
    // An unknown lease renews to a TTL of 0 (left out), as in etcd.
    let (status, gone) = post(&b, "/v3/lease/keepalive", json!({"ID": "12345"}));
    assert_eq!(status, 200, "{gone}");
    assert!(gone["result"]["TTL"].is_null(), "{gone}");

    let (_, members) = post(&a, "/v3/cluster/member/list", json!({}));
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    let (_, st) = post(&b, "/v3/maintenance/status", json!({}));
    assert_eq!(st["version"], raftkv::server::ETCD_VERSION, "{st}");

    let (status, err) = post(&a, "/v3/kv/put", json!({"key": ""}));
    assert_eq!(status, 400);
    assert_eq!(
        err,
        json!({"error": "etcdserver: key is not provided", "code": 3, "message": "etcdserver: key is not provided"})
    );
    let (status, text) = http_post(&a, "/v3/kv/range", "{not json").unwrap();
    assert_eq!(status, 400, "{text}");
    assert_eq!(http_post(&a, "/v3/no/such/call", "{}").unwrap().0, 404);
}

/// Scenario: `POST /v3/watch` with one create request streams the watch as
/// JSON lines: `created` first, then, after a put through another member,
/// the event with the key and value in base64, while the connection stays
/// open.
#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_streams_a_watch() {
    use std::io::{Read, Write};
    let cluster = TestCluster::start(3).await;
    let addr = cluster.nodes[0].client_addr.clone();
    let body = json!({"create_request": {"key": b64("watched")}}).to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let read_until = move |mut conn: std::net::TcpStream, want: &'static str| {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains(want) {
                let n = conn.read(&mut buf).expect("the watch stream stays open");
                assert!(
                    n > 0,
                    "the watch stream ended: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
            (conn, String::from_utf8_lossy(&seen).into_owned())
        })
    };
    let (conn, head) = read_until(conn, "\"created\":true").join().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let reader = read_until(conn, "\"events\"");
    cluster
        .kv(1)
        .await
        .put(crate::requests::put_req("watched", "value"))
        .await
        .unwrap();
    let (_, stream) = reader.join().unwrap();
    let line = stream
        .lines()
        .find(|l| l.contains("\"events\""))
        .expect("an events line");
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    let kv = &v["result"]["events"][0]["kv"];
    assert_eq!(
        (&kv["key"], &kv["value"]),
        (&json!(b64("watched")), &json!(b64("value")))
    );
}

/// Scenario: OpenStack's etcd3gw, a client that speaks only the JSON
/// gateway, works unmodified against a member: put, get, get_prefix, a
/// lease (grant, refresh, keys), status, members, delete, a compare-and-
/// swap (txn) and a watch that replays a put from history. `make test` installs etcd3gw (PyPI) beside
/// etcd 3.5 and names its Python in RAFTKV_PYTHON.
#[tokio::test(flavor = "multi_thread")]
async fn etcd3gw_works_unmodified() {
    let python = std::env::var("RAFTKV_PYTHON")
        .expect("RAFTKV_PYTHON is not set: run the tests with `make test`, which installs etcd3gw");
    let cluster = TestCluster::start(3).await;
    let (host, port) = cluster.nodes[1].client_addr.rsplit_once(':').unwrap();
    let script = format!(
        r#"
import etcd3gw
c = etcd3gw.client(host="{host}", port={port})
assert c.put("foo", "bar")
assert c.get("foo") == [b"bar"], c.get("foo")
assert [v for v, _ in c.get_prefix("f")] == [b"bar"]
lease = c.lease(ttl=30)
assert 0 < lease.ttl() <= 30
assert lease.refresh() == 30
assert c.put("leased", "x", lease=lease)
assert lease.keys() == [b"leased"]
assert c.status()["version"]
assert len(c.members()) == 3
assert c.delete("foo")
assert c.replace("leased", "x", "y")
assert not c.replace("leased", "x", "z")
assert c.put("w", "v1")
# From revision 1: the put is replayed, whenever the watch is set up.
events, cancel = c.watch("w", start_revision=1)
for event in events:
    assert event["kv"]["value"] == b"v1", event
    break
cancel()
print("etcd3gw ok")
"#
    );
    let (rc, out, err) = crate::tools::run_output(
        std::process::Command::new(python).arg("-c").arg(script),
        None,
    );
    assert_eq!((rc, out.trim()), (0, "etcd3gw ok"), "{err}");
}
