//! `kvctl` end to end against a real cluster: output, failover between
//! endpoints, errors and exit codes, and `endpoint status [--watch]`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::{Options, TestCluster, LIVENESS};
use crate::tools::{kvctl, kvctl_ok, kvctl_stdin, line_reader};

/// Runs kvctl; returns (exit code, stdout, stderr).
/// An address nothing listens on.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// Scenario: put/get/del with etcdctl's output, through the full endpoint
/// list; `-w json` and `-w table`; a missing key prints nothing and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_put_get_del_like_etcdctl() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    assert_eq!(kvctl_ok(&eps, &["put", "color", "blue"]), "OK\n");
    assert_eq!(
        kvctl_ok(&eps, &["put", "color", "green", "--prev-kv"]),
        "OK\ncolor\nblue\n"
    );
    assert_eq!(kvctl_ok(&eps, &["put", "colour", "red"]), "OK\n");
    assert_eq!(kvctl_ok(&eps, &["get", "color"]), "color\ngreen\n");
    assert_eq!(
        kvctl_ok(&eps, &["get", "col", "--prefix"]),
        "color\ngreen\ncolour\nred\n"
    );
    assert_eq!(
        kvctl_ok(&eps, &["get", "col", "--prefix", "--keys-only"]),
        "color\n\ncolour\n\n"
    );
    assert_eq!(
        kvctl_ok(
            &eps,
            &[
                "get",
                "col",
                "--prefix",
                "--limit",
                "1",
                "--print-value-only"
            ]
        ),
        "green\n"
    );
    assert_eq!(
        kvctl_ok(&eps, &["get", "col", "--prefix", "--count-only"]),
        "2\n"
    );
    assert_eq!(
        kvctl_ok(&eps, &["get", "color", "--consistency", "s"]),
        "color\ngreen\n"
    );
    assert_eq!(kvctl_ok(&eps, &["get", "nothing"]), "");

    let json = kvctl_ok(&eps, &["get", "color", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kvs"][0]["key"], "Y29sb3I=");
    assert_eq!(v["kvs"][0]["version"], 2);
    assert_eq!(v["count"], 1);
    assert!(v["header"]["member_id"].as_u64().unwrap() >= 1);

    let table = kvctl_ok(&eps, &["get", "col", "--prefix", "-w", "table"]);
    assert!(
        table.contains("KEY") && table.contains("| colour |") && table.contains("| green |"),
        "{table}"
    );

    assert_eq!(
        kvctl_ok(&eps, &["del", "col", "--prefix", "--prev-kv"]),
        "2\ncolor\ngreen\ncolour\nred\n"
    );
    assert_eq!(kvctl_ok(&eps, &["del", "color"]), "0\n");
}

/// Scenario: the first endpoints are down; kvctl moves on to one that
/// answers, for reads and writes. With every endpoint down it prints one
/// error line on stderr and exits 1; a server error exits 1 with etcd's
/// message; bad usage exits 2.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_fails_over_and_reports_errors() {
    let cluster = TestCluster::start(3).await;
    let eps = format!(
        "{},{},{}",
        dead_endpoint(),
        dead_endpoint(),
        cluster.nodes[1].client_addr
    );
    assert_eq!(kvctl_ok(&eps, &["put", "k", "v"]), "OK\n");
    assert_eq!(kvctl_ok(&eps, &["get", "k"]), "k\nv\n");

    let down = format!("{},{}", dead_endpoint(), dead_endpoint());
    let (rc, out, err) = kvctl(&down, &["get", "k"]);
    assert_eq!((rc, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Error: no endpoint is reachable"), "{err}");

    let (rc, _, err) = kvctl(&cluster.endpoints(), &["put", "", "v"]);
    assert_eq!(rc, 1);
    assert_eq!(err.trim(), "Error: etcdserver: key is not provided");

    let (rc, _, err) = kvctl(
        &cluster.endpoints(),
        &["get", "k", "--prefix", "--from-key"],
    );
    assert_eq!(rc, 2, "{err}");
}

/// Scenario: `endpoint status` prints one row per endpoint with exactly one
/// leader; with a node down its row says so and the exit code is 1.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_endpoint_status_table() {
    let mut cluster = TestCluster::start(3).await;
    let out = kvctl_ok(&cluster.endpoints(), &["endpoint", "status"]);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| 127.0.0.1"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let is_leader = |row: &&&str| row.split('|').nth(3).map(str::trim) == Some("true");
    assert_eq!(rows.iter().filter(is_leader).count(), 1, "{out}");
    assert!(out.contains("RAFT TERM") && out.contains("APPLIED INDEX") && out.contains("REVISION"));

    let leader = cluster.wait_leader().await;
    let follower = cluster.follower_of(leader);
    cluster.kill(follower);
    let (rc, out, err) = kvctl(&cluster.endpoints(), &["endpoint", "status"]);
    assert_eq!(rc, 1);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| 127.0.0.1")).count(),
        3,
        "{out}"
    );
    assert!(err.contains(&cluster.nodes[follower].client_addr), "{err}");
}

