//! `kvctl bench watch`, and the watchers `make bench` holds open while it
//! measures writes beside them.
//!
//! `bench watch` opens `--streams` watch streams over the connections,
//! creates `--watchers` watchers spread over them (watcher `i` on key
//! `i % --key-space-size`), then has `--clients` clients put `--total`
//! times to random keys of that space. Each put's value starts with the
//! time it was sent, so every event received tells its delay from put to
//! delivery. The report counts events: events delivered per second, the
//! delays' percentiles, and, as errors, any event that never came.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::args::{BenchArgs, BenchKind};
use super::bench::Report;
use crate::client::Dial;
use crate::pb;
use crate::pb::kv_client::KvClient;
use crate::pb::watch_client::WatchClient;

/// Digits of the send time (microseconds since the run began) at the
/// start of every value.
const STAMP: usize = 16;
/// How long to wait for events still missing once every put is answered
/// and nothing more arrives.
const STRAGGLERS: Duration = Duration::from_secs(10);

/// Watch streams held open, with their watchers; closed when dropped.
pub struct Held {
    streams: Vec<(mpsc::Sender<pb::WatchRequest>, tokio::task::JoinHandle<()>)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for (_, reader) in &self.streams {
            reader.abort();
        }
    }
}

impl Held {
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

/// A watch stream on `ch` whose first request is `first`: its request
/// sender and its responses. etcd answers the call's headers only with its
/// first response, so the first request goes out before the call is awaited.
async fn open(ch: Channel, first: pb::WatchRequest) -> anyhow::Result<Opened> {
    let (tx, rx) = mpsc::channel(1024);
    tx.send(first)
        .await
        .map_err(|_| anyhow::anyhow!("watch stream closed"))?;
    let responses = WatchClient::new(ch)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

fn create(key: Vec<u8>) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

/// Sends the creates of `keys` on one stream whose first create went out
/// with the call, then waits until all `keys.len() + 1` are confirmed.
async fn create_all(
    tx: &mpsc::Sender<pb::WatchRequest>,
    responses: &mut tonic::Streaming<pb::WatchResponse>,
    keys: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    let n = keys.len() + 1;
    let send = async {
        for key in keys {
            tx.send(create(key))
                .await
                .map_err(|_| anyhow::anyhow!("watch stream closed"))?;
        }
        anyhow::Ok(())
    };
    let confirm = async {
        let mut created = 0;
        while created < n {
            let r = responses
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("watch stream ended"))?;
            anyhow::ensure!(!r.canceled, "watch refused: {}", r.cancel_reason);
            created += usize::from(r.created);
        }
        anyhow::Ok(())
    };
    tokio::try_join!(send, confirm)?;
    Ok(())
}

/// Opens `streams` streams over `conns` and `watchers` watchers spread
/// over them, watcher `i` on `key(i)`; returns the streams with the time it
/// took, from opening the first stream to the last confirmation.
async fn open_watching(
    conns: &[Channel],
    streams: usize,
    watchers: usize,
    key: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<(Vec<Opened>, Duration)> {
    anyhow::ensure!(
        streams > 0 && watchers >= streams && !conns.is_empty(),
        "need a connection, a stream, and a watcher per stream"
    );
    let started = Instant::now();
    let mut opened = Vec::with_capacity(streams);
    let mut rest = Vec::with_capacity(streams);
    for s in 0..streams {
        let mut keys = (s..watchers).step_by(streams).map(&key);
        let first = keys.next().expect("invariant: watchers >= streams");
        opened.push(open(conns[s % conns.len()].clone(), create(first)).await?);
        rest.push(keys.collect::<Vec<_>>());
    }
    let creates = opened
        .iter_mut()
        .zip(rest)
        .map(|((tx, responses), keys)| create_all(tx, responses, keys));
    futures::future::try_join_all(creates).await?;
    Ok((opened, started.elapsed()))
}

type Opened = (
    mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
);

/// `open_watching`, held open until dropped; what the streams receive is
/// read and dropped.
pub async fn hold(
    conns: &[Channel],
    streams: usize,
    watchers: usize,
    key: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<(Held, Duration)> {
    let (opened, took) = open_watching(conns, streams, watchers, key).await?;
    let held = opened
        .into_iter()
        .map(|(tx, mut responses)| {
            let reader =
                tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
            (tx, reader)
        })
        .collect();
    Ok((Held { streams: held }, took))
}

/// What the event readers share.
#[derive(Default)]
struct Seen {
    events: AtomicUsize,
    delays: Mutex<Vec<Duration>>,
    last: Mutex<Option<Instant>>,
}

/// Runs `kvctl bench watch` against `endpoints`.
pub async fn run(endpoints: &[String], dial: &Dial, a: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        a.watchers > 0 && a.streams > 0 && a.conns > 0 && !endpoints.is_empty(),
        "--watchers, --streams and --conns must be positive"
    );
    anyhow::ensure!(
        a.val_size >= STAMP,
        "--val-size must be at least {STAMP} for bench watch (values carry their send time)"
    );
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        conns.push(super::bench::connect(&endpoints[i % endpoints.len()], dial).await?);
    }
    let conns = &conns[..];
    let space = a.key_space_size.max(1);
    let key = |i: usize| super::bench::key_of(a, i % space);
    let (opened, setup) = open_watching(conns, a.streams, a.watchers, key).await?;
    let epoch = Instant::now();
    let seen = Arc::new(Seen::default());
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for (tx, mut responses) in opened {
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                if r.events.is_empty() {
                    continue;
                }
                let now = epoch.elapsed();
                let delays = r.events.iter().filter_map(|e| {
                    let value = &e.kv.as_ref()?.value;
                    let sent: u64 = std::str::from_utf8(value.get(..STAMP)?)
                        .ok()?
                        .parse()
                        .ok()?;
                    Some(now.saturating_sub(Duration::from_micros(sent)))
                });
                // Recorded as they come: the reader is stopped, not ended.
                seen.delays
                    .lock()
                    .expect("invariant: never poisoned")
                    .extend(delays);
                seen.events.fetch_add(r.events.len(), Ordering::Relaxed);
                *seen.last.lock().expect("invariant: never poisoned") = Some(Instant::now());
            }
        }));
        senders.push(tx);
    }

    // How many watchers each key has.
    let mut per_key: HashMap<usize, usize> = HashMap::new();
    for i in 0..a.watchers {
        *per_key.entry(i % space).or_default() += 1;
    }
    let per_key = Arc::new(per_key);
    let expected = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut putters = Vec::new();
    for c in 0..a.clients.max(1) {
        let mut kv = KvClient::new(conns[c % conns.len()].clone());
        let (per_key, expected, sent) = (per_key.clone(), expected.clone(), sent.clone());
        let a = a.clone();
        putters.push(tokio::spawn(async move {
            let mut rng = super::bench::Rng(c as u64 * 7919 + 1);
            let mut errors = Vec::new();
            while sent.fetch_add(1, Ordering::Relaxed) < a.total {
                let k = rng.below(space);
                let stamp = format!("{:0STAMP$}", epoch.elapsed().as_micros());
                let mut value = stamp.into_bytes();
                value.resize(a.val_size, b'w');
                let put = pb::PutRequest {
                    key: super::bench::key_of(&a, k),
                    value,
                    ..Default::default()
                };
                match kv.put(put).await {
                    Ok(_) => {
                        expected
                            .fetch_add(per_key.get(&k).copied().unwrap_or(0), Ordering::Relaxed);
                    }
                    Err(s) => errors.push(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for p in putters {
        errors.extend(p.await?);
    }
    let expected = expected.load(Ordering::Relaxed);
    // Wait for the events still on their way, while they keep coming.
    let mut last_count = seen.events.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while seen.events.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = seen.events.load(Ordering::Relaxed);
        if now != last_count {
            last_count = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > STRAGGLERS {
            break;
        }
    }
    let elapsed = seen
        .last
        .lock()
        .expect("invariant: never poisoned")
        .map_or(started.elapsed(), |l| l.saturating_duration_since(started));
    drop(senders);
    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    let received = seen.events.load(Ordering::Relaxed);
    let missing = expected.saturating_sub(received);
    let failed_puts = errors.len();
    if missing > 0 {
        errors.push(format!("{missing} of {expected} events never arrived"));
    }
    let mut latencies =
        std::mem::take(&mut *seen.delays.lock().expect("invariant: never poisoned"));
    latencies.sort();
    Ok(Report {
        kind: BenchKind::Watch,
        requests: expected,
        errors: failed_puts + missing,
        elapsed,
        latencies,
        error_samples: super::bench::error_samples(&errors),
        setup: Some(setup),
    })
}
