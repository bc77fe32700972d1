//! `kvd`, the raftkv server: parses flags (each also read from `KVD_<FLAG>`),
//! builds a `NodeConfig`, sets up logging and runs the node until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raftkv::config::{self, NodeConfig};
use raftkv::node::Node;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// raftkv server: a Raft-replicated key-value store with etcd's v3 API.
#[derive(Debug, Parser)]
#[command(name = "kvd", version)]
struct Args {
    /// This member's id (nonzero, unique in the cluster).
    #[arg(long, env = "KVD_ID")]
    id: u64,
    /// Directory for the Raft log, snapshots and the key-value state.
    #[arg(long, env = "KVD_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for etcd API clients.
    #[arg(long, env = "KVD_LISTEN_CLIENT", default_value = "127.0.0.1:2379")]
    listen_client: SocketAddr,
    /// Address for Raft traffic from other members.
    #[arg(long, env = "KVD_LISTEN_PEER", default_value = "127.0.0.1:2380")]
    listen_peer: SocketAddr,
    /// Client address to publish to the cluster [default: --listen-client].
    #[arg(long, env = "KVD_ADVERTISE_CLIENT")]
    advertise_client: Option<String>,
    /// Peer address other members reach this one at [default: --listen-peer].
    #[arg(long, env = "KVD_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// Members of a new cluster, `ID=HOST:PEERPORT,...`. Ignored once the
    /// data dir holds Raft state. [default: just this member]
    #[arg(long, env = "KVD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
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
    /// How long a request may wait for a leader or a commit, in milliseconds
    /// [default: 5000 + 2 x --election-timeout].
    #[arg(long, env = "KVD_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// Log level (error, warn, info, debug, trace) or a full tracing filter.
    #[arg(long, env = "KVD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

impl Args {
    fn into_config(self) -> Result<NodeConfig, config::ConfigError> {
        let mut cfg = NodeConfig::new(self.id, self.data_dir, self.listen_client, self.listen_peer);
        if let Some(addr) = self.advertise_client {
            cfg.advertise_client = config::normalize_addr(&addr);
        }
        if let Some(addr) = self.advertise_peer {
            cfg.advertise_peer = config::normalize_addr(&addr);
        }
        if let Some(members) = self.initial_cluster {
            cfg.initial_cluster = config::parse_initial_cluster(&members)?;
        } else {
            cfg.initial_cluster = [(cfg.id, cfg.advertise_peer.clone())].into();
        }
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        cfg.election_timeout = Duration::from_millis(self.election_timeout);
        cfg.request_timeout = match self.request_timeout {
            Some(ms) => Duration::from_millis(ms),
            None => config::default_request_timeout(cfg.election_timeout),
        };
        cfg.snapshot_count = self.snapshot_count;
        cfg.max_request_bytes = self.max_request_bytes;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn init_tracing(level: &str) {
    let directives = if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        // openraft, sled and the HTTP/2 stack are chatty at info.
        format!("{level},openraft=error,sled=warn,h2=warn,tower=warn,hyper=warn")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

async fn run(cfg: NodeConfig) -> raftkv::Result<()> {
    // Bind first: a port in use fails fast, before any data is touched.
    let client = TcpListener::bind(cfg.listen_client).await?;
    let peer = TcpListener::bind(cfg.listen_peer).await?;
    let node = Node::start(&cfg).await?;
    tracing::info!(id = cfg.id, data_dir = %cfg.data_dir.display(), "kvd started");
    raftkv::server::serve(node.clone(), &cfg, client, peer, shutdown_signal()).await?;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_level);
    let cfg = match args.into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("kvd: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvd: {e}");
            ExitCode::FAILURE
        }
    }
}
