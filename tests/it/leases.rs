//! Leases end to end: etcd's etcdctl and the etcd-client crate against
//! raftkv, expiry, and what a leader change does to leases.

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::time::Instant;

use crate::cluster::{eventually, Options, TestCluster, LIVENESS};
use crate::tools::{etcdctl, etcdctl_ok};

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None)
        .await
        .expect("etcd-client connects")
}

/// The hex lease id in etcdctl's "lease <id> granted with TTL(..)".
fn granted_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string()
}

/// Scenario (etcd's defaults, with etcdctl): `lease grant 1` answers TTL 2;
/// keys put with `--lease` are listed by `timetolive --keys`; `keep-alive
/// --once` renews; `lease list` lists; `revoke` deletes the keys; a put to
/// an unknown lease, a revoke of one and a TTL over 9e9 get etcd's errors;
/// an unknown lease has "already expired". Each output is etcd 3.4's.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lease_commands_print_what_etcd_prints() {
    let cluster = TestCluster::start_with(3, Options::production()).await;
    let eps = cluster.endpoints();
    let out = etcdctl_ok(&eps, &["lease", "grant", "1"]);
    assert!(out.ends_with("granted with TTL(2s)\n"), "{out}");
    let out = etcdctl_ok(&eps, &["lease", "grant", "60"]);
    let id = granted_id(&out);
    assert_eq!(out, format!("lease {id} granted with TTL(60s)\n"));
    etcdctl_ok(&eps, &["put", "--lease", &id, "svc/a", "1"]);
    etcdctl_ok(&eps, &["put", "--lease", &id, "svc/b", "2"]);
    let out = etcdctl_ok(&eps, &["lease", "timetolive", &id, "--keys"]);
    let remaining = format!("lease {id} granted with TTL(60s), remaining(");
    assert!(out.starts_with(&remaining), "{out}");
    assert!(out.ends_with("s), attached keys([svc/a svc/b])\n"), "{out}");
    assert_eq!(
        etcdctl_ok(&eps, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let out = etcdctl_ok(&eps, &["lease", "list"]);
    assert!(
        out.starts_with("found 2 leases\n") && out.contains(&id),
        "{out}"
    );
    let json = etcdctl_ok(&eps, &["get", "svc/a", "-w", "json"]);
    let lease = i64::from_str_radix(&id, 16).unwrap();
    assert!(json.contains(&format!("\"lease\":{lease}")), "{json}");

    let (rc, _, err) = etcdctl(&eps, &["put", "--lease", "1234", "x", "y"]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
    let (rc, _, err) = etcdctl(&eps, &["lease", "grant", "10000000000"]);
    assert_ne!(rc, 0);
    assert!(err.contains("etcdserver: too large lease TTL"), "{err}");
    assert_eq!(
        etcdctl_ok(&eps, &["lease", "timetolive", "1234"]),
        "lease 0000000000001234 already expired\n"
    );

    assert_eq!(
        etcdctl_ok(&eps, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(etcdctl_ok(&eps, &["get", "svc", "--prefix"]), "");
    let (rc, _, err) = etcdctl(&eps, &["lease", "revoke", &id]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
}

/// Scenario: etcdctl's lock and election recipes (leases, transactions
/// and watches) with two contenders: the second gets the lock only after
/// the first's command ended, and an observer sees the first candidate's
/// proposal.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_and_elect_take_turns() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let hold = format!(
        "echo first-in >> {0}; sleep 2; echo first-out >> {0}",
        log.display()
    );
    let first = std::process::Command::new(crate::tools::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &eps,
            "lock",
            "shared",
            "--",
            "sh",
            "-c",
            &hold,
        ])
        .spawn()
        .unwrap();
    eventually("the first holder has the lock", LIVENESS, || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("first-in"))
            .map(|_| ())
    })
    .await;
    let then = format!("echo second-in >> {}", log.display());
    etcdctl_ok(&eps, &["lock", "shared", "--", "sh", "-c", &then]);
    let mut first = first;
    first.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "first-in\nfirst-out\nsecond-in\n"
    );

    let mut candidate = std::process::Command::new(crate::tools::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &eps, "elect", "election", "proposal-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leader = eventually("the candidate leads", LIVENESS, || async {
        let mut client = connect(&cluster.nodes[1].client_addr).await;
        let resp = client
            .get("election", Some(GetOptions::new().with_prefix()))
            .await
            .ok()?;
        resp.kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_string())
    })
    .await;
    assert_eq!(leader, "proposal-1");
    let _ = candidate.kill();
    let _ = candidate.wait();
}

