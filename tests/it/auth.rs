//! etcd's authentication and role-based access, end to end: etcdctl sets
//! up users and roles and is refused or served as etcd would; every
//! enforcement point refuses a user without the permission and serves one
//! with it (nested transactions, prev_kv, leases, watch ranges, locks,
//! admin calls, the JSON gateway); with `--client-cert-auth` a
//! certificate's common name is the user; and a client sending forged,
//! stale or no tokens gets nothing through any service.

use raftkv::pb;
use raftkv::pb::auth_client::AuthClient;
use raftkv::pb::cluster_client::ClusterClient;
use raftkv::pb::kv_client::KvClient;
use raftkv::pb::lease_client::LeaseClient;
use raftkv::pb::maintenance_client::MaintenanceClient;
use raftkv::pb::v3lockpb::lock_client::LockClient;
use raftkv::pb::watch_client::WatchClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::cluster::{http_post_with, Options, TestCluster, LIVENESS};
use crate::requests::put_req;
use crate::tools::{etcdctl, kvctl};

/// A cluster whose password hashes are cheap (bcrypt's lowest cost).
async fn cluster() -> TestCluster {
    TestCluster::start_with(
        3,
        Options {
            extra_args: vec!["--bcrypt-cost".into(), "4".into()],
            ..Options::default()
        },
    )
    .await
}

/// `msg` with `token` in its metadata, as etcd's clients send it.
fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

async fn login(ch: Channel, name: &str, password: &str) -> String {
    AuthClient::new(ch)
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .token
}

fn perm(kind: pb::authpb::permission::Type, key: &[u8], end: &[u8]) -> pb::authpb::Permission {
    pb::authpb::Permission {
        perm_type: kind as i32,
        key: key.to_vec(),
        range_end: end.to_vec(),
    }
}

/// Sets up over gRPC, as root: users `root` (rootpw) and `alice`
/// (alicepw), alice's role `app` with read-write on `app/` and read on
/// `cfg`; then enables auth. Returns (root's token, alice's token).
async fn secure(ch: Channel) -> (String, String) {
    use pb::authpb::permission::Type;
    let mut auth = AuthClient::new(ch.clone());
    let user = |name: &str, password: &str| pb::AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    };
    auth.user_add(user("root", "rootpw")).await.unwrap();
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .unwrap();
    auth.role_add(pb::AuthRoleAddRequest { name: "app".into() })
        .await
        .unwrap();
    for p in [
        perm(Type::Readwrite, b"app/", b"app0"),
        perm(Type::Read, b"cfg", b""),
    ] {
        auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "app".into(),
            perm: Some(p),
        })
        .await
        .unwrap();
    }
    auth.user_add(user("alice", "alicepw")).await.unwrap();
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "alice".into(),
        role: "app".into(),
    })
    .await
    .unwrap();
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    (
        login(ch.clone(), "root", "rootpw").await,
        login(ch, "alice", "alicepw").await,
    )
}

fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) {
    match r {
        Err(s) if s.code() == Code::PermissionDenied => {
            assert_eq!(s.message(), "etcdserver: permission denied", "{what}")
        }
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

fn allowed<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) -> T {
    match r {
        Ok(v) => v,
        Err(s) => panic!("{what}: refused: {s:?}"),
    }
}

/// Scenario: etcdctl (Debian's 3.4) creates root, enables auth, adds a
/// role with a prefix permission and a user holding it, exactly as etcd's
/// documentation does it; its output matches etcd's. Then: no user,
/// a wrong password, and alice outside her range are refused with etcd's
/// errors; alice inside it, and root anywhere, are served; kvctl --user
/// works the same; revoking alice's role takes effect on her next request;
/// disabling auth opens everything again.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_sets_up_users_and_roles_and_they_are_enforced() {
    let cluster = cluster().await;
    let eps = cluster.endpoints();
    let ok = |args: &[&str]| -> String {
        let (rc, out, err) = etcdctl(&eps, args);
        assert_eq!(rc, 0, "etcdctl {args:?}: {err}");
        out
    };
    let refused = |args: &[&str]| -> String {
        let (rc, out, err) = etcdctl(&eps, args);
        assert_ne!(rc, 0, "etcdctl {args:?} succeeded: {out}");
        err
    };
    assert_eq!(ok(&["user", "add", "root:rootpw"]), "User root created\n");
    assert_eq!(
        ok(&["user", "grant-role", "root", "root"]),
        "Role root is granted to user root\n"
    );
    assert_eq!(ok(&["auth", "enable"]), "Authentication Enabled\n");
    let root = ["--user", "root:rootpw"];
    let as_root = |args: &[&str]| ok(&[&root[..], args].concat());
    assert_eq!(as_root(&["role", "add", "app"]), "Role app created\n");
    assert_eq!(
        as_root(&[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "--prefix",
            "app/"
        ]),
        "Role app updated\n"
    );
    assert_eq!(
        as_root(&["role", "grant-permission", "app", "read", "cfg"]),
        "Role app updated\n"
    );
    assert_eq!(
        as_root(&["role", "get", "app"]),
        "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\n\tcfg\nKV Write:\n\t[app/, app0) (prefix app/)\n"
    );
    assert_eq!(
        as_root(&["user", "add", "alice:alicepw"]),
        "User alice created\n"
    );
    as_root(&["user", "grant-role", "alice", "app"]);
    assert_eq!(
        as_root(&["user", "get", "alice"]),
        "User: alice\nRoles: app\n"
    );
    assert_eq!(as_root(&["user", "list"]), "alice\nroot\n");
    as_root(&["put", "cfg", "v1"]);

    assert!(refused(&["get", "cfg"]).contains("etcdserver: user name is empty"));
    assert!(refused(&["--user", "alice:wrong", "get", "cfg"])
        .contains("etcdserver: authentication failed, invalid user ID or password"));
    let alice = ["--user", "alice:alicepw"];
    let as_alice = |args: &[&str]| etcdctl(&eps, &[&alice[..], args].concat());
    assert_eq!(as_alice(&["put", "app/x", "1"]).1, "OK\n");
    assert_eq!(as_alice(&["get", "cfg"]).1, "cfg\nv1\n");
    for args in [
        &["put", "cfg", "v2"][..],
        &["put", "other", "1"],
        &["get", "", "--prefix"],
        &["del", "cfg"],
        &["compaction", "1"],
        &["user", "list"],
        &["role", "add", "mine"],
    ] {
        let (rc, out, err) = as_alice(args);
        assert_ne!(rc, 0, "alice {args:?}: {out}");
        assert!(err.contains("permission denied"), "alice {args:?}: {err}");
    }

    // kvctl --user, with the password asked for on stdin when left out.
    let (rc, out, err) = kvctl(
        &eps,
        &["--user", "alice:alicepw", "get", "app/", "--prefix"],
    );
    assert_eq!((rc, out.as_str()), (0, "app/x\n1\n"), "{err}");
    let (rc, _, err) = kvctl(&eps, &["--user", "alice:alicepw", "put", "other", "1"]);
    assert_ne!(rc, 0);
    assert!(err.contains("etcdserver: permission denied"), "{err}");
    let (rc, out, err) =
        crate::tools::kvctl_stdin(&eps, &["--user", "root", "auth", "status"], "rootpw\n");
    assert_eq!(
        (rc, out.as_str()),
        (0, "Authentication Status: true\nAuthRevision: 8\n"),
        "{err}"
    );

    as_root(&["user", "revoke-role", "alice", "app"]);
    let (rc, _, err) = as_alice(&["put", "app/x", "2"]);
    assert_ne!(rc, 0);
    assert!(err.contains("permission denied"), "{err}");

    assert_eq!(as_root(&["auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ok(&["put", "other", "1"]), "OK\n");
    assert_eq!(ok(&["get", "cfg", "--print-value-only"]), "v1\n");
}

/// Scenario: each enforcement point, over gRPC, refuses alice where her
/// role does not reach and serves her where it does: prev_kv on put and
/// delete needs read; a transaction's compares need read and every op of
/// both branches, nested ones included, must be allowed; attaching to,
/// revoking, renewing, inspecting and listing a lease that holds a key she
/// may not write or read is refused; a watch needs read on exactly its
/// range (an open end included); locks need her prefix; compaction,
/// defragmentation, backups, hashes and member changes need root; status
/// and member list need a user. Refused writes change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_enforcement_point_refuses_what_the_role_does_not_allow() {
    use pb::request_op::Request as Op;
    let cluster = cluster().await;
    let ch = cluster.channel(1).await;
    let (root, alice) = secure(ch.clone()).await;
    let mut kv = KvClient::new(ch.clone());
    macro_rules! a {
        ($m:expr) => {
            with_token($m, &alice)
        };
    }
    macro_rules! r {
        ($m:expr) => {
            with_token($m, &root)
        };
    }

    let mut secret = put_req("secret", "s");
    allowed("root put", kv.put(r!(secret.clone())).await);
    let mut p = put_req("app/k", "1");
    allowed("put in range", kv.put(a!(p.clone())).await);
    p.prev_kv = true;
    allowed("prev_kv on a readable key", kv.put(a!(p.clone())).await);
    // alice has read on cfg only: writing it is refused, with or without
    // prev_kv; and she may not learn secret's value through prev_kv.
    let cfg = put_req("cfg", "x");
    denied("put on a read-only key", kv.put(a!(cfg)).await);
    secret.prev_kv = true;
    denied("put outside range", kv.put(a!(secret.clone())).await);
    let del = |key: &[u8], prev_kv| pb::DeleteRangeRequest {
        key: key.to_vec(),
        prev_kv,
        ..Default::default()
    };
    denied(
        "delete outside range",
        kv.delete_range(a!(del(b"secret", false))).await,
    );
    let before = allowed("root reads", kv.range(r!(range(b"secret"))).await).into_inner();

    // Transactions.
    let put_op = |key: &[u8]| pb::RequestOp {
        request: Some(Op::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: b"t".to_vec(),
            ..Default::default()
        })),
    };
    let nested = |inner: pb::TxnRequest| pb::RequestOp {
        request: Some(Op::RequestTxn(inner)),
    };
    let never = |key: &[u8]| pb::Compare {
        key: key.to_vec(),
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Version as i32,
        target_union: Some(pb::compare::TargetUnion::Version(999)),
        ..Default::default()
    };
    // A put outside her range, hidden two levels deep in a branch that
    // would not even run.
    let hidden = pb::TxnRequest {
        compare: vec![never(b"app/k")],
        success: vec![nested(pb::TxnRequest {
            failure: vec![nested(pb::TxnRequest {
                success: vec![put_op(b"secret")],
                ..Default::default()
            })],
            ..Default::default()
        })],
        failure: vec![put_op(b"app/t")],
    };
    denied("nested txn", kv.txn(a!(hidden)).await);
    let compare_secret = pb::TxnRequest {
        compare: vec![never(b"secret")],
        failure: vec![put_op(b"app/t")],
        ..Default::default()
    };
    denied(
        "compare on an unreadable key",
        kv.txn(a!(compare_secret)).await,
    );
    let fine = pb::TxnRequest {
        compare: vec![never(b"app/k")],
        success: vec![nested(pb::TxnRequest {
            success: vec![put_op(b"app/n")],
            ..Default::default()
        })],
        failure: vec![put_op(b"app/t")],
    };
    allowed("txn in range", kv.txn(a!(fine)).await);

    // Leases: root's lease holds `secret`.
    let mut lease = LeaseClient::new(ch.clone());
    let grant = |ttl| pb::LeaseGrantRequest { ttl, id: 0 };
    let rootl = allowed("root grant", lease.lease_grant(r!(grant(60))).await)
        .into_inner()
        .id;
    let mut attach = put_req("secret", "s");
    attach.lease = rootl;
    allowed("root attach", kv.put(r!(attach)).await);
    let mut hers = put_req("app/l", "1");
    hers.lease = rootl;
    denied(
        "attach to a lease holding others' keys",
        kv.put(a!(hers.clone())).await,
    );
    let own = allowed("alice grant", lease.lease_grant(a!(grant(60))).await)
        .into_inner()
        .id;
    hers.lease = own;
    allowed("attach to her own lease", kv.put(a!(hers)).await);
    denied(
        "revoke a lease holding others' keys",
        lease
            .lease_revoke(a!(pb::LeaseRevokeRequest { id: rootl }))
            .await,
    );
    denied(
        "time to live with keys",
        lease
            .lease_time_to_live(a!(pb::LeaseTimeToLiveRequest {
                id: rootl,
                keys: true
            }))
            .await,
    );
    allowed(
        "her own lease's keys",
        lease
            .lease_time_to_live(a!(pb::LeaseTimeToLiveRequest {
                id: own,
                keys: true
            }))
            .await,
    );
    denied(
        "list leases",
        lease.lease_leases(a!(pb::LeaseLeasesRequest {})).await,
    );
    let renew = lease
        .lease_keep_alive(a!(tokio_stream::iter([pb::LeaseKeepAliveRequest {
            id: rootl
        }])))
        .await;
    let first = match renew {
        Ok(stream) => stream.into_inner().next().await.expect("an answer"),
        Err(s) => Err(s),
    };
    denied("keep another's lease alive", first);

    // Watches: read on exactly the watched range.
    let verdict = |key: &[u8], end: &[u8]| {
        let ch = ch.clone();
        let token = alice.clone();
        let (key, end) = (key.to_vec(), end.to_vec());
        async move {
            let create = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key,
                        range_end: end,
                        ..Default::default()
                    },
                )),
            };
            let mut stream = WatchClient::new(ch)
                .watch(with_token(tokio_stream::iter([create]), &token))
                .await
                .expect("open a watch")
                .into_inner();
            let resp = tokio::time::timeout(LIVENESS, stream.next())
                .await
                .expect("an answer in time")
                .expect("an answer")
                .expect("no stream error");
            assert!(resp.created);
            (resp.canceled, resp.cancel_reason)
        }
    };
    assert_eq!(verdict(b"app/", b"app0").await, (false, String::new()));
    let refusal = (
        true,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied".to_string(),
    );
    assert_eq!(verdict(b"secret", b"").await, refusal);
    assert_eq!(
        verdict(b"app/", b"\0").await,
        refusal,
        "an open end reaches past app/"
    );
    assert_eq!(verdict(b"app/", b"b").await, refusal);

    // Locks: under her prefix only.
    let mut locks = LockClient::new(ch.clone());
    let lock = |name: &[u8], lease| pb::v3lockpb::LockRequest {
        name: name.to_vec(),
        lease,
    };
    allowed(
        "lock under app/",
        locks.lock(a!(lock(b"app/lock", own))).await,
    );
    denied("lock elsewhere", locks.lock(a!(lock(b"ops", own))).await);

    // Admin calls.
    let mut maint = MaintenanceClient::new(ch.clone());
    denied(
        "compact",
        kv.compact(a!(pb::CompactionRequest {
            revision: 1,
            physical: false
        }))
        .await,
    );
    denied(
        "defragment",
        maint.defragment(a!(pb::DefragmentRequest {})).await,
    );
    denied(
        "hashkv",
        maint.hash_kv(a!(pb::HashKvRequest { revision: 0 })).await,
    );
    denied(
        "snapshot",
        maint.snapshot(a!(pb::SnapshotRequest {})).await.map(|_| ()),
    );
    let mut members = ClusterClient::new(ch.clone());
    denied(
        "member add",
        members
            .member_add(a!(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: true,
            }))
            .await,
    );
    allowed("status", maint.status(a!(pb::StatusRequest {})).await);
    allowed(
        "member list",
        members
            .member_list(a!(pb::MemberListRequest::default()))
            .await,
    );
    allowed(
        "root defragments",
        maint.defragment(r!(pb::DefragmentRequest {})).await,
    );

    let after = allowed("root reads", kv.range(r!(range(b"secret"))).await).into_inner();
    assert_eq!(
        after.kvs[0].value, before.kvs[0].value,
        "refused writes changed nothing"
    );
    assert_eq!(
        after.kvs[0].version,
        before.kvs[0].version + 1,
        "only root's attach"
    );
}

