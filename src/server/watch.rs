//! etcd's `Watch` service: one task per stream, holding that stream's
//! watchers.
//!
//! A stream registers what its watchers watch with the member's
//! `Watchers`, which wakes it only when one of those keys changes. Its
//! watchers are in step ("synced", as etcd says) once they have had every
//! change up to the stream's revision; on a wake the stream reads the new
//! changes to the keys they watch from the store's history
//! (`KvStore::events`) once, and hands each event to the watchers it
//! concerns through a key index. A new watcher, or one starting in the
//! past, first reads its own way up from history ("unsynced") and then
//! joins the others. So events go out in revision order, once each, with no
//! gaps, including those applied while the watch was being created; a
//! watch on a follower works from the follower's applied state; and a slow
//! client only slows its own stream: the task waits for room in a bounded
//! buffer and then catches up from history. A watcher is canceled, never
//! silently dropped, if compaction overtakes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::caller;
use super::convert::{header, key_value};
use crate::error::{Error, Result};
use crate::node::{Node, Subscription};
use crate::pb;
use crate::pb::watch_server::Watch;
use crate::store::{Event, EventKind, KeyRange, KvStore, Revision};

/// Responses buffered per stream before the task waits for the client.
const STREAM_BUFFER: usize = 64;
/// Bytes of events read from history per step, and so roughly the most sent
/// in one response (a revision is never split).
const EVENT_BYTES_PER_READ: usize = 1 << 20;
/// How often a stream checks that its member still has a leader, for
/// clients that asked (`hasleader`).
const LEADER_CHECK: Duration = Duration::from_millis(500);

/// The `etcdserverpb.Watch` service of one node.
pub struct WatchService {
    node: Arc<Node>,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        WatchService { node }
    }
}

pub(super) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

impl WatchService {
    /// A watch stream over `requests` on behalf of `who`, from gRPC or the
    /// JSON gateway.
    pub(super) fn open<S>(
        &self,
        who: Option<String>,
        requests: S,
        requires_leader: bool,
    ) -> Result<ResponseStream>
    where
        S: Stream<Item = std::result::Result<pb::WatchRequest, Status>> + Unpin + Send + 'static,
    {
        if requires_leader && !self.node.has_leader() {
            return Err(Error::NoLeader);
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = WatchStream::new(self.node.clone(), who, tx, requires_leader);
        tokio::spawn(stream.run(requests));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let requires_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v == "true");
        let who = caller(&self.node, &request)?;
        Ok(Response::new(self.open(
            who,
            request.into_inner(),
            requires_leader,
        )?))
    }
}

/// One watcher on a stream.
struct Watcher {
    range: KeyRange,
    /// While not in step with the stream: the first revision whose changes
    /// it has not been sent yet.
    next: Revision,
    /// In step: it has had every change up to the stream's `synced`.
    synced: bool,
    /// It starts after the revision dispatched when it was registered, so
    /// every change it wants wakes the stream (none needs history from
    /// before the stream's first wake-up since it last looked).
    covered: bool,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Whether it was sent anything since the last progress tick.
    sent_since_tick: bool,
}

