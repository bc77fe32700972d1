//! The Watch protocol in detail, over raw gRPC: several watchers on one
//! stream, filters, cancel, progress, refusals, compaction, a follower's
//! watch, a slow consumer; and auto-compaction keeping history bounded.

use std::collections::BTreeMap;

use raftkv::pb;
use raftkv::pb::watch_client::WatchClient;
use raftkv::pb::watch_create_request::FilterType;
use raftkv::pb::watch_request::RequestUnion;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::cluster::{eventually, scrape, Options, TestCluster, LIVENESS};
use crate::requests::{put_req, put_rev};

/// A watch stream on one node: requests in, responses out.
struct Stream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
    /// Responses read while waiting for something else (`next_created`).
    early: Vec<pb::WatchResponse>,
}

impl Stream {
    async fn open(cluster: &TestCluster, node: usize) -> Stream {
        let (requests, rx) = mpsc::channel(16);
        let mut client = WatchClient::new(cluster.channel(node).await);
        let responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Stream {
            requests,
            responses,
            early: Vec::new(),
        }
    }

    async fn send(&self, r: RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(r),
            })
            .await
            .unwrap();
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    /// The next creation answer; events that come first are kept in
    /// `early`.
    async fn next_created(&mut self) -> pb::WatchResponse {
        loop {
            let r = self.next().await;
            if r.created {
                assert!(!r.canceled, "{r:?}");
                return r;
            }
            self.early.push(r);
        }
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(LIVENESS, self.responses.message())
            .await
            .expect("a watch response in time")
            .expect("the stream is healthy")
            .expect("the stream is open")
    }
}

fn watch_key(key: &str, end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

/// `(type, key, value)` of a response's events.
fn events(r: &pb::WatchResponse) -> Vec<(i32, String, String)> {
    r.events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                e.r#type,
                String::from_utf8_lossy(&kv.key).into(),
                String::from_utf8_lossy(&kv.value).into(),
            )
        })
        .collect()
}

const PUT: i32 = 0;
const DELETE: i32 = 1;

/// Scenario: on one stream, a server-assigned watch on a prefix, a
/// client-chosen watch on one key with NOPUT and prev_kv, and refused
/// creates (empty range, duplicate id). Each create is answered first; each
/// watcher gets only its events, a txn's changes in one revision; a cancel is
/// confirmed and stops events; a progress request answers with the
/// revision.
#[tokio::test(flavor = "multi_thread")]
async fn many_watchers_on_one_stream() {
    let cluster = TestCluster::start(3).await;
    let mut s = Stream::open(&cluster, 1).await;
    s.create(watch_key("app/", "app0")).await;
    let created = s.next().await;
    assert!(created.created && !created.canceled);
    let prefix_id = created.watch_id;
    s.create(pb::WatchCreateRequest {
        watch_id: 42,
        prev_kv: true,
        filters: vec![FilterType::Noput as i32],
        ..watch_key("app/x", "")
    })
    .await;
    let created = s.next().await;
    assert_eq!((created.watch_id, created.created), (42, true));
    s.create(pb::WatchCreateRequest {
        watch_id: 42,
        ..watch_key("other", "")
    })
    .await;
    let dup = s.next().await;
    assert_eq!((dup.watch_id, dup.created, dup.canceled), (-1, true, true));
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    s.create(watch_key("b", "a")).await;
    let empty = s.next().await;
    assert_eq!(
        (empty.canceled, empty.cancel_reason.as_str()),
        (true, "mvcc: watcher range is empty")
    );

    let mut kv = cluster.kv(2).await;
    kv.put(put_req("app/x", "1")).await.unwrap();
    kv.put(put_req("elsewhere", "1")).await.unwrap();
    kv.delete_range(pb::DeleteRangeRequest {
        key: "app/x".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let mut by_watch: BTreeMap<i64, Vec<(i32, String, String)>> = BTreeMap::new();
    while by_watch.get(&prefix_id).map_or(0, Vec::len) < 2
        || by_watch.get(&42).map_or(0, Vec::len) < 1
    {
        let r = s.next().await;
        if r.watch_id == 42 {
            assert_eq!(
                r.events[0].prev_kv.as_ref().unwrap().value,
                b"1",
                "prev_kv of the delete"
            );
        }
        by_watch.entry(r.watch_id).or_default().extend(events(&r));
    }
    assert_eq!(
        by_watch[&prefix_id],
        vec![
            (PUT, "app/x".into(), "1".into()),
            (DELETE, "app/x".into(), String::new())
        ]
    );
    assert_eq!(
        by_watch[&42],
        vec![(DELETE, "app/x".into(), String::new())],
        "NOPUT drops puts"
    );

    s.send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
        watch_id: 42,
    }))
    .await;
    let canceled = s.next().await;
    assert_eq!((canceled.watch_id, canceled.canceled), (42, true));

    // A txn writing two keys is one revision, in one response.
    use pb::request_op::Request;
    let both = pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestPut(put_req("app/a", "t"))),
            },
            pb::RequestOp {
                request: Some(Request::RequestPut(put_req("app/b", "t"))),
            },
        ],
        ..Default::default()
    };
    let rev = kv
        .txn(both)
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    let r = s.next().await;
    assert_eq!(r.watch_id, prefix_id);
    assert_eq!(
        events(&r),
        vec![
            (PUT, "app/a".into(), "t".into()),
            (PUT, "app/b".into(), "t".into())
        ]
    );
    assert!(r
        .events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == rev));

    s.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    let progress = s.next().await;
    assert_eq!((progress.watch_id, progress.events.len()), (-1, 0));
    assert!(progress.header.unwrap().revision >= rev);
}

