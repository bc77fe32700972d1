//! One chaos campaign: a cluster behind fault-injecting proxies, workers
//! recording a history, the nemesis on its schedule; then heal, read every
//! key, check convergence and the history, and write it all to a folder.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftkv::pb;
use raftkv::pb::maintenance_client::MaintenanceClient;
use tokio::sync::watch;

use super::history::{Clock, Kind, Op, Outcome};
use super::leases;
use super::nemesis::{watch_leaders, Nemesis, Net};
use super::verify;
use super::watcher;
use super::workload;
use crate::cluster::{Options, TestCluster};

/// A campaign's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the nemesis injects faults.
    pub duration: Duration,
    pub seed: u64,
    pub nodes: usize,
    pub workers: usize,
    pub keys: usize,
    /// The faults the nemesis picks from, by name (empty: all of them).
    pub faults: Vec<String>,
    /// Where the history, nemesis log and summary go.
    pub out_dir: PathBuf,
}

impl Config {
    /// Settings from `CHAOS_DURATION` (seconds), `CHAOS_SEED`, `CHAOS_NODES`,
    /// `CHAOS_WORKERS`, `CHAOS_KEYS`, `CHAOS_FAULTS` (comma-separated fault
    /// names) and `CHAOS_OUT`, with these defaults.
    pub fn from_env(duration_s: u64, nodes: usize, workers: usize) -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let num =
            |name: &str, default: u64| var(name).map_or(default, |v| v.trim().parse().expect(name));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = num("CHAOS_SEED", now.as_nanos() as u64 % 1_000_000);
        let out_dir = var("CHAOS_OUT").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("chaos")
                .join(format!("{}-seed{seed}", now.as_secs()))
        });
        Config {
            duration: Duration::from_secs(num("CHAOS_DURATION", duration_s)),
            seed,
            nodes: num("CHAOS_NODES", nodes as u64) as usize,
            workers: num("CHAOS_WORKERS", workers as u64) as usize,
            keys: num("CHAOS_KEYS", 6) as usize,
            faults: var("CHAOS_FAULTS")
                .map(|v| v.split(',').map(|f| f.trim().to_string()).collect())
                .unwrap_or_default(),
            out_dir,
        }
    }
}

/// How a campaign went.
pub struct Report {
    pub passed: bool,
    /// The printable summary, ending with the verdict line.
    pub summary: String,
}