fn range(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// Scenario: the JSON gateway with auth on: `/v3/auth/authenticate` gives
/// a token; with it in `Authorization` alice puts in her range (200) and
/// is refused outside it (403, etcd's message); with no token the answer
/// is etcd's "user name is empty" (400), with a bad one "invalid auth
/// token" (401).
#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_takes_a_token() {
    let cluster = cluster().await;
    secure(cluster.channel(0).await).await;
    let addr = &cluster.nodes[2].client_addr;
    let (code, body) = http_post_with(
        addr,
        "/v3/auth/authenticate",
        r#"{"name":"alice","password":"alicepw"}"#,
        &[],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = [("Authorization", token.as_str())];
    let put = |key: &str| format!(r#"{{"key":"{}","value":"dg=="}}"#, b64(key));
    let (code, body) = http_post_with(addr, "/v3/kv/put", &put("app/g"), &auth).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_post_with(addr, "/v3/kv/put", &put("nope"), &auth).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("etcdserver: permission denied"), "{body}");
    let (code, body) = http_post_with(addr, "/v3/kv/put", &put("app/g"), &[]).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("etcdserver: user name is empty"), "{body}");
    let bad = [("Authorization", "forged.1.99999999999.AAAA")];
    let (code, body) = http_post_with(addr, "/v3/kv/put", &put("app/g"), &bad).unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("etcdserver: invalid auth token"), "{body}");
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `msg` with `token` (if any) in its metadata.
fn maybe_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => with_token(msg, t),
        None => Request::new(msg),
    }
}

