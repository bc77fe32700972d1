//! TLS on the client port: kvctl, etcdctl 3.4 and 3.5, the `etcd-client`
//! crate and curl work over it; with `--client-cert-auth` nobody without a
//! certificate from the trusted CA gets in; certificates replaced on disk
//! are used by the next connection without a restart, while connections
//! already open carry on.

use std::path::Path;
use std::process::Command;

use raftkv::pb;
use raftkv::pb::watch_client::WatchClient;
use tokio_stream::StreamExt;

use crate::cluster::{HarnessTls, Options, TestCluster, LIVENESS};
use crate::etcd_server::Etcd;
use crate::pki::Pki;
use crate::requests::{get_value, put_req};
use crate::tools::{check_config, kvctl, run_output};

/// kvd flags for TLS on the client port with `pki`'s certificate `file`.
fn server_flags(pki: &Pki, file: &str, client_cert_auth: bool) -> Vec<String> {
    let p = |f: String| pki.path(&f).display().to_string();
    let mut flags = vec![
        "--cert-file".into(),
        p(format!("{file}.pem")),
        "--key-file".into(),
        p(format!("{file}.key")),
        "--trusted-ca-file".into(),
        pki.ca_file().display().to_string(),
    ];
    if client_cert_auth {
        flags.push("--client-cert-auth".into());
    }
    flags
}

/// A 3-member cluster serving TLS on its client ports with certificates
/// from `pki`; the harness dials with `identity` (a client certificate)
/// if given.
pub async fn tls_cluster(pki: &Pki, client_cert_auth: bool) -> TestCluster {
    let identity = client_cert_auth.then(|| pki.issue("harness", "harness"));
    let mut cluster = TestCluster::plan(
        3,
        Options {
            client_tls: Some(HarnessTls {
                ca_pem: pki.ca_pem.clone(),
                identity,
            }),
            ..Options::default()
        },
    );
    for i in 0..3 {
        let file = format!("server{i}");
        pki.issue(&file, "raftkv");
        cluster.nodes[i].extra_args = server_flags(pki, &file, client_cert_auth);
    }
    cluster.launch().await;
    cluster
}

/// TLS flags for etcdctl and kvctl (same names): trust `pki`'s CA, and show
/// certificate `client` if given.
fn client_flags(pki: &Pki, client: Option<&str>) -> Vec<String> {
    let mut flags = vec!["--cacert".into(), pki.ca_file().display().to_string()];
    if let Some(file) = client {
        flags.push("--cert".into());
        flags.push(pki.path(&format!("{file}.pem")).display().to_string());
        flags.push("--key".into());
        flags.push(pki.path(&format!("{file}.key")).display().to_string());
    }
    flags
}