/// The revision and time at which every key under `prefix` was gone, from
/// a watch that started at `from`.
async fn deletes_of(client: &mut Client, prefix: &str, from: i64, keys: usize) -> Vec<i64> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client.watch(prefix, Some(opts)).await.unwrap();
    let mut revisions = Vec::new();
    while revisions.len() < keys {
        let resp = tokio::time::timeout(LIVENESS, stream.message())
            .await
            .expect("the lease's keys are deleted in time")
            .unwrap()
            .expect("a watch response");
        for e in resp.events() {
            if e.event_type() == EventType::Delete {
                revisions.push(e.kv().unwrap().mod_revision());
            }
        }
    }
    revisions
}

/// Scenario: two leases with TTL 4 s. One is kept alive through a
/// follower (which asks the leader); nobody keeps the other alive. Right
/// away the leader is killed. The kept lease never expires: its key is
/// there after ten renewals 1.3 s apart. The other expires after its TTL, not earlier, and well
/// before twice its TTL (a new leader carries on with the time it had
/// left); its two keys are deleted at one revision, the same on both live
/// members.
#[tokio::test(flavor = "multi_thread")]
async fn leases_survive_a_leader_change_with_the_time_they_had() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let follower = (0..3).find(|&i| i != li).unwrap();
    let other = (0..3).find(|&i| i != li && i != follower).unwrap();
    let mut client = connect(&cluster.nodes[follower].client_addr).await;
    let kept = client.lease_grant(4, None).await.unwrap().id();
    let dead = client.lease_grant(4, None).await.unwrap().id();
    let granted = Instant::now();
    client
        .put("kept", "1", Some(PutOptions::new().with_lease(kept)))
        .await
        .unwrap();
    let start = client
        .put("dead/1", "1", Some(PutOptions::new().with_lease(dead)))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .put("dead/2", "1", Some(PutOptions::new().with_lease(dead)))
        .await
        .unwrap();

    // A client that keeps the lease alive as etcd's clients do (every
    // TTL/3), opening a new stream when one breaks.
    let endpoint = cluster.nodes[follower].client_addr.clone();
    let keeping = tokio::spawn(async move {
        let mut client = connect(&endpoint).await;
        let mut renewals = 0;
        let mut errors = Vec::new();
        while renewals < 10 {
            let Ok((mut keeper, mut responses)) = client.lease_keep_alive(kept).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            loop {
                if let Err(e) = keeper.keep_alive().await {
                    errors.push(e.to_string());
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(5), responses.message()).await {
                    Ok(Ok(Some(r))) => {
                        assert!(r.ttl() > 0, "the kept lease expired ({errors:?})");
                        renewals += 1;
                    }
                    other => {
                        errors.push(format!("{other:?}"));
                        break;
                    }
                }
                if renewals >= 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1300)).await;
            }
        }
        renewals
    });
    cluster.kill(li);

    let mut watcher = connect(&cluster.nodes[other].client_addr).await;
    let revisions = deletes_of(&mut watcher, "dead/", start, 2).await;
    let expired_after = granted.elapsed();
    assert_eq!(revisions[0], revisions[1], "both keys at one revision");
    let mut on_follower = connect(&cluster.nodes[follower].client_addr).await;
    let seen_there = deletes_of(&mut on_follower, "dead/", start, 2).await;
    assert_eq!(
        seen_there, revisions,
        "the other live member deleted them alike"
    );
    assert!(
        expired_after >= Duration::from_millis(3500) && expired_after < Duration::from_secs(8),
        "expired {expired_after:?} after the grant"
    );
    let renewals = tokio::time::timeout(Duration::from_secs(40), keeping)
        .await
        .expect("the keep-alive client is done in time");
    assert_eq!(renewals.unwrap(), 10);
    let resp = watcher.get("kept", None).await.unwrap();
    assert_eq!(resp.kvs().len(), 1, "the kept lease's key is gone");
    let ttl = watcher.lease_time_to_live(kept, None).await.unwrap();
    assert!(ttl.ttl() > 0, "{ttl:?}");
}

