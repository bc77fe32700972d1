//! `make bench`: raftkv against etcd on the same machine, in one run.
//!
//! Starts a 3-node raftkv cluster and a 3-node etcd cluster laid out the
//! same way on loopback (both fsync every commit; that is each one's
//! default) and runs a fixed matrix of `kvctl bench` loads against them.
//! Each point runs `--rounds` times (4 by default) on each system,
//! alternately: raftkv then etcd, then etcd then raftkv, and so on, so the
//! two measurements of a round are seconds apart. On a shared, noisy
//! machine the speed of the moment moves both of them alike; each round's
//! raftkv/etcd ratio cancels it, and the median over rounds drops the odd
//! round that a burst of noise hit in the middle.
//!
//! Prints a markdown table with each point's median QPS, p50 and p99 for
//! both and the median ratio, peak resident memory per node under the
//! write load and data-dir size, and writes the same (with every round) to
//! `results.json` and `results.md` in `--out`.
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
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
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
}

const KEY_SIZE: usize = 8;
const VAL_SIZE: usize = 256;

const MATRIX: [Point; 6] = [
    Point {
        name: "put, 1 client",
        kind: BenchKind::Put,
        clients: 1,
        conns: 1,
        total: 2_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "put, 16 clients",
        kind: BenchKind::Put,
        clients: 16,
        conns: 16,
        total: 15_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "put, 256 clients / 32 conns",
        kind: BenchKind::Put,
        clients: 256,
        conns: 32,
        total: 40_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "range l, 256 clients / 32 conns",
        kind: BenchKind::Range,
        clients: 256,
        conns: 32,
        total: 75_000,
        key_space: 1_000,
        consistency: "l",
    },
    Point {
        name: "range s, 256 clients / 32 conns",
        kind: BenchKind::Range,
        clients: 256,
        conns: 32,
        total: 75_000,
        key_space: 1_000,
        consistency: "s",
    },
    Point {
        name: "lease keep-alive, 256 clients / 32 conns",
        kind: BenchKind::LeaseKeepalive,
        clients: 256,
        conns: 32,
        total: 75_000,
        key_space: 1,
        consistency: "l",
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Raftkv,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Raftkv => "raftkv",
            System::Etcd => "etcd",
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
    points: Vec<Vec<Measured>>,
    peak_rss_kib: Vec<u64>,
    data_bytes: Vec<u64>,
}

impl Results {
    fn new() -> Results {
        Results {
            points: MATRIX.iter().map(|_| Vec::new()).collect(),
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
    let pairs: Vec<f64> = raftkv.points[i]
        .iter()
        .zip(&etcd.points[i])
        .map(|(r, e)| r.qps / e.qps.max(1e-9))
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
            .prefix(&format!("bench-{}-", system.name()))
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
                System::Etcd => {
                    let initial = (0..3)
                        .map(|j| format!("e{}=http://127.0.0.1:{}", j + 1, peer[j]))
                        .collect::<Vec<_>>()
                        .join(",");
                    let client_url = format!("http://127.0.0.1:{}", client[i]);
                    let peer_url = format!("http://127.0.0.1:{}", peer[i]);
                    let mut c = Command::new(&args.etcd);
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
        key_prefix: Vec::new(),
    }
}

/// One run of point `p` against `cluster`.
async fn measure(cluster: &Cluster, p: &Point, args: &Args) -> anyhow::Result<Measured> {
    let total = ((p.total as f64 * args.scale) as usize).max(100);
    let report = bench::run(&cluster.endpoints, &Dial::default(), &bench_args(p, total)).await?;
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

/// Both clusters up, warmed up, then every point's rounds, alternating
/// which system goes first.
async fn run_matrix(args: &Args) -> anyhow::Result<(Results, Results)> {
    let mut clusters = [
        Cluster::start(System::Raftkv, args)?,
        Cluster::start(System::Etcd, args)?,
    ];
    for c in &mut clusters {
        c.wait_ready().await?;
    }
    let mut results = [Results::new(), Results::new()];
    // Warm up connections and allocators; not measured.
    let warm = bench_args(&MATRIX[1], ((2_000.0 * args.scale) as usize).max(100));
    for c in &clusters {
        bench::run(&c.endpoints, &Dial::default(), &warm).await?;
    }
    for (i, p) in MATRIX.iter().enumerate() {
        eprintln!("{}", p.name);
        for r in 0..args.rounds {
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for s in order {
                let m = measure(&clusters[s], p, args).await?;
                results[s].points[i].push(m);
            }
        }
        if p.kind != BenchKind::Range {
            for (c, res) in clusters.iter().zip(&mut results) {
                res.peak_rss_kib = c.peak_rss_kib();
            }
        }
    }
    for (c, res) in clusters.iter().zip(&mut results) {
        res.data_bytes = c.data_bytes();
    }
    let [raftkv, etcd] = results;
    Ok((raftkv, etcd))
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

fn render(
    raftkv: &Results,
    etcd: &Results,
    machine: &Value,
    etcd_version: &str,
    rounds: usize,
) -> String {
    let mut out = String::new();
    out += &format!(
        "Machine: {} CPUs ({}), {} GiB. etcd: {}. Medians of {} alternating round(s) per point; the ratio is the median of each round's ratio.\n\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or(""),
        machine["mem_gib"],
        etcd_version,
        rounds
    );
    out += "| point | raftkv QPS | p50 ms | p99 ms | etcd QPS | p50 ms | p99 ms | QPS ratio |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (i, p) in MATRIX.iter().enumerate() {
        let (Some(r), Some(e), Some(ratio)) =
            (raftkv.summary(i), etcd.summary(i), ratio(raftkv, etcd, i))
        else {
            continue;
        };
        out += &format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}x |\n",
            p.name, r.qps, r.p50_ms, r.p99_ms, e.qps, e.p50_ms, e.p99_ms, ratio
        );
    }
    let per_node = |v: &[u64], div: f64| {
        v.iter()
            .map(|x| mib(*x, div))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    out += "\n| per node | raftkv | etcd |\n|---|---:|---:|\n";
    out += &format!(
        "| peak RSS under the write load (MiB) | {} | {} |\n",
        per_node(&raftkv.peak_rss_kib, 1024.0),
        per_node(&etcd.peak_rss_kib, 1024.0)
    );
    out += &format!(
        "| data dir at the end (MiB) | {} | {} |\n",
        per_node(&raftkv.data_bytes, 1048576.0),
        per_node(&etcd.data_bytes, 1048576.0)
    );
    out += "\nTargets (raftkv against etcd, this run):\n\n";
    for t in targets(raftkv, etcd) {
        out += &format!(
            "- {}: {} ({})\n",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
            if t["met"] == true { "met" } else { "NOT met" }
        );
    }
    out
}

fn targets(raftkv: &Results, etcd: &Results) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(ratio) = ratio(raftkv, etcd, 2) {
        out.push(json!({"target": "write QPS at 256 clients >= 1.5x etcd", "measured": format!("{ratio:.2}x"), "met": ratio >= 1.5}));
    }
    if let (Some(r), Some(e)) = (raftkv.summary(0), etcd.summary(0)) {
        out.push(json!({"target": "write p99 at 1 client <= etcd's", "measured": format!("{:.2} ms vs {:.2} ms", r.p99_ms, e.p99_ms), "met": r.p99_ms <= e.p99_ms}));
    }
    for (i, what) in [(3, "linearizable"), (4, "serializable")] {
        if let Some(ratio) = ratio(raftkv, etcd, i) {
            out.push(json!({"target": format!("{what} read QPS at 256 clients >= etcd's"), "measured": format!("{ratio:.2}x"), "met": ratio >= 1.0}));
        }
    }
    if let Some(ratio) = ratio(raftkv, etcd, 5) {
        out.push(json!({"target": "lease keep-alive QPS at 256 clients >= etcd's", "measured": format!("{ratio:.2}x"), "met": ratio >= 1.0}));
    }
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    out.push(json!({
        "target": "peak RSS per node under the write load <= etcd's",
        "measured": format!("{} MiB vs {} MiB (largest node)", max(&raftkv.peak_rss_kib) / 1024, max(&etcd.peak_rss_kib) / 1024),
        "met": max(&raftkv.peak_rss_kib) <= max(&etcd.peak_rss_kib),
    }));
    out
}

fn to_json(r: &Results) -> Value {
    json!({
        "points": MATRIX.iter().enumerate().map(|(i, p)| json!({
            "name": p.name,
            "kind": format!("{:?}", p.kind).to_lowercase(),
            "clients": p.clients,
            "conns": p.conns,
            "consistency": p.consistency,
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
    let etcd_version = etcd_version(&args.etcd);
    anyhow::ensure!(
        etcd_version != "unknown",
        "cannot run {}: install etcd (Debian: apt-get install etcd-server)",
        args.etcd.display()
    );
    // The load generator runs on one thread, as `kvctl bench` does, leaving
    // the other cores to the servers; the same for both systems.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (raftkv, etcd) = rt.block_on(run_matrix(&args))?;
    let machine = machine();
    let table = render(&raftkv, &etcd, &machine, &etcd_version, args.rounds);
    println!("\n{table}");
    let results = json!({
        "machine": machine,
        "etcd_version": etcd_version,
        "rounds": args.rounds,
        "seconds": started.elapsed().as_secs(),
        "key_size": KEY_SIZE,
        "value_size": VAL_SIZE,
        "raftkv": to_json(&raftkv),
        "etcd": to_json(&etcd),
        "targets": targets(&raftkv, &etcd),
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
