//! `TestCluster`: real `kvd` processes on 127.0.0.1 with free ports and
//! temporary data dirs, plus the faults tests inflict on them (kill -9,
//! restart, SIGSTOP/SIGCONT). Every process is killed when the cluster is
//! dropped, on panic too, and a failing test prints each node's log.

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftkv::pb;
use raftkv::pb::kv_client::KvClient;
use raftkv::pb::maintenance_client::MaintenanceClient;
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Generous deadline for anything a healthy cluster does.
pub const LIVENESS: Duration = Duration::from_secs(20);

/// Timing and limits for a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: u64,
    pub request_timeout_ms: u64,
    pub max_request_bytes: Option<usize>,
    /// More kvd flags, appended to every node's command line.
    pub extra_args: Vec<String>,
    /// Give each node a `--listen-metrics` listener (`metrics_addr`).
    pub listen_metrics: bool,
    /// How the harness dials client ports that serve TLS (the kvd flags
    /// that turn it on go in `extra_args`).
    pub client_tls: Option<HarnessTls>,
    /// A user and password the harness authenticates with for its own
    /// `Status` calls, for a cluster with auth on.
    pub credentials: Option<(String, String)>,
}

/// The CA (PEM) the harness trusts on TLS client ports, and the
/// certificate and key (PEM) it shows if the nodes ask for one.
#[derive(Debug, Clone)]
pub struct HarnessTls {
    pub ca_pem: String,
    pub identity: Option<(String, String)>,
}

impl Default for Options {
    /// Fast elections, so tests spend little time waiting for leaders.
    fn default() -> Self {
        Options {
            heartbeat_ms: 50,
            election_ms: 500,
            snapshot_count: 10_000,
            request_timeout_ms: 5000,
            max_request_bytes: None,
            extra_args: Vec::new(),
            listen_metrics: true,
            client_tls: None,
            credentials: None,
        }
    }
}

impl Options {
    /// kvd's own defaults.
    pub fn production() -> Self {
        Options {
            heartbeat_ms: 100,
            election_ms: 1000,
            request_timeout_ms: 7000,
            ..Default::default()
        }
    }
}

/// One `kvd` process and where it lives.
pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub metrics_addr: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// kvd flags for this node only.
    pub extra_args: Vec<String>,
    /// Run on a data dir of this many bytes (a tmpfs of its own, in a
    /// mount namespace of its own), to see it fill up.
    pub disk_bytes: Option<u64>,
    /// Its own `--initial-cluster` (a member added later joins with the
    /// one `member add` gives it); `None`: the cluster's.
    pub initial_cluster: Option<String>,
    /// Start it without `--id` (a joining member learns its id).
    pub omit_id: bool,
    child: Option<Child>,
}

impl TestNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("node is running").id() as i32
    }

    /// This node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where this node keeps its data.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Deletes everything in this node's data dir, as a replaced disk.
    pub fn wipe_data_dir(&self) {
        std::fs::remove_dir_all(&self.data_dir).expect("remove the data dir");
    }

    /// The newest segment of this node's Raft log, if it has one.
    pub fn last_wal_segment(&self) -> Option<PathBuf> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("raft-log"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        segments.sort();
        segments.pop()
    }
}

/// A cluster of real `kvd` processes.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    opts: Options,
    initial_cluster: String,
    _dir: TempDir,
    _share: Share,
}

/// Who holds the machine: any number of test clusters at once, or one test
/// that must run alone (`alone`). A test that holds a cluster never waits
/// for a second one, so a test may run two clusters side by side.
struct Gate {
    clusters: usize,
    solo_waiting: bool,
    solo_running: bool,
}

static GATE: std::sync::Mutex<Gate> = std::sync::Mutex::new(Gate {
    clusters: 0,
    solo_waiting: false,
    solo_running: false,
});
static GATE_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test cluster's hold on the machine, given back when it drops.
#[allow(dead_code)] // held for its Drop
enum Share {
    Shared(Shared),
    Alone(Alone),
}