/// Scenario (the etcd-client crate's lock service): a holder on a TTL-3
/// lease kept alive by nobody, and a waiter on another node. The waiter
/// gets the lock only once the holder's lease expires (within its TTL plus
/// an election, not before), with a key created after the holder's; after
/// it unlocks, a third contender gets the lock at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_lock_service_waits_for_the_holder_and_its_lease() {
    use etcd_client::LockOptions;
    let cluster = TestCluster::start(3).await;
    let mut a = connect(&cluster.nodes[0].client_addr).await;
    let mut b = connect(&cluster.nodes[1].client_addr).await;
    let held = a.lease_grant(3, None).await.unwrap().id();
    let waiting = b.lease_grant(30, None).await.unwrap().id();
    let first = a
        .lock("door", Some(LockOptions::new().with_lease(held)))
        .await
        .unwrap();
    let taken = Instant::now();
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        b.lock("door", Some(LockOptions::new().with_lease(waiting))),
    )
    .await
    .expect("the waiter gets the lock once the holder's lease expires")
    .unwrap();
    let waited = taken.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
        "waited {waited:?}"
    );
    assert!(second.key().starts_with(b"door/"));
    assert_ne!(first.key(), second.key());
    b.unlock(second.key()).await.unwrap();
    let third_lease = a.lease_grant(30, None).await.unwrap().id();
    tokio::time::timeout(
        Duration::from_secs(5),
        a.lock("door", Some(LockOptions::new().with_lease(third_lease))),
    )
    .await
    .expect("a free lock is taken at once")
    .unwrap();
}

/// Scenario (the etcd-client crate's election service): the first
/// candidate leads and proclaims a new value, which `Leader` and an
/// observer see; a second candidate waits; when the first resigns, it
/// leads. Proclaiming with a leadership that was given up is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_election_service_hands_over_leadership() {
    use etcd_client::{ProclaimOptions, ResignOptions};
    let cluster = TestCluster::start(3).await;
    let mut a = connect(&cluster.nodes[0].client_addr).await;
    let mut b = connect(&cluster.nodes[2].client_addr).await;
    let la = a.lease_grant(30, None).await.unwrap().id();
    let lb = b.lease_grant(30, None).await.unwrap().id();
    let won = a.campaign("chair", "alice", la).await.unwrap();
    let leadership = won.leader().unwrap().clone();
    let mut observer = b.observe("chair").await.unwrap();
    let seen = observer.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"alice");
    a.proclaim(
        "alice-2",
        Some(ProclaimOptions::new().with_leader(leadership.clone())),
    )
    .await
    .unwrap();
    let seen = observer.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"alice-2");
    let leader = b.leader("chair").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"alice-2");

    let mut b2 = b.clone();
    let second = tokio::spawn(async move { b2.campaign("chair", "bob", lb).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "two leaders at once");
    a.resign(Some(ResignOptions::new().with_leader(leadership.clone())))
        .await
        .unwrap();
    let bob = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second candidate leads once the first resigns")
        .unwrap()
        .unwrap();
    assert_ne!(bob.leader().unwrap().key(), leadership.key());
    let seen = observer.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"bob");
    let err = a
        .proclaim(
            "again",
            Some(ProclaimOptions::new().with_leader(leadership)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("election: not leader"), "{err}");
}

/// Scenario: a TTL-8 lease nobody keeps alive; 6 s after the grant every
/// member is killed and restarted. The cluster carries on with the ~2 s the
/// lease had left (checkpointed, up to a second old): it expires well before
/// a fresh TTL would end (after 14 s), and not before its TTL.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_cluster_carries_on_with_the_time_leases_had_left() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = connect(&cluster.nodes[0].client_addr).await;
    let lease = client.lease_grant(8, None).await.unwrap().id();
    let granted = Instant::now();
    client
        .put("ttl/key", "1", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    tokio::time::sleep_until(granted + Duration::from_secs(6)).await;
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader().await;
    let gone = eventually("the lease's key is gone", LIVENESS, || async {
        let mut c = connect(&cluster.nodes[1].client_addr).await;
        let resp = c.get("ttl/key", None).await.ok()?;
        resp.kvs().is_empty().then(|| granted.elapsed())
    })
    .await;
    assert!(
        gone >= Duration::from_millis(7500) && gone < Duration::from_secs(13),
        "gone {gone:?} after the grant"
    );
}

