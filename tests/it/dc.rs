//! The compose cluster on real containers (`make test-dc`, which builds the
//! image offline first; ignored by `make test`, which stays Docker-free):
//! started as a user starts it, reached from the host and from inside the
//! compose network, then broken and healed: the leader's container killed
//! and started again, the leader cut off from the network, a follower
//! paused, every container stopped and started. No acknowledged write is
//! lost. The cluster is removed (with its volumes) at the end, on panic too.

use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use crate::tools::{etcdctl, kvctl, run_output};

/// The host's client port of each node.
const HOST_PORTS: [u16; 3] = [2379, 22379, 32379];

/// `docker compose` (v2) if the engine has it, else `docker-compose`,
/// always under the project name `make run-dc` uses.
fn compose() -> Command {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-p", "raftkv"]);
    cmd
}

fn run(cmd: &mut Command) -> String {
    let (rc, out, err) = run_output(cmd, None);
    assert_eq!(rc, 0, "{cmd:?} failed: {out} {err}");
    out
}

/// The compose cluster, removed with its volumes when dropped.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg("docker ps -a; true")
                .status();
            let _ = compose().args(["logs", "--tail", "40"]).status();
        }
        let _ = compose().args(["down", "--volumes"]).output();
    }
}

fn container(service: &str) -> String {
    run(compose().args(["ps", "-q", service]))
        .trim()
        .to_string()
}

fn network() -> String {
    "raftkv_default".to_string()
}

fn host_endpoint(i: usize) -> String {
    format!("127.0.0.1:{}", HOST_PORTS[i])
}

fn all_host_endpoints() -> String {
    (0..3).map(host_endpoint).collect::<Vec<_>>().join(",")
}

/// The leader's node number (1..3), as some node answers it.
fn leader() -> Option<usize> {
    for i in 0..3 {
        let (rc, out, _) = kvctl(&host_endpoint(i), &["endpoint", "status", "-w", "json"]);
        if rc != 0 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let status = v.as_array()?.first()?["Status"].clone();
        let leader = status["leader"].as_u64()?;
        if leader != 0 {
            return Some(leader as usize);
        }
    }
    None
}

async fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn healthy(service: &str) -> bool {
    let id = container(service);
    let (rc, out, _) = run_output(
        Command::new("docker").args(["inspect", "--format", "{{.State.Health.Status}}", &id]),
        None,
    );
    rc == 0 && out.trim() == "healthy"
}

fn put(endpoints: &str, key: &str, value: &str) -> bool {
    kvctl(endpoints, &["put", key, value]).0 == 0
}

fn get(endpoints: &str, args: &[&str]) -> Option<String> {
    let (rc, out, _) = kvctl(
        endpoints,
        &[&["get", "--print-value-only"][..], args].concat(),
    );
    (rc == 0).then(|| out.trim_end().to_string())
}

