//! `kvctl bench` and `kvctl check perf`: load generators in the style of
//! etcd's `benchmark` tool and `etcdctl check perf`. They speak only etcd's
//! v3 API, so they drive etcd as well as raftkv.
//!
//! Clients are spread over `--conns` gRPC connections (each its own HTTP/2
//! connection); each client sends one request at a time until `--total`
//! requests were sent (or, with a rate, for a fixed time). Every latency is
//! kept, so percentiles are exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use super::args::{BenchArgs, BenchKind, Format};
use crate::client::{Dial, StatusProbe};
use crate::pb;
use crate::pb::kv_client::KvClient;
use crate::pb::lease_client::LeaseClient;

/// The key with index `i` of a run: its prefix, then `--key-size` digits.
pub(super) fn key_of(a: &BenchArgs, i: usize) -> Vec<u8> {
    let mut k = a.key_prefix.clone();
    k.extend_from_slice(&key(i, a.key_size));
    k
}

/// What a run measured.
pub struct Report {
    pub kind: BenchKind,
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Every successful request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// The first few distinct errors.
    pub error_samples: Vec<String>,
    /// Time to set the run up, where that is a result too (`watch`:
    /// creating the watchers).
    pub setup: Option<Duration>,
}

impl Report {
    pub fn qps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn mean_and_stddev(&self) -> (f64, f64) {
        let n = self.latencies.len().max(1) as f64;
        let secs: Vec<f64> = self.latencies.iter().map(Duration::as_secs_f64).collect();
        let mean = secs.iter().sum::<f64>() / n;
        let var = secs.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    /// `(upper bound, count)` for ten equal-width buckets, as etcd's tool.
    fn histogram(&self) -> Vec<(Duration, usize)> {
        let (Some(min), Some(max)) = (self.latencies.first(), self.latencies.last()) else {
            return Vec::new();
        };
        let width = (*max - *min) / 10;
        let mut buckets: Vec<(Duration, usize)> = (1..=10).map(|i| (*min + width * i, 0)).collect();
        for l in &self.latencies {
            let i = buckets
                .iter()
                .position(|(upper, _)| l <= upper)
                .unwrap_or(9);
            buckets[i].1 += 1;
        }
        buckets
    }

    /// The report as `-w json` prints it.
    pub fn json(&self) -> serde_json::Value {
        let secs = |d: Duration| d.as_secs_f64();
        let (mean, stddev) = self.mean_and_stddev();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        json!({
            "kind": clap::ValueEnum::to_possible_value(&self.kind).map(|v| v.get_name().to_string()),
            "requests": self.requests,
            "errors": self.errors,
            "seconds": secs(self.elapsed),
            "qps": (self.qps() * 10.0).round() / 10.0,
            "latency_ms": {
                "min": ms(self.latencies.first().copied().unwrap_or_default()),
                "avg": (mean * 1e6).round() / 1e3,
                "stddev": (stddev * 1e6).round() / 1e3,
                "p50": ms(self.percentile(50.0)),
                "p90": ms(self.percentile(90.0)),
                "p99": ms(self.percentile(99.0)),
                "p99.9": ms(self.percentile(99.9)),
                "max": ms(self.latencies.last().copied().unwrap_or_default()),
            },
            "histogram": self.histogram().iter().map(|(u, c)| json!([ms(*u), c])).collect::<Vec<_>>(),
            "error_samples": self.error_samples,
            "setup_seconds": self.setup.map(secs),
        })
    }

    pub fn render(&self, format: Format) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        let (mean, stddev) = self.mean_and_stddev();
        let pct = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
        if format == Format::Json {
            return self.json().to_string() + "\n";
        }
        let mut out = String::from("\nSummary:\n");
        if let Some(setup) = self.setup {
            out += &format!("  Setup:\t{:.4} secs.\n", secs(setup));
        }
        out += &format!("  Total:\t{:.4} secs.\n", secs(self.elapsed));
        out += &format!(
            "  Slowest:\t{:.4} secs.\n",
            self.latencies.last().map_or(0.0, |d| secs(*d))
        );
        out += &format!(
            "  Fastest:\t{:.4} secs.\n",
            self.latencies.first().map_or(0.0, |d| secs(*d))
        );
        out += &format!("  Average:\t{mean:.4} secs.\n  Stddev:\t{stddev:.4} secs.\n");
        out += &format!("  Requests/sec:\t{:.4}\n", self.qps());
        if self.errors > 0 {
            out += &format!("  Errors:\t{}\n", self.errors);
            for e in &self.error_samples {
                out += &format!("    {e}\n");
            }
        }
        out += "\nResponse time histogram:\n";
        let hist = self.histogram();
        let top = hist.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
        for (upper, count) in &hist {
            out += &format!(
                "  {:.4} [{count}]\t|{}\n",
                secs(*upper),
                "∎".repeat(count * 40 / top)
            );
        }
        out += "\nLatency distribution:\n";
        for p in pct {
            out += &format!("  {p}% in {:.4} secs.\n", secs(self.percentile(p)));
        }
        out
    }
}