/// Scenario: with a short progress interval, an idle watcher that asked
/// for progress notifications gets empty responses carrying the current
/// revision; one that did not ask gets none.
#[tokio::test(flavor = "multi_thread")]
async fn idle_watchers_get_progress_notifications() {
    let opts = Options {
        extra_args: vec!["--watch-progress-notify-interval".into(), "300".into()],
        ..Default::default()
    };
    let cluster = TestCluster::start_with(1, opts).await;
    let revision = put_rev(&mut cluster.kv(0).await, "x", "1").await;
    let mut s = Stream::open(&cluster, 0).await;
    s.create(pb::WatchCreateRequest {
        watch_id: 1,
        ..watch_key("quiet", "")
    })
    .await;
    assert!(s.next().await.created);
    s.create(pb::WatchCreateRequest {
        watch_id: 2,
        progress_notify: true,
        ..watch_key("quiet", "")
    })
    .await;
    assert!(s.next().await.created);
    for _ in 0..3 {
        let r = s.next().await;
        assert_eq!((r.watch_id, r.events.len(), r.created), (2, 0, false));
        assert_eq!(r.header.unwrap().revision, revision);
    }
}

/// Scenario: a watch from a past revision on a follower replays the history
/// and goes on live; a watch from below the compacted revision is canceled
/// with the compact revision; a watch from the future waits for it.
#[tokio::test(flavor = "multi_thread")]
async fn watches_start_in_the_past_or_the_future() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.follower_of(leader);
    let mut kv = cluster.kv(0).await;
    let first = put_rev(&mut kv, "k", "1").await;
    kv.put(put_req("k", "2")).await.unwrap();
    let mut s = Stream::open(&cluster, follower).await;
    s.create(pb::WatchCreateRequest {
        start_revision: first,
        ..watch_key("k", "")
    })
    .await;
    assert!(s.next().await.created);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(events(&s.next().await));
    }
    assert_eq!(
        seen,
        vec![(PUT, "k".into(), "1".into()), (PUT, "k".into(), "2".into())]
    );
    let future = put_rev(&mut kv, "k", "3").await + 2;
    assert_eq!(events(&s.next().await), vec![(PUT, "k".into(), "3".into())]);

    s.create(pb::WatchCreateRequest {
        start_revision: future,
        watch_id: 7,
        ..watch_key("k", "")
    })
    .await;
    assert!(s.next().await.created);
    kv.put(put_req("k", "4")).await.unwrap(); // future - 1: only watcher 0 sees it
    kv.put(put_req("k", "5")).await.unwrap(); // future
    let mut from_future = Vec::new();
    while from_future.is_empty() {
        let r = s.next().await;
        if r.watch_id == 7 {
            from_future = events(&r);
        }
    }
    assert_eq!(from_future, vec![(PUT, "k".into(), "5".into())]);

    kv.compact(pb::CompactionRequest {
        revision: future,
        physical: true,
    })
    .await
    .unwrap();
    // The follower serves watches from its applied state: wait until that
    // has the compaction too.
    let on_follower = cluster.kv(follower).await;
    eventually("the follower applies the compaction", LIVENESS, || {
        let mut kv = on_follower.clone();
        async move {
            let req = pb::RangeRequest {
                key: "k".into(),
                revision: first,
                serializable: true,
                ..Default::default()
            };
            kv.range(req)
                .await
                .err()
                .filter(|e| e.code() == tonic::Code::OutOfRange)
                .map(|_| ())
        }
    })
    .await;
    let mut late = Stream::open(&cluster, follower).await;
    late.create(pb::WatchCreateRequest {
        start_revision: first,
        ..watch_key("k", "")
    })
    .await;
    assert!(late.next().await.created);
    let canceled = late.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.compact_revision, future);
}