/// Scenario: the whole container story, as `make test-dc` runs it (see the
/// module docs).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Docker engine and the image: run with `make test-dc`"]
async fn the_compose_cluster_survives_real_faults() {
    let _ = compose().args(["down", "--volumes"]).output();
    run(compose().args(["up", "--no-build", "-d"]));
    let _cluster = Cluster;
    let started = Instant::now();
    wait_for("three healthy containers", Duration::from_secs(90), || {
        ["node1", "node2", "node3"]
            .iter()
            .all(|s| healthy(s))
            .then_some(())
    })
    .await;
    eprintln!("healthy after {:?}", started.elapsed());

    // From the host: kvctl and etcdctl on the published ports.
    let all = all_host_endpoints();
    let mut acked: Vec<(String, String)> = Vec::new();
    assert!(put(&all, "hello", "world"));
    acked.push(("hello".into(), "world".into()));
    let (rc, out, err) = etcdctl(&host_endpoint(1), &["put", "from-etcdctl", "yes"]);
    assert_eq!((rc, out.as_str()), (0, "OK\n"), "{err}");
    acked.push(("from-etcdctl".into(), "yes".into()));
    let (rc, out, err) = etcdctl(&host_endpoint(2), &["get", "hello", "--print-value-only"]);
    assert_eq!((rc, out.as_str()), (0, "world\n"), "{err}");
    let (rc, out, err) = kvctl(
        &host_endpoint(0),
        &["endpoint", "status", "--cluster", "-w", "json"],
    );
    assert_eq!(rc, 0, "{err}");
    for port in HOST_PORTS {
        assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    }
    // From inside the compose network: the nodes' names.
    let out = run(compose().args([
        "exec",
        "-T",
        "node1",
        "kvctl",
        "endpoint",
        "status",
        "--cluster",
        "-w",
        "json",
    ]));
    for n in 1..=3 {
        assert!(out.contains(&format!("node{n}:2379")), "{out}");
    }

    // `make kill-leader-dc`: a new leader within 5 s, no write lost.
    wait_for("a leader", Duration::from_secs(20), leader).await;
    let said = run(Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", "kill-leader-dc"]));
    let t = Instant::now();
    let killed = said
        .lines()
        .find_map(|l| l.strip_prefix("killing the leader's container: "))
        .unwrap_or_else(|| panic!("make kill-leader-dc said: {said}"))
        .trim()
        .to_string();
    let old: usize = killed
        .trim_start_matches("node")
        .parse()
        .expect("a node number");
    let others: Vec<usize> = (0..3).filter(|i| i + 1 != old).collect();
    let survivors = others
        .iter()
        .map(|i| host_endpoint(*i))
        .collect::<Vec<_>>()
        .join(",");
    let new = wait_for("a new leader", Duration::from_secs(20), || {
        leader().filter(|l| *l != old)
    })
    .await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "re-election took {took:?}");
    eprintln!("node{new} leads {took:?} after node{old} was killed");
    assert!(put(&survivors, "after-kill", "1"));
    acked.push(("after-kill".into(), "1".into()));
    for (k, v) in &acked {
        assert_eq!(get(&survivors, &[k]).as_deref(), Some(v.as_str()), "{k}");
    }
    run(compose().args(["start", &killed]));
    let back = host_endpoint(old - 1);
    wait_for(
        "the restarted node to catch up",
        Duration::from_secs(60),
        || {
            (get(&back, &["after-kill", "--consistency", "s"]).as_deref() == Some("1"))
                .then_some(())
        },
    )
    .await;

    // Cut the leader off the network: the others elect a leader and take
    // writes; the old one answers no linearizable read and acknowledges no
    // write; reconnected, it follows and catches up.
    let cut = wait_for("a leader", Duration::from_secs(20), leader).await;
    let cut_id = container(&format!("node{cut}"));
    run(Command::new("docker").args(["network", "disconnect", &network(), &cut_id]));
    let majority = (0..3)
        .filter(|i| i + 1 != cut)
        .map(host_endpoint)
        .collect::<Vec<_>>()
        .join(",");
    wait_for(
        "the majority to take a write",
        Duration::from_secs(30),
        || put(&majority, "during-partition", "majority").then_some(()),
    )
    .await;
    acked.push(("during-partition".into(), "majority".into()));
    // Asked from inside its own container (its published port is cut off
    // with it).
    let inside = |args: &[&str]| {
        run_output(
            compose()
                .args([
                    "exec",
                    "-T",
                    &format!("node{cut}"),
                    "kvctl",
                    "--command-timeout",
                    "5s",
                ])
                .args(args),
            None,
        )
    };
    let (rc, out, err) = inside(&["put", "isolated-write", "x"]);
    assert_ne!(rc, 0, "the cut-off leader acknowledged a write: {out}");
    eprintln!("cut-off leader, write: {}", err.trim());
    let (rc, out, err) = inside(&["get", "during-partition", "--consistency", "l"]);
    assert_ne!(
        rc, 0,
        "the cut-off leader served a linearizable read: {out}"
    );
    eprintln!("cut-off leader, linearizable read: {}", err.trim());
    let isolated = host_endpoint(cut - 1);
    run(Command::new("docker").args([
        "network",
        "connect",
        "--alias",
        &format!("node{cut}"),
        &network(),
        &cut_id,
    ]));
    wait_for(
        "the reconnected node to catch up",
        Duration::from_secs(60),
        || (get(&isolated, &["during-partition"]).as_deref() == Some("majority")).then_some(()),
    )
    .await;
    assert_eq!(
        get(&all, &["isolated-write"]).as_deref(),
        Some(""),
        "an unacknowledged write appeared"
    );

    // Pause a follower, write, unpause: it catches up.
    let lead = wait_for("a leader", Duration::from_secs(20), leader).await;
    let follower = (1..=3).find(|n| *n != lead).unwrap();
    run(compose().args(["pause", &format!("node{follower}")]));
    let rest = (0..3)
        .filter(|i| i + 1 != follower)
        .map(host_endpoint)
        .collect::<Vec<_>>()
        .join(",");
    assert!(put(&rest, "while-paused", "1"));
    acked.push(("while-paused".into(), "1".into()));
    run(compose().args(["unpause", &format!("node{follower}")]));
    let paused = host_endpoint(follower - 1);
    wait_for(
        "the paused node to catch up",
        Duration::from_secs(60),
        || {
            (get(&paused, &["while-paused", "--consistency", "s"]).as_deref() == Some("1"))
                .then_some(())
        },
    )
    .await;

    // Stop and start everything: the volumes keep every write.
    run(compose().arg("stop"));
    run(compose().arg("start"));
    wait_for(
        "a leader after the restart",
        Duration::from_secs(60),
        leader,
    )
    .await;
    for (k, v) in &acked {
        let got = wait_for(
            &format!("{k} after the restart"),
            Duration::from_secs(30),
            || get(&all, &[k]),
        )
        .await;
        assert_eq!(&got, v, "{k} after a full stop and start");
    }
    eprintln!("test-dc took {:?}", started.elapsed());
}
