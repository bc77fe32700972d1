//! Which watch streams care about which keys, and the one task per member
//! that wakes only those streams a change concerns (etcd groups its
//! watchers by key for the same reason).
//!
//! Each stream registers the ranges its watchers watch. As revisions are
//! applied, the dispatcher reads which keys changed (names only, nothing
//! copied) and flags each stream with a watcher on one of them, then moves
//! the dispatched revision on. A stream that was not flagged knows that
//! nothing it watches changed up to that revision, without reading any
//! history; a flagged one reads its events from the store's history
//! itself, at its own pace. So a write to a key nobody watches wakes no
//! stream, however many watchers and streams there are, and a slow client
//! only delays itself.
//!
//! Exact keys are found by hash; ranges (prefixes, open ends) are checked
//! one by one, as few streams hold many of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::store::{KeyRange, KeyScan, KvStore, Revision};

/// Changes read per step of the dispatcher (under the store's read lock).
const CHANGES_PER_STEP: usize = 4096;

/// The registry of one member's watch streams. Cheap to clone.
#[derive(Clone)]
pub struct Watchers {
    index: Arc<Mutex<Index>>,
}

struct Index {
    metrics: Arc<Metrics>,
    /// Every change up to here has been looked up and its streams flagged.
    dispatched: Revision,
    /// The member stopped applying: streams end.
    stopped: bool,
    next_stream: u64,
    streams: HashMap<u64, Arc<Signal>>,
    /// Exact keys, and how many watchers of each stream watch each.
    exact: HashMap<Vec<u8>, HashMap<u64, u32>>,
    /// Ranges, with the stream watching each (once per watcher).
    spans: Vec<(KeyRange, u64)>,
}

/// How a stream is woken.
#[derive(Default)]
struct Signal {
    /// The revision of the first change it watches dispatched since it
    /// last looked (0: none). Changes before it concern the stream not at
    /// all, so the stream never needs history from before it (which a
    /// compaction may have removed meanwhile).
    pending_from: AtomicI64,
    notify: Notify,
}