/// A test cluster's share of the machine, beside other clusters.
struct Shared;

impl Shared {
    fn take() -> Shared {
        let mut g = gate();
        while g.solo_running {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.clusters += 1;
        Shared
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut g = gate();
        g.clusters -= 1;
        // Hand over to a waiting solo test at once, before another
        // cluster can start.
        if g.clusters == 0 && g.solo_waiting {
            g.solo_waiting = false;
            g.solo_running = true;
        }
        GATE_CHANGED.notify_all();
    }
}

/// The machine to one test cluster alone, for a measurement the rest of
/// the suite would skew (`TestCluster::start_alone`): waits until no other
/// test cluster runs, and keeps new ones from starting while it lives.
struct Alone;

fn alone() -> Alone {
    let mut g = gate();
    while g.solo_waiting || g.solo_running {
        g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    if g.clusters == 0 {
        g.solo_running = true;
    } else {
        g.solo_waiting = true;
        while !g.solo_running {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    Alone
}

impl Drop for Alone {
    fn drop(&mut self) {
        gate().solo_running = false;
        GATE_CHANGED.notify_all();
    }
}

/// The first port `free_ports` hands out, and how many it cycles through:
/// below the kernel's ephemeral range (32768 and up by default), from which
/// every outbound connection takes its local port. A port picked from that
/// range could be taken by some test's connection before its node binds it.
const PORT_BASE: u16 = 10_000;
const PORT_SPAN: u16 = 20_000;

/// `n` distinct loopback ports that are free now and that this test process
/// has not handed out before (up to `PORT_SPAN` of them).
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Each test binary run starts somewhere else, so two runs at once
    // rarely meet.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = (std::process::id() % u32::from(PORT_SPAN)) as u16;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..PORT_SPAN {
        if ports.len() == n {
            break;
        }
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_BASE + (offset + i % PORT_SPAN) % PORT_SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "not enough free ports");
    ports
}

impl TestCluster {
    /// Starts `n` nodes with test timings and waits for a leader.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Options::default()).await
    }

    pub async fn start_with(n: usize, opts: Options) -> Self {
        let mut cluster = Self::plan(n, opts);
        cluster.launch().await;
        cluster
    }

    /// Starts `n` nodes once no other test cluster runs, and keeps others
    /// from starting until this one drops: for a test that measures speed.
    pub async fn start_alone(n: usize) -> Self {
        let mut cluster = Self::plan_with(n, Options::default(), Share::Alone(alone()));
        cluster.launch().await;
        cluster
    }

    /// Lays out `n` nodes (ports, data dirs) without starting them, so a test
    /// can set per-node flags first.
    pub fn plan(n: usize, opts: Options) -> Self {
        Self::plan_with(n, opts, Share::Shared(Shared::take()))
    }

    fn plan_with(n: usize, opts: Options, share: Share) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(3 * n);
        let nodes: Vec<TestNode> = (0..n)
            .map(|i| {
                let id = i as u64 + 1;
                TestNode {
                    id,
                    client_addr: format!("127.0.0.1:{}", ports[3 * i]),
                    peer_addr: format!("127.0.0.1:{}", ports[3 * i + 1]),
                    metrics_addr: format!("127.0.0.1:{}", ports[3 * i + 2]),
                    data_dir: dir.path().join(format!("node{id}")),
                    log_path: dir.path().join(format!("node{id}.log")),
                    extra_args: Vec::new(),
                    disk_bytes: None,
                    initial_cluster: None,
                    omit_id: false,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        TestCluster {
            nodes,
            opts,
            initial_cluster,
            _dir: dir,
            _share: share,
        }
    }

    /// Lays out one more node (ports, data dir) for a member to be added
    /// while the cluster runs; returns its index. It starts (`join`) once
    /// the cluster gave it an id.
    pub fn plan_joiner(&mut self) -> usize {
        let ports = free_ports(3);
        let n = self.nodes.len();
        let dir = self._dir.path();
        self.nodes.push(TestNode {
            id: 0,
            client_addr: format!("127.0.0.1:{}", ports[0]),
            peer_addr: format!("127.0.0.1:{}", ports[1]),
            metrics_addr: format!("127.0.0.1:{}", ports[2]),
            data_dir: dir.join(format!("joiner{n}")),
            log_path: dir.join(format!("joiner{n}.log")),
            extra_args: vec!["--initial-cluster-state".into(), "existing".into()],
            disk_bytes: None,
            initial_cluster: None,
            omit_id: false,
            child: None,
        });
        n
    }

    /// Starts planned joiner `i` as member `id` of the running cluster,
    /// whose members (with `id`) are `initial_cluster`.
    pub fn join(&mut self, i: usize, id: u64, initial_cluster: String) {
        self.nodes[i].id = id;
        self.nodes[i].initial_cluster = Some(initial_cluster);
        self.spawn(i);
    }

    /// Starts every node and waits for a leader.
    pub async fn launch(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        self.wait_leader().await;
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open node log");
        let mut cmd = match node.disk_bytes {
            None => Command::new(env!("CARGO_BIN_EXE_kvd")),
            Some(bytes) => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
                    .arg(r#"mkdir -p "$2" && mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .arg(bytes.to_string())
                    .arg(&node.data_dir)
                    .arg(env!("CARGO_BIN_EXE_kvd"));
                cmd
            }
        };
        if !node.omit_id {
            cmd.arg("--id").arg(node.id.to_string());
        }
        cmd.arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-client")
            .arg(&node.client_addr)
            .arg("--listen-peer")
            .arg(&node.peer_addr)
            .arg("--initial-cluster")
            .arg(
                node.initial_cluster
                    .as_ref()
                    .unwrap_or(&self.initial_cluster),
            )
            .arg("--heartbeat-interval")
            .arg(self.opts.heartbeat_ms.to_string())
            .arg("--election-timeout")
            .arg(self.opts.election_ms.to_string())
            .arg("--snapshot-count")
            .arg(self.opts.snapshot_count.to_string())
            .arg("--request-timeout")
            .arg(self.opts.request_timeout_ms.to_string())
            .arg("--log-level")
            .arg("info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if self.opts.listen_metrics {
            cmd.arg("--listen-metrics").arg(&node.metrics_addr);
        }
        if let Some(max) = self.opts.max_request_bytes {
            cmd.arg("--max-request-bytes").arg(max.to_string());
        }
        cmd.args(&self.opts.extra_args);
        cmd.args(&self.nodes[i].extra_args);
        self.nodes[i].child = Some(cmd.spawn().expect("spawn kvd"));
    }

    /// The `--initial-cluster` every node is started with.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Comma-separated client addresses of every node.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node id")
    }

    /// kill -9 node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether node `i`'s process is running (it has not exited by itself).
    pub fn is_alive(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until node `i`'s process exits by itself and returns its exit
    /// code (-1 if a signal ended it); panics after `timeout`.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[i].child.as_mut().expect("node is running");
            if let Some(status) = child.try_wait().expect("wait for kvd") {
                self.nodes[i].child = None;
                return status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                panic!("node {} still running after {timeout:?}", self.nodes[i].id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts node `i` again on its existing data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(
            !self.nodes[i].is_running(),
            "node {} is still running",
            self.nodes[i].id
        );
        self.spawn(i);
    }

    /// SIGSTOP: the process stays, but stops answering.
    pub fn pause(&self, i: usize) {
        signal(self.nodes[i].pid(), libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self, i: usize) {
        signal(self.nodes[i].pid(), libc::SIGCONT);
    }

    /// A KV client connected to node `i`.
    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    /// How to dial node `i`'s client port: plaintext, or TLS as
    /// `Options::client_tls` says.
    pub fn endpoint(&self, i: usize) -> tonic::transport::Endpoint {
        let addr = &self.nodes[i].client_addr;
        match &self.opts.client_tls {
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap(),
            Some(tls) => {
                let mut config = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(config)
                    .unwrap()
            }
        }
    }

    /// A channel to node `i`, retrying until it accepts connections.
    pub async fn channel(&self, i: usize) -> Channel {
        eventually(
            &format!("node {} accepts connections", self.nodes[i].id),
            LIVENESS,
            || {
                let endpoint = self.endpoint(i).timeout(Duration::from_secs(15));
                async move { endpoint.connect().await.ok() }
            },
        )
        .await
    }

    /// `Status` of node `i`, or `None` if it does not answer within a second.
    pub async fn status(&self, i: usize) -> Option<pb::StatusResponse> {
        let node = &self.nodes[i];
        if !node.is_running() {
            return None;
        }
        let call = async {
            let channel = self.endpoint(i).connect().await.ok()?;
            let mut request = tonic::Request::new(pb::StatusRequest {});
            if let Some((name, password)) = &self.opts.credentials {
                // Authenticating each time: a status poll is rare enough.
                let token = pb::auth_client::AuthClient::new(channel.clone())
                    .authenticate(pb::AuthenticateRequest {
                        name: name.clone(),
                        password: password.clone(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .token;
                request.metadata_mut().insert("token", token.parse().ok()?);
            }
            MaintenanceClient::new(channel)
                .status(request)
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()
            .flatten()
    }

    /// Waits until the running nodes agree on a leader that reports itself as
    /// leader, and returns its id.
    pub async fn wait_leader(&self) -> u64 {
        self.wait_leader_within(LIVENESS).await
    }

    pub async fn wait_leader_within(&self, timeout: Duration) -> u64 {
        eventually("the running nodes agree on a leader", timeout, || async {
            let mut leaders = Vec::new();
            for i in 0..self.nodes.len() {
                if self.nodes[i].is_running() {
                    leaders.push(
                        self.status(i)
                            .await
                            .map(|s| (s.leader, s.header.unwrap().member_id)),
                    );
                }
            }
            let first = leaders.first()?.as_ref()?.0;
            let agreed = first != 0
                && leaders
                    .iter()
                    .all(|l| l.as_ref().is_some_and(|(leader, _)| *leader == first));
            let confirmed = leaders.iter().flatten().any(|(leader, me)| leader == me);
            (agreed && confirmed).then_some(first)
        })
        .await
    }

    /// Index of a running node that is not the leader.
    pub fn follower_of(&self, leader: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id != leader && n.is_running())
            .expect("a running follower")
    }
}

fn signal(pid: i32, sig: i32) {
    assert!(send_signal(pid, sig), "kill({pid}, {sig}) failed");
}

fn send_signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on the pid of a child process this harness owns.
    unsafe { libc::kill(pid, sig) == 0 }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(child) = &self.nodes[i].child {
                // A paused process must be able to die.
                send_signal(child.id() as i32, libc::SIGCONT);
            }
            self.kill(i);
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!(
                    "----- node {} log (last {} lines) -----",
                    node.id,
                    tail.len()
                );
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on `addr` over HTTP/1.0; returns the status code and body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
}

/// `POST path` with `body` to `addr` over HTTP/1.1: status and body.
pub fn http_post(addr: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    http_post_with(addr, path, body, &[])
}

/// `POST path` with `body` and the extra `headers` to `addr` over
/// HTTP/1.1: status and body.
pub fn http_post_with(
    addr: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Sends `request` to `addr` and reads the response to the end of the
/// connection: its status code and body.
fn http_request(addr: &str, request: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(request.as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Node `i`'s `/metrics`, parsed: `name{labels}` (labels sorted, as
/// rendered) to value.
pub fn scrape(cluster: &TestCluster, i: usize) -> std::collections::BTreeMap<String, f64> {
    let (status, body) =
        http_get(&cluster.nodes[i].metrics_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line is `series value`");
            (series.to_string(), value.parse().expect("a numeric sample"))
        })
        .collect()
}