impl Watcher {
    fn wants(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// The stream's watchers that are in step, by what they watch.
#[derive(Default)]
struct SyncedIndex {
    by_key: HashMap<Vec<u8>, Vec<i64>>,
    /// Watchers of ranges, checked one by one.
    on_ranges: BTreeMap<i64, KeyRange>,
}

impl SyncedIndex {
    fn insert(&mut self, id: i64, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => self.by_key.entry(key.clone()).or_default().push(id),
            KeyRange::Span { .. } => {
                self.on_ranges.insert(id, range.clone());
            }
        }
    }

    fn remove(&mut self, id: i64, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => {
                if let Some(ids) = self.by_key.get_mut(key) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
            KeyRange::Span { .. } => {
                self.on_ranges.remove(&id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.on_ranges.is_empty()
    }

    fn matches(&self, key: &[u8]) -> bool {
        self.by_key.contains_key(key) || self.on_ranges.values().any(|r| r.contains(key))
    }

    /// The watchers of `key`.
    fn of<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = i64> + 'a {
        let exact = self.by_key.get(key).into_iter().flatten().copied();
        let ranges = self
            .on_ranges
            .iter()
            .filter(move |(_, r)| r.contains(key))
            .map(|(id, _)| *id);
        exact.chain(ranges)
    }

    fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.by_key.values().flatten().copied().collect();
        ids.extend(self.on_ranges.keys());
        ids
    }
}

struct WatchStream {
    node: Arc<Node>,
    /// On whose behalf (checked at each watcher's creation).
    who: Option<String>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// This stream's registration with the member's watch index.
    sub: Subscription,
    watchers: HashMap<i64, Watcher>,
    /// Watchers in step have had every change up to here.
    synced: Revision,
    index: SyncedIndex,
    /// Watchers not in step, by the next revision each needs.
    unsynced: BTreeSet<(Revision, i64)>,
    next_id: i64,
    requires_leader: bool,
    /// A progress request waiting for every watcher to catch up.
    progress_requested: bool,
}

/// The stream is over: the client left, or it must end with an error.
struct Closed;

impl WatchStream {
    fn new(
        node: Arc<Node>,
        who: Option<String>,
        tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
        requires_leader: bool,
    ) -> Self {
        let sub = node.watchers().subscribe();
        let synced = sub.look().dispatched;
        WatchStream {
            node,
            who,
            tx,
            sub,
            watchers: HashMap::new(),
            synced,
            index: SyncedIndex::default(),
            unsynced: BTreeSet::new(),
            next_id: 0,
            requires_leader,
            progress_requested: false,
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> std::result::Result<(), Closed> {
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }

    fn header(&self) -> Result<Option<pb::ResponseHeader>> {
        Ok(header(&self.node, self.node.store().revision()))
    }

    async fn run<S>(mut self, mut requests: S)
    where
        S: Stream<Item = std::result::Result<pb::WatchRequest, Status>> + Unpin,
    {
        let interval = self.node.watch_progress_interval();
        let mut progress = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut leader_check = tokio::time::interval(LEADER_CHECK);
        let mut leaderless_since: Option<Instant> = None;
        loop {
            if self.step().await.is_err() {
                return;
            }
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        if self.handle(request).await.is_err() {
                            return;
                        }
                    }
                    // The client half-closed or the stream broke: done.
                    Some(Err(_)) | None => return,
                },
                _ = self.sub.changed() => {}
                _ = progress.tick() => {
                    if self.step().await.is_err() || self.notify_idle().await.is_err() {
                        return;
                    }
                }
                _ = leader_check.tick(), if self.requires_leader => {
                    if self.node.has_leader() {
                        leaderless_since = None;
                    } else if leaderless_since.get_or_insert_with(Instant::now).elapsed()
                        > self.node.election_timeout() * 3
                    {
                        let _ = self.tx.send(Err(Error::NoLeader.into())).await;
                        return;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> std::result::Result<(), Closed> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.forget(cancel.watch_id) {
                    let header = self.header().map_err(|_| Closed)?;
                    let response = pb::WatchResponse {
                        header,
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Removes watcher `id` everywhere; whether it existed.
    fn forget(&mut self, id: i64) -> bool {
        let Some(w) = self.watchers.remove(&id) else {
            return false;
        };
        if w.synced {
            self.index.remove(id, &w.range);
        } else {
            self.unsynced.remove(&(w.next, id));
        }
        self.sub.remove(&w.range);
        true
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> std::result::Result<(), Closed> {
        let header = self.header().map_err(|_| Closed)?;
        let refuse = |reason: &str| pb::WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // An empty key watches from the first key, as in etcd.
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key
        };
        if !create.range_end.is_empty() && create.range_end != [0] && create.range_end <= key {
            return self.send(refuse("mvcc: watcher range is empty")).await;
        }
        // Read permission on exactly the watched range (from the key on,
        // for an open end). A refusal cancels this watcher, not the
        // stream, with the reason as etcd words it.
        let range = KeyRange::new(&key, &create.range_end);
        if let Err(e) = self.node.check_read(self.who.as_deref(), &range) {
            let status = Status::from(e);
            let reason = format!(
                "rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            );
            return self.send(refuse(&reason)).await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self
                    .send(refuse(
                        "mvcc: duplicate watch ID provided on the WatchStream",
                    ))
                    .await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        // Registered first: every change after the dispatched revision will
        // wake this stream; the watcher reads what came before from history.
        let registered_at = self.sub.add(&range);
        let header = self.header().map_err(|_| Closed)?;
        let current = header.as_ref().map_or(0, |h| h.revision);
        let next = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        let filter = |f: pb::watch_create_request::FilterType| create.filters.contains(&(f as i32));
        self.watchers.insert(
            id,
            Watcher {
                range,
                next,
                synced: false,
                covered: next > registered_at,
                prev_kv: create.prev_kv,
                no_put: filter(pb::watch_create_request::FilterType::Noput),
                no_delete: filter(pb::watch_create_request::FilterType::Nodelete),
                progress_notify: create.progress_notify,
                sent_since_tick: false,
            },
        );
        self.unsynced.insert((next, id));
        // The confirmation comes before any event of this watcher.
        self.send(pb::WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Sends every watcher the changes it has not had, up to the dispatched
    /// revision: the watchers in step if one of their keys changed, then
    /// each watcher not in step whose turn has come; then answers a pending
    /// progress request. `Ok(Err(Closed))`: the client is gone.
    async fn catch_up(&mut self) -> Result<std::result::Result<(), Closed>> {
        let wake = self.sub.look();
        if wake.stopped {
            return Err(Error::Stopped);
        }
        // No watcher of this stream that every change it wants wakes saw a
        // change from its last look up to here.
        let quiet_from = wake.pending.unwrap_or(wake.dispatched + 1);
        if wake.dispatched > self.synced {
            if let Some(first) = wake.pending.filter(|_| !self.index.is_empty()) {
                // Nothing the watchers in step watch changed before `first`:
                // read from there (what came before may be compacted).
                self.synced = self.synced.max(first - 1);
                if let Err(closed) = self.send_synced(wake.dispatched).await? {
                    return Ok(Err(closed));
                }
            }
            self.synced = wake.dispatched;
        }
        while let Some(&(next, id)) = self.unsynced.first() {
            if next > self.synced + 1 {
                break;
            }
            self.unsynced.pop_first();
            if let Some(w) = self.watchers.get_mut(&id).filter(|w| w.covered) {
                // What it would read before `quiet_from` holds nothing it
                // wants, and may be compacted by now.
                w.next = w.next.max(quiet_from);
            }
            if let Err(closed) = self.catch_up_one(id, self.synced).await? {
                return Ok(Err(closed));
            }
            if let Some(w) = self.watchers.get_mut(&id) {
                w.synced = true;
                self.index.insert(id, &w.range);
            }
        }
        if self.progress_requested {
            self.progress_requested = false;
            // Every watcher has had everything up to `synced`.
            let response = pb::WatchResponse {
                header: header(&self.node, self.synced),
                watch_id: -1,
                ..Default::default()
            };
            if let Err(closed) = self.send(response).await {
                return Ok(Err(closed));
            }
        }
        Ok(Ok(()))
    }

    /// The events as sent for `e`, with its previous version if asked.
    fn event(store: &KvStore, e: &Event, prev_kv: bool) -> pb::mvccpb::Event {
        let prev_kv = match prev_kv {
            true => store
                .version_before(&e.kv.key, e.kv.mod_revision)
                .map(key_value),
            false => None,
        };
        let kind = match e.kind {
            EventKind::Put => pb::mvccpb::event::EventType::Put,
            EventKind::Delete => pb::mvccpb::event::EventType::Delete,
        };
        pb::mvccpb::Event {
            r#type: kind as i32,
            kv: Some(key_value(e.kv.clone())),
            prev_kv,
        }
    }

    /// Cancels watcher `id`: history it needs was compacted away.
    async fn cancel_compacted(
        &mut self,
        id: i64,
        compacted: Revision,
    ) -> Result<std::result::Result<(), Closed>> {
        self.forget(id);
        let response = pb::WatchResponse {
            header: self.header()?,
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            cancel_reason: Error::Compacted.to_string(),
            ..Default::default()
        };
        Ok(self.send(response).await)
    }

    /// Sends the watchers in step the changes to their keys after `synced`
    /// up to `until`, reading history once for all of them.
    async fn send_synced(&mut self, until: Revision) -> Result<std::result::Result<(), Closed>> {
        let store = self.node.store().clone();
        while self.synced < until && !self.index.is_empty() {
            let from = self.synced + 1;
            let index = &self.index;
            let (events, last) = store.events(from, until, EVENT_BYTES_PER_READ, |key, _| {
                index.matches(key)
            });
            let compacted = store.compacted();
            if from < compacted {
                // Changes they need are gone: cancel them, never skip.
                for id in self.index.ids() {
                    if let Err(closed) = self.cancel_compacted(id, compacted).await? {
                        return Ok(Err(closed));
                    }
                }
                break;
            }
            let mut out: BTreeMap<i64, Vec<pb::mvccpb::Event>> = BTreeMap::new();
            for e in &events {
                let mut with_prev = None;
                let mut without_prev = None;
                for id in self.index.of(&e.kv.key) {
                    let Some(w) = self.watchers.get(&id) else {
                        continue;
                    };
                    if !w.wants(e.kind) {
                        continue;
                    }
                    let slot = if w.prev_kv {
                        &mut with_prev
                    } else {
                        &mut without_prev
                    };
                    let event = slot
                        .get_or_insert_with(|| Self::event(&store, e, w.prev_kv))
                        .clone();
                    out.entry(id).or_default().push(event);
                }
            }
            for (id, events) in out {
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.sent_since_tick = true;
                }
                let response = pb::WatchResponse {
                    header: self.header()?,
                    watch_id: id,
                    events,
                    ..Default::default()
                };
                if let Err(closed) = self.send(response).await {
                    return Ok(Err(closed));
                }
            }
            match last {
                Some(last) => self.synced = last,
                None => break,
            }
        }
        Ok(Ok(()))
    }

    /// Sends watcher `id`, not in step, its changes up to `until`.
    async fn catch_up_one(
        &mut self,
        id: i64,
        until: Revision,
    ) -> Result<std::result::Result<(), Closed>> {
        let store = self.node.store().clone();
        while let Some(w) = self.watchers.get(&id) {
            if w.next > until {
                break;
            }
            let from = w.next;
            let wanted = |key: &[u8], kind| w.wants(kind) && w.range.contains(key);
            let (events, last) = store.events(from, until, EVENT_BYTES_PER_READ, wanted);
            let compacted = store.compacted();
            if from < compacted {
                return self.cancel_compacted(id, compacted).await;
            }
            let Some(last) = last else {
                break;
            };
            let out: Vec<_> = events
                .iter()
                .map(|e| Self::event(&store, e, w.prev_kv))
                .collect();
            let w = self
                .watchers
                .get_mut(&id)
                .expect("invariant: present above");
            w.next = last + 1;
            if !out.is_empty() {
                w.sent_since_tick = true;
                let response = pb::WatchResponse {
                    header: self.header()?,
                    watch_id: id,
                    events: out,
                    ..Default::default()
                };
                if let Err(closed) = self.send(response).await {
                    return Ok(Err(closed));
                }
            }
        }
        Ok(Ok(()))
    }

    /// `catch_up`, ending the stream with the error if it fails.
    async fn step(&mut self) -> std::result::Result<(), Closed> {
        match self.catch_up().await {
            Ok(done) => done,
            Err(e) => {
                let _ = self.tx.send(Err(e.into())).await;
                Err(Closed)
            }
        }
    }

    /// Tells each idle watcher that asked for it how far the store is (run
    /// right after a `catch_up`).
    async fn notify_idle(&mut self) -> std::result::Result<(), Closed> {
        let header = header(&self.node, self.synced);
        let synced = self.synced;
        let mut due = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            let caught_up = w.synced || w.next > synced;
            if w.progress_notify && !w.sent_since_tick && caught_up {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
        due.sort_unstable();
        for id in due {
            self.send(pb::WatchResponse {
                header,
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