impl Index {
    fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
        index
            .lock()
            .expect("invariant: the watch index lock is never poisoned")
    }

    /// Flags `stream` for a change at `rev`. Changes are flagged in
    /// revision order, under the index lock, so the first flag since the
    /// stream last looked is its earliest.
    fn flag(&self, stream: u64, rev: Revision) {
        if let Some(signal) = self.streams.get(&stream) {
            let first = signal.pending_from.compare_exchange(
                0,
                rev.max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if first.is_ok() {
                self.metrics.watch_wakeups.inc();
                signal.notify.notify_one();
            }
        }
    }

    /// Flags every stream watching `key`, changed at `rev`.
    fn flag_key(&self, rev: Revision, key: &[u8]) {
        if let Some(streams) = self.exact.get(key) {
            for &stream in streams.keys() {
                self.flag(stream, rev);
            }
        }
        for (range, stream) in &self.spans {
            if range.contains(key) {
                self.flag(*stream, rev);
            }
        }
    }

    /// Flags every stream, from `rev` on.
    fn flag_all(&self, rev: Revision) {
        for &stream in self.streams.keys() {
            self.flag(stream, rev);
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        for signal in self.streams.values() {
            signal.notify.notify_one();
        }
    }
}

impl Watchers {
    /// The registry, with its dispatcher following `applied` over `store`.
    /// The dispatcher ends when the store stops publishing revisions.
    pub fn start(
        store: KvStore,
        applied: tokio::sync::watch::Receiver<Revision>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let index = Arc::new(Mutex::new(Index {
            metrics,
            dispatched: store.revision(),
            stopped: false,
            next_stream: 0,
            streams: HashMap::new(),
            exact: HashMap::new(),
            spans: Vec::new(),
        }));
        tokio::spawn(dispatch(index.clone(), store, applied));
        Watchers { index }
    }

    /// A new stream's registration; dropping it unregisters everything.
    pub fn subscribe(&self) -> Subscription {
        let mut index = Index::lock(&self.index);
        let id = index.next_stream;
        index.next_stream += 1;
        let signal = Arc::new(Signal::default());
        index.streams.insert(id, signal.clone());
        index.metrics.watch_streams.inc();
        Subscription {
            id,
            index: self.index.clone(),
            signal,
            exact: HashMap::new(),
            spans: 0,
        }
    }

    /// How many streams are registered.
    #[cfg(test)]
    fn stream_count(&self) -> usize {
        Index::lock(&self.index).streams.len()
    }
}

/// Follows applied revisions, flagging the streams each change concerns.
async fn dispatch(
    index: Arc<Mutex<Index>>,
    store: KvStore,
    mut applied: tokio::sync::watch::Receiver<Revision>,
) {
    loop {
        let target = *applied.borrow_and_update();
        loop {
            let from = Index::lock(&index).dispatched + 1;
            if from > target {
                break;
            }
            let scan = dispatch_step(&index, &store, from);
            if scan.through < from {
                break;
            }
            tokio::task::yield_now().await;
        }
        if applied.changed().await.is_err() {
            Index::lock(&index).stop();
            return;
        }
    }
}

/// Flags the streams concerned by the changes from `from` on (a step of
/// them); returns how far it read.
fn dispatch_step(index: &Mutex<Index>, store: &KvStore, from: Revision) -> KeyScan {
    // Lock order: the store's read lock, then the index. The index stays
    // locked from the first flag until the dispatched revision covers it,
    // so a stream never sees a flag without the revision that raised it
    // (and then forgets it).
    let mut guard = None;
    let scan = store.changed_keys(from, CHANGES_PER_STEP, |rev, key| {
        guard
            .get_or_insert_with(|| Index::lock(index))
            .flag_key(rev, key)
    });
    let mut index = guard.unwrap_or_else(|| Index::lock(index));
    if scan.gap {
        // Changes went unseen (a snapshot or compaction overtook the
        // dispatcher): let every stream look for itself.
        index.flag_all(from);
    }
    index.dispatched = index.dispatched.max(scan.through);
    scan
}

/// One stream's registration.
pub struct Subscription {
    id: u64,
    index: Arc<Mutex<Index>>,
    signal: Arc<Signal>,
    /// What this stream registered, to take it all back on drop.
    exact: HashMap<Vec<u8>, u32>,
    spans: usize,
}

/// What a stream learns when it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// Every change up to here has been dispatched.
    pub dispatched: Revision,
    /// The revision of the first change this stream watches among those
    /// dispatched since it last looked, if any: the stream's watchers had
    /// every change they watch before it.
    pub pending: Option<Revision>,
    /// The member stopped: the stream should end.
    pub stopped: bool,
}

impl Subscription {
    /// Registers a watcher on `range`; returns the dispatched revision:
    /// changes after it in `range` will flag this stream, those up to it
    /// are the watcher's to read from history.
    pub fn add(&mut self, range: &KeyRange) -> Revision {
        let mut index = Index::lock(&self.index);
        index.metrics.watchers.inc();
        match range {
            KeyRange::Single(key) => {
                *index
                    .exact
                    .entry(key.clone())
                    .or_default()
                    .entry(self.id)
                    .or_default() += 1;
                *self.exact.entry(key.clone()).or_default() += 1;
            }
            KeyRange::Span { .. } => {
                index.spans.push((range.clone(), self.id));
                self.spans += 1;
            }
        }
        index.dispatched
    }

    /// Takes back one registration of `range`.
    pub fn remove(&mut self, range: &KeyRange) {
        let mut index = Index::lock(&self.index);
        match range {
            KeyRange::Single(key) => {
                let Some(mine) = self.exact.get_mut(key) else {
                    return;
                };
                *mine -= 1;
                if *mine == 0 {
                    self.exact.remove(key);
                }
                unregister_key(&mut index, key, self.id, 1);
                index.metrics.watchers.dec();
            }
            KeyRange::Span { .. } => {
                let id = self.id;
                if let Some(at) = index.spans.iter().position(|(r, s)| *s == id && r == range) {
                    index.spans.swap_remove(at);
                    self.spans -= 1;
                    index.metrics.watchers.dec();
                }
            }
        }
    }

    /// Waits until a change this stream watches is dispatched, or the
    /// member stops (returns at once if either happened since the last
    /// `look`).
    pub async fn changed(&self) {
        self.signal.notify.notified().await;
    }

