//! etcd's `Watch` service: one task per stream, holding that stream's
//! watchers.
//!
//! Every watcher reads the changes it has not sent yet from the store's
//! history (`KvStore::events`), from its next revision on, whenever the
//! applied revision moves. So events go out in revision order, once each,
//! with no gaps, including those applied while the watch was being created;
//! a watch can start in the past; and a watch on a follower works from the
//! follower's applied state. A slow client only slows its own stream: the
//! task waits for room in a bounded buffer and then catches up from history
//! (etcd's "unsynced" watchers); a watcher is canceled, never silently
//! dropped, if compaction overtakes it.

use std::collections::BTreeMap;
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
use crate::node::Node;
use crate::pb;
use crate::pb::watch_server::Watch;
use crate::store::{EventKind, KeyRange, Revision};

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
    /// The first revision whose changes it has not been sent yet.
    next: Revision,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Whether it was sent anything since the last progress tick.
    sent_since_tick: bool,
}

struct WatchStream {
    node: Arc<Node>,
    /// On whose behalf (checked at each watcher's creation).
    who: Option<String>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
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
        WatchStream {
            node,
            who,
            tx,
            watchers: BTreeMap::new(),
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
        let mut revisions = self.node.subscribe_revisions();
        let interval = self.node.watch_progress_interval();
        let mut progress = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut leader_check = tokio::time::interval(LEADER_CHECK);
        let mut leaderless_since: Option<Instant> = None;
        loop {
            if let Err(e) = self.catch_up().await {
                let _ = self.tx.send(Err(e.into())).await;
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
                changed = revisions.changed() => if changed.is_err() {
                    let _ = self.tx.send(Err(Error::Stopped.into())).await;
                    return;
                },
                _ = progress.tick() => if self.notify_idle().await.is_err() {
                    return;
                },
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
                if self.watchers.remove(&cancel.watch_id).is_some() {
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
                prev_kv: create.prev_kv,
                no_put: filter(pb::watch_create_request::FilterType::Noput),
                no_delete: filter(pb::watch_create_request::FilterType::Nodelete),
                progress_notify: create.progress_notify,
                sent_since_tick: false,
            },
        );
        // The confirmation comes before any event of this watcher.
        self.send(pb::WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Sends every watcher the changes it has not had, up to the current
    /// revision; then answers a pending progress request.
    async fn catch_up(&mut self) -> Result<()> {
        let mut current = self.node.store().revision();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            match self.catch_up_one(id, current).await? {
                Some(seen) => current = current.max(seen),
                // The client is gone.
                None => return Ok(()),
            }
        }
        if self.progress_requested {
            self.progress_requested = false;
            // Every watcher has had everything up to `current`.
            let response = pb::WatchResponse {
                header: header(&self.node, current),
                watch_id: -1,
                ..Default::default()
            };
            let _ = self.send(response).await;
        }
        Ok(())
    }

    /// Sends watcher `id` its changes up to at least `current`; returns the
    /// newest revision it read (or `None` if the client is gone).
    async fn catch_up_one(&mut self, id: i64, current: Revision) -> Result<Option<Revision>> {
        let store = self.node.store().clone();
        let mut seen = current;
        while let Some(w) = self.watchers.get(&id) {
            if w.next > seen {
                break;
            }
            let compacted = store.compacted();
            if w.next < compacted {
                // History it needs is gone: cancel it, never skip.
                self.watchers.remove(&id);
                let response = pb::WatchResponse {
                    header: self.header()?,
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    cancel_reason: Error::Compacted.to_string(),
                    ..Default::default()
                };
                return Ok(self.send(response).await.ok().map(|_| seen));
            }
            let wanted = |key: &[u8], kind| {
                let kind_wanted = match kind {
                    EventKind::Put => !w.no_put,
                    EventKind::Delete => !w.no_delete,
                };
                kind_wanted && w.range.contains(key)
            };
            let (events, last) = store.events(w.next, EVENT_BYTES_PER_READ, wanted);
            let Some(last) = last else {
                break;
            };
            let mut out = Vec::new();
            for e in events {
                let prev_kv = match w.prev_kv {
                    true => store
                        .version_before(&e.kv.key, e.kv.mod_revision)
                        .map(key_value),
                    false => None,
                };
                let kind = match e.kind {
                    EventKind::Put => pb::mvccpb::event::EventType::Put,
                    EventKind::Delete => pb::mvccpb::event::EventType::Delete,
                };
                out.push(pb::mvccpb::Event {
                    r#type: kind as i32,
                    kv: Some(key_value(e.kv)),
                    prev_kv,
                });
            }
            seen = seen.max(last);
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
                if self.send(response).await.is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(seen))
    }

    /// Tells each idle watcher that asked for it how far the store is.
    async fn notify_idle(&mut self) -> std::result::Result<(), Closed> {
        let header = self.header().map_err(|_| Closed)?;
        let current = header.as_ref().map_or(0, |h| h.revision);
        let mut due = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.sent_since_tick && w.next > current {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
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
