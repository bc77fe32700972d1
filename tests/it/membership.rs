//! Changing the membership of a running cluster: learners added, caught
//! up and promoted, members removed (the leader too), under a write load,
//! with real processes; etcd's refusals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv::pb;
use raftkv::pb::cluster_client::ClusterClient;
use raftkv::pb::kv_client::KvClient;
use tokio::sync::watch;
use tonic::Code;

use crate::cluster::{eventually, TestCluster, LIVENESS};
use crate::requests::put_req;

/// What the writer saw: keys acknowledged, and errors a client could not
/// simply retry.
#[derive(Default)]
struct Writes {
    acked: Vec<String>,
    other_errors: Vec<String>,
}

/// Puts `w/NNNNN` keys one after another through the endpoints on
/// `endpoints` (round robin) until `stop`.
async fn writer(
    endpoints: watch::Receiver<Vec<String>>,
    stop: watch::Receiver<bool>,
    log: Arc<Mutex<Writes>>,
) {
    let mut n = 0usize;
    while !*stop.borrow() {
        let eps = endpoints.borrow().clone();
        let ep = &eps[n % eps.len()];
        let key = format!("w/{n:05}");
        n += 1;
        let call = async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            KvClient::new(ch).put(put_req(&key, "v")).await
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => log.lock().unwrap().acked.push(key),
            Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {}
            // The connection to a member that stopped (it was removed)
            // broke mid-call: as retryable to a client as Unavailable.
            Ok(Err(s)) if s.code() == Code::Unknown && s.message() == "transport error" => {}
            Ok(Err(s)) => log
                .lock()
                .unwrap()
                .other_errors
                .push(format!("{key}: {s:?}")),
            Err(_) => {}
        }
    }
}

async fn cluster_client(
    cluster: &TestCluster,
    i: usize,
) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(cluster.channel(i).await)
}

/// `--initial-cluster` for a member joining a cluster of `members`.
fn initial_cluster_of(members: &[pb::Member]) -> String {
    members
        .iter()
        .map(|m| {
            let url = m.peer_ur_ls[0].trim_start_matches("http://");
            format!("{}={url}", m.id)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds a new member as a learner through node `via`, starts it, waits
/// until it can be promoted and promotes it; returns its index.
async fn add_and_promote(cluster: &mut TestCluster, via: usize) -> usize {
    let j = cluster.plan_joiner();
    let peer = format!("http://{}", cluster.nodes[j].peer_addr);
    let added = cluster_client(cluster, via)
        .await
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec![peer],
            is_learner: true,
        })
        .await
        .expect("member add")
        .into_inner();
    let member = added.member.expect("the new member");
    assert!(member.is_learner);
    assert!(added
        .members
        .iter()
        .any(|m| m.id == member.id && m.is_learner));
    cluster.join(j, member.id, initial_cluster_of(&added.members));
    let mut client = cluster_client(cluster, via).await;
    eventually("the learner catches up and is promoted", LIVENESS, || {
        let mut client = client.clone();
        async move {
            match client
                .member_promote(pb::MemberPromoteRequest { id: member.id })
                .await
            {
                Ok(_) => Some(()),
                Err(s) if s.message().contains("in sync with leader") => None,
                Err(s) => panic!("promote: {s:?}"),
            }
        }
    })
    .await;
    let list = client
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let promoted = list.members.iter().find(|m| m.id == member.id).unwrap();
    assert!(!promoted.is_learner, "{list:?}");
    j
}

/// Removes node `i` through node `via`; it stops by itself, saying why,
/// and will not start again on its data dir.
async fn remove(cluster: &mut TestCluster, i: usize, via: usize) {
    let id = cluster.nodes[i].id;
    let resp = cluster_client(cluster, via)
        .await
        .member_remove(pb::MemberRemoveRequest { id })
        .await
        .expect("member remove")
        .into_inner();
    assert!(resp.members.iter().all(|m| m.id != id), "{resp:?}");
    let code = cluster.wait_exit(i, LIVENESS).await;
    assert_ne!(code, 0);
    let log = cluster.nodes[i].log();
    assert!(log.contains("was removed from the cluster"), "{log}");
    // Started again on its data dir, it refuses to serve.
    let earlier = log.len();
    cluster.restart(i);
    assert_ne!(cluster.wait_exit(i, LIVENESS).await, 0);
    let log = cluster.nodes[i].log()[earlier..].to_string();
    assert!(log.contains("was removed from its cluster"), "{log}");
}

/// Indexes of the running nodes.
fn running(cluster: &TestCluster) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].is_running())
        .collect()
}