/// Scenario: one stream's client stops reading while thousands of writes go
/// on. The writes are not slowed down (they all succeed), another stream
/// keeps getting every event, and when the slow client reads again it gets
/// every event in order, with no gap: it was caught up from history.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_consumer_stalls_nothing_and_loses_nothing() {
    let cluster = TestCluster::start(3).await;
    let value = "v".repeat(1000);
    let mut slow = Stream::open(&cluster, 0).await;
    slow.create(watch_key("load/", "load0")).await;
    assert!(slow.next().await.created);
    let mut fast = Stream::open(&cluster, 0).await;
    fast.create(watch_key("load/", "load0")).await;
    assert!(fast.next().await.created);

    let writes = 2000;
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = cluster.kv(w % 3).await;
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..writes / 4 {
                kv.put(put_req(&format!("load/{w}/{}", i % 20), &value))
                    .await
                    .expect("writes go on");
            }
        }));
    }
    // The fast stream follows along while `slow` is not read at all.
    let mut fast_revs = Vec::new();
    while fast_revs.len() < writes {
        let r = fast.next().await;
        fast_revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut slow_revs = Vec::new();
    while slow_revs.len() < writes {
        let r = slow.next().await;
        slow_revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert!(
        slow_revs.windows(2).all(|w| w[1] == w[0] + 1),
        "every revision once, in order"
    );
    assert_eq!(slow_revs, fast_revs);
}

/// Scenario: with `--auto-compaction-mode revision --auto-compaction-retention
/// 100`, 3000 writes to 20 keys leave the history bounded: the versions kept
/// never grow with the writes, and settle at most at two retentions' worth
/// plus one per key; reads within the retention still work.
#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_keeps_history_bounded() {
    let retention = 100;
    let opts = Options {
        extra_args: [
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "100",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, opts).await;
    // Both gauges must be exported: a missing one fails, not reads as 0.
    let versions = |i: usize| {
        let samples = scrape(&cluster, i);
        let metric = |name: &str| {
            *samples
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from node {i}'s /metrics"))
                as i64
        };
        (
            metric("raftkv_mvcc_versions"),
            metric("etcd_debugging_mvcc_compact_revision"),
        )
    };
    let writes: i64 = 3000;
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = cluster.kv(w % 3).await;
        writers.push(tokio::spawn(async move {
            for i in 0..writes / 4 {
                kv.put(put_req(&format!("hot/{}", i % 20), &i.to_string()))
                    .await
                    .unwrap();
            }
        }));
    }
    let mut peak = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        peak = peak.max(versions(1).0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let bound = 2 * retention + 20;
    let (settled, compacted) = eventually("auto-compaction catches up", LIVENESS, || async {
        let (v, c) = versions(1);
        (v <= bound).then_some((v, c))
    })
    .await;
    eprintln!("{writes} writes: peak {peak} versions kept, settled at {settled}, compacted at {compacted}");
    assert!(
        peak < writes / 3,
        "history grew with the writes: {peak} versions at the peak"
    );
    assert!(
        compacted > writes - 3 * retention,
        "compacted at {compacted}"
    );
    // Within the retention, the past is still readable on every node.
    let recent = pb::RangeRequest {
        revision: compacted,
        ..pb::RangeRequest::default()
    };
    let recent = pb::RangeRequest {
        key: "hot/0".into(),
        ..recent
    };
    // A follower may be a step behind node 2: poll until it has caught up.
    for i in 0..3 {
        let node = cluster.kv(i).await;
        let what = format!("node {} reads revision {compacted}", i + 1);
        eventually(&what, LIVENESS, || {
            let mut node = node.clone();
            let req = pb::RangeRequest {
                serializable: true,
                ..recent.clone()
            };
            async move { node.range(req).await.ok() }
        })
        .await;
        let what = format!("node {} is bounded too", i + 1);
        eventually(&what, LIVENESS, || async {
            (versions(i).0 <= bound + retention).then_some(())
        })
        .await;
    }
}

/// Node `i`'s value of metric `name` (0 if absent).
fn metric(cluster: &TestCluster, i: usize, name: &str) -> f64 {
    scrape(cluster, i).get(name).copied().unwrap_or(0.0)
}

/// Scenario: 40 streams each watch their own key, one more a prefix. Writes
/// to keys nobody watches wake no stream at all (the member counts every
/// wake-up); a write to one watched key wakes exactly its stream, and one
/// under the prefix exactly the prefix's. The member counts the streams
/// and watchers, and forgets them when the streams close.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_wakes_only_the_streams_that_watch_it() {
    let cluster = TestCluster::start(1).await;
    let mut streams = Vec::new();
    for i in 0..40 {
        let mut s = Stream::open(&cluster, 0).await;
        s.create(watch_key(&format!("own/{i}"), "")).await;
        assert!(s.next().await.created);
        streams.push(s);
    }
    let mut prefix = Stream::open(&cluster, 0).await;
    prefix.create(watch_key("dir/", "dir0")).await;
    assert!(prefix.next().await.created);
    assert_eq!(
        metric(&cluster, 0, "etcd_debugging_mvcc_watch_stream_total"),
        41.0
    );
    assert_eq!(
        metric(&cluster, 0, "etcd_debugging_mvcc_watcher_total"),
        41.0
    );

    let wakeups = || metric(&cluster, 0, "raftkv_watch_stream_wakeups_total");
    let before = wakeups();
    let mut kv = cluster.kv(0).await;
    for i in 0..200 {
        kv.put(put_req(&format!("unwatched/{i}"), "x"))
            .await
            .unwrap();
    }
    kv.put(put_req("own/7", "1")).await.unwrap();
    let r = streams[7].next().await;
    assert_eq!(events(&r), vec![(PUT, "own/7".into(), "1".into())]);
    assert_eq!(
        wakeups() - before,
        1.0,
        "200 unwatched writes and one watched: one stream woken"
    );
    kv.put(put_req("dir/a", "2")).await.unwrap();
    let r = prefix.next().await;
    assert_eq!(events(&r), vec![(PUT, "dir/a".into(), "2".into())]);
    assert_eq!(wakeups() - before, 2.0);

    drop(streams);
    drop(prefix);
    eventually("closed streams are forgotten", LIVENESS, || async {
        let open = metric(&cluster, 0, "etcd_debugging_mvcc_watch_stream_total");
        let watchers = metric(&cluster, 0, "etcd_debugging_mvcc_watcher_total");
        (open == 0.0 && watchers == 0.0).then_some(())
    })
    .await;
}