/// A printable key of `size` bytes for index `i`.
fn key(i: usize, size: usize) -> Vec<u8> {
    let digits = format!("{i:0size$}");
    digits.as_bytes()[digits.len().saturating_sub(size)..].to_vec()
}

/// The endpoint of the current leader, asked of every endpoint.
async fn leader_endpoint(endpoints: &[String], dial: &Dial) -> anyhow::Result<String> {
    for e in endpoints {
        let Ok(mut probe) = StatusProbe::new(e, dial) else {
            continue;
        };
        if let Ok(s) = probe.status().await {
            if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                return Ok(e.clone());
            }
        }
    }
    anyhow::bail!("no endpoint reports being the leader")
}

pub(super) async fn connect(endpoint: &str, dial: &Dial) -> anyhow::Result<Channel> {
    crate::client::connect(endpoint, dial)
        .await
        .map_err(|e| anyhow::anyhow!("{endpoint}: {e}"))
}

/// A simple splitmix64 stream for key choice (no need for a crate).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// The TTL of the leases `lease-keepalive` keeps alive: long enough that
/// none expires during a run.
const BENCH_LEASE_TTL: i64 = 100;

/// What one bench client sends its requests through.
enum Caller {
    Kv(KvClient<Channel>),
    /// A lease of its own, renewed over one keep-alive stream, as an etcd
    /// client keeps its leases.
    Lease {
        id: i64,
        client: LeaseClient<Channel>,
        tx: tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
        responses: Box<tonic::Streaming<pb::LeaseKeepAliveResponse>>,
    },
}

impl Caller {
    async fn new(kind: BenchKind, ch: Channel) -> anyhow::Result<Caller> {
        if kind != BenchKind::LeaseKeepalive {
            return Ok(Caller::Kv(KvClient::new(ch)));
        }
        let mut client = LeaseClient::new(ch);
        let grant = pb::LeaseGrantRequest {
            ttl: BENCH_LEASE_TTL,
            id: 0,
        };
        let id = client.lease_grant(grant).await?.into_inner().id;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // etcd answers the call's headers only with its first response:
        // the first keep-alive goes out before the call is awaited.
        tx.send(pb::LeaseKeepAliveRequest { id }).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut responses = client.lease_keep_alive(stream).await?.into_inner();
        anyhow::ensure!(
            responses.message().await?.is_some_and(|r| r.ttl > 0),
            "lease {id:x}: the first keep-alive was not answered"
        );
        Ok(Caller::Lease {
            id,
            client,
            tx,
            responses: Box::new(responses),
        })
    }