/// Scenario: a 3-member cluster under a steady write load grows to 5 (two
/// learners added, caught up by the log, promoted), loses an original
/// member (the leader, if an original leads), gains a sixth, and loses the
/// other two originals: 3 -> 5 -> 4 -> 5 -> 3, every original replaced.
/// Each removed member stops by itself and says why. Clients see no error
/// but retryable ones; at the end every acknowledged write is on every
/// member, and all three agree on the revision.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_grows_and_shrinks_and_replaces_every_member_under_load() {
    let mut cluster = TestCluster::start(3).await;
    let (eps_tx, eps_rx) = watch::channel(
        cluster
            .nodes
            .iter()
            .map(|n| n.client_addr.clone())
            .collect::<Vec<_>>(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let log = Arc::new(Mutex::new(Writes::default()));
    let writing = tokio::spawn(writer(eps_rx, stop_rx, log.clone()));
    let publish = |cluster: &TestCluster| {
        let eps = running(cluster)
            .into_iter()
            .map(|i| cluster.nodes[i].client_addr.clone())
            .collect();
        eps_tx.send_replace(eps);
    };

    let acked_before = |log: &Arc<Mutex<Writes>>| log.lock().unwrap().acked.len();
    let j4 = add_and_promote(&mut cluster, 0).await;
    let j5 = add_and_promote(&mut cluster, 1).await;
    publish(&cluster);

    // The leader goes first if it is an original member.
    let leader = cluster.wait_leader().await;
    let first = (0..3).find(|&i| cluster.nodes[i].id == leader).unwrap_or(0);
    remove(&mut cluster, first, j4).await;
    publish(&cluster);
    cluster.wait_leader().await;
    let j6 = add_and_promote(&mut cluster, j5).await;
    publish(&cluster);
    for i in (0..3).filter(|&i| i != first) {
        remove(&mut cluster, i, j6).await;
        publish(&cluster);
        cluster.wait_leader().await;
    }
    // Writes went on through it all (and, on a slow machine, long enough
    // for the checks below to mean something).
    let mid = acked_before(&log);
    eventually("writes go on after the changes", LIVENESS, || async {
        let acked = acked_before(&log);
        (acked > mid + 20 && acked > 100).then_some(())
    })
    .await;
    stop_tx.send_replace(true);
    writing.await.unwrap();

    let writes = std::mem::take(&mut *log.lock().unwrap());
    assert!(writes.other_errors.is_empty(), "{:?}", writes.other_errors);
    assert!(
        writes.acked.len() > 100,
        "only {} writes",
        writes.acked.len()
    );
    let members = cluster_client(&cluster, j6)
        .await
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let expected: Vec<u64> = {
        let mut v = vec![
            cluster.nodes[j4].id,
            cluster.nodes[j5].id,
            cluster.nodes[j6].id,
        ];
        v.sort();
        v
    };
    assert_eq!(ids, expected);
    assert!(members
        .iter()
        .all(|m| !m.is_learner && !m.client_ur_ls.is_empty()));

    // Every member has every acknowledged write, at one revision.
    let mut revisions = BTreeMap::new();
    for i in [j4, j5, j6] {
        let mut kv = cluster.kv(i).await;
        let mut req = crate::requests::all_keys();
        req.key = b"w/".to_vec();
        req.range_end = b"w0".to_vec();
        req.keys_only = true;
        let resp = kv.range(req).await.unwrap().into_inner();
        let keys: std::collections::BTreeSet<String> = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect();
        for key in &writes.acked {
            assert!(keys.contains(key), "member {i} lost acknowledged {key}");
        }
        revisions.insert(i, resp.header.unwrap().revision);
    }
    let first_rev = *revisions.values().next().unwrap();
    assert!(revisions.values().all(|r| *r == first_rev), "{revisions:?}");
}

/// Scenario: etcd's refusals, each changing nothing. Promoting a voter;
/// removing, promoting or updating an unknown id; adding a peer URL a
/// member has; malformed peer URLs. Two voters that never start are
/// added (3 started of 5 is a quorum), a third is refused (3 of 6 is not),
/// and so is removing a started member (2 of 4); writes still commit; an
/// update moves an unstarted member's peer URL, and removing both
/// succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_etcd_refuses() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let f = cluster.follower_of(leader);
    let mut c = cluster_client(&cluster, f).await;
    let code_msg = |s: tonic::Status| (s.code(), s.message().to_string());

    let err = c
        .member_promote(pb::MemberPromoteRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(
        code_msg(err),
        (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member".into()
        )
    );
    let not_found = (Code::NotFound, "etcdserver: member not found".to_string());
    let err = c
        .member_remove(pb::MemberRemoveRequest { id: 77 })
        .await
        .unwrap_err();
    assert_eq!(code_msg(err), not_found);
    let err = c
        .member_promote(pb::MemberPromoteRequest { id: 77 })
        .await
        .unwrap_err();
    assert_eq!(code_msg(err), not_found);
    let err = c
        .member_update(pb::MemberUpdateRequest {
            id: 77,
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(code_msg(err), not_found);
    let taken = format!("http://{}", cluster.nodes[0].peer_addr);
    let err = c
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec![taken],
            is_learner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        code_msg(err),
        (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists".into()
        )
    );
    for urls in [
        vec![],
        vec!["http://nohost".to_string()],
        vec!["x:y".to_string()],
    ] {
        let err = c
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: urls.clone(),
                is_learner: true,
            })
            .await
            .unwrap_err();
        assert_eq!(
            code_msg(err),
            (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid".into()
            ),
            "{urls:?}"
        );
    }
    let list = |mut c: ClusterClient<tonic::transport::Channel>| async move {
        c.member_list(pb::MemberListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members
    };
    assert_eq!(list(c.clone()).await.len(), 3, "nothing changed");

    // Voters that never start: 4 and then 5 voters, 3 started, still a
    // quorum of each.
    let mut ghosts = Vec::new();
    for port in [9, 10] {
        let added = c
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![format!("http://127.0.0.1:{port}")],
                is_learner: false,
            })
            .await
            .unwrap()
            .into_inner();
        let ghost = added.member.unwrap();
        assert!(!ghost.is_learner);
        assert_eq!(added.members.len(), 3 + ghosts.len() + 1);
        ghosts.push(ghost);
    }
    // A sixth would leave 3 started of 6: refused.
    let err = c
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:12".into()],
            is_learner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        code_msg(err),
        (
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members".into()
        )
    );
    // So would removing a started member now (2 started of 4).
    let err = c
        .member_remove(pb::MemberRemoveRequest {
            id: cluster.nodes[f].id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let ghost = ghosts[0].clone();
    // Writes still commit with the unstarted voter.
    cluster.kv(f).await.put(put_req("k", "v")).await.unwrap();
    c.member_update(pb::MemberUpdateRequest {
        id: ghost.id,
        peer_ur_ls: vec!["http://127.0.0.1:11".into()],
    })
    .await
    .unwrap();
    let members = list(c.clone()).await;
    let moved = members.iter().find(|m| m.id == ghost.id).unwrap();
    assert_eq!(moved.peer_ur_ls, vec!["http://127.0.0.1:11".to_string()]);
    for ghost in &ghosts {
        c.member_remove(pb::MemberRemoveRequest { id: ghost.id })
            .await
            .unwrap();
    }
    assert_eq!(list(c).await.len(), 3);
}

/// The `kvd` command line `kvctl member add` printed, as arguments.
fn printed_command(out: &str) -> Vec<String> {
    let start = out.find("kvd --id").expect("a kvd command line");
    out[start..]
        .replace("\\\n", " ")
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).expect(flag);
    &args[i + 1]
}