/// Scenario: while four writers put to 30 keys through every member, two
/// streams (on the leader and on a follower) create a watcher per key, a
/// prefix watcher, and watchers starting in the past, one after another.
/// Each watcher then has exactly the changes of its keys after its start,
/// each once, in order: none lost while a watcher joined, none twice.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_made_during_writes_get_exactly_their_changes() {
    let cluster = TestCluster::start(3).await;
    let keys = 30;
    let writes_each = 150;
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = cluster.kv(w % 3).await;
        writers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..writes_each {
                let key = format!("fan/{}", (i * 7 + w * 3) % keys);
                let rev = kv
                    .put(put_req(&key, &format!("{w}.{i}")))
                    .await
                    .expect("writes go on")
                    .into_inner()
                    .header
                    .unwrap()
                    .revision;
                done.push((key, rev));
            }
            done
        }));
    }
    // What each watcher watches and from which revision it wants changes.
    let mut wanted: Vec<BTreeMap<i64, (KeyRangeOf, i64)>> = Vec::new();
    let mut streams = Vec::new();
    for node in [0, 1] {
        let mut s = Stream::open(&cluster, node).await;
        let mut mine = BTreeMap::new();
        for k in 0..keys {
            let key = format!("fan/{k}");
            // Every third starts two revisions back, in the past.
            let start = if k % 3 == 0 {
                let now = cluster
                    .kv(node)
                    .await
                    .range(pb::RangeRequest {
                        key: b"fan/".to_vec(),
                        serializable: true,
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .header
                    .unwrap()
                    .revision;
                (now - 2).max(1)
            } else {
                0
            };
            s.create(pb::WatchCreateRequest {
                start_revision: start,
                ..watch_key(&key, "")
            })
            .await;
            let created = s.next_created().await;
            let from = if start > 0 {
                start
            } else {
                created.header.unwrap().revision + 1
            };
            mine.insert(created.watch_id, (KeyRangeOf::Key(key), from));
        }
        s.create(watch_key("fan/1", "fan/2")).await;
        let created = s.next_created().await;
        mine.insert(
            created.watch_id,
            (
                KeyRangeOf::Prefix("fan/1".into()),
                created.header.unwrap().revision + 1,
            ),
        );
        wanted.push(mine);
        streams.push(s);
    }
    let mut puts = Vec::new();
    for w in writers {
        puts.extend(w.await.unwrap());
    }
    puts.sort_by_key(|(_, rev)| *rev);
    let last = puts.last().unwrap().1;

    for (s, mine) in streams.iter_mut().zip(&wanted) {
        // Events come before the answer to a progress request, which
        // covers the last write once this member has applied it.
        let mut got: BTreeMap<i64, Vec<i64>> =
            s.early.drain(..).fold(BTreeMap::new(), |mut got, r| {
                got.entry(r.watch_id)
                    .or_default()
                    .extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
                got
            });
        loop {
            s.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
                .await;
            let covered;
            loop {
                let r = s.next().await;
                if r.watch_id == -1 && r.events.is_empty() {
                    covered = r.header.unwrap().revision >= last;
                    break;
                }
                got.entry(r.watch_id)
                    .or_default()
                    .extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
            }
            if covered {
                break;
            }
        }
        for (id, (range, from)) in mine {
            let expected: Vec<i64> = puts
                .iter()
                .filter(|(key, rev)| rev >= from && range.contains(key))
                .map(|(_, rev)| *rev)
                .collect();
            assert_eq!(
                got.remove(id).unwrap_or_default(),
                expected,
                "watcher {id} on {range:?} from {from}"
            );
        }
        assert!(got.is_empty(), "events for unknown watchers: {got:?}");
    }
}

#[derive(Debug)]
enum KeyRangeOf {
    Key(String),
    Prefix(String),
}

impl KeyRangeOf {
    fn contains(&self, key: &str) -> bool {
        match self {
            KeyRangeOf::Key(k) => k == key,
            KeyRangeOf::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// Scenario: a watcher whose key stays quiet while 50 other keys change and
/// history is compacted past its creation is not canceled: the next change
/// to its key arrives as a plain event (its stream was never woken, but
/// nothing it watches was lost to the compaction).
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_watcher_outlives_a_compaction_of_other_changes() {
    let cluster = TestCluster::start(1).await;
    let mut s = Stream::open(&cluster, 0).await;
    s.create(watch_key("quiet", "")).await;
    assert!(s.next().await.created);
    let mut kv = cluster.kv(0).await;
    let mut last = 0;
    for i in 0..50 {
        last = put_rev(&mut kv, &format!("busy/{i}"), "x").await;
    }
    kv.compact(pb::CompactionRequest {
        revision: last - 5,
        physical: true,
    })
    .await
    .unwrap();
    kv.put(put_req("quiet", "now")).await.unwrap();
    let r = s.next().await;
    assert!(!r.canceled, "canceled: {r:?}");
    assert_eq!(events(&r), vec![(PUT, "quiet".into(), "now".into())]);
}

/// Scenario: the same for a watcher that starts in the future: history is
/// compacted past its start revision while its key stays quiet; the next
/// change to its key still arrives as a plain event.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_from_the_future_outlives_a_compaction_past_its_start() {
    let cluster = TestCluster::start(1).await;
    let mut kv = cluster.kv(0).await;
    let now = put_rev(&mut kv, "busy/start", "x").await;
    let mut s = Stream::open(&cluster, 0).await;
    s.create(pb::WatchCreateRequest {
        start_revision: now + 10,
        ..watch_key("quiet", "")
    })
    .await;
    assert!(s.next().await.created);
    for i in 0..30 {
        kv.put(put_req(&format!("busy/{i}"), "x")).await.unwrap();
    }
    kv.compact(pb::CompactionRequest {
        revision: now + 20,
        physical: true,
    })
    .await
    .unwrap();
    kv.put(put_req("quiet", "now")).await.unwrap();
    let r = s.next().await;
    assert!(!r.canceled, "canceled: {r:?}");
    assert_eq!(events(&r), vec![(PUT, "quiet".into(), "now".into())]);
}