fn with(flags: &[String], args: &[&str]) -> Vec<String> {
    flags
        .iter()
        .cloned()
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

fn kvctl_tls(endpoints: &str, flags: &[String], args: &[&str]) -> (i32, String, String) {
    let all = with(flags, args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    kvctl(endpoints, &all)
}

fn etcdctl_tls(
    etcd: Etcd,
    endpoints: &str,
    flags: &[String],
    args: &[&str],
) -> (i32, String, String) {
    run_output(
        Command::new(etcd.binary("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--dial-timeout")
            .arg("5s")
            .args(with(flags, args)),
        None,
    )
}

fn https_endpoints(cluster: &TestCluster) -> String {
    cluster
        .nodes
        .iter()
        .map(|n| format!("https://{}", n.client_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// `curl` over HTTPS to `addr`'s `path`, trusting `ca`: (exit code, body).
fn curl(ca: &Path, addr: &str, path: &str) -> (i32, String) {
    let (rc, out, err) = run_output(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg(format!("https://{addr}{path}")),
        None,
    );
    (rc, out + &err)
}

/// Scenario: a cluster with TLS on its client ports (no client
/// certificates asked). kvctl with `--cacert` writes and reads through
/// bare `host:port` endpoints and `https://` ones, and `endpoint status
/// --cluster` reaches every member at the https:// client URLs they
/// publish; etcdctl 3.4 and 3.5 put, get and check `endpoint health
/// --cluster`; the etcd-client crate connects with TLS; curl reads
/// `/health` and the JSON gateway over HTTPS. Plaintext gRPC, and TLS
/// trusting another CA, get nothing.
#[tokio::test(flavor = "multi_thread")]
async fn tls_clients_kvctl_etcdctl_etcd_client_and_curl_work() {
    let pki = Pki::new("client-ca");
    let cluster = tls_cluster(&pki, false).await;
    let ca = client_flags(&pki, None);
    let eps = cluster.endpoints();
    let https = https_endpoints(&cluster);

    let (rc, out, err) = kvctl_tls(&eps, &ca, &["put", "k1", "v1"]);
    assert_eq!((rc, out.as_str()), (0, "OK\n"), "{err}");
    let (rc, out, err) = kvctl_tls(&https, &ca, &["get", "k1"]);
    assert_eq!((rc, out.as_str()), (0, "k1\nv1\n"), "{err}");
    let (rc, out, err) = kvctl_tls(
        &cluster.nodes[0].client_addr,
        &ca,
        &["endpoint", "status", "--cluster", "-w", "json"],
    );
    assert_eq!(rc, 0, "{err}");
    for node in &cluster.nodes {
        assert!(
            out.contains(&format!("https://{}", node.client_addr)),
            "{out}"
        );
    }

    let mut versions = vec![Etcd::V34];
    if std::env::var_os("RAFTKV_ETCD35_DIR").is_some() {
        versions.push(Etcd::V35);
    }
    for etcd in versions {
        let (rc, out, err) = etcdctl_tls(etcd, &https, &ca, &["put", "k2", "v2"]);
        assert_eq!((rc, out.as_str()), (0, "OK\n"), "{etcd:?}: {err}");
        let (rc, out, err) = etcdctl_tls(etcd, &https, &ca, &["get", "k1"]);
        assert_eq!((rc, out.as_str()), (0, "k1\nv1\n"), "{etcd:?}: {err}");
        let (rc, out, err) = etcdctl_tls(
            etcd,
            &format!("https://{}", cluster.nodes[1].client_addr),
            &ca,
            &["endpoint", "health", "--cluster"],
        );
        // etcdctl 3.4 prints the health lines on stderr, 3.5 on stdout.
        assert_eq!(rc, 0, "{etcd:?}: {out} {err}");
        let healthy = (out.clone() + &err).matches("is healthy").count();
        assert_eq!(healthy, 3, "{etcd:?}: {out} {err}");
    }

    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(pki.ca_pem.clone()));
    let mut client = etcd_client::Client::connect(
        [format!("https://{}", cluster.nodes[2].client_addr)],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("etcd-client connects over TLS");
    client.put("k3", "v3", None).await.expect("put over TLS");
    let got = client.get("k2", None).await.expect("get over TLS");
    assert_eq!(got.kvs()[0].value(), b"v2");

    let (rc, body) = curl(&pki.ca_file(), &cluster.nodes[0].client_addr, "/health");
    assert_eq!(rc, 0, "{body}");
    assert!(body.contains(r#""health":"true""#), "{body}");

    // Plaintext gRPC on a TLS port: no answer.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[0].client_addr))
            .unwrap()
            .timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
    let refused = raftkv::pb::kv_client::KvClient::new(plain)
        .range(pb::RangeRequest {
            key: b"k1".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "plaintext got {refused:?}");
    // TLS trusting another CA: the server's certificate is refused.
    let other = Pki::new("other-ca");
    let (rc, out, _) = kvctl_tls(&eps, &client_flags(&other, None), &["get", "k1"]);
    assert_ne!(rc, 0, "{out}");
    assert_eq!(out, "");
}

/// Scenario: `--client-cert-auth`. kvctl and etcdctl with no client
/// certificate, and with one from another CA, are refused and read
/// nothing; with one from the trusted CA both write and read.
#[tokio::test(flavor = "multi_thread")]
async fn client_cert_auth_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new("client-ca");
    let cluster = tls_cluster(&pki, true).await;
    let eps = cluster.endpoints();
    let https = https_endpoints(&cluster);
    let mut kv = cluster.kv(0).await;
    kv.put(put_req("secret", "s3cr3t")).await.unwrap();

    let other = Pki::new("other-ca");
    other.issue("intruder", "intruder");
    let mut intruder = client_flags(&pki, None);
    intruder.extend([
        "--cert".to_string(),
        other.path("intruder.pem").display().to_string(),
        "--key".to_string(),
        other.path("intruder.key").display().to_string(),
    ]);
    for flags in [client_flags(&pki, None), intruder] {
        let (rc, out, _) = kvctl_tls(&eps, &flags, &["get", "secret"]);
        assert_ne!(rc, 0, "kvctl {flags:?} got {out}");
        assert_eq!(out, "");
        let (rc, out, _) = etcdctl_tls(Etcd::V34, &https, &flags, &["get", "secret"]);
        assert_ne!(rc, 0, "etcdctl {flags:?} got {out}");
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    pki.issue("alice", "alice");
    let alice = client_flags(&pki, Some("alice"));
    let (rc, out, err) = kvctl_tls(&eps, &alice, &["get", "secret"]);
    assert_eq!((rc, out.as_str()), (0, "secret\ns3cr3t\n"), "{err}");
    let (rc, out, err) = etcdctl_tls(Etcd::V34, &https, &alice, &["put", "k", "v"]);
    assert_eq!((rc, out.as_str()), (0, "OK\n"), "{err}");
    assert_eq!(get_value(&mut kv, "k").await.as_deref(), Some("v"));
}

/// Puts a copy of `from` at `to` as the README says to: written beside it,
/// then renamed into place, so no reader sees half a file.
fn replace(from: &Path, to: &Path) {
    let part = to.with_extension("part");
    std::fs::copy(from, &part).unwrap();
    std::fs::rename(&part, to).unwrap();
}

/// Scenario: certificates rotate without a restart. A watch stream is open
/// over a connection made with the first CA's certificates; then the
/// certificate, key and trusted CA files of every member are replaced with
/// ones from a second CA. The next connection trusting the second CA (and
/// showing its client certificate) works, one trusting only the first is
/// refused, and the watch opened before still receives events.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_replaced_on_disk_are_used_by_the_next_connection() {
    let old = Pki::new("old-ca");
    let cluster = tls_cluster(&old, true).await;
    let eps = cluster.endpoints();

    let mut watch_client = WatchClient::new(cluster.channel(0).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"rotated".to_vec(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut events = watch_client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open a watch")
        .into_inner();
    let created = events.next().await.expect("created").expect("created");
    assert!(created.created);

    let new = Pki::new("new-ca");
    new.issue("client", "client");
    for i in 0..3 {
        let file = format!("server{i}");
        new.issue(&file, "raftkv");
        for ext in ["pem", "key"] {
            let name = format!("{file}.{ext}");
            replace(&new.path(&name), &old.path(&name));
        }
    }
    replace(&new.ca_file(), &old.ca_file());

    let new_flags = client_flags(&new, Some("client"));
    let (rc, out, err) = kvctl_tls(&eps, &new_flags, &["put", "rotated", "yes"]);
    assert_eq!((rc, out.as_str()), (0, "OK\n"), "{err}");
    // A client that still trusts only the old CA no longer trusts the
    // members.
    let old_ca = old.path("old-ca-copy.pem");
    std::fs::write(&old_ca, &old.ca_pem).unwrap();
    let stale = ["--cacert".to_string(), old_ca.display().to_string()];
    let (rc, out, _) = kvctl_tls(&eps, &with(&stale, &[]), &["get", "rotated"]);
    assert_ne!(rc, 0, "{out}");

    let resp = tokio::time::timeout(LIVENESS, events.next())
        .await
        .expect("the old watch sees the put in time")
        .expect("the old watch is still open")
        .expect("the old watch carries on");
    let event = resp.events.into_iter().next().expect("an event");
    assert_eq!(event.kv.unwrap().value, b"yes");
    assert!(
        cluster.nodes[0]
            .log()
            .contains("client TLS certificates reloaded"),
        "no reload logged"
    );
}

/// Scenario: client TLS flags that cannot work are refused up front,
/// naming the flag: a certificate without its key, client certificate auth
/// without a trusted CA or without TLS, a certificate file that is not
/// PEM, and a key that is not the certificate's (kvd exits before it
/// serves).
#[test]
fn client_tls_misconfigurations_are_refused() {
    let pki = Pki::new("client-ca");
    pki.issue("a", "a");
    pki.issue("b", "b");
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| pki.path(f).display().to_string();
    let (cert, key, wrong_key, ca) = (p("a.pem"), p("a.key"), p("b.key"), p("ca.pem"));
    let not_pem = p("a.key");
    for (args, says) in [
        (vec!["--check-config", "--cert-file", &cert], "--key-file"),
        (
            vec![
                "--check-config",
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--client-cert-auth",
            ],
            "--trusted-ca-file",
        ),
        (vec!["--check-config", "--client-cert-auth"], "--cert-file"),
    ] {
        let (code, err) = check_config(&args, dir.path());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    for (cert, key, says) in [
        (&cert, &wrong_key, "--key-file"),
        (&not_pem, &key, "--cert-file"),
    ] {
        let ports = crate::cluster::free_ports(2);
        let args = [
            "--listen-client",
            &format!("127.0.0.1:{}", ports[0]),
            "--listen-peer",
            &format!("127.0.0.1:{}", ports[1]),
            "--cert-file",
            cert,
            "--key-file",
            key,
            "--trusted-ca-file",
            &ca,
        ];
        let (code, err) = check_config(&args, dir.path());
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!dir.path().join("raft-log").exists(), "data touched");
    }
}