/// Every call a client can make but Authenticate and AuthStatus, sent
/// with `token`: the ones that were served.
async fn served_calls(ch: Channel, token: Option<&str>) -> Vec<&'static str> {
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use raftkv::pb::v3electionpb::election_client::ElectionClient;
    // One unary call on a client of its own: whether it was served.
    macro_rules! call {
        ($client:ident . $method:ident ($msg:expr)) => {{
            let ch = ch.clone();
            let req = maybe_token($msg, token);
            async move { $client::new(ch).$method(req).await.is_ok() }.boxed()
        }};
    }
    let keep_alive = {
        let req = maybe_token(
            tokio_stream::iter([pb::LeaseKeepAliveRequest { id: 1 }]),
            token,
        );
        let ch = ch.clone();
        async move {
            match LeaseClient::new(ch).lease_keep_alive(req).await {
                Ok(s) => matches!(s.into_inner().next().await, Some(Ok(_))),
                Err(_) => false,
            }
        }
        .boxed()
    };
    let watch = {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"app/".to_vec(),
                    range_end: b"app0".to_vec(),
                    ..Default::default()
                },
            )),
        };
        let req = maybe_token(tokio_stream::iter([create]), token);
        let ch = ch.clone();
        async move {
            match WatchClient::new(ch).watch(req).await {
                Ok(s) => matches!(
                    s.into_inner().next().await,
                    Some(Ok(resp)) if resp.created && !resp.canceled
                ),
                Err(_) => false,
            }
        }
        .boxed()
    };
    let calls: Vec<(&'static str, BoxFuture<'static, bool>)> = vec![
        ("range", call!(KvClient.range(range(b"app/k")))),
        ("put", call!(KvClient.put(put_req("app/k", "x")))),
        (
            "delete",
            call!(KvClient.delete_range(pb::DeleteRangeRequest {
                key: b"app/k".to_vec(),
                ..Default::default()
            })),
        ),
        ("txn", call!(KvClient.txn(pb::TxnRequest::default()))),
        (
            "compact",
            call!(KvClient.compact(pb::CompactionRequest {
                revision: 2,
                physical: false
            })),
        ),
        (
            "lease grant",
            call!(LeaseClient.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })),
        ),
        (
            "lease revoke",
            call!(LeaseClient.lease_revoke(pb::LeaseRevokeRequest { id: 1 })),
        ),
        (
            "lease leases",
            call!(LeaseClient.lease_leases(pb::LeaseLeasesRequest {})),
        ),
        ("lease keep-alive", keep_alive),
        ("watch", watch),
        (
            "lock",
            call!(LockClient.lock(pb::v3lockpb::LockRequest {
                name: b"app/lock".to_vec(),
                lease: 0
            })),
        ),
        (
            "campaign",
            call!(ElectionClient.campaign(pb::v3electionpb::CampaignRequest {
                name: b"app/e".to_vec(),
                lease: 0,
                value: b"v".to_vec()
            })),
        ),
        (
            "status",
            call!(MaintenanceClient.status(pb::StatusRequest {})),
        ),
        (
            "alarm",
            call!(MaintenanceClient.alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: 1,
                alarm: pb::AlarmType::Nospace as i32,
            })),
        ),
        (
            "defragment",
            call!(MaintenanceClient.defragment(pb::DefragmentRequest {})),
        ),
        (
            "hashkv",
            call!(MaintenanceClient.hash_kv(pb::HashKvRequest { revision: 0 })),
        ),
        (
            "snapshot",
            call!(MaintenanceClient.snapshot(pb::SnapshotRequest {})),
        ),
        (
            "member list",
            call!(ClusterClient.member_list(pb::MemberListRequest::default())),
        ),
        (
            "member remove",
            call!(ClusterClient.member_remove(pb::MemberRemoveRequest { id: 3 })),
        ),
        (
            "user add",
            call!(AuthClient.user_add(pb::AuthUserAddRequest {
                name: "mallory".into(),
                password: "x".into(),
                ..Default::default()
            })),
        ),
        (
            "user grant root",
            call!(AuthClient.user_grant_role(pb::AuthUserGrantRoleRequest {
                user: "alice".into(),
                role: "root".into(),
            })),
        ),
        (
            "change root's password",
            call!(
                AuthClient.user_change_password(pb::AuthUserChangePasswordRequest {
                    name: "root".into(),
                    password: "owned".into(),
                    ..Default::default()
                })
            ),
        ),
        (
            "user list",
            call!(AuthClient.user_list(pb::AuthUserListRequest {})),
        ),
        (
            "auth disable",
            call!(AuthClient.auth_disable(pb::AuthDisableRequest {})),
        ),
    ];
    let mut served = Vec::new();
    for (name, call) in calls {
        let ok = tokio::time::timeout(LIVENESS, call)
            .await
            .unwrap_or_else(|_| panic!("{name} hung"));
        if ok {
            served.push(name);
        }
    }
    served
}

