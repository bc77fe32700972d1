//! `kvd`, the raftkv server: parses flags (each also read from `KVD_<FLAG>`),
//! builds a `NodeConfig`, sets up logging and runs the node until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use raftkv::config::{self, NodeConfig};
use raftkv::node::Node;
use raftkv::server::Listeners;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// mimalloc: the servers and the benchmark client allocate per request
/// and per log entry; it cut allocator time against glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// raftkv server: a Raft-replicated key-value store with etcd's v3 API.
#[derive(Debug, Parser)]
#[command(name = "kvd", version)]
struct Args {
    /// This member's id (nonzero, unique in the cluster). A member joining
    /// a running cluster (--initial-cluster-state existing) may leave it
    /// out: it learns the id the cluster gave its --advertise-peer address
    /// (`member add`), or reads it from its data dir.
    #[arg(long, env = "KVD_ID")]
    id: Option<u64>,
    /// Directory for the Raft log, snapshots and the key-value state.
    #[arg(long, env = "KVD_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for etcd API clients.
    #[arg(long, env = "KVD_LISTEN_CLIENT", default_value = "127.0.0.1:2379")]
    listen_client: SocketAddr,
    /// Address for Raft traffic from other members.
    #[arg(long, env = "KVD_LISTEN_PEER", default_value = "127.0.0.1:2380")]
    listen_peer: SocketAddr,
    /// An extra HTTP listener for /health, /livez, /readyz, /metrics and
    /// /version; the client port serves them too [default: none].
    #[arg(long, env = "KVD_LISTEN_METRICS")]
    listen_metrics: Option<SocketAddr>,
    /// Client addresses to publish to the cluster, comma-separated, one for
    /// each network clients come from (e.g. the container network's name and
    /// the host's published port) [default: --listen-client].
    #[arg(long, env = "KVD_ADVERTISE_CLIENT", value_delimiter = ',')]
    advertise_client: Option<Vec<String>>,
    /// Peer address other members reach this one at [default: --listen-peer].
    #[arg(long, env = "KVD_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// Members of a new cluster, `ID=HOST:PEERPORT,...`. Ignored once the
    /// data dir holds Raft state. [default: just this member]
    #[arg(long, env = "KVD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// On an empty data dir: `new` forms the cluster of --initial-cluster,
    /// `existing` joins the running cluster (to rebuild a member whose
    /// data was lost) and never forms one.
    #[arg(long, env = "KVD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Certificate (PEM) this member serves on the peer port and shows when
    /// it dials peers. With --peer-key-file and --peer-trusted-ca-file, peer
    /// traffic uses TLS.
    #[arg(long, env = "KVD_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file.
    #[arg(long, env = "KVD_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// CA certificate (PEM) that signs every member's peer certificate.
    #[arg(long, env = "KVD_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Certificate (PEM, with any intermediates) this member shows clients.
    /// With --key-file, the client port serves TLS only (gRPC, the JSON
    /// gateway, /health and /metrics alike); the files are read again when
    /// they change, for new connections.
    #[arg(long, env = "KVD_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "KVD_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// CA (PEM) whose certificates clients present, with --client-cert-auth.
    #[arg(long, env = "KVD_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Accept only clients that present a certificate signed by
    /// --trusted-ca-file.
    #[arg(long, env = "KVD_CLIENT_CERT_AUTH")]
    client_cert_auth: bool,
    /// Accept only peers that present a certificate signed by
    /// --peer-trusted-ca-file.
    #[arg(long, env = "KVD_PEER_CLIENT_CERT_AUTH")]
    peer_client_cert_auth: bool,
    /// Accept only peer certificates with one of these common names
    /// (comma-separated).
    #[arg(long, env = "KVD_PEER_CERT_ALLOWED_CN", value_delimiter = ',')]
    peer_cert_allowed_cn: Vec<String>,
    /// Accept only peer certificates naming one of these hosts (DNS or IP
    /// subject alternative names, comma-separated).
    #[arg(long, env = "KVD_PEER_CERT_ALLOWED_HOSTNAME", value_delimiter = ',')]
    peer_cert_allowed_hostname: Vec<String>,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, env = "KVD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Election timeout, in milliseconds.
    #[arg(long, env = "KVD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Applied entries between snapshots.
    #[arg(long, env = "KVD_SNAPSHOT_COUNT", default_value_t = config::DEFAULT_SNAPSHOT_COUNT)]
    snapshot_count: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "KVD_MAX_REQUEST_BYTES", default_value_t = config::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Automatic compaction: `revision` keeps the last N revisions,
    /// `periodic` the last stretch of time (see --auto-compaction-retention).
    #[arg(long, env = "KVD_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["revision", "periodic"])]
    auto_compaction_mode: String,
    /// What auto-compaction keeps: a revision count, or a duration like
    /// 30m or 1h (a bare number is hours). 0 turns it off.
    #[arg(long, env = "KVD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Most operations in one branch of a transaction.
    #[arg(long, env = "KVD_MAX_TXN_OPS", default_value_t = config::DEFAULT_MAX_TXN_OPS)]
    max_txn_ops: usize,
    /// Space quota, in bytes of state: past it, writes that add data raise
    /// the NOSPACE alarm and fail until space is freed and the alarm
    /// disarmed. 0 means the default, 2 GiB (as etcd's).
    #[arg(long, env = "KVD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// How often the leader compares every member's data with its own, in
    /// milliseconds; a member that differs gets a CORRUPT alarm. 0 turns
    /// the check off.
    #[arg(long, env = "KVD_CORRUPT_CHECK_INTERVAL", default_value_t = 10_000)]
    corrupt_check_interval: u64,
    /// Test-only: corrupt this key's value in this member's own state at
    /// start.
    #[arg(long, env = "KVD_TEST_CORRUPT_KEY", hide = true)]
    test_corrupt_key: Option<String>,
    /// Test-only: stream damaged snapshots (Maintenance.Snapshot).
    #[arg(long, hide = true)]
    test_corrupt_snapshot: bool,
    /// How often an idle watch asking for progress notifications gets one,
    /// in milliseconds.
    #[arg(
        long,
        env = "KVD_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value_t = 600_000,
        hide = true
    )]
    watch_progress_notify_interval: u64,
    /// How long an auth token stays valid, in seconds, after it was issued
    /// or last used on the member it is used with.
    #[arg(long, env = "KVD_AUTH_TOKEN_TTL", default_value_t = 300)]
    auth_token_ttl: u64,
    /// bcrypt's cost for password hashes (4 to 31; each step doubles the
    /// time a password check takes).
    #[arg(long, env = "KVD_BCRYPT_COST", default_value_t = 10)]
    bcrypt_cost: u32,
    /// How long a request may wait for a leader or a commit, in milliseconds
    /// [default: 5000 + 2 x --election-timeout].
    #[arg(long, env = "KVD_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// Test-only: dial peers advertised at these addresses at those
    /// instead (`ADVERTISED=DIALED,...`, each `HOST:PORT`), e.g. through a
    /// fault-injecting proxy.
    #[arg(long, env = "KVD_PEER_DIAL_OVERRIDE", hide = true)]
    peer_dial_override: Option<String>,
    /// Log level (error, warn, info, debug, trace) or a full tracing filter.
    #[arg(long, env = "KVD_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "KVD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Parse and validate the configuration, print it as JSON, and exit
    /// without touching the data dir or any port (exit 2 if invalid).
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// Client TLS from `--cert-file` and `--key-file` (which come
    /// together), `--trusted-ca-file` and `--client-cert-auth`.
    fn client_tls(&self) -> Result<Option<config::ClientTlsConfig>, config::ConfigError> {
        let fail = |msg: &str| Err(config::ConfigError(msg.into()));
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => {
                if self.client_cert_auth || self.trusted_ca_file.is_some() {
                    return fail("--client-cert-auth and --trusted-ca-file need client TLS: --cert-file and --key-file");
                }
                return Ok(None);
            }
            _ => return fail("client TLS needs both --cert-file and --key-file"),
        };
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return fail("--client-cert-auth needs --trusted-ca-file");
        }
        Ok(Some(config::ClientTlsConfig {
            cert_file,
            key_file,
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
        }))
    }

    fn to_config(&self) -> Result<NodeConfig, config::ConfigError> {
        let state: config::ClusterState = self.initial_cluster_state.parse()?;
        if self.id.is_none()
            && (state != config::ClusterState::Existing || self.initial_cluster.is_none())
        {
            return Err(config::ConfigError(
                "--id is required, unless the member joins a running cluster \
                 (--initial-cluster-state existing, with --initial-cluster naming its members)"
                    .into(),
            ));
        }
        let mut cfg = NodeConfig::new(
            self.id.unwrap_or(0),
            self.data_dir.clone(),
            self.listen_client,
            self.listen_peer,
        );
        cfg.listen_metrics = self.listen_metrics;
        if let Some(addrs) = &self.advertise_client {
            cfg.advertise_client = addrs.iter().map(|a| config::normalize_addr(a)).collect();
        }
        if let Some(addr) = &self.advertise_peer {
            cfg.advertise_peer = config::normalize_addr(addr);
        }
        if let Some(members) = &self.initial_cluster {
            cfg.initial_cluster = config::parse_initial_cluster(members)?;
        } else {
            cfg.initial_cluster = [(cfg.id, cfg.advertise_peer.clone())].into();
        }
        cfg.initial_cluster_state = self.initial_cluster_state.parse()?;
        cfg.peer_tls = self.peer_tls()?;
        cfg.client_tls = self.client_tls()?;
        if let Some(overrides) = &self.peer_dial_override {
            cfg.peer_dial_overrides = config::parse_dial_overrides(overrides)?;
        }
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        cfg.election_timeout = Duration::from_millis(self.election_timeout);
        cfg.request_timeout = match self.request_timeout {
            Some(ms) => Duration::from_millis(ms),
            None => config::default_request_timeout(cfg.election_timeout),
        };
        cfg.snapshot_count = self.snapshot_count;
        cfg.max_request_bytes = self.max_request_bytes;
        cfg.max_txn_ops = self.max_txn_ops;
        cfg.corrupt_check_interval = (self.corrupt_check_interval > 0)
            .then(|| Duration::from_millis(self.corrupt_check_interval));
        cfg.test_corrupt_key = self.test_corrupt_key.clone();
        cfg.test_corrupt_snapshot = self.test_corrupt_snapshot;
        if self.quota_backend_bytes > 0 {
            cfg.quota_backend_bytes = self.quota_backend_bytes;
        }
        cfg.auto_compaction = config::parse_auto_compaction(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )
        .map_err(config::ConfigError)?;
        cfg.watch_progress_notify_interval =
            Duration::from_millis(self.watch_progress_notify_interval);
        cfg.auth_token_ttl = Duration::from_secs(self.auth_token_ttl);
        cfg.bcrypt_cost = self.bcrypt_cost;
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Args {
    /// Peer TLS from the `--peer-*` flags, which must come together.
    fn peer_tls(&self) -> Result<Option<config::PeerTlsConfig>, config::ConfigError> {
        let fail = |msg: &str| Err(config::ConfigError(msg.into()));
        let files = (
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_trusted_ca_file,
        );
        let (cert_file, key_file, trusted_ca_file) = match files {
            (Some(cert), Some(key), Some(ca)) => (cert.clone(), key.clone(), ca.clone()),
            (None, None, None) => {
                if self.peer_client_cert_auth
                    || !self.peer_cert_allowed_cn.is_empty()
                    || !self.peer_cert_allowed_hostname.is_empty()
                {
                    return fail("--peer-client-cert-auth and --peer-cert-allowed-* need peer TLS: --peer-cert-file, --peer-key-file and --peer-trusted-ca-file");
                }
                return Ok(None);
            }
            _ => {
                return fail("peer TLS needs all of --peer-cert-file, --peer-key-file and --peer-trusted-ca-file");
            }
        };
        if !self.peer_client_cert_auth
            && (!self.peer_cert_allowed_cn.is_empty()
                || !self.peer_cert_allowed_hostname.is_empty())
        {
            return fail("--peer-cert-allowed-cn and --peer-cert-allowed-hostname need --peer-client-cert-auth");
        }
        Ok(Some(config::PeerTlsConfig {
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        }))
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    subscriber(level, format).init();
}

/// The log subscriber for `--log-level` `level`. Its filters give it a
/// level hint (`max_level_hint`): below that level, tracing's macros in
/// every crate (h2's per-frame spans, openraft's per-call ones) return at
/// once. Without the hint every trace and debug site is evaluated on every
/// request, which cost about a third of the write throughput.
fn subscriber(level: &str, format: LogFormat) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::filter::{FilterExt, LevelFilter};
    let directives = if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        // openraft, sled and the HTTP/2 stack are chatty at info; openraft's
        // replication logs a long ERROR at every retry to a peer that is down,
        // which the peer network reports once each way instead.
        format!(
            "{level},openraft=error,openraft::replication=off,sled=warn,h2=warn,tower=warn,hyper=warn"
        )
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal, and never with NO_COLOR set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Drops single events, restricts no level: its hint is the widest, so
    // the filter's own is the one that counts.
    let quiet = tracing_subscriber::filter::filter_fn(|m| !is_peer_noise(m))
        .with_max_level_hint(LevelFilter::TRACE);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter.and(quiet)))
}