/// Scenario: `endpoint status --watch` is running when the leader is killed:
/// it prints a line naming the old and new leader and how long the cluster
/// had no leader.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_status_watch_reports_a_re_election() {
    let mut cluster = TestCluster::start_with(3, Options::production()).await;
    let leader = cluster.wait_leader().await;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args([
            "--endpoints",
            &cluster.endpoints(),
            "endpoint",
            "status",
            "--watch",
            "--interval",
            "100ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kvctl");
    let stdout = watch.stdout.take().unwrap();
    let rx = line_reader(stdout);
    let wait_for = |pattern: &str| -> String {
        let deadline = std::time::Instant::now() + LIVENESS;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.contains(pattern) => return line,
                Ok(_) => {}
                Err(_) => panic!("kvctl never printed a line containing {pattern:?}"),
            }
        }
    };
    let first = wait_for("leader is");
    assert!(first.contains(&format!("leader is {leader} ")), "{first}");

    cluster.kill(cluster.index_of(leader));
    let changed = wait_for("leader changed");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        changed.contains(&format!("leader changed: {leader} -> ")),
        "{changed}"
    );
    assert!(changed.contains("without a leader"), "{changed}");
}

/// Scenario: compare-and-swap with `put --if-absent` / `--if-version` /
/// `--if-value` (a failed condition exits 1 and says why); `txn` from stdin
/// as etcdctl's (a malformed one exits 3); `get --rev`; `compaction`.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_cas_txn_history_and_compaction() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    assert_eq!(
        kvctl_ok(&eps, &["put", "leader", "node-a", "--if-absent"]),
        "OK\n"
    ); // rev 2
    let (rc, _, err) = kvctl(&eps, &["put", "leader", "node-b", "--if-absent"]);
    assert_eq!(rc, 1);
    assert_eq!(
        err.trim(),
        "Error: precondition failed: leader is at version 1 (mod revision 2) with value \"node-a\""
    );
    assert_eq!(
        kvctl_ok(&eps, &["put", "leader", "node-b", "--if-version", "1"]),
        "OK\n"
    ); // rev 3
    let (rc, _, _) = kvctl(&eps, &["put", "leader", "node-c", "--if-value", "node-a"]);
    assert_eq!(rc, 1);
    assert_eq!(
        kvctl_ok(
            &eps,
            &[
                "put",
                "leader",
                "node-c",
                "--if-value",
                "node-b",
                "--prev-kv"
            ]
        ),
        "OK\nleader\nnode-b\n"
    );

    let txn = "version(\"leader\") = \"3\"\ncreate(\"term\") = \"0\"\n\nput term 7\nget leader\n\nget term\n\n";
    let (rc, out, err) = kvctl_stdin(&eps, &["txn"], txn);
    assert_eq!(
        (rc, out.as_str()),
        (0, "SUCCESS\n\nOK\n\nleader\nnode-c\n"),
        "{err}"
    );
    let (rc, out, _) = kvctl_stdin(&eps, &["txn"], txn);
    assert_eq!((rc, out.as_str()), (0, "FAILURE\n\nterm\n7\n"));
    let (rc, _, err) = kvctl_stdin(&eps, &["txn"], "version(\"leader\") ~ \"3\"\n\n\n\n");
    assert_eq!(rc, 3, "{err}");

    assert_eq!(
        kvctl_ok(&eps, &["get", "leader", "--rev", "2"]),
        "leader\nnode-a\n"
    );
    assert_eq!(
        kvctl_ok(&eps, &["compaction", "4"]),
        "compacted revision 4\n"
    );
    let (rc, _, err) = kvctl(&eps, &["get", "leader", "--rev", "2"]);
    assert_eq!(rc, 1);
    assert_eq!(
        err.trim(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
}

/// Scenario: `kvctl watch --prefix --prev-kv` from a past revision prints
/// the replayed and then the live changes like etcdctl; a watch from a
/// compacted revision is canceled by the server (exit 5).
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_watch_replays_and_follows() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    kvctl_ok(&eps, &["put", "cfg/a", "1"]); // rev 2
    let mut watch = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args([
            "--endpoints",
            &cluster.nodes[1].client_addr,
            "watch",
            "cfg/",
            "--prefix",
            "--rev",
            "2",
            "--prev-kv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kvctl watch");
    let stdout = watch.stdout.take().unwrap();
    let rx = line_reader(stdout);
    kvctl_ok(&eps, &["put", "cfg/a", "2"]);
    kvctl_ok(&eps, &["del", "cfg/", "--prefix"]);
    let expected = [
        "PUT", "cfg/a", "1", "PUT", "cfg/a", "1", "cfg/a", "2", "DELETE", "cfg/a", "2", "cfg/a", "",
    ];
    let got: Vec<String> = expected
        .iter()
        .map(|_| rx.recv_timeout(LIVENESS).expect("watch output"))
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(got, expected);

    kvctl_ok(&eps, &["compaction", "3"]);
    let (rc, _, err) = kvctl(&eps, &["watch", "cfg/a", "--rev", "2"]);
    assert_eq!(rc, 5);
    assert!(
        err.contains("watch was canceled") && err.contains("compacted"),
        "{err}"
    );
}

/// The cluster's revision, as `kvctl get -w json` reports it.
fn revision(endpoints: &str) -> i64 {
    let out = kvctl_ok(endpoints, &["get", "any-key", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("get -w json");
    v["header"]["revision"].as_i64().expect("a revision")
}

/// Runs `kvctl bench ... -w json` and checks what every report must hold:
/// every request answered without error, QPS, and ordered percentiles
/// whose histogram counts every request.
fn bench_json(endpoints: &str, args: &[&str], total: u64) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-w", "json"]);
    let out = kvctl_ok(endpoints, &all);
    let r: serde_json::Value = serde_json::from_str(&out).expect("bench -w json");
    assert_eq!(r["requests"].as_u64(), Some(total), "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
    assert!(r["qps"].as_f64().unwrap() > 0.0, "{r}");
    let l = &r["latency_ms"];
    let p: Vec<f64> = ["min", "p50", "p90", "p99", "p99.9", "max"]
        .iter()
        .map(|k| l[*k].as_f64().unwrap())
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "unordered latencies: {l}"
    );
    let counted: u64 = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(counted, total, "histogram: {}", r["histogram"]);
    r
}

/// Scenario: `kvctl bench` really does what it measures. 400 puts from 8
/// clients over 2 connections advance the revision by exactly 400 and leave
/// the 50 sequential keys in place; a serializable range load, a txn-put
/// load and a lease keep-alive load answer every request (the last moves no
/// revision and leaves no lease behind); the human report has etcd's
/// sections.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_bench_measures_real_writes_and_reads() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let eps = cluster.endpoints();
    let before = revision(&eps);
    bench_json(
        &eps,
        &[
            "put",
            "--conns",
            "2",
            "--clients",
            "8",
            "--total",
            "400",
            "--key-size",
            "8",
            "--val-size",
            "32",
            "--key-space-size",
            "50",
            "--sequential-keys",
        ],
        400,
    );
    assert_eq!(revision(&eps), before + 400);
    let count = kvctl_ok(
        &eps,
        &["get", "000000", "--prefix", "--count-only", "-w", "json"],
    );
    let count: serde_json::Value = serde_json::from_str(&count).unwrap();
    assert_eq!(count["count"].as_i64(), Some(50), "{count}");

    bench_json(
        &eps,
        &[
            "range",
            "--clients",
            "4",
            "--total",
            "200",
            "--key-space-size",
            "20",
            "--consistency",
            "s",
            "--target-leader",
        ],
        200,
    );
    let before = revision(&eps);
    bench_json(&eps, &["txn-put", "--clients", "4", "--total", "100"], 100);
    assert_eq!(revision(&eps), before + 100);

    // Keep-alives renew in the leader's memory: no revision moves, and the
    // bench's own leases are gone when it ends.
    let before = revision(&eps);
    bench_json(
        &eps,
        &["lease-keepalive", "--clients", "8", "--total", "300"],
        300,
    );
    assert_eq!(revision(&eps), before);
    let leases = kvctl_ok(&eps, &["lease", "list"]);
    assert!(leases.starts_with("found 0 leases"), "{leases}");

    let human = kvctl_ok(&eps, &["bench", "put", "--total", "50"]);
    for section in [
        "Summary:",
        "Requests/sec:",
        "Response time histogram:",
        "99.9% in",
    ] {
        assert!(human.contains(section), "no {section:?} in:\n{human}");
    }
}

/// Scenario: `kvctl bench watch` counts what was delivered. 200 watchers
/// over 4 streams on 20 keys (10 on each), then 100 puts to those keys:
/// exactly 1,000 events arrive, each with its delay from its put; creating
/// the watchers is timed; the puts are real (the revision moves by 100).
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_bench_watch_counts_every_event() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let eps = cluster.endpoints();
    let before = revision(&eps);
    let r = bench_json(
        &eps,
        &[
            "watch",
            "--conns",
            "2",
            "--watchers",
            "200",
            "--streams",
            "4",
            "--key-space-size",
            "20",
            "--clients",
            "4",
            "--total",
            "100",
            "--val-size",
            "32",
        ],
        1000,
    );
    assert!(r["setup_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(revision(&eps), before + 100);
    let (code, _, err) = kvctl(&eps, &["bench", "watch", "--val-size", "8"]);
    assert_ne!(code, 0);
    assert!(err.contains("--val-size must be at least"), "{err}");
}

/// Scenario: `kvctl check perf` cleans up only what it wrote. A user's keys
/// that start with digits (as the check's own keys do after its prefix) are
/// there before and after a short run; none of the check's keys remain.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_check_perf_touches_only_its_own_keys() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let eps = cluster.endpoints();
    kvctl_ok(&eps, &["put", "2024/report", "quarterly"]);
    kvctl_ok(&eps, &["put", "00000042", "user-owned"]);
    let (rc, out, err) = kvctl(&eps, &["check", "perf", "--duration", "2s", "-w", "json"]);
    let verdict: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}{err}"));
    assert_eq!(verdict["passed"].as_bool(), Some(rc == 0), "{verdict}");
    assert_eq!(
        verdict["checks"].as_array().map(Vec::len),
        Some(4),
        "{verdict}"
    );
    assert!(verdict["throughput"].as_f64().unwrap() > 0.0, "{verdict}");
    assert_eq!(
        kvctl_ok(&eps, &["get", "2024/report"]),
        "2024/report\nquarterly\n"
    );
    assert_eq!(
        kvctl_ok(&eps, &["get", "00000042"]),
        "00000042\nuser-owned\n"
    );
    let left = kvctl_ok(
        &eps,
        &[
            "get",
            "/kvctl-check-perf/",
            "--prefix",
            "--count-only",
            "-w",
            "json",
        ],
    );
    let left: serde_json::Value = serde_json::from_str(&left).unwrap();
    assert_eq!(left["count"].as_i64().unwrap_or(0), 0, "{left}");
    let all = kvctl_ok(&eps, &["get", "", "--prefix", "--count-only", "-w", "json"]);
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["count"].as_i64(), Some(2), "{all}");
}