    /// How far dispatching is, and whether anything this stream watches
    /// changed since it last looked (clearing that).
    pub fn look(&self) -> Wake {
        let index = Index::lock(&self.index);
        Wake {
            dispatched: index.dispatched,
            pending: Some(self.signal.pending_from.swap(0, Ordering::AcqRel)).filter(|r| *r > 0),
            stopped: index.stopped,
        }
    }
}

fn unregister_key(index: &mut Index, key: &[u8], stream: u64, n: u32) {
    let Some(streams) = index.exact.get_mut(key) else {
        return;
    };
    if let Some(count) = streams.get_mut(&stream) {
        *count = count.saturating_sub(n);
        if *count == 0 {
            streams.remove(&stream);
        }
    }
    if streams.is_empty() {
        index.exact.remove(key);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut index = Index::lock(&self.index);
        let mut watchers = self.spans as i64;
        for (key, n) in self.exact.drain() {
            unregister_key(&mut index, &key, self.id, n);
            watchers += i64::from(n);
        }
        if self.spans > 0 {
            let id = self.id;
            index.spans.retain(|(_, s)| *s != id);
        }
        index.streams.remove(&self.id);
        index.metrics.watchers.sub(watchers);
        index.metrics.watch_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn put(store: &KvStore, key: &str) {
        let mut batch = store.batch();
        let mut w = batch.write();
        w.put(key.as_bytes(), Some(b"v".to_vec()), Some(0), false, false)
            .unwrap();
        w.finish();
    }

    async fn settle(w: &Watchers, store: &KvStore) {
        let want = store.revision();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Index::lock(&w.index).dispatched < want {
            assert!(tokio::time::Instant::now() < deadline, "dispatcher stuck");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn only_streams_watching_a_changed_key_are_flagged() {
        let store = KvStore::default();
        let (tx, rx) = tokio::sync::watch::channel(store.revision());
        let w = Watchers::start(store.clone(), rx, Arc::new(Metrics::new()));
        let (mut a, mut b, c) = (w.subscribe(), w.subscribe(), w.subscribe());
        a.add(&KeyRange::new(b"k1", b""));
        b.add(&KeyRange::prefix(b"dir/"));
        assert_eq!(w.stream_count(), 3);

        put(&store, "other");
        tx.send_replace(store.revision());
        settle(&w, &store).await;
        for s in [&a, &b, &c] {
            let wake = s.look();
            assert_eq!(wake.pending, None);
            assert_eq!(wake.dispatched, store.revision());
        }

        put(&store, "dir/x");
        let dir_rev = store.revision();
        put(&store, "k1");
        put(&store, "k1");
        tx.send_replace(store.revision());
        settle(&w, &store).await;
        // Each stream learns its first change's revision.
        assert_eq!(a.look().pending, Some(dir_rev + 1));
        assert_eq!(b.look().pending, Some(dir_rev));
        assert_eq!(c.look().pending, None);
        // Looking clears the flag.
        assert_eq!(a.look().pending, None);

        // Taken back: no longer flagged.
        a.remove(&KeyRange::new(b"k1", b""));
        put(&store, "k1");
        tx.send_replace(store.revision());
        settle(&w, &store).await;
        assert_eq!(a.look().pending, None);
        drop(b);
        assert_eq!(w.stream_count(), 2);
        assert!(Index::lock(&w.index).spans.is_empty());

        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !c.look().stopped {
            assert!(tokio::time::Instant::now() < deadline, "never stopped");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_gap_in_history_flags_every_stream() {
        let store = KvStore::default();
        let (tx, rx) = tokio::sync::watch::channel(store.revision());
        let w = Watchers::start(store.clone(), rx, Arc::new(Metrics::new()));
        let mut a = w.subscribe();
        a.add(&KeyRange::new(b"k1", b""));
        put(&store, "x");
        put(&store, "y");
        let mut batch = store.batch();
        let rev = batch.revision();
        batch.compact(rev).unwrap();
        drop(batch);
        tx.send_replace(store.revision());
        settle(&w, &store).await;
        assert!(
            a.look().pending.is_some(),
            "changes unseen: the stream must look"
        );
    }
}