/// openraft 0.9's core logs an ERROR for each peer that misses a round
/// (a leadership confirmation for a read that a quorum confirmed, a vote
/// request) — every read, every election, while one member is down. The
/// peer network reports a peer going away and coming back once instead.
/// These events are the core's that carry exactly a peer (`target`), an
/// `error` and a message.
fn is_peer_noise(m: &tracing::Metadata<'_>) -> bool {
    if m.target() != "openraft::core::raft_core" || *m.level() != tracing::Level::ERROR {
        return false;
    }
    let mut fields: Vec<&str> = m.fields().iter().map(|f| f.name()).collect();
    fields.sort_unstable();
    fields == ["error", "message", "target"]
}

/// `KVD_*` variables in the environment that no flag reads: most likely
/// typos, which would otherwise be silently ignored.
fn unknown_env_vars() -> Vec<String> {
    let command = Args::command();
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("KVD_") && !known.contains(k))
        .collect();
    unknown.sort();
    unknown
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(addr: SocketAddr, flag: &str) -> raftkv::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        raftkv::Error::Io(std::io::Error::new(e.kind(), format!("{flag} {addr}: {e}")))
    })
}

async fn run(cfg: NodeConfig) -> raftkv::Result<()> {
    // Bind first: a port in use fails fast, before any data is touched.
    let listeners = Listeners {
        client: bind(cfg.listen_client, "--listen-client").await?,
        peer: bind(cfg.listen_peer, "--listen-peer").await?,
        metrics: match cfg.listen_metrics {
            Some(addr) => Some(bind(addr, "--listen-metrics").await?),
            None => None,
        },
        client_tls: match &cfg.client_tls {
            Some(tls) => Some(std::sync::Arc::new(raftkv::server::ClientTls::load(tls)?)),
            None => None,
        },
    };
    let node = Node::start(&cfg).await?;
    if let Some(mode) = cfg.auto_compaction {
        tokio::spawn(raftkv::compactor::run(node.clone(), mode));
    }
    tracing::info!(id = node.id(), data_dir = %cfg.data_dir.display(), "kvd started");
    let serving = raftkv::server::serve(node.clone(), &cfg, listeners, shutdown_signal());
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => served?,
        // A member whose Raft core stopped cannot serve: it ends here,
        // rather than answer as if it were healthy.
        fatal = node.failed() => return Err(fatal),
        // So does a member removed from the cluster, once the answers in
        // flight (the removal's own, if it led) had a moment to go out.
        removed = node.removed() => {
            tracing::error!(error = %removed, "stopping: the data dir is left as it is");
            if let Err(e) = node.record_removed().await {
                tracing::error!(error = %e, "recording the removal in the data dir");
            }
            let _ = tokio::time::timeout(REMOVED_GRACE, &mut serving).await;
            node.shutdown().await;
            return Err(removed);
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// Ends the process on a panic in any thread or task, after saying where:
/// a member that lost a task (Raft's core, a proposer, a listener) would
/// otherwise go on looking healthy. A supervisor restarts it.
fn exit_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(panic = %info, "fatal: a task panicked; exiting");
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

/// How long a removed member keeps answering what is in flight.
const REMOVED_GRACE: Duration = Duration::from_millis(500);

/// Exit code after a panic (as a Rust process that panics in `main`).
const PANIC_EXIT_CODE: i32 = 101;

/// Opts this process out of transparent huge pages. Where the kernel uses
/// them for every mapping (`always`), the allocator's sparsely used arenas
/// are backed 2 MiB at a time: an idle node held ~50 MB instead of ~12, and
/// a loaded one tens of MB more than it uses.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // on this process; it touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let args = Args::parse();
    let cfg = match args.to_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("kvd: {e}");
            return ExitCode::from(2);
        }
    };
    let unknown = unknown_env_vars();
    if args.check_config {
        if !unknown.is_empty() {
            eprintln!(
                "kvd: unrecognized environment variables: {}",
                unknown.join(", ")
            );
            return ExitCode::from(2);
        }
        match serde_json::to_string(&cfg) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("kvd: printing the configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    init_tracing(&args.log_level, args.log_format);
    exit_on_panic();
    for var in unknown {
        tracing::warn!(%var, "unrecognized environment variable; is it misspelled?");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cfg));
    // Blocking work (a sync on a failed disk) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;
    use tracing::Subscriber;

    use super::*;

    /// The subscriber tells tracing the most verbose level it logs, so
    /// that below it every crate's log sites are skipped outright, and a
    /// site below it is not enabled.
    #[test]
    fn log_sites_below_the_level_are_skipped_in_every_crate() {
        for (level, hint) in [
            ("info", LevelFilter::INFO),
            ("warn", LevelFilter::WARN),
            ("debug", LevelFilter::DEBUG),
        ] {
            for format in [LogFormat::Text, LogFormat::Json] {
                assert_eq!(
                    subscriber(level, format).max_level_hint(),
                    Some(hint),
                    "--log-level {level}"
                );
            }
        }
        tracing::subscriber::with_default(subscriber("info", LogFormat::Text), || {
            assert!(tracing::enabled!(tracing::Level::INFO));
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "h2::codec", tracing::Level::INFO));
        });
    }
}