/// Scenario: a lease holds three keys; 300 more writes make the leader
/// snapshot (every 100 entries) and purge its log; then a follower's data
/// dir is wiped and it rejoins (`--initial-cluster-state existing`). It
/// catches up by snapshot and knows the lease: each key carries it, and
/// when the lease is revoked through the leader, the rebuilt member deletes
/// the three keys at the revocation's revision.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_caught_up_by_snapshot_knows_leases_and_their_keys() {
    let opts = Options {
        snapshot_count: 100,
        ..Default::default()
    };
    let mut cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let mut client = connect(&cluster.nodes[li].client_addr).await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    for key in ["held/a", "held/b", "held/c"] {
        let opts = PutOptions::new().with_lease(lease);
        client.put(key, "1", Some(opts)).await.unwrap();
    }
    for i in 0..300 {
        client
            .put(format!("filler/{i:03}"), "x", None)
            .await
            .unwrap();
    }
    let last = client.get("filler/299", None).await.unwrap();
    let revision = last.header().unwrap().revision();

    let f = cluster.follower_of(leader);
    cluster.kill(f);
    cluster.nodes[f].wipe_data_dir();
    cluster.nodes[f]
        .extra_args
        .extend(["--initial-cluster-state".into(), "existing".into()]);
    cluster.restart(f);
    let endpoint = cluster.nodes[f].client_addr.clone();
    let local = GetOptions::new().with_prefix().with_serializable();
    let held = eventually(
        "the rebuilt member has the leased keys",
        LIVENESS,
        || async {
            let mut c = Client::connect([endpoint.as_str()], None).await.ok()?;
            let resp = c.get("held/", Some(local.clone())).await.ok()?;
            (resp.header()?.revision() >= revision).then(|| resp.kvs().to_vec())
        },
    )
    .await;
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|kv| kv.lease() == lease), "{held:?}");
    let installed = crate::cluster::scrape(&cluster, f)["raftkv_snapshots_installed_total"];
    assert!(installed >= 1.0, "caught up without a snapshot?");

    let revoked = client.lease_revoke(lease).await.unwrap();
    let at = revoked.header().unwrap().revision();
    let mut rebuilt = connect(&endpoint).await;
    let revisions = deletes_of(&mut rebuilt, "held/", at, 3).await;
    assert_eq!(
        revisions,
        vec![at; 3],
        "deleted at the revocation's revision"
    );
    let resp = rebuilt.get("held/", Some(local)).await.unwrap();
    assert!(resp.kvs().is_empty(), "{:?}", resp.kvs());
}

/// Scenario: a lease of TTL 10 is granted; its leader is paused (SIGSTOP)
/// and the others elect a new leader, whose clock gives the lease the time
/// its grant left. Once that is 6 s or less, a keep-alive goes to the
/// paused member on a stream opened before the pause, and the member is
/// resumed. The keep-alive is answered with the full TTL, and the new
/// leader, asked right after, gives the lease close to the full TTL: the
/// answer was a real renewal. A resumed leader must not take the replies to
/// heartbeats it sent before the pause, read late, for a quorum's word now,
/// and renew on a clock nobody else keeps.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_resumed_after_an_election_renews_no_lease_on_its_own() {
    const TTL: i64 = 10;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    let mut on_old = connect(&cluster.nodes[li].client_addr).await;
    let lease = on_old.lease_grant(TTL, None).await.unwrap().id();
    let (mut keeper, mut answers) = on_old.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let first = answers.message().await.unwrap().expect("an answer");
    assert_eq!(first.ttl(), TTL);

    cluster.pause(li);
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    let new_leader = eventually("the others elect a new leader", LIVENESS, || async {
        let mut seen = Vec::new();
        for &i in &others {
            seen.push(cluster.status(i).await?.leader);
        }
        (seen[0] != 0 && seen[0] != leader && seen.iter().all(|l| *l == seen[0])).then_some(seen[0])
    })
    .await;
    let ni = cluster.index_of(new_leader);
    let mut on_new = connect(&cluster.nodes[ni].client_addr).await;
    let left = eventually("the new leader counts the lease down", LIVENESS, || {
        let mut on_new = on_new.clone();
        async move {
            let left = on_new.lease_time_to_live(lease, None).await.ok()?.ttl();
            (left <= TTL - 4).then_some(left)
        }
    })
    .await;
    assert!(left > 0, "the lease expired while counted down ({left})");

    keeper.keep_alive().await.unwrap();
    cluster.resume(li);
    let renewed = tokio::time::timeout(LIVENESS, answers.message())
        .await
        .expect("the keep-alive is answered")
        .unwrap()
        .expect("an answer");
    assert_eq!(renewed.ttl(), TTL, "the lease was live and is renewed");
    let now_left = on_new.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(
        now_left >= TTL - 2,
        "the keep-alive answered TTL {TTL}, but the leader gives the lease {now_left} s \
         (it had {left} s before the keep-alive)"
    );
}