    /// Sends one request of `a.kind` on key `k`.
    async fn request(&mut self, a: &BenchArgs, k: Vec<u8>, value: &[u8]) -> Result<(), String> {
        let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        match self {
            Caller::Lease {
                id, tx, responses, ..
            } => {
                let req = pb::LeaseKeepAliveRequest { id: *id };
                tx.send(req)
                    .await
                    .map_err(|_| "keep-alive stream closed".to_string())?;
                match responses.message().await.map_err(status)? {
                    Some(r) if r.ttl > 0 => Ok(()),
                    Some(_) => Err(format!("lease {id:x} expired")),
                    None => Err("keep-alive stream ended".into()),
                }
            }
            Caller::Kv(kv) => match a.kind {
                BenchKind::Put | BenchKind::LeaseKeepalive | BenchKind::Watch => kv
                    .put(pb::PutRequest {
                        key: k,
                        value: value.to_vec(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(status),
                BenchKind::Range => {
                    let req = pb::RangeRequest {
                        key: k,
                        serializable: a.consistency == "s",
                        ..Default::default()
                    };
                    kv.range(req).await.map(|_| ()).map_err(status)
                }
                BenchKind::TxnPut => {
                    let put = pb::PutRequest {
                        key: k,
                        value: value.to_vec(),
                        ..Default::default()
                    };
                    let op = pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(put)),
                    };
                    kv.txn(pb::TxnRequest {
                        success: vec![op],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(status)
                }
            },
        }
    }

    /// Revokes the lease, if it holds one (best effort: it would expire).
    async fn finish(self) {
        if let Caller::Lease { id, mut client, .. } = self {
            let _ = client.lease_revoke(pb::LeaseRevokeRequest { id }).await;
        }
    }
}

/// Runs a benchmark and returns what it measured.
pub async fn run(endpoints: &[String], dial: &Dial, a: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        a.kind != BenchKind::Watch,
        "bench watch runs in bench_watch::run"
    );
    anyhow::ensure!(
        a.conns > 0 && a.clients > 0,
        "--conns and --clients must be positive"
    );
    let endpoints = if a.target_leader {
        vec![leader_endpoint(endpoints, dial).await?]
    } else {
        endpoints.to_vec()
    };
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        conns.push(connect(&endpoints[i % endpoints.len()], dial).await?);
    }

    let value: Vec<u8> = (0..a.val_size).map(|i| b'a' + (i % 26) as u8).collect();
    if a.kind == BenchKind::Range {
        // Reads need something to read: write each key once.
        let mut kv = KvClient::new(conns[0].clone());
        for i in 0..a.key_space_size.max(1) {
            let put = pb::PutRequest {
                key: key_of(a, i),
                value: value.clone(),
                ..Default::default()
            };
            kv.put(put).await?;
        }
    }
    let deadline = a.duration.map(|d| Instant::now() + d);
    let total = if deadline.is_some() {
        usize::MAX
    } else {
        a.total
    };
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // With a rate, a pacer hands out one permit per request.
    let permits = if a.rate > 0 {
        let (tx, rx) = async_channel(a.clients * 2);
        let period = Duration::from_secs_f64(1.0 / a.rate as f64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    } else {
        None
    };
    let callers = futures::future::try_join_all(
        (0..a.clients).map(|c| Caller::new(a.kind, conns[c % conns.len()].clone())),
    )
    .await?;
    let started = Instant::now();
    let bar = Arc::new(Progress::new(done.clone(), total, deadline));
    let progress = tokio::spawn(show_progress(bar.clone()));
    let mut tasks = Vec::new();
    for (c, mut caller) in callers.into_iter().enumerate() {
        let (sent, done, value, permits) =
            (sent.clone(), done.clone(), value.clone(), permits.clone());
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(c as u64 * 7919 + 1);
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(p) = &permits {
                    if p.recv().await.is_err() {
                        break;
                    }
                }
                let k = if a.sequential_keys {
                    i % a.key_space_size.max(1)
                } else {
                    rng.below(a.key_space_size)
                };
                let k = key_of(&a, k);
                let t = Instant::now();
                let result = caller.request(&a, k, &value).await;
                match result {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => errors.push(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            caller.finish().await;
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    progress.abort();
    bar.finish();
    latencies.sort();
    Ok(Report {
        kind: a.kind,
        requests: latencies.len() + errors.len(),
        errors: errors.len(),
        elapsed,
        latencies,
        error_samples: error_samples(&errors),
        setup: None,
    })
}

/// The first few distinct errors, for a report.
pub(super) fn error_samples(errors: &[String]) -> Vec<String> {
    let mut samples = errors.to_vec();
    samples.sort();
    samples.dedup();
    samples.truncate(5);
    samples
}

/// A bounded multi-consumer channel from tokio's mpsc (clients share the
/// receiver behind a mutex).
fn async_channel(cap: usize) -> (tokio::sync::mpsc::Sender<()>, Permits) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap.max(1));
    (tx, Permits(Arc::new(tokio::sync::Mutex::new(rx))))
}

#[derive(Clone)]
struct Permits(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>>);

impl Permits {
    async fn recv(&self) -> Result<(), ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

/// A progress bar on stderr (drawn only on a terminal): requests done of
/// the total, or time passed of the duration; it ends on its final frame.
struct Progress {
    bar: indicatif::ProgressBar,
    done: Arc<AtomicUsize>,
    started: Instant,
    deadline: Option<Instant>,
}

impl Progress {
    fn new(done: Arc<AtomicUsize>, total: usize, deadline: Option<Instant>) -> Self {
        let started = Instant::now();
        let length = match deadline {
            Some(d) => d.duration_since(started).as_millis() as u64,
            None => total as u64,
        };
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(length.max(1)),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style = indicatif::ProgressStyle::with_template(" [{bar:40}] {percent:>3}%  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Progress {
            bar,
            done,
            started,
            deadline,
        }
    }

    /// Draws the current state.
    fn update(&self) {
        let n = self.done.load(Ordering::Relaxed);
        let position = match self.deadline {
            Some(_) => self.started.elapsed().as_millis() as u64,
            None => n as u64,
        };
        let rate = n as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_position(position.min(self.bar.length().unwrap_or(u64::MAX)));
        self.bar.set_message(format!("{n} requests  {rate:.0}/s"));
    }

    /// Draws the final frame (the run is over: the bar is full) and leaves
    /// it on screen.
    fn finish(&self) {
        self.update();
        self.bar.set_position(self.bar.length().unwrap_or(0));
        self.bar.finish();
    }
}

/// Redraws `progress` every 200 ms until aborted.
async fn show_progress(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        progress.update();
    }
}

/// `etcdctl check perf`'s loads: (requests/s, clients).
fn load(name: &str) -> (u64, usize) {
    match name {
        "m" => (1000, 200),
        "l" => (8000, 500),
        "xl" => (15000, 1000),
        _ => (150, 50),
    }
}

/// Where `kvctl check perf` writes: its keys and nothing else are deleted
/// afterwards (etcdctl's check uses `/etcdctl-check-perf/` the same way).
pub const CHECK_PERF_PREFIX: &[u8] = b"/kvctl-check-perf/";

/// `kvctl check perf`: a fixed load of puts for a fixed time, judged as
/// etcdctl judges it: throughput at least 90% of the target, slowest request
/// under 500 ms, standard deviation under 100 ms. Deletes its own keys (under
/// `CHECK_PERF_PREFIX`) afterwards.
pub async fn check_perf(
    endpoints: &[String],
    dial: &Dial,
    load_name: &str,
    duration: Duration,
    format: Format,
) -> anyhow::Result<(bool, String)> {
    let (rate, clients) = load(load_name);
    let args = BenchArgs {
        kind: BenchKind::Put,
        conns: clients.div_ceil(10).max(1),
        clients,
        total: usize::MAX,
        key_size: 8,
        val_size: 256,
        key_space_size: 100_000,
        sequential_keys: false,
        consistency: "l".into(),
        target_leader: false,
        rate,
        duration: Some(duration),
        watchers: 0,
        streams: 0,
        key_prefix: CHECK_PERF_PREFIX.to_vec(),
    };
    let report = run(endpoints, dial, &args).await?;
    // Remove what the check wrote: its prefix, never the user's keys.
    if let Ok(ch) = connect(&endpoints[0], dial).await {
        let del = pb::DeleteRangeRequest {
            key: CHECK_PERF_PREFIX.to_vec(),
            range_end: super::args::prefix_end(CHECK_PERF_PREFIX),
            prev_kv: false,
        };
        let _ = KvClient::new(ch).delete_range(del).await;
    }
    let (_, stddev) = report.mean_and_stddev();
    let slowest = report.latencies.last().copied().unwrap_or_default();
    let checks = [
        (
            report.qps() >= rate as f64 * 0.9,
            format!("Throughput is {:.0} writes/s (target {rate})", report.qps()),
        ),
        (
            slowest < Duration::from_millis(500),
            format!("Slowest request took {:.6}s", slowest.as_secs_f64()),
        ),
        (stddev < 0.1, format!("Stddev is {stddev:.6}s")),
        (
            report.errors == 0,
            format!("{} requests failed", report.errors),
        ),
    ];
    let passed = checks.iter().all(|(ok, _)| *ok);
    if format == Format::Json {
        let v = serde_json::json!({
            "passed": passed,
            "load": load_name,
            "throughput": report.qps(),
            "target": rate,
            "slowest_s": slowest.as_secs_f64(),
            "stddev_s": stddev,
            "errors": report.errors,
            "checks": checks
                .iter()
                .map(|(ok, what)| serde_json::json!({"passed": ok, "check": what}))
                .collect::<Vec<_>>(),
        });
        return Ok((passed, v.to_string() + "\n"));
    }
    let mut out = String::new();
    for (ok, what) in &checks {
        out += &format!("{}: {what}\n", if *ok { "PASS" } else { "FAIL" });
    }
    out += if passed { "PASS\n" } else { "FAIL\n" };
    Ok((passed, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ms: &[u64]) -> Report {
        Report {
            kind: BenchKind::Put,
            requests: ms.len(),
            errors: 0,
            elapsed: Duration::from_secs(1),
            latencies: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            error_samples: Vec::new(),
            setup: None,
        }
    }

    #[test]
    fn percentiles_are_exact() {
        let r = report(&(1..=100).collect::<Vec<_>>());
        assert_eq!(r.percentile(50.0), Duration::from_millis(50));
        assert_eq!(r.percentile(99.0), Duration::from_millis(99));
        assert_eq!(r.percentile(99.9), Duration::from_millis(100));
        assert_eq!(r.qps(), 100.0);
        let hist = r.histogram();
        assert_eq!(hist.len(), 10);
        assert_eq!(hist.iter().map(|(_, c)| c).sum::<usize>(), 100);
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(v["latency_ms"]["p50"], 50.0);
        assert_eq!(v["qps"], 100.0);
    }

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key(42, 8), b"00000042");
        assert_eq!(key(123_456_789, 4), b"6789");
    }

    #[test]
    fn check_perf_keys_stay_under_its_prefix() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mut a = <Cli as clap::Parser>::try_parse_from(["bench", "put"])
            .unwrap()
            .args;
        a.key_size = 8;
        a.key_prefix = CHECK_PERF_PREFIX.to_vec();
        let end = super::super::args::prefix_end(CHECK_PERF_PREFIX);
        for i in [0, 42, 99_999_999, usize::MAX] {
            let k = key_of(&a, i);
            assert!(k.starts_with(CHECK_PERF_PREFIX), "{k:?}");
            assert!(k.as_slice() < end.as_slice());
        }
        // A user's key that starts with a digit is outside the range.
        assert!(!(CHECK_PERF_PREFIX..end.as_slice()).contains(&&b"2024/report"[..]));
    }
}