/// Scenario (etcdctl and kvctl end to end): `etcdctl member add --learner`
/// prints etcd's lines; the member started with `kvctl member add`'s
/// printed command line (for a second one, without `--id`: it learns its id
/// from the cluster, and later from its data dir) and etcdctl's id serves; `member
/// list` in both tools shows learners flagged and then started; `etcdctl
/// member promote`, `update` (to the same URL) and `remove`, and `kvctl
/// member promote` and `remove`, print what etcd prints; refusals exit 1
/// with etcd's message. `etcdctl move-leader` fails saying why.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_and_kvctl_member_commands() {
    use crate::tools::{etcdctl, etcdctl_ok, kvctl, kvctl_ok};
    let mut cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();

    // etcdctl adds a learner; its id is hex.
    let a = cluster.plan_joiner();
    let url = format!("http://{}", cluster.nodes[a].peer_addr);
    let out = etcdctl_ok(
        &eps,
        &[
            "member",
            "add",
            "n4",
            &format!("--peer-urls={url}"),
            "--learner",
        ],
    );
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("Member ") && first.contains(" added to cluster "),
        "{out}"
    );
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let hex = first.split_whitespace().nth(1).unwrap().to_string();
    let id = u64::from_str_radix(&hex, 16).unwrap();
    // etcdctl pads ids to 16 columns in its one-line answers.
    let padded = format!("{id:16x}");
    let listed = etcdctl_ok(&eps, &["member", "list"]);
    assert!(
        listed.contains(&format!("{hex}, unstarted, , {url}, , true")),
        "{listed}"
    );
    let members = cluster_client(&cluster, 0)
        .await
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    cluster.join(a, id, initial_cluster_of(&members));
    let promoted = eventually("etcdctl promotes the learner", LIVENESS, || async {
        let (rc, out, err) = etcdctl(&eps, &["member", "promote", &hex]);
        if rc != 0 {
            assert!(err.contains("in sync with leader"), "{err}");
            return None;
        }
        Some(out)
    })
    .await;
    assert!(
        promoted.starts_with(&format!("Member {padded} promoted in cluster ")),
        "{promoted}"
    );
    let out = etcdctl_ok(
        &eps,
        &["member", "update", &hex, &format!("--peer-urls={url}")],
    );
    assert!(
        out.starts_with(&format!("Member {padded} updated in cluster ")),
        "{out}"
    );
    let listed = etcdctl_ok(&eps, &["member", "list"]);
    assert!(
        listed.contains(&format!(
            "{hex}, started, node{id}, {url}, http://{}, false",
            cluster.nodes[a].client_addr
        )),
        "{listed}"
    );

    // kvctl adds a learner and prints the command line that starts it.
    let b = cluster.plan_joiner();
    let url_b = format!("http://{}", cluster.nodes[b].peer_addr);
    let out = kvctl_ok(
        &eps,
        &["member", "add", "n5", "--peer-urls", &url_b, "--learner"],
    );
    let args = printed_command(&out);
    let id_b: u64 = flag(&args, "--id").parse().unwrap();
    assert_eq!(flag(&args, "--listen-peer"), cluster.nodes[b].peer_addr);
    assert_eq!(flag(&args, "--initial-cluster-state"), "existing");
    assert!(
        out.starts_with(&format!("Member {id_b} added to cluster ")),
        "{out}"
    );
    let listed = kvctl_ok(&eps, &["member", "list", "-w", "simple"]);
    assert!(
        listed.contains(&format!("{id_b}, unstarted, , {url_b}, , true")),
        "{listed}"
    );
    // It needs no --id: it learns the one the cluster gave its address.
    cluster.nodes[b].omit_id = true;
    cluster.join(b, id_b, flag(&args, "--initial-cluster").to_string());
    eventually("kvctl promotes the learner", LIVENESS, || async {
        let (rc, out, err) = kvctl(&eps, &["member", "promote", &id_b.to_string()]);
        if rc != 0 {
            assert!(err.contains("in sync with leader"), "{err}");
            return None;
        }
        assert!(
            out.starts_with(&format!("Member {id_b} promoted in cluster ")),
            "{out}"
        );
        Some(())
    })
    .await;
    let log = cluster.nodes[b].log();
    assert!(
        log.contains(&format!("this member's id is {id_b}")),
        "{log}"
    );
    // Restarted without --id, it reads it from its data dir.
    cluster.kill(b);
    cluster.restart(b);
    eventually("the restarted member serves", LIVENESS, || async {
        let mut kv = cluster.kv(b).await;
        kv.put(put_req("via-new-member", "1")).await.ok()
    })
    .await;

    // Refusals: etcd's message, exit 1.
    let (rc, _, err) = etcdctl(&eps, &["member", "promote", &hex]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("etcdserver: can only promote a learner member"),
        "{err}"
    );
    let (rc, _, err) = kvctl(&eps, &["member", "remove", "77"]);
    assert_eq!(rc, 1);
    assert!(err.contains("etcdserver: member not found"), "{err}");

    // Both leave; each stops by itself.
    let out = etcdctl_ok(&eps, &["member", "remove", &hex]);
    assert!(
        out.starts_with(&format!("Member {padded} removed from cluster ")),
        "{out}"
    );
    assert_ne!(cluster.wait_exit(a, LIVENESS).await, 0);
    let out = kvctl_ok(&eps, &["member", "remove", &id_b.to_string()]);
    assert!(
        out.starts_with(&format!("Member {id_b} removed from cluster ")),
        "{out}"
    );
    assert_ne!(cluster.wait_exit(b, LIVENESS).await, 0);
    let listed = etcdctl_ok(&eps, &["member", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");

    // Leadership transfer is not available, and the error says why.
    let (rc, _, err) = etcdctl(&eps, &["move-leader", "2"]);
    assert_eq!(rc, 1);
    assert!(err.contains("has no leadership transfer"), "{err}");
}

/// Scenario: member 2 is replaced by a new one (an id no member's
/// `--initial-cluster` names) and leadership moves to it; then member 3's
/// disk is wiped. Started again with `--initial-cluster-state existing` and
/// its original `--initial-cluster`, member 3 learns the current members
/// from the member it asks, admits the new leader's messages, and catches
/// up: it serves a write made before it came back.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_rejoins_under_a_leader_it_never_knew() {
    let mut cluster = TestCluster::start(3).await;
    let j = add_and_promote(&mut cluster, 0).await;
    remove(&mut cluster, 1, 0).await;
    let new_id = cluster.nodes[j].id;
    // No leadership transfer in openraft 0.9: restart leaders until the
    // new member is elected.
    let deadline = std::time::Instant::now() + LIVENESS * 3;
    loop {
        let leader = cluster.wait_leader().await;
        if leader == new_id {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new member never led"
        );
        let li = cluster.index_of(leader);
        cluster.kill(li);
        let next = cluster.wait_leader().await;
        assert_ne!(next, leader);
        cluster.restart(li);
    }
    cluster
        .kv(j)
        .await
        .put(put_req("before-rejoin", "1"))
        .await
        .unwrap();

    cluster.kill(2);
    cluster.nodes[2].wipe_data_dir();
    cluster.nodes[2]
        .extra_args
        .extend(["--initial-cluster-state".into(), "existing".into()]);
    cluster.restart(2);
    eventually("the wiped member catches up", LIVENESS, || async {
        let mut kv = cluster.kv(2).await;
        let resp = kv
            .range(pb::RangeRequest {
                key: b"before-rejoin".to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        (resp.kvs.len() == 1).then_some(())
    })
    .await;
    assert_eq!(cluster.wait_leader().await, new_id);
}