/// Waits (up to 30 s) until every node reports the same key-value hash and
/// revision; the states last seen if they never agree.
async fn converge(cluster: &TestCluster) -> Result<(i64, u32), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        for i in 0..cluster.nodes.len() {
            let call = async {
                let channel = cluster.channel(i).await;
                let req = pb::HashKvRequest { revision: 0 };
                MaintenanceClient::new(channel)
                    .hash_kv(req)
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            };
            let state = tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .ok()
                .flatten();
            states.push(state.map(|r| (r.header.map_or(0, |h| h.revision), r.hash)));
        }
        if let Some(Some(first)) = states.first() {
            if states.iter().all(|s| s.as_ref() == Some(first)) {
                return Ok(*first);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("(revision, hash) per node: {states:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counts(history: &[Op]) -> String {
    let mut table: BTreeMap<Kind, [usize; 3]> = BTreeMap::new();
    for op in history {
        let row = table.entry(op.kind).or_default();
        row[match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        }] += 1;
    }
    let mut out = format!(
        "{:<8} {:>8} {:>8} {:>14}\n",
        "ops", "ok", "failed", "indeterminate"
    );
    for (kind, [ok, fail, info]) in table {
        let name = format!("{kind:?}").to_lowercase();
        let _ = writeln!(out, "{name:<8} {ok:>8} {fail:>8} {info:>14}");
    }
    out
}

/// Runs a whole campaign.
pub async fn run(cfg: &Config) -> Report {
    eprintln!("chaos: {cfg:?}");
    let opts = Options {
        // Small enough that nodes catch up by snapshot during the campaign.
        snapshot_count: 300,
        request_timeout_ms: 3000,
        ..Default::default()
    };
    let mut cluster = TestCluster::plan(cfg.nodes, opts);
    let net = Net::wire(&mut cluster).await;
    cluster.launch().await;

    let clock = Clock::start();
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers: Vec<_> = (0..cfg.workers)
        .map(|w| {
            let seed = cfg.seed.wrapping_mul(31).wrapping_add(w as u64 + 1);
            tokio::spawn(workload::worker(
                w,
                endpoints.clone(),
                cfg.keys,
                clock,
                seed,
                stop_rx.clone(),
            ))
        })
        .collect();
    let (changes_tx, changes_rx) = watch::channel(0);
    let watcher = tokio::spawn(watch_leaders(
        endpoints.clone(),
        clock,
        changes_tx,
        stop_rx.clone(),
    ));
    // Lease holders, checked for leases that expire early or keys that
    // outlive them.
    let holders: Vec<_> = (0..2)
        .map(|h| {
            let seed = cfg.seed.wrapping_mul(97).wrapping_add(h as u64 + 1);
            tokio::spawn(leases::holder(
                h,
                endpoints.clone(),
                seed,
                changes_rx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    // Two watchers of every key, from the first revision, through it all.
    let (watch_target, target_rx) = watch::channel(None);
    let watchers: Vec<_> = (0..2)
        .map(|i| tokio::spawn(watcher::run(i, endpoints.clone(), target_rx.clone())))
        .collect();

    let mut nemesis = Nemesis::new(cfg.seed, clock, &cfg.faults);
    nemesis.run(&mut cluster, &net, cfg.duration).await;
    nemesis.heal_all(&mut cluster, &net);
    cluster.wait_leader().await;
    let _ = stop_tx.send(true);
    let mut history: Vec<Op> = Vec::new();
    for w in workers {
        history.extend(w.await.expect("worker"));
    }
    // Every key ever used, read once more now that all is healed.
    let keys: Vec<String> = history
        .iter()
        .map(|op| op.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let finals = workload::final_reads(&endpoints, &keys, &clock, cfg.workers).await;
    // A key never read back after healing would let a lost write pass.
    let unread = keys
        .iter()
        .filter(|k| {
            !finals
                .iter()
                .any(|op| &op.key == *k && op.outcome == Outcome::Ok)
        })
        .count();
    history.extend(finals);
    // A run where nothing succeeded checks nothing.
    let acked = |kinds: &[Kind]| {
        history
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && kinds.contains(&op.kind))
            .count()
    };
    let (acked_writes, acked_reads) = (
        acked(&[Kind::Put, Kind::Delete, Kind::Cas]),
        acked(&[Kind::Get]),
    );
    history.sort_by_key(|op| op.invoke_ns);
    // Keep the evidence before checking, whatever the checker does.
    std::fs::create_dir_all(&cfg.out_dir).expect("create the output folder");
    let lines: Vec<String> = history
        .iter()
        .map(|op| serde_json::to_string(op).unwrap())
        .collect();
    std::fs::write(cfg.out_dir.join("history.jsonl"), lines.join("\n") + "\n")
        .expect("write history");
    let (leader_changes, leader_log) = watcher.await.expect("leader watcher");
    let mut nemesis_log = nemesis.log.join("\n") + "\n\nleaders seen:\n";
    nemesis_log.push_str(&leader_log.join("\n"));
    std::fs::write(cfg.out_dir.join("nemesis.log"), nemesis_log + "\n").expect("write nemesis log");

    // The holders' last keys go when their leases expire: wait for that
    // before the revision the nodes converge to is taken.
    let mut lease_logs = Vec::new();
    for h in holders {
        lease_logs.push(h.await.expect("lease holder"));
    }
    let convergence = converge(&cluster).await;
    let mut analysis = verify::analyze(&history);
    analysis
        .violations
        .extend(nemesis.violations.iter().cloned());
    for log in &lease_logs {
        analysis.violations.extend(log.violations.iter().cloned());
    }
    // No fault the nemesis injects changes a member's data behind Raft's
    // back: an alarm (a CORRUPT one from the corruption check) is a false
    // alarm.
    match cluster.status(0).await {
        Some(status) => {
            for alarm in status.errors.iter().filter(|e| e.contains("alarm:")) {
                analysis
                    .violations
                    .push(format!("an alarm was raised: {alarm}"));
            }
        }
        None => analysis
            .violations
            .push("node 1 did not report its status after healing".into()),
    }
    // The watchers stop once they have seen the converged revision.
    let last = convergence.as_ref().map_or(i64::MAX, |(rev, _)| *rev);
    let _ = watch_target.send(Some(last));
    let mut watch_logs = Vec::new();
    for w in watchers {
        watch_logs.push(w.await.expect("watcher"));
    }
    let lines: Vec<String> = watch_logs
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    std::fs::write(cfg.out_dir.join("watches.jsonl"), lines.join("\n") + "\n")
        .expect("write watches");
    if convergence.is_ok() {
        for log in &watch_logs {
            analysis
                .violations
                .extend(watcher::check(log, &history, last));
        }
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "chaos: {} nodes, {} workers, {} keys at a time, seed {}, {:?} of faults",
        cfg.nodes, cfg.workers, cfg.keys, cfg.seed, cfg.duration
    );
    s.push_str(&counts(&history));
    let faults: Vec<String> = nemesis
        .counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let total: usize = nemesis.counts.values().sum();
    let _ = writeln!(s, "faults injected: {total} ({})", faults.join(", "));
    let _ = writeln!(s, "forged peer messages sent: {}", nemesis.forged);
    let held: usize = lease_logs.iter().map(|l| l.leases).sum();
    let renewals: usize = lease_logs.iter().map(|l| l.renewals).sum();
    let expiries: usize = lease_logs.iter().map(|l| l.expiries).sum();
    let _ = writeln!(
        s,
        "leases: {held} held, {renewals} renewals answered, {expiries} seen expire"
    );
    let _ = writeln!(s, "leader changes: {leader_changes}");
    for log in &watch_logs {
        let _ = writeln!(
            s,
            "watcher {}: {} events, watch re-created {} times",
            log.watcher,
            log.events.len(),
            log.restarts
        );
    }
    match &convergence {
        Ok((rev, hash)) => {
            let _ = writeln!(
                s,
                "convergence: all {} nodes at revision {rev}, hash {hash:#010x}",
                cfg.nodes
            );
        }
        Err(e) => {
            let _ = writeln!(s, "convergence: FAILED: {e}");
        }
    }
    let _ = writeln!(
        s,
        "checker: {} operations on {} keys checked in {:.2?}",
        analysis.checked_ops, analysis.keys, analysis.check_time
    );
    let _ = writeln!(
        s,
        "history: {}",
        cfg.out_dir.join("history.jsonl").display()
    );
    let _ = writeln!(
        s,
        "nemesis log: {}",
        cfg.out_dir.join("nemesis.log").display()
    );
    for v in &analysis.violations {
        let _ = writeln!(s, "violation: {v}");
    }
    if let Some(report) = &analysis.failing_ops {
        let _ = writeln!(s, "minimal failing key: {report}");
    }
    let mut reasons = Vec::new();
    if !analysis.violations.is_empty() {
        reasons.push(format!("{} violations", analysis.violations.len()));
    }
    if convergence.is_err() {
        reasons.push("nodes did not converge".to_string());
    }
    if acked_writes == 0 || acked_reads == 0 {
        reasons.push(format!(
            "too little succeeded to check ({acked_writes} acknowledged writes, {acked_reads} reads)"
        ));
    }
    if unread > 0 {
        reasons.push(format!(
            "{unread} keys could not be read back after healing"
        ));
    }
    let passed = reasons.is_empty();
    if passed {
        s.push_str("verdict: PASS\n");
    } else {
        let _ = writeln!(s, "verdict: FAIL ({})", reasons.join(", "));
    }
    std::fs::write(cfg.out_dir.join("summary.txt"), &s).expect("write summary");
    Report { passed, summary: s }
}
