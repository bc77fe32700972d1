//! A real etcd client library, the `etcd-client` crate, against raftkv:
//! compare-and-swap under concurrency, a lock built from etcd's recipe, and
//! watches that survive a leader kill.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};

use crate::cluster::{Options, TestCluster, LIVENESS};

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None)
        .await
        .expect("etcd-client connects")
}

/// Scenario: 24 tasks spread over the three nodes each increment one counter
/// once, with etcd's compare-and-swap: read the value and its mod revision,
/// then a Txn that writes value + 1 only if the mod revision is unchanged,
/// retried on conflict. Every increment lands exactly once: the counter ends
/// at 24.
#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_under_concurrency_loses_no_increment() {
    let cluster = TestCluster::start(3).await;
    let mut first = connect(&cluster.nodes[0].client_addr).await;
    first.put("counter", "0", None).await.unwrap();
    let tasks = 24;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let endpoint = cluster.nodes[t % 3].client_addr.clone();
        handles.push(tokio::spawn(async move {
            let mut client = connect(&endpoint).await;
            let mut conflicts = 0;
            loop {
                let resp = client.get("counter", None).await.unwrap();
                let kv = &resp.kvs()[0];
                let n: u64 = kv.value_str().unwrap().parse().unwrap();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        "counter",
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put("counter", (n + 1).to_string(), None)]);
                if client.txn(txn).await.unwrap().succeeded() {
                    return conflicts;
                }
                conflicts += 1;
            }
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let resp = first.get("counter", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value_str().unwrap(), tasks.to_string());
    assert_eq!(resp.kvs()[0].version(), tasks as i64 + 1);
    eprintln!("{tasks} increments, {conflicts} retried after a conflict");
}

/// etcd's lock recipe without leases: a waiter creates its own key under
/// the lock prefix; it holds the lock when its key has the lowest create
/// revision; otherwise it watches the key just before its own until that is
/// deleted. Unlocking deletes the key.
async fn lock(client: &mut Client, prefix: &str, me: &str) -> String {
    let key = format!("{prefix}{me}");
    let created = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), me, None)]),
        )
        .await
        .unwrap();
    assert!(created.succeeded(), "a waiter's key is new");
    let my_rev = client.get(key.as_str(), None).await.unwrap().kvs()[0].create_revision();
    loop {
        // The waiter just ahead of me, if any.
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(my_rev - 1)
            .with_limit(1);
        let ahead = client.get(prefix, Some(opts)).await.unwrap();
        let Some(prev) = ahead.kvs().first() else {
            return key;
        };
        let prev_key = prev.key().to_vec();
        let from = ahead.header().unwrap().revision() + 1;
        let mut stream = client
            .watch(
                prev_key.clone(),
                Some(WatchOptions::new().with_start_revision(from)),
            )
            .await
            .unwrap();
        loop {
            let resp = stream
                .message()
                .await
                .unwrap()
                .expect("the watch stays open");
            if resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                break;
            }
        }
    }
}

