//! Mutual TLS on the peer port: a cluster whose members trust one CA works
//! as before, and nobody without a member's certificate gets in.

use raftkv::pb;
use raftkv::pb::cluster_client::ClusterClient;
use raftkv::pb::peer::peer_client::PeerClient;
use raftkv::pb::peer::Payload;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::cluster::{eventually, TestCluster, LIVENESS};
use crate::pki::Pki;
use crate::requests::{get_value, put_req};
use crate::tools::check_config;

/// The common name every member's peer certificate carries.
const MEMBER_CN: &str = "raftkv-peer";

fn tls_flags(pki: &Pki, file: &str) -> Vec<String> {
    let p = |f: &str| pki.path(f).display().to_string();
    vec![
        "--peer-cert-file".into(),
        p(&format!("{file}.pem")),
        "--peer-key-file".into(),
        p(&format!("{file}.key")),
        "--peer-trusted-ca-file".into(),
        pki.ca_file().display().to_string(),
        "--peer-client-cert-auth".into(),
        "--peer-cert-allowed-cn".into(),
        MEMBER_CN.into(),
    ]
}

/// One call to node `addr`'s peer port over TLS, trusting `ca`, showing
/// `identity` if any; the status it ends with.
async fn call_peer(addr: &str, ca: &str, identity: Option<(String, String)>) -> tonic::Status {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let call = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let junk = Payload {
            data: vec![0xff; 64],
        };
        PeerClient::new(channel)
            .append_entries(junk)
            .await
            .map(|_| ())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), call).await {
        Ok(Err(status)) => status,
        Ok(Ok(())) => panic!("junk was accepted"),
        Err(_) => panic!("the call hung"),
    }
}

/// Scenario: three members with certificates from one CA, peer TLS with
/// client certificate auth and an allowed common name. They elect a leader,
/// a write through a follower commits and every member reads it, and
/// MemberList shows https peer URLs. Then, on every member's peer port:
/// plaintext gRPC, TLS without a certificate, and a certificate from
/// another CA do not get through the handshake; a certificate from the
/// right CA with another common name is refused (PERMISSION_DENIED); only
/// a member's certificate reaches the service (junk: INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread")]
async fn only_members_certificates_reach_the_peer_port() {
    let pki = Pki::new("raftkv test CA");
    let mut cluster = TestCluster::plan(3, Default::default());
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        let file = format!("node{}", i + 1);
        pki.issue(&file, MEMBER_CN);
        node.extra_args = tls_flags(&pki, &file);
    }
    let member = pki.issue("member", MEMBER_CN);
    let intruder = pki.issue("intruder", "intruder");
    let other = Pki::new("another CA");
    let foreign = other.issue("foreign", MEMBER_CN);
    cluster.launch().await;
    let leader = cluster.wait_leader().await;

    let f = cluster.follower_of(leader);
    let mut kv = cluster.kv(f).await;
    kv.put(put_req("over", "tls")).await.unwrap();
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        assert_eq!(get_value(&mut kv, "over").await.as_deref(), Some("tls"));
    }
    let members = ClusterClient::new(cluster.channel(0).await)
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(m.peer_ur_ls[0].starts_with("https://"), "{m:?}");
    }

    for i in 0..3 {
        let addr = cluster.nodes[i].peer_addr.clone();
        let plain = PeerClient::connect(format!("http://{addr}")).await;
        let plain = match plain {
            Ok(mut client) => client
                .append_entries(Payload { data: vec![] })
                .await
                .expect_err("plaintext must not get through"),
            Err(e) => tonic::Status::unavailable(e.to_string()),
        };
        assert_ne!(plain.code(), Code::InvalidArgument, "{plain:?}");
        for (what, identity) in [
            ("no certificate", None),
            ("another CA's certificate", Some(foreign.clone())),
        ] {
            let status = call_peer(&addr, &pki.ca_pem, identity).await;
            // Refused in the handshake (a TLS alert, or the connection
            // closed on it): a transport error on this side, never an
            // answer from the service.
            assert!(
                std::error::Error::source(&status).is_some()
                    && !matches!(
                        status.code(),
                        Code::InvalidArgument | Code::PermissionDenied
                    ),
                "{what}: {status:?}"
            );
        }
        let status = call_peer(&addr, &pki.ca_pem, Some(intruder.clone())).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = call_peer(&addr, &pki.ca_pem, Some(member.clone())).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    kv.put(put_req("still", "serving")).await.unwrap();
    eventually("every member has the last write", LIVENESS, || async {
        for i in 0..3 {
            let mut kv = cluster.kv(i).await;
            if get_value(&mut kv, "still").await.as_deref() != Some("serving") {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Scenario: peer TLS flags that cannot work are refused up front, naming
/// the flag: a certificate without its key or CA, client certificate auth
/// without TLS, an allowed name without client certificate auth, and a key
/// that is not the certificate's (kvd exits before serving).
#[test]
fn peer_tls_misconfigurations_are_refused() {
    let pki = Pki::new("raftkv test CA");
    pki.issue("a", MEMBER_CN);
    pki.issue("b", MEMBER_CN);
    let dir = tempfile::tempdir().unwrap();
    let cert = pki.path("a.pem").display().to_string();
    let ca = pki.ca_file().display().to_string();
    let wrong_key = pki.path("b.key").display().to_string();
    for (args, says) in [
        (
            vec!["--check-config", "--peer-cert-file", &cert],
            "--peer-key-file",
        ),
        (
            vec!["--check-config", "--peer-client-cert-auth"],
            "--peer-cert-file",
        ),
        (
            vec![
                "--check-config",
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &wrong_key,
                "--peer-trusted-ca-file",
                &ca,
                "--peer-cert-allowed-cn",
                "x",
            ],
            "--peer-client-cert-auth",
        ),
    ] {
        let (code, err) = check_config(&args, dir.path());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let ports = crate::cluster::free_ports(3);
    let (code, err) = check_config(
        &[
            "--listen-client",
            &format!("127.0.0.1:{}", ports[0]),
            "--listen-peer",
            &format!("127.0.0.1:{}", ports[1]),
            "--listen-metrics",
            &format!("127.0.0.1:{}", ports[2]),
            "--peer-cert-file",
            &cert,
            "--peer-key-file",
            &wrong_key,
            "--peer-trusted-ca-file",
            &ca,
        ],
        dir.path(),
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("--peer-key-file"), "{err}");
}