/// Scenario: kvctl's lease commands print what etcdctl's do (grant, put
/// --lease, timetolive --keys, keep-alive --once, list, revoke, an expired
/// lease); `lock NAME COMMAND` runs the command holding the lock, with
/// ETCD_LOCK_KEY set, ends with its exit code and releases the lock, so a
/// second `lock` gets it at once; `elect` leads and `elect --listen` sees
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_leases_locks_and_elections() {
    let cluster = TestCluster::start(3).await;
    let eps = cluster.endpoints();
    let out = kvctl_ok(&eps, &["lease", "grant", "60"]);
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(out, format!("lease {id} granted with TTL(60s)\n"));
    kvctl_ok(&eps, &["put", "--lease", &id, "svc/a", "1"]);
    let out = kvctl_ok(&eps, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(60s), remaining("))
            && out.ends_with("s), attached keys([svc/a])\n"),
        "{out}"
    );
    assert_eq!(
        kvctl_ok(&eps, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        kvctl_ok(&eps, &["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        kvctl_ok(&eps, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(kvctl_ok(&eps, &["get", "svc/a"]), "");
    assert_eq!(
        kvctl_ok(&eps, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    let (rc, _, err) = kvctl(&eps, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(rc, 1);
    assert!(err.contains("requested lease not found"), "{err}");

    let (rc, out, _) = kvctl(
        &eps,
        &[
            "lock",
            "door",
            "--",
            "sh",
            "-c",
            "echo \"in $ETCD_LOCK_KEY\"; exit 3",
        ],
    );
    assert_eq!(rc, 3);
    assert!(out.starts_with("in door/"), "{out}");
    let (rc, out, _) = kvctl(&eps, &["lock", "door", "echo", "second"]);
    assert_eq!((rc, out.as_str()), (0, "second\n"));
    // etcd's JSON leaves a zero count out: the lock keys are gone.
    let left = kvctl_ok(
        &eps,
        &["get", "door", "--prefix", "--count-only", "-w", "json"],
    );
    assert!(!left.contains("\"count\""), "{left}");

    let mut candidate = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--endpoints", &eps, "elect", "chair", "alice"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut listener = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--endpoints", &eps, "elect", "--listen", "chair"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(listener.stdout.take().unwrap());
    let key = lines.recv_timeout(LIVENESS).expect("the leader's key");
    let value = lines.recv_timeout(LIVENESS).expect("the leader's value");
    assert!(key.starts_with("chair/"), "{key}");
    assert_eq!(value, "alice");
    for child in [&mut candidate, &mut listener] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Scenario: kvctl describes itself: `--help` lists the global options
/// under their own heading and every exit code; `completion bash|zsh|fish`
/// prints a completion script that knows the commands; a closed pipe ends
/// it quietly.
#[test]
fn kvctl_help_and_completion() {
    let help = kvctl_ok("127.0.0.1:1", &["--help"]);
    assert!(help.contains("Global options:"), "{help}");
    for code in [
        "0 success",
        "1 the request failed",
        "2 bad usage",
        "3 a transaction",
        "5 a watch",
    ] {
        assert!(help.contains(code), "{code}: {help}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = kvctl_ok("127.0.0.1:1", &["completion", shell]);
        assert!(script.contains("kvctl"), "{shell}");
        assert!(
            script.contains("snapshot") && script.contains("member"),
            "{shell}"
        );
    }
    let (rc, _, err) = kvctl("127.0.0.1:1", &["completion", "tcsh"]);
    assert_eq!(rc, 2, "{err}");
    // Every positional argument of every command says what it is.
    let commands: &[&[&str]] = &[
        &["put"],
        &["get"],
        &["del"],
        &["watch"],
        &["compaction"],
        &["lock"],
        &["elect"],
        &["member", "add"],
        &["member", "remove"],
        &["member", "update"],
        &["member", "promote"],
        &["lease", "grant"],
        &["lease", "revoke"],
        &["lease", "timetolive"],
        &["lease", "keep-alive"],
        &["snapshot", "save"],
        &["snapshot", "status"],
        &["snapshot", "restore"],
        &["completion"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("-h");
        let help = kvctl_ok("127.0.0.1:1", &args);
        let section = help
            .split("Arguments:")
            .nth(1)
            .and_then(|s| s.split("Options:").next())
            .unwrap_or_else(|| panic!("{command:?} has no arguments: {help}"));
        for line in section
            .lines()
            .filter(|l| l.trim_start().starts_with(['<', '[']))
        {
            let words = line.split_whitespace().count();
            assert!(words > 1, "{command:?}: {line:?} is not described\n{help}");
        }
    }
}

/// Scenario: `kvctl shell` runs kvctl commands line by line with the
/// global flags it was started with (here --endpoints): puts, quoted keys
/// and values, a prefix get, JSON output; a bad command prints its error
/// and the session goes on; `quit` ends it (the line after it is not run).
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_shell_runs_commands_line_by_line() {
    let cluster = TestCluster::start(1).await;
    let eps = cluster.endpoints();
    let input = "put a 1\nput \"b c\" \"two words\"\nbogus\nget \"\" --prefix\nhelp\nquit\nput after quit\n";
    let (rc, out, err) = crate::tools::kvctl_stdin(&eps, &["shell"], input);
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("OK\nOK\na\n1\nb c\ntwo words\n"), "{out}");
    assert!(out.contains("quit"), "help lists quit: {out}");
    assert!(err.contains("unrecognized subcommand 'bogus'"), "{err}");
    assert_eq!(kvctl_ok(&eps, &["get", "after"]), "");
}