/// Scenario: 9 tasks over the three nodes take the lock in turn; each, while
/// holding it, reads a shared value, waits a moment, and writes it back plus
/// one. With mutual exclusion no update is lost and no two tasks hold the
/// lock at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_recipe_gives_mutual_exclusion() {
    let cluster = TestCluster::start(3).await;
    let mut setup = connect(&cluster.nodes[0].client_addr).await;
    setup.put("shared", "0", None).await.unwrap();
    let holders = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..9 {
        let endpoint = cluster.nodes[t % 3].client_addr.clone();
        let holders = holders.clone();
        handles.push(tokio::spawn(async move {
            let mut client = connect(&endpoint).await;
            let key = lock(&mut client, "locks/job/", &format!("task{t}")).await;
            assert_eq!(
                holders.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            let n: u64 = client.get("shared", None).await.unwrap().kvs()[0]
                .value_str()
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .put("shared", (n + 1).to_string(), None)
                .await
                .unwrap();
            holders.fetch_sub(1, Ordering::SeqCst);
            client.delete(key, None).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let resp = setup.get("shared", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value_str().unwrap(), "9");
    let left = setup
        .get(
            "locks/job/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0);
}

/// `(key, mod_revision, is_delete)` of every event a watch delivers.
type Seen = Vec<(String, i64, bool)>;

fn record(resp: &etcd_client::WatchResponse, seen: &mut Seen) {
    for e in resp.events() {
        let kv = e.kv().unwrap();
        seen.push((
            kv.key_str().unwrap().to_string(),
            kv.mod_revision(),
            e.event_type() == EventType::Delete,
        ));
    }
}

/// Scenario: a watch on a prefix is opened on the leader from a known
/// revision while a writer puts and deletes keys through a follower. The
/// leader is killed mid-stream; the stream breaks; the watch is re-created
/// on a surviving node from the last revision seen + 1. Afterwards the
/// events seen, across both streams, are exactly those a fresh watch from
/// the start replays: each once, in revision order, with no gap.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_recreated_after_a_leader_kill_misses_nothing() {
    let mut cluster = TestCluster::start_with(3, Options::default()).await;
    let leader = cluster.index_of(cluster.wait_leader().await);
    let writer_node = cluster.follower_of(cluster.nodes[leader].id);
    let survivor = (0..3).find(|&i| i != leader && i != writer_node).unwrap();
    let mut setup = connect(&cluster.nodes[writer_node].client_addr).await;
    let start = setup
        .put("before", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;

    let writer_endpoint = cluster.nodes[writer_node].client_addr.clone();
    let writer = tokio::spawn(async move {
        let mut client = connect(&writer_endpoint).await;
        for i in 0..150 {
            let key = format!("w/{}", i % 10);
            let op = if i % 7 == 6 {
                client
                    .delete(key, Some(DeleteOptions::new()))
                    .await
                    .map(|_| ())
            } else {
                client.put(key, i.to_string(), None).await.map(|_| ())
            };
            // A write that fails during the election is not retried: the
            // replay below is the ground truth either way.
            let _ = op;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let mut seen: Seen = Vec::new();
    let opts = |from: i64| Some(WatchOptions::new().with_prefix().with_start_revision(from));
    let mut on_leader = connect(&cluster.nodes[leader].client_addr).await;
    let mut stream = on_leader.watch("w/", opts(start)).await.unwrap();
    // Let some events arrive on the first stream, then kill its node.
    while seen.len() < 20 {
        if let Some(resp) = stream.message().await.unwrap() {
            record(&resp, &mut seen);
        }
    }
    cluster.kill(leader);
    while let Ok(Some(resp)) = stream.message().await {
        record(&resp, &mut seen);
    }

    let mut on_survivor = connect(&cluster.nodes[survivor].client_addr).await;
    let resume = seen.last().map_or(start, |(_, rev, _)| rev + 1);
    let mut stream = on_survivor.watch("w/", opts(resume)).await.unwrap();
    writer.await.unwrap();
    let end = setup
        .get("w/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    while seen.last().is_none_or(|(_, rev, _)| *rev < end) {
        let resp = tokio::time::timeout(LIVENESS, stream.message())
            .await
            .expect("events keep coming")
            .unwrap();
        record(&resp.expect("the stream stays open"), &mut seen);
    }

    // The ground truth: one watch replaying everything from `start`.
    let mut replay: Seen = Vec::new();
    let mut stream = on_survivor.watch("w/", opts(start)).await.unwrap();
    while replay.last().is_none_or(|(_, rev, _)| *rev < end) {
        let resp = tokio::time::timeout(LIVENESS, stream.message())
            .await
            .expect("replay")
            .unwrap();
        record(&resp.expect("the replay stays open"), &mut replay);
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "events in revision order"
    );
    assert_eq!(
        seen, replay,
        "every event once, no gap, across the re-created watch"
    );
    assert!(
        seen.len() > 100,
        "the writer's changes were seen ({})",
        seen.len()
    );
}
