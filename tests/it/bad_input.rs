//! Bad input gets etcd's error, changes nothing, and the node keeps serving;
//! garbage on the peer port does not crash a node.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use raftkv::pb;
use raftkv::pb::peer::peer_client::PeerClient;
use raftkv::pb::peer::Payload;
use tonic::Code;

use crate::cluster::{Options, TestCluster};
use crate::requests::{all_keys, get_value, put_req};

fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    msg: &str,
) {
    let err = result.expect_err("the request must fail");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(
        err.message().contains(msg),
        "{:?} should contain {msg:?}",
        err.message()
    );
}

async fn revision(cluster: &TestCluster) -> i64 {
    let mut kv = cluster.kv(0).await;
    kv.range(all_keys())
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

/// Scenario: each kind of bad request, sent to a follower and to the leader:
/// - an empty key in put, get and delete: INVALID_ARGUMENT "etcdserver: key
///   is not provided";
/// - a request over --max-request-bytes: "etcdserver: request is too large";
/// - a lease on a put (no lease exists): NOT_FOUND.
///
/// Afterwards the revision is unchanged, no key was written, and the node
/// still serves good requests.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_etcd_errors_and_change_nothing() {
    let opts = Options {
        max_request_bytes: Some(64 * 1024),
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_leader().await;
    let before = revision(&cluster).await;

    for i in [cluster.index_of(leader), cluster.follower_of(leader)] {
        let mut kv = cluster.kv(i).await;
        let empty_key = "etcdserver: key is not provided";
        assert_status(
            kv.put(put_req("", "v")).await,
            Code::InvalidArgument,
            empty_key,
        );
        assert_status(
            kv.range(pb::RangeRequest::default()).await,
            Code::InvalidArgument,
            empty_key,
        );
        assert_status(
            kv.delete_range(pb::DeleteRangeRequest::default()).await,
            Code::InvalidArgument,
            empty_key,
        );

        let big = "x".repeat(100 * 1024);
        let too_large = "etcdserver: request is too large";
        assert_status(
            kv.put(put_req("big", &big)).await,
            Code::InvalidArgument,
            too_large,
        );

        let leased = pb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            lease: 42,
            ..Default::default()
        };
        assert_status(
            kv.put(leased).await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );

        let keep = pb::PutRequest {
            key: "absent".into(),
            ignore_value: true,
            ..Default::default()
        };
        assert_status(
            kv.put(keep).await,
            Code::InvalidArgument,
            "etcdserver: key not found",
        );
    }

    assert_eq!(
        revision(&cluster).await,
        before,
        "bad requests must not change the revision"
    );
    let mut kv = cluster.kv(1).await;
    assert_eq!(kv.range(all_keys()).await.unwrap().into_inner().count, 0);
    kv.put(put_req("still", "serving")).await.unwrap();
    assert_eq!(
        get_value(&mut kv, "still").await.as_deref(),
        Some("serving")
    );
}

/// Scenario: junk on a node's peer port, both raw bytes on a TCP connection
/// and well-formed gRPC calls whose payloads do not decode. The calls get
/// INVALID_ARGUMENT; the node stays up and the cluster keeps committing.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_peer_port_does_not_crash_a_node() {
    let mut cluster = TestCluster::start(3).await;
    for i in 0..3 {
        let mut conn = TcpStream::connect(&cluster.nodes[i].peer_addr).unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ =
            conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage \x16\x03\x01");
        let _ = conn.write_all(&[0xa5; 64 * 1024]);
    }
    for i in 0..3 {
        let url = format!("http://{}", cluster.nodes[i].peer_addr);
        let mut peer = PeerClient::connect(url).await.unwrap();
        let junk = Payload {
            data: vec![0xff; 512],
        };
        for status in [
            peer.append_entries(junk.clone()).await.unwrap_err(),
            peer.vote(junk.clone()).await.unwrap_err(),
            peer.install_snapshot(junk.clone()).await.unwrap_err(),
            peer.forward(junk.clone()).await.unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        }
    }
    for i in 0..3 {
        assert!(cluster.is_alive(i), "node {} exited", i + 1);
        assert!(
            cluster.status(i).await.is_some(),
            "node {} must still answer",
            i + 1
        );
    }
    let mut kv = cluster.kv(2).await;
    kv.put(put_req("after", "garbage")).await.unwrap();
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        assert_eq!(
            get_value(&mut kv, "after").await.as_deref(),
            Some("garbage")
        );
    }
}
