//! `make bench`: raftkv against etcd 3.4 and etcd 3.5 on the same machine,
//! in one run.
//!
//! Starts a 3-node raftkv cluster and a 3-node cluster of each etcd laid
//! out the same way on loopback (all fsync every commit; that is each one's
//! default) and runs a fixed matrix of `kvctl bench` loads against them.
//! Each point runs `--rounds` times (4 by default) on each system, in an
//! order that rotates every round, so the measurements of a round are
//! seconds apart. On a shared, noisy machine the speed of the moment moves
//! all of them alike; each round's raftkv/etcd ratio cancels it, and the
//! median over rounds drops the odd round that a burst of noise hit in the
//! middle.
//!
//! Some points hold watchers open on keys the load never touches while
//! they run (20,000 on one stream, or 2,000 streams of one watcher): set
//! beside the same load without them, they show what watchers cost
//! unrelated writes, and how long creating them took.
//!
//! Prints a markdown table with each point's median QPS, p50 and p99 for
//! each system and the median ratios, the watch fan-out costs, peak
//! resident memory per node under the write load and data-dir size, and
//! writes the same (with every round) to `results.json` and `results.md` in
//! `--out`.
//!
//! `cargo bench` passes `--bench`; without it (as under `cargo test
//! --all-targets`) this does nothing, so `make test` never runs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use raftkv::cli::bench::{self, Report};
use raftkv::cli::bench_watch;
use raftkv::cli::{BenchArgs, BenchKind};
use raftkv::client::Dial;
use raftkv::pb;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "raftkv against etcd, side by side")]
struct Args {
    /// Set by `cargo bench`; without it nothing runs.
    #[arg(long)]
    bench: bool,
    /// The release kvd binary.
    #[arg(long, default_value = "target/release/kvd")]
    kvd: PathBuf,
    /// The etcd 3.4 binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// The etcd 3.5 binary (left out of the run if not given).
    #[arg(long)]
    etcd35: Option<PathBuf>,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Rounds: how often each point runs on each system (medians are shown).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Scale every point's request count (e.g. 0.2 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

/// One point of the matrix.
struct Point {
    name: &'static str,
    kind: BenchKind,
    clients: usize,
    conns: usize,
    total: usize,
    key_space: usize,
    consistency: &'static str,
    /// Watchers held open on other keys while it runs.
    background: Background,
    /// `watch`: watchers and streams.
    watchers: usize,
    streams: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Background {
    None,
    /// `watchers` watchers over `streams` streams, each on a key of its own
    /// that nothing writes.
    Watchers {
        streams: usize,
        watchers: usize,
    },
}

const KEY_SIZE: usize = 8;
const VAL_SIZE: usize = 256;

const fn point(name: &'static str, kind: BenchKind, clients: usize, conns: usize) -> Point {
    Point {
        name,
        kind,
        clients,
        conns,
        total: 15_000,
        key_space: 100_000,
        consistency: "l",
        background: Background::None,
        watchers: 0,
        streams: 0,
    }
}

/// Indexes into `MATRIX` that targets and the fan-out table name.
const PUT_1: usize = 0;
const PUT_16: usize = 2;
const PUT_16_WATCHERS: usize = 3;
const PUT_16_STREAMS: usize = 4;
const PUT_256: usize = 5;

const MATRIX: [Point; 11] = [
    Point {
        total: 2_000,
        ..point("put, 1 client", BenchKind::Put, 1, 1)
    },
    Point {
        total: 3_000,
        key_space: 1_000,
        ..point("range l, 1 client", BenchKind::Range, 1, 1)
    },
    point("put, 16 clients", BenchKind::Put, 16, 16),
    Point {
        background: Background::Watchers {
            streams: 1,
            watchers: 20_000,
        },
        ..point(
            "put, 16 clients, 20,000 watchers on other keys",
            BenchKind::Put,
            16,
            16,
        )
    },
    Point {
        background: Background::Watchers {
            streams: 2_000,
            watchers: 2_000,
        },
        ..point(
            "put, 16 clients, 2,000 idle watch streams",
            BenchKind::Put,
            16,
            16,
        )
    },
    Point {
        total: 40_000,
        ..point("put, 256 clients / 32 conns", BenchKind::Put, 256, 32)
    },
    point("txn put, 16 clients", BenchKind::TxnPut, 16, 16),
    Point {
        total: 75_000,
        key_space: 1_000,
        ..point("range l, 256 clients / 32 conns", BenchKind::Range, 256, 32)
    },
    Point {
        total: 75_000,
        key_space: 1_000,
        consistency: "s",
        ..point("range s, 256 clients / 32 conns", BenchKind::Range, 256, 32)
    },
    Point {
        total: 75_000,
        key_space: 1,
        ..point(
            "lease keep-alive, 256 clients / 32 conns",
            BenchKind::LeaseKeepalive,
            256,
            32,
        )
    },
    Point {
        total: 4_000,
        key_space: 1_000,
        watchers: 10_000,
        streams: 100,
        ..point(
            "watch: 10,000 watchers on 1,000 keys / 100 streams, 16 putting clients (events/s, put-to-event delay)",
            BenchKind::Watch,
            16,
            16,
        )
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Raftkv,
    Etcd34,
    Etcd35,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Raftkv => "raftkv",
            System::Etcd34 => "etcd 3.4",
            System::Etcd35 => "etcd 3.5",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            System::Raftkv => "raftkv",
            System::Etcd34 => "etcd34",
            System::Etcd35 => "etcd35",
        }
    }
}

/// What one point measured.
#[derive(Clone)]
struct Measured {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    report: Value,
}

impl Measured {
    fn from_report(r: &Report) -> Measured {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let report = r.json();
        Measured {
            qps: r.qps(),
            p50_ms: ms(r.percentile(50.0)),
            p99_ms: ms(r.percentile(99.0)),
            errors: r.errors,
            report,
        }
    }
}

/// A point's medians over its rounds on one system.
struct Summary {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// The median of `xs` (the mean of the middle two for an even count).
fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One system's results: every round of every point, each node's peak
/// memory after the write points, and its data dirs at the end.
struct Results {
    system: System,
    version: String,
    points: Vec<Vec<Measured>>,
    /// Per point with watchers in the background: seconds to create them.
    setup_secs: Vec<Option<f64>>,
    peak_rss_kib: Vec<u64>,
    data_bytes: Vec<u64>,
}

impl Results {
    fn new(system: System, version: String) -> Results {
        Results {
            system,
            version,
            points: MATRIX.iter().map(|_| Vec::new()).collect(),
            setup_secs: MATRIX.iter().map(|_| None).collect(),
            peak_rss_kib: Vec::new(),
            data_bytes: Vec::new(),
        }
    }

