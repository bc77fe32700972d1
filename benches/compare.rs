//! `make bench`: raftkv against etcd on the same machine, in one run.
//!
//! Starts a 3-node raftkv cluster on loopback, runs a fixed matrix of
//! `kvctl bench` loads against it, stops it, then does the same with a
//! 3-node etcd cluster laid out the same way (both fsync every commit; that
//! is each one's default). With `--rounds 2` (the default) it does this
//! twice, etcd first in the second round, and keeps each point's best
//! round for each system, so a noisy neighbour hurts neither side more.
//!
//! Prints a markdown table with each point's QPS, p50 and p99 for both and
//! the raftkv/etcd ratio, peak resident memory per node under the write
//! load and data-dir size, and writes the same to `results.json` and
//! `results.md` in `--out`.
//!
//! `cargo bench` passes `--bench`; without it (as under `cargo test
//! --all-targets`) this does nothing, so `make test` never runs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use raftkv::cli::bench::{self, BenchArgs, BenchKind, Report};
use raftkv::client::Timeouts;
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
    /// Rounds; each point keeps its best round per system.
    #[arg(long, default_value_t = 2)]
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

const MATRIX: [Point; 5] = [
    Point {
        name: "put, 1 client",
        kind: BenchKind::Put,
        clients: 1,
        conns: 1,
        total: 4_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "put, 16 clients",
        kind: BenchKind::Put,
        clients: 16,
        conns: 16,
        total: 30_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "put, 256 clients / 32 conns",
        kind: BenchKind::Put,
        clients: 256,
        conns: 32,
        total: 80_000,
        key_space: 100_000,
        consistency: "l",
    },
    Point {
        name: "range l, 256 clients / 32 conns",
        kind: BenchKind::Range,
        clients: 256,
        conns: 32,
        total: 150_000,
        key_space: 1_000,
        consistency: "l",
    },
    Point {
        name: "range s, 256 clients / 32 conns",
        kind: BenchKind::Range,
        clients: 256,
        conns: 32,
        total: 150_000,
        key_space: 1_000,
        consistency: "s",
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

/// One system's results over all rounds: each point's best round, and the
/// largest memory and data-dir size seen.
#[derive(Default)]
struct Results {
    points: Vec<Option<Measured>>,
    peak_rss_kib: Vec<u64>,
    data_bytes: Vec<u64>,
}

impl Results {
    fn merge(&mut self, round: Vec<Measured>, rss: Vec<u64>, data: Vec<u64>) {
        self.points.resize(round.len(), None);
        for (best, m) in self.points.iter_mut().zip(round) {
            let better = match best {
                None => true,
                Some(b) => m.qps > b.qps,
            };
            if better {
                // p99 is kept per round with its QPS, not mixed across rounds.
                *best = Some(m);
            }
        }
        let max = |a: &mut Vec<u64>, b: Vec<u64>| {
            a.resize(b.len().max(a.len()), 0);
            for (x, y) in a.iter_mut().zip(b) {
                *x = (*x).max(y);
            }
        };
        max(&mut self.peak_rss_kib, rss);
        max(&mut self.data_bytes, data);
    }
}

/// Three server processes and their data dirs; killed when dropped, on
/// panic too.
struct Cluster {
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
    }
}

/// One round against one system: a fresh cluster, a warm-up, the matrix.
async fn round(system: System, args: &Args) -> anyhow::Result<(Vec<Measured>, Vec<u64>, Vec<u64>)> {
    let mut cluster = Cluster::start(system, args)?;
    cluster.wait_ready().await?;
    let timeouts = Timeouts::default();
    let scaled = |n: usize| ((n as f64 * args.scale) as usize).max(100);
    // Warm up connections and allocators; not measured.
    let warm = bench_args(&MATRIX[1], scaled(2_000));
    bench::run(&cluster.endpoints, timeouts, &warm).await?;
    let mut measured = Vec::new();
    let mut rss = Vec::new();
    for p in &MATRIX {
        eprintln!("  {}: {}", system.name(), p.name);
        let report = bench::run(
            &cluster.endpoints,
            timeouts,
            &bench_args(p, scaled(p.total)),
        )
        .await?;
        let m = Measured::from_report(&report);
        eprintln!(
            "    {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            m.qps, m.p50_ms, m.p99_ms, m.errors
        );
        measured.push(m);
        if p.kind != BenchKind::Range {
            rss = cluster.peak_rss_kib();
        }
    }
    let data = cluster.data_bytes();
    Ok((measured, rss, data))
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
        "Machine: {} CPUs ({}), {} GiB. etcd: {}. Best of {} round(s) per point.\n\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or(""),
        machine["mem_gib"],
        etcd_version,
        rounds
    );
    out += "| point | raftkv QPS | p50 ms | p99 ms | etcd QPS | p50 ms | p99 ms | QPS ratio |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (i, p) in MATRIX.iter().enumerate() {
        let (Some(r), Some(e)) = (&raftkv.points[i], &etcd.points[i]) else {
            continue;
        };
        out += &format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}x |\n",
            p.name,
            r.qps,
            r.p50_ms,
            r.p99_ms,
            e.qps,
            e.p50_ms,
            e.p99_ms,
            r.qps / e.qps.max(1e-9)
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
    let point = |r: &Results, i: usize| r.points[i].clone();
    let mut out = Vec::new();
    if let (Some(r), Some(e)) = (point(raftkv, 2), point(etcd, 2)) {
        let ratio = r.qps / e.qps.max(1e-9);
        out.push(json!({"target": "write QPS at 256 clients >= 1.5x etcd", "measured": format!("{ratio:.2}x"), "met": ratio >= 1.5}));
    }
    if let (Some(r), Some(e)) = (point(raftkv, 0), point(etcd, 0)) {
        out.push(json!({"target": "write p99 at 1 client <= etcd's", "measured": format!("{:.2} ms vs {:.2} ms", r.p99_ms, e.p99_ms), "met": r.p99_ms <= e.p99_ms}));
    }
    for (i, what) in [(3, "linearizable"), (4, "serializable")] {
        if let (Some(r), Some(e)) = (point(raftkv, i), point(etcd, i)) {
            let ratio = r.qps / e.qps.max(1e-9);
            out.push(json!({"target": format!("{what} read QPS at 256 clients >= etcd's"), "measured": format!("{ratio:.2}x"), "met": ratio >= 1.0}));
        }
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
        "points": MATRIX.iter().zip(&r.points).map(|(p, m)| json!({
            "name": p.name,
            "kind": format!("{:?}", p.kind).to_lowercase(),
            "clients": p.clients,
            "conns": p.conns,
            "consistency": p.consistency,
            "result": m.as_ref().map(|m| m.report.clone()),
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
    let mut raftkv = Results::default();
    let mut etcd = Results::default();
    for r in 0..args.rounds {
        let order = if r % 2 == 0 {
            [System::Raftkv, System::Etcd]
        } else {
            [System::Etcd, System::Raftkv]
        };
        for system in order {
            eprintln!("round {}/{}: {}", r + 1, args.rounds, system.name());
            let (m, rss, data) = rt.block_on(round(system, &args))?;
            match system {
                System::Raftkv => raftkv.merge(m, rss, data),
                System::Etcd => etcd.merge(m, rss, data),
            }
        }
    }
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