/// Scenario: with auth on, a client with no token, a made-up one, alice's
/// token with its user changed to root, and alice's token from before her
/// password changed, tries every call of every service (writes, reads,
/// leases, watches, locks, elections, maintenance, members, auth): none is
/// served, and nothing changed: not a key, not the revision, not a user.
/// With alice's current token the calls her role allows are served, so
/// the same calls could get through.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_valid_token_gets_nothing_through() {
    use base64::Engine;
    let cluster = cluster().await;
    let ch = cluster.channel(0).await;
    let (root, stale) = secure(ch.clone()).await;
    AuthClient::new(ch.clone())
        .user_change_password(with_token(
            pb::AuthUserChangePasswordRequest {
                name: "alice".into(),
                password: "newpw".into(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .unwrap();
    let alice = login(ch.clone(), "alice", "newpw").await;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let as_root = alice.replacen(&engine.encode("alice"), &engine.encode("root"), 1);
    assert_ne!(as_root, alice);

    let mut kv = KvClient::new(ch.clone());
    let everything = |kv: &mut KvClient<Channel>| {
        let mut kv = kv.clone();
        let root = root.clone();
        async move {
            kv.range(with_token(
                pb::RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                },
                &root,
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let users = || {
        let mut auth = AuthClient::new(ch.clone());
        let root = root.clone();
        async move {
            auth.user_list(with_token(pb::AuthUserListRequest {}, &root))
                .await
                .unwrap()
                .into_inner()
                .users
        }
    };
    let before = everything(&mut kv).await;
    let users_before = users().await;
    for token in [
        None,
        Some("garbage"),
        Some(as_root.as_str()),
        Some(stale.as_str()),
    ] {
        let served = served_calls(ch.clone(), token).await;
        assert!(
            served.is_empty(),
            "with token {token:?}: {served:?} got through"
        );
    }
    let after = everything(&mut kv).await;
    assert_eq!(after.kvs, before.kvs);
    assert_eq!(
        after.header.unwrap().revision,
        before.header.unwrap().revision
    );
    assert_eq!(users().await, users_before);

    let served = served_calls(ch.clone(), Some(&alice)).await;
    for call in [
        "range",
        "put",
        "delete",
        "txn",
        "lease grant",
        "watch",
        "status",
        "member list",
    ] {
        assert!(
            served.contains(&call),
            "alice's {call} was refused: {served:?}"
        );
    }
    for call in [
        "compact",
        "defragment",
        "snapshot",
        "user add",
        "auth disable",
    ] {
        assert!(!served.contains(&call), "alice's {call} was served");
    }
}

/// Scenario: with `--client-cert-auth`, a client that sends no token is
/// the user its certificate names: CN alice writes in her range and is
/// refused outside it, CN root may list users, a CN that is no user gets
/// nothing; a token, when sent, counts over the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_names_the_user() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let pki = crate::pki::Pki::new("auth-ca");
    let cluster = crate::client_tls::tls_cluster(&pki, true).await;
    let (_, alice_token) = secure(cluster.channel(0).await).await;
    let addr = cluster.nodes[1].client_addr.clone();
    let as_cn = |cn: &str| {
        let (cert, key) = pki.issue(cn, cn);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(cert, key));
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    };
    let alice = as_cn("alice");
    allowed(
        "CN alice in range",
        KvClient::new(alice.clone())
            .put(put_req("app/c", "1"))
            .await,
    );
    denied(
        "CN alice outside",
        KvClient::new(alice.clone()).put(put_req("zz", "1")).await,
    );
    let root = as_cn("root");
    allowed(
        "CN root lists users",
        AuthClient::new(root.clone())
            .user_list(pb::AuthUserListRequest {})
            .await,
    );
    denied(
        "a token counts over the certificate",
        AuthClient::new(root)
            .user_list(with_token(pb::AuthUserListRequest {}, &alice_token))
            .await,
    );
    denied(
        "CN of no user",
        KvClient::new(as_cn("mallory"))
            .put(put_req("app/c", "2"))
            .await,
    );
}

/// Scenario: the same set-up with kvctl's own commands, their output as
/// etcdctl's: root, enable, a role with a prefix permission, a user whose
/// password comes on stdin, its roles; `--user` in and out of its range;
/// revoking the permission, deleting the user, disabling auth.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_manages_users_and_roles() {
    let cluster = cluster().await;
    let eps = cluster.endpoints();
    let ok = |args: &[&str]| -> String {
        let (rc, out, err) = kvctl(&eps, args);
        assert_eq!(rc, 0, "kvctl {args:?}: {err}");
        out
    };
    assert_eq!(ok(&["user", "add", "root:rootpw"]), "User root created\n");
    ok(&["user", "grant-role", "root", "root"]);
    assert_eq!(ok(&["auth", "enable"]), "Authentication Enabled\n");
    let root = |args: &[&str]| ok(&[&["--user", "root:rootpw"][..], args].concat());
    assert_eq!(root(&["role", "add", "r"]), "Role r created\n");
    assert_eq!(
        root(&[
            "role",
            "grant-permission",
            "r",
            "readwrite",
            "--prefix",
            "app/"
        ]),
        "Role r updated\n"
    );
    root(&["role", "grant-permission", "r", "read", "--from-key", "z"]);
    assert_eq!(
        root(&["role", "get", "r"]),
        "Role r\nKV Read:\n\t[app/, app0) (prefix app/)\n\t[z, <open ended>\nKV Write:\n\t[app/, app0) (prefix app/)\n"
    );
    let (rc, out, err) = crate::tools::kvctl_stdin(
        &eps,
        &["--user", "root:rootpw", "user", "add", "bob"],
        "bobpw\n",
    );
    assert_eq!((rc, out.as_str()), (0, "User bob created\n"), "{err}");
    assert_eq!(
        root(&["user", "grant-role", "bob", "r"]),
        "Role r is granted to user bob\n"
    );
    assert_eq!(root(&["user", "get", "bob"]), "User: bob\nRoles: r\n");
    assert_eq!(root(&["role", "list"]), "r\n");
    assert_eq!(ok(&["--user", "bob:bobpw", "put", "app/1", "x"]), "OK\n");
    let (rc, _, err) = kvctl(&eps, &["--user", "bob:bobpw", "put", "x", "y"]);
    assert_eq!(rc, 1);
    assert_eq!(err.trim(), "Error: etcdserver: permission denied");
    let (rc, _, err) = kvctl(&eps, &["--user", "bob:nope", "get", "app/1"]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{err}"
    );
    assert_eq!(
        root(&["role", "revoke-permission", "r", "--prefix", "app/"]),
        "Permission of range [app/, app0) is revoked from role r\n"
    );
    let (rc, _, err) = kvctl(&eps, &["--user", "bob:bobpw", "put", "app/1", "y"]);
    assert_eq!(rc, 1, "{err}");
    assert_eq!(root(&["user", "delete", "bob"]), "User bob deleted\n");
    assert_eq!(root(&["auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ok(&["get", "app/1", "--print-value-only"]), "x\n");
}