    /// Point `i`'s medians over its rounds; each metric's own median.
    fn summary(&self, i: usize) -> Option<Summary> {
        let rounds = &self.points[i];
        if rounds.is_empty() {
            return None;
        }
        let of = |f: fn(&Measured) -> f64| median(rounds.iter().map(f).collect());
        Some(Summary {
            qps: of(|m| m.qps),
            p50_ms: of(|m| m.p50_ms),
            p99_ms: of(|m| m.p99_ms),
            errors: rounds.iter().map(|m| m.errors).sum(),
        })
    }
}

/// Point `i`'s raftkv/etcd QPS ratio: the median of each round's ratio.
fn ratio(raftkv: &Results, etcd: &Results, i: usize) -> Option<f64> {
    ratio_of(raftkv, i, etcd, i)
}

/// Point `i` of `a` against point `j` of `b`: the median of each round's
/// QPS ratio.
fn ratio_of(a: &Results, i: usize, b: &Results, j: usize) -> Option<f64> {
    let pairs: Vec<f64> = a.points[i]
        .iter()
        .zip(&b.points[j])
        .map(|(x, y)| x.qps / y.qps.max(1e-9))
        .collect();
    (!pairs.is_empty()).then(|| median(pairs))
}

/// Three server processes and their data dirs; killed when dropped, on
/// panic too.
struct Cluster {
    system: System,
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
    endpoints: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

impl Cluster {
    fn start(system: System, args: &Args) -> anyhow::Result<Cluster> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("bench-{}-", system.slug()))
            .tempdir()?;
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            system,
            children: Vec::new(),
            dirs: Vec::new(),
            endpoints: client.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            _tmp: tmp,
        };
        for i in 0..3 {
            let dir = cluster._tmp.path().join(format!("node{}", i + 1));
            let log =
                std::fs::File::create(cluster._tmp.path().join(format!("node{}.log", i + 1)))?;
            let mut cmd = match system {
                System::Raftkv => {
                    let initial = (0..3)
                        .map(|j| format!("{}=127.0.0.1:{}", j + 1, peer[j]))
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut c = Command::new(&args.kvd);
                    c.arg("--id")
                        .arg((i + 1).to_string())
                        .arg("--data-dir")
                        .arg(&dir)
                        .arg("--listen-client")
                        .arg(format!("127.0.0.1:{}", client[i]))
                        .arg("--listen-peer")
                        .arg(format!("127.0.0.1:{}", peer[i]))
                        .arg("--listen-metrics")
                        .arg(format!("127.0.0.1:{}", free_port()))
                        .arg("--initial-cluster")
                        .arg(initial)
                        .env("RUST_LOG", "warn");
                    c
                }
                System::Etcd34 | System::Etcd35 => {
                    let initial = (0..3)
                        .map(|j| format!("e{}=http://127.0.0.1:{}", j + 1, peer[j]))
                        .collect::<Vec<_>>()
                        .join(",");
                    let client_url = format!("http://127.0.0.1:{}", client[i]);
                    let peer_url = format!("http://127.0.0.1:{}", peer[i]);
                    let binary = match system {
                        System::Etcd35 => args.etcd35.as_ref().unwrap_or(&args.etcd),
                        _ => &args.etcd,
                    };
                    let mut c = Command::new(binary);
                    c.arg("--name")
                        .arg(format!("e{}", i + 1))
                        .arg("--data-dir")
                        .arg(&dir)
                        .arg("--listen-client-urls")
                        .arg(&client_url)
                        .arg("--advertise-client-urls")
                        .arg(&client_url)
                        .arg("--listen-peer-urls")
                        .arg(&peer_url)
                        .arg("--initial-advertise-peer-urls")
                        .arg(&peer_url)
                        .arg("--initial-cluster")
                        .arg(initial)
                        .arg("--initial-cluster-state")
                        .arg("new")
                        .arg("--logger")
                        .arg("zap")
                        .arg("--log-level")
                        .arg("error");
                    c
                }
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {}", cmd.get_program().to_string_lossy()))?;
            cluster.children.push(child);
            cluster.dirs.push(dir);
        }
        Ok(cluster)
    }

    /// Polls until a put succeeds through every endpoint.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for e in &self.endpoints {
            loop {
                let attempt = async {
                    let mut kv = pb::kv_client::KvClient::connect(format!("http://{e}")).await?;
                    kv.put(pb::PutRequest {
                        key: b"bench-ready".to_vec(),
                        value: b"1".to_vec(),
                        ..Default::default()
                    })
                    .await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok(())) => break,
                    _ if Instant::now() > deadline => {
                        anyhow::bail!("{e} did not accept a put within 60 s")
                    }
                    _ => {}
                }
                for c in &mut self.children {
                    if let Some(status) = c.try_wait()? {
                        anyhow::bail!("a server exited early: {status}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Each node's peak resident memory so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> Vec<u64> {
        self.children
            .iter()
            .map(|c| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Each node's data dir, in bytes on disk (like `du`).
    fn data_bytes(&self) -> Vec<u64> {
        self.dirs.iter().map(|d| disk_usage(d)).collect()
    }
}

fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

fn bench_args(p: &Point, total: usize) -> BenchArgs {
    BenchArgs {
        kind: p.kind,
        conns: p.conns,
        clients: p.clients,
        total,
        key_size: KEY_SIZE,
        val_size: VAL_SIZE,
        key_space_size: p.key_space,
        sequential_keys: false,
        consistency: p.consistency.to_string(),
        target_leader: false,
        rate: 0,
        duration: None,
        watchers: p.watchers,
        streams: p.streams,
        key_prefix: Vec::new(),
    }
}

/// Holds `p`'s background watchers open on `cluster` (spread over its
/// members, 100 streams per connection); returns them and how long
/// creating them took.
async fn hold_background(
    cluster: &Cluster,
    p: &Point,
) -> anyhow::Result<Option<(bench_watch::Held, Duration)>> {
    let Background::Watchers { streams, watchers } = p.background else {
        return Ok(None);
    };
    let mut conns = Vec::new();
    for i in 0..streams.div_ceil(100) {
        let e = &cluster.endpoints[i % cluster.endpoints.len()];
        conns.push(
            raftkv::client::connect(e, &Dial::default())
                .await
                .map_err(anyhow::Error::msg)?,
        );
    }
    let key = |i: usize| format!("bench-watched/{i:06}").into_bytes();
    Ok(Some(
        bench_watch::hold(&conns, streams, watchers, key).await?,
    ))
}

/// One run of point `p` against `cluster`.
async fn measure(cluster: &Cluster, p: &Point, args: &Args) -> anyhow::Result<Measured> {
    let total = ((p.total as f64 * args.scale) as usize).max(100);
    let a = bench_args(p, total);
    let report = match p.kind {
        BenchKind::Watch => bench_watch::run(&cluster.endpoints, &Dial::default(), &a).await?,
        _ => bench::run(&cluster.endpoints, &Dial::default(), &a).await?,
    };
    let m = Measured::from_report(&report);
    eprintln!(
        "    {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        cluster.system.name(),
        m.qps,
        m.p50_ms,
        m.p99_ms,
        m.errors
    );
    Ok(m)
}

/// Every cluster up, warmed up, then every point's rounds, rotating which
/// system goes first.
async fn run_matrix(args: &Args) -> anyhow::Result<Vec<Results>> {
    let mut systems = vec![(System::Raftkv, "raftkv (this tree)".to_string())];
    systems.push((System::Etcd34, etcd_version(&args.etcd)));
    if let Some(etcd35) = &args.etcd35 {
        systems.push((System::Etcd35, etcd_version(etcd35)));
    }
    let mut clusters = Vec::new();
    for (system, _) in &systems {
        clusters.push(Cluster::start(*system, args)?);
    }
    for c in &mut clusters {
        c.wait_ready().await?;
    }
    let mut results: Vec<Results> = systems
        .into_iter()
        .map(|(s, v)| Results::new(s, v))
        .collect();
    let n = clusters.len();
    // Warm up connections and allocators; not measured.
    let warm = bench_args(&MATRIX[PUT_16], ((2_000.0 * args.scale) as usize).max(100));
    for c in &clusters {
        bench::run(&c.endpoints, &Dial::default(), &warm).await?;
    }
    for (i, p) in MATRIX.iter().enumerate() {
        eprintln!("{}", p.name);
        let mut held = Vec::new();
        for (c, res) in clusters.iter().zip(&mut results) {
            if let Some((h, took)) = hold_background(c, p).await? {
                eprintln!(
                    "    {}: {} streams, their watchers created in {:.3} s",
                    c.system.name(),
                    h.streams(),
                    took.as_secs_f64()
                );
                res.setup_secs[i] = Some(took.as_secs_f64());
                held.push(h);
            }
        }
        for r in 0..args.rounds {
            for k in 0..n {
                let s = (r + k) % n;
                let m = measure(&clusters[s], p, args).await?;
                results[s].points[i].push(m);
            }
        }
        drop(held);
        if p.kind != BenchKind::Range {
            for (c, res) in clusters.iter().zip(&mut results) {
                res.peak_rss_kib = c.peak_rss_kib();
            }
        }
    }
    for (c, res) in clusters.iter().zip(&mut results) {
        res.data_bytes = c.data_bytes();
    }
    Ok(results)
}

fn etcd_version(etcd: &Path) -> String {
    Command::new(etcd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    json!({ "cpus": cpus, "cpu_model": cpu_model, "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0 })
}

fn mib(kib_or_bytes: u64, div: f64) -> String {
    format!("{:.0}", kib_or_bytes as f64 / div)
}

fn render(results: &[Results], machine: &Value, rounds: usize) -> String {
    let raftkv = &results[0];
    let etcds = &results[1..];
    let mut out = String::new();
    out += &format!(
        "Machine: {} CPUs ({}), {} GiB. {}. Medians of {} rotating round(s) per point; a ratio is the median of each round's ratio.\n\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or(""),
        machine["mem_gib"],
        etcds
            .iter()
            .map(|e| format!("{}: {}", e.system.name(), e.version))
            .collect::<Vec<_>>()
            .join("; "),
        rounds
    );
    out += "| point |";
    for r in results {
        out += &format!(" {} QPS | p50 ms | p99 ms |", r.system.name());
    }
    for e in etcds {
        out += &format!(" vs {} |", e.system.name());
    }
    out += "\n|---|";
    out += &"---:|".repeat(results.len() * 3 + etcds.len());
    out += "\n";
    for (i, p) in MATRIX.iter().enumerate() {
        let mut row = format!("| {} |", p.name);
        for r in results {
            match r.summary(i) {
                Some(m) => {
                    row += &format!(" {:.0} | {:.2} | {:.2} |", m.qps, m.p50_ms, m.p99_ms);
                    if m.errors > 0 {
                        row.insert_str(row.len() - 1, &format!(" ({} errors)", m.errors));
                    }
                }
                None => row += " | | |",
            }
        }
        for e in etcds {
            match ratio(raftkv, e, i) {
                Some(x) => row += &format!(" {x:.2}x |"),
                None => row += " |",
            }
        }
        out += &row;
        out += "\n";
    }
    out += "\nWatch fan-out: the put rate at 16 clients with watchers held on other keys, against the same load without them (median of each round's ratio), and the time to create the watchers:\n\n";
    out += "| | ";
    out += &results
        .iter()
        .map(|r| r.system.name())
        .collect::<Vec<_>>()
        .join(" | ");
    out += " |\n|---|";
    out += &"---:|".repeat(results.len());
    out += "\n";
    for (i, what) in [
        (PUT_16_WATCHERS, "20,000 watchers on one stream"),
        (PUT_16_STREAMS, "2,000 idle streams"),
    ] {
        out += &format!("| put rate kept, {what} |");
        for r in results {
            match ratio_of(r, i, r, PUT_16) {
                Some(x) => out += &format!(" {:.0}% |", x * 100.0),
                None => out += " |",
            }
        }
        out += "\n";
        out += &format!("| creating {what} (s) |");
        for r in results {
            match r.setup_secs[i] {
                Some(x) => out += &format!(" {x:.3} |"),
                None => out += " |",
            }
        }
        out += "\n";
    }
    let per_node = |v: &[u64], div: f64| {
        v.iter()
            .map(|x| mib(*x, div))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    out += "\n| per node |";
    for r in results {
        out += &format!(" {} |", r.system.name());
    }
    out += "\n|---|";
    out += &"---:|".repeat(results.len());
    out += "\n| peak RSS under the load (MiB) |";
    for r in results {
        out += &format!(" {} |", per_node(&r.peak_rss_kib, 1024.0));
    }
    out += "\n| data dir at the end (MiB) |";
    for r in results {
        out += &format!(" {} |", per_node(&r.data_bytes, 1048576.0));
    }
    out += "\n\nTargets (raftkv against each etcd, this run):\n\n";
    for t in targets(results) {
        out += &format!(
            "- {}: {} ({})\n",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
            if t["met"] == true { "met" } else { "NOT met" }
        );
    }
    out
}

fn targets(results: &[Results]) -> Vec<Value> {
    let raftkv = &results[0];
    let mut out = Vec::new();
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    for etcd in &results[1..] {
        let vs = etcd.system.name();
        let below: Vec<String> = MATRIX
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let x = ratio(raftkv, etcd, i)?;
                (x < 1.0).then(|| format!("{} {x:.2}x", p.name))
            })
            .collect();
        out.push(json!({
            "target": format!("every point's QPS >= {vs}'s"),
            "measured": if below.is_empty() { "all".to_string() } else { format!("below: {}", below.join("; ")) },
            "met": below.is_empty(),
        }));
        if let (Some(r), Some(e)) = (raftkv.summary(PUT_1), etcd.summary(PUT_1)) {
            out.push(json!({
                "target": format!("put at 1 client: p50 and p99 <= {vs}'s"),
                "measured": format!("p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms", r.p50_ms, e.p50_ms, r.p99_ms, e.p99_ms),
                "met": r.p50_ms <= e.p50_ms && r.p99_ms <= e.p99_ms,
            }));
        }
        if let Some(x) = ratio(raftkv, etcd, PUT_256) {
            out.push(json!({"target": format!("put QPS at 256 clients >= 1.5x {vs}'s"), "measured": format!("{x:.2}x"), "met": x >= 1.5}));
        }
        for (i, p) in MATRIX.iter().enumerate() {
            if p.kind == BenchKind::Range && p.clients == 256 {
                if let Some(x) = ratio(raftkv, etcd, i) {
                    out.push(json!({"target": format!("{} >= 2x {vs}'s", p.name), "measured": format!("{x:.2}x"), "met": x >= 2.0}));
                }
            }
        }
        out.push(json!({
            "target": format!("peak RSS per node <= {vs}'s"),
            "measured": format!("{} MiB vs {} MiB (largest node)", max(&raftkv.peak_rss_kib) / 1024, max(&etcd.peak_rss_kib) / 1024),
            "met": max(&raftkv.peak_rss_kib) <= max(&etcd.peak_rss_kib),
        }));
    }
    for (i, what) in [
        (PUT_16_WATCHERS, "20,000 watchers on other keys"),
        (PUT_16_STREAMS, "2,000 idle watch streams"),
    ] {
        if let Some(x) = ratio_of(raftkv, i, raftkv, PUT_16) {
            out.push(json!({"target": format!("puts keep >= 90% of their rate with {what}"), "measured": format!("{:.0}%", x * 100.0), "met": x >= 0.9}));
        }
        if let Some(secs) = raftkv.setup_secs[i] {
            out.push(json!({"target": format!("creating {what} takes < 1 s"), "measured": format!("{secs:.3} s"), "met": secs < 1.0}));
        }
    }
    out
}

fn to_json(r: &Results) -> Value {
    json!({
        "system": r.system.name(),
        "version": r.version,
        "points": MATRIX.iter().enumerate().map(|(i, p)| json!({
            "name": p.name,
            "kind": format!("{:?}", p.kind).to_lowercase(),
            "clients": p.clients,
            "conns": p.conns,
            "consistency": p.consistency,
            "setup_seconds": r.setup_secs[i],
            "median": r.summary(i).map(|m| json!({
                "qps": m.qps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "errors": m.errors,
            })),
            "rounds": r.points[i].iter().map(|m| m.report.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "peak_rss_kib": r.peak_rss_kib,
        "data_dir_bytes": r.data_bytes,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        eprintln!("compare: run it with `make bench` (or `cargo bench --bench compare`)");
        return Ok(());
    }
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(
        args.kvd.exists(),
        "{} not found: build it first (make build)",
        args.kvd.display()
    );
    for etcd in std::iter::once(&args.etcd).chain(&args.etcd35) {
        anyhow::ensure!(
            etcd_version(etcd) != "unknown",
            "cannot run {}: install etcd (Debian: apt-get install etcd-server; 3.5: make etcd35)",
            etcd.display()
        );
    }
    // The load generator runs on one thread, as `kvctl bench` does, leaving
    // the other cores to the servers; the same for every system.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let results = rt.block_on(run_matrix(&args))?;
    let machine = machine();
    let table = render(&results, &machine, args.rounds);
    println!("\n{table}");
    let results = json!({
        "machine": machine,
        "rounds": args.rounds,
        "seconds": started.elapsed().as_secs(),
        "key_size": KEY_SIZE,
        "value_size": VAL_SIZE,
        "systems": results.iter().map(to_json).collect::<Vec<_>>(),
        "targets": targets(&results),
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(args.out.join("results.md"), table)?;
    eprintln!(
        "results in {} ({} s)",
        args.out.join("results.{json,md}").display(),
        started.elapsed().as_secs()
    );
    Ok(())
}
