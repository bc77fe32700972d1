//! `NodeConfig`: everything a `kvd` node needs to start, as plain data.
//!
//! Built by `src/bin/kvd.rs` from flags and `KVD_*` variables (clap lives only
//! there), or directly by tests; `validate()` checks it as a whole before the
//! node touches its data dir. It serializes as `kvd --check-config`
//! prints it (durations in milliseconds).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// A member's id: etcd's member id, our `--id`.
pub type NodeId = u64;

/// Default `--max-request-bytes`: etcd's 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// Default `--max-txn-ops`, as etcd's.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// How often the leader compares members' data by default.
pub const DEFAULT_CORRUPT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// etcd's default space quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;
/// Default `--snapshot-count`.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 10_000;

/// etcd's `--initial-cluster-state`: how a member on an empty data dir
/// starts (see `bootstrap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Form the cluster of `--initial-cluster` with the other members.
    #[default]
    New,
    /// Join the cluster that runs; never form one.
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(ConfigError(format!(
                "--initial-cluster-state must be new or existing, not {other:?}"
            ))),
        }
    }
}

/// TLS on the peer port (etcd's `--peer-*` TLS flags). Loaded and checked
/// by `tls::PeerTls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerTlsConfig {
    /// This member's certificate, for serving and for dialing peers.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA whose certificates this member trusts.
    pub trusted_ca_file: PathBuf,
    /// Whether a peer must present a certificate from that CA.
    pub client_cert_auth: bool,
    /// If set, a peer certificate's common name must be one of these.
    pub allowed_cn: Vec<String>,
    /// If set, one of a peer certificate's DNS or IP names must be one of
    /// these.
    pub allowed_hostname: Vec<String>,
}

/// TLS on the client port (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`). Loaded, checked and
/// reloaded by `server::tls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientTlsConfig {
    /// The certificate (chain) this member shows clients, and its key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA whose certificates clients must present, with
    /// `client_cert_auth`.
    pub trusted_ca_file: Option<PathBuf>,
    /// Whether a client must present a certificate from that CA.
    pub client_cert_auth: bool,
}

/// A duration as whole milliseconds, as the flags take it.
fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn millis_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_u64(0),
    }
}

/// The configuration was rejected; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// A node's full configuration.
#[derive(Debug, Clone, Serialize)]
pub struct NodeConfig {
    /// This node's id; nonzero and unique in the cluster. 0 only for a
    /// member joining a running cluster, which learns its id from it.
    pub id: NodeId,
    /// Where the Raft log, vote, snapshots and state machine live.
    pub data_dir: PathBuf,
    /// Address the etcd-compatible client API listens on.
    pub listen_client: SocketAddr,
    /// Address the node-to-node Raft service listens on.
    pub listen_peer: SocketAddr,
    /// An extra HTTP listener for `/health`, `/metrics` and the rest (the
    /// client port serves them too), as etcd's `--listen-metrics-urls`.
    pub listen_metrics: Option<SocketAddr>,
    /// Client addresses clients should use for this node, each reachable
    /// from some network (`MemberList` publishes them all, in this order).
    pub advertise_client: Vec<String>,
    /// Peer address other nodes should use for this node.
    pub advertise_peer: String,
    /// Members of a new cluster: id to peer address. Used only when the data
    /// dir is empty.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Whether a member on an empty data dir forms a new cluster or joins
    /// a running one.
    pub initial_cluster_state: ClusterState,
    /// TLS for peer traffic, both ways; `None` is plaintext.
    pub peer_tls: Option<PeerTlsConfig>,
    /// TLS on the client port; `None` is plaintext.
    pub client_tls: Option<ClientTlsConfig>,
    /// How often the leader sends heartbeats.
    #[serde(rename = "heartbeat_interval_ms", serialize_with = "millis")]
    pub heartbeat_interval: Duration,
    /// How long a follower waits without a heartbeat before it campaigns.
    #[serde(rename = "election_timeout_ms", serialize_with = "millis")]
    pub election_timeout: Duration,
    /// Applied entries between two snapshots.
    pub snapshot_count: u64,
    /// Test-only: addresses to dial instead of some advertised peer
    /// addresses (advertised -> dialed), e.g. a fault-injecting proxy.
    pub peer_dial_overrides: BTreeMap<String, String>,
    /// Most operations in one branch of a transaction.
    pub max_txn_ops: usize,
    /// How often the leader compares members' data (`None`: never).
    #[serde(rename = "corrupt_check_interval_ms", serialize_with = "millis_opt")]
    pub corrupt_check_interval: Option<Duration>,
    /// Test-only: a key whose value this member corrupts in its own state
    /// at start, for the corruption check to find.
    pub test_corrupt_key: Option<String>,
    /// Test-only: backups this member streams are damaged on purpose, for
    /// `snapshot save`'s verification to catch.
    pub test_corrupt_snapshot: bool,
    /// The space quota: past this many bytes of state (`KvStore::size_bytes`),
    /// writes that add data raise the NOSPACE alarm and are refused.
    pub quota_backend_bytes: u64,
    /// How often an idle watch that asked for progress notifications gets
    /// one.
    #[serde(
        rename = "watch_progress_notify_interval_ms",
        serialize_with = "millis"
    )]
    pub watch_progress_notify_interval: Duration,
    /// How long an auth token stays valid after it was issued or last used
    /// on this member (etcd's `--auth-token-ttl`).
    #[serde(rename = "auth_token_ttl_s", serialize_with = "secs")]
    pub auth_token_ttl: Duration,
    /// bcrypt's cost for new password hashes (etcd's `--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// Automatic compaction of the history, if any.
    pub auto_compaction: Option<AutoCompaction>,
    /// Largest encoded client request accepted.
    pub max_request_bytes: usize,
    /// How long a client request may wait for a leader, a commit or a read
    /// confirmation before it fails.
    #[serde(rename = "request_timeout_ms", serialize_with = "millis")]
    pub request_timeout: Duration,
}

impl NodeConfig {
    /// A single-node configuration with etcd's defaults, for tests and as a
    /// starting point.
    pub fn new(
        id: NodeId,
        data_dir: PathBuf,
        listen_client: SocketAddr,
        listen_peer: SocketAddr,
    ) -> Self {
        let election_timeout = Duration::from_millis(1000);
        NodeConfig {
            id,
            data_dir,
            listen_client,
            listen_peer,
            listen_metrics: None,
            advertise_client: vec![listen_client.to_string()],
            advertise_peer: listen_peer.to_string(),
            initial_cluster: BTreeMap::from([(id, listen_peer.to_string())]),
            initial_cluster_state: ClusterState::New,
            peer_tls: None,
            client_tls: None,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            peer_dial_overrides: BTreeMap::new(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            corrupt_check_interval: Some(DEFAULT_CORRUPT_CHECK_INTERVAL),
            test_corrupt_key: None,
            test_corrupt_snapshot: false,
            watch_progress_notify_interval: Duration::from_secs(600),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            auto_compaction: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: default_request_timeout(election_timeout),
        }
    }

    /// Checks the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if self.id == 0 && self.initial_cluster_state != ClusterState::Existing {
            return fail("--id must be nonzero".into());
        }
        if self.heartbeat_interval.is_zero() {
            return fail("--heartbeat-interval must be positive".into());
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return fail(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        if self.auth_token_ttl.is_zero() {
            return fail("--auth-token-ttl must be positive".into());
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            return fail(format!(
                "--bcrypt-cost is {}; bcrypt takes 4 to 31",
                self.bcrypt_cost
            ));
        }
        if self.watch_progress_notify_interval.is_zero() {
            return fail("--watch-progress-notify-interval must be positive".into());
        }
        if self.snapshot_count == 0 {
            return fail("--snapshot-count must be positive".into());
        }
        if self.max_request_bytes == 0 {
            return fail("--max-request-bytes must be positive".into());
        }
        let mut listeners = vec![
            ("--listen-client", self.listen_client),
            ("--listen-peer", self.listen_peer),
        ];
        listeners.extend(self.listen_metrics.map(|a| ("--listen-metrics", a)));
        for (i, (a, addr_a)) in listeners.iter().enumerate() {
            for (b, addr_b) in &listeners[i + 1..] {
                if addr_a == addr_b {
                    return fail(format!("{a} and {b} must differ (both {addr_a})"));
                }
            }
        }
        if self.initial_cluster.contains_key(&0) {
            return fail("--initial-cluster: member ids must be nonzero".into());
        }
        if self.advertise_client.is_empty() {
            return fail("--advertise-client: give at least one address".into());
        }
        let advertised = self
            .advertise_client
            .iter()
            .map(|a| ("--advertise-client", a))
            .chain([("--advertise-peer", &self.advertise_peer)]);
        for (flag, addr) in advertised {
            check_host_port(addr).map_err(|e| ConfigError(format!("{flag}: {e}")))?;
            let host = addr.rsplit_once(':').map_or("", |(h, _)| h);
            if matches!(host, "0.0.0.0" | "[::]" | "::") {
                return fail(format!(
                    "{flag} is {addr}, which others cannot dial: set it to this node's reachable address"
                ));
            }
        }
        match self.initial_cluster.get(&self.id) {
            // A joining member that learns its id from the cluster.
            None if self.id == 0 && self.initial_cluster_state == ClusterState::Existing => {}
            None => {
                return fail(format!(
                    "--initial-cluster does not list this node's --id {}",
                    self.id
                ))
            }
            Some(addr) if *addr != self.advertise_peer => {
                return fail(format!(
                    "--initial-cluster gives node {} the peer address {addr}, but --advertise-peer is {}",
                    self.id, self.advertise_peer
                ))
            }
            Some(_) => {}
        }
        let mut seen = BTreeMap::new();
        for (id, addr) in &self.initial_cluster {
            if let Some(other) = seen.insert(addr, id) {
                return fail(format!(
                    "--initial-cluster gives nodes {other} and {id} the same address {addr}"
                ));
            }
        }
        Ok(())
    }
}

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoCompaction {
    /// Keep this many revisions.
    Revision(i64),
    /// Keep this much time (milliseconds, when printed).
    Periodic(#[serde(serialize_with = "millis")] Duration),
}

/// Parses `--auto-compaction-retention` for `mode`: a revision count, or a
/// duration (`30m`, `1h`, `90s`; a bare number means hours, as in etcd).
/// "0" turns auto-compaction off.
pub fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<AutoCompaction>, String> {
    let retention = retention.trim();
    match mode {
        "revision" => {
            let n: i64 = retention.parse().map_err(|_| {
                format!("--auto-compaction-retention {retention:?} is not a revision count")
            })?;
            if n < 0 {
                return Err("--auto-compaction-retention must not be negative".into());
            }
            Ok((n > 0).then_some(AutoCompaction::Revision(n)))
        }
        "periodic" => {
            let (number, unit) = retention.split_at(
                retention
                    .find(|c: char| c.is_alphabetic())
                    .unwrap_or(retention.len()),
            );
            let n: f64 = number.parse().map_err(|_| {
                format!(
                    "--auto-compaction-retention {retention:?} is not a duration like 30m or 1h"
                )
            })?;
            let secs = match unit {
                "" | "h" => n * 3600.0,
                "m" => n * 60.0,
                "s" => n,
                "ms" => n / 1000.0,
                _ => {
                    return Err(format!(
                        "--auto-compaction-retention {retention:?}: unknown unit {unit:?}"
                    ))
                }
            };
            if secs < 0.0 {
                return Err("--auto-compaction-retention must not be negative".into());
            }
            Ok((secs > 0.0).then(|| AutoCompaction::Periodic(Duration::from_secs_f64(secs))))
        }
        other => Err(format!(
            "--auto-compaction-mode {other:?}: use revision or periodic"
        )),
    }
}

/// etcd's request timeout: 5 s plus two election timeouts.
pub fn default_request_timeout(election_timeout: Duration) -> Duration {
    Duration::from_secs(5) + election_timeout * 2
}

/// The `A=B` items of a comma-separated `flag` value, each side trimmed;
/// `form` names the expected shape in the error.
fn pairs<'a>(s: &'a str, flag: &str, form: &str) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            part.split_once('=')
                .map(|(a, b)| (a.trim(), b.trim()))
                .ok_or_else(|| ConfigError(format!("{flag}: '{part}' is not of the form {form}")))
        })
        .collect()
}

/// Parses `--initial-cluster`: `1=host:port,2=host:port,...`. A scheme such as
/// `http://` is accepted and dropped, so etcd-style URLs work too.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for (id, addr) in pairs(s, "--initial-cluster", "ID=HOST:PORT")? {
        let id: NodeId = id.parse().map_err(|_| {
            ConfigError(format!(
                "--initial-cluster: '{id}' is not a numeric member id"
            ))
        })?;
        let addr = normalize_addr(addr);
        check_host_port(&addr)
            .map_err(|e| ConfigError(format!("--initial-cluster: member {id}: {e}")))?;
        if members.insert(id, addr).is_some() {
            return Err(ConfigError(format!(
                "--initial-cluster lists member {id} twice"
            )));
        }
    }
    if members.is_empty() {
        return Err(ConfigError("--initial-cluster is empty".into()));
    }
    Ok(members)
}

/// Parses kvd's test-only `--peer-dial-override`:
/// `ADVERTISED=DIALED,...`, both `host:port` (a peer advertised at the
/// first is dialed at the second, whatever its member id).
pub fn parse_dial_overrides(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut overrides = BTreeMap::new();
    for (from, to) in pairs(s, "--peer-dial-override", "HOST:PORT=HOST:PORT")? {
        let (from, to) = (normalize_addr(from), normalize_addr(to));
        for addr in [&from, &to] {
            check_host_port(addr).map_err(|e| ConfigError(format!("--peer-dial-override: {e}")))?;
        }
        overrides.insert(from, to);
    }
    Ok(overrides)
}

/// Drops a leading `http://` or `https://` and a trailing `/` from an
/// address (whether peers use TLS is `--peer-cert-file`'s to say).
pub fn normalize_addr(addr: &str) -> String {
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    addr.trim_end_matches('/').to_string()
}

/// The host of a `host:port` address, without an IPv6 literal's brackets.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks that `addr` is `host:port` with a numeric port.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{addr}' has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("'{addr}' has no valid port"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        let mut c = NodeConfig::new(
            1,
            "/tmp/x".into(),
            "127.0.0.1:2379".parse().unwrap(),
            "127.0.0.1:2380".parse().unwrap(),
        );
        c.initial_cluster =
            parse_initial_cluster("1=127.0.0.1:2380,2=127.0.0.1:22380,3=http://127.0.0.1:32380/")
                .unwrap();
        c
    }

    #[test]
    fn parses_initial_cluster() {
        let m = cfg().initial_cluster;
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "127.0.0.1:32380");
        assert_eq!(normalize_addr("https://node2:2380/"), "node2:2380");
        assert_eq!(host_of("node2:2380"), "node2");
        assert_eq!(host_of("[::1]:2380"), "::1");
        for bad in ["", "1", "x=a:1", "1=a", "1=a:b", "1=a:1,1=b:2", "1=:5"] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad:?} should fail");
        }
    }

    /// `--check-config` prints every field, durations in milliseconds.
    #[test]
    fn serializes_every_field() {
        let json = serde_json::to_value(cfg()).unwrap();
        let map = json.as_object().unwrap();
        for key in [
            "max_txn_ops",
            "quota_backend_bytes",
            "watch_progress_notify_interval_ms",
            "request_timeout_ms",
            "initial_cluster_state",
            "peer_tls",
        ] {
            assert!(map.contains_key(key), "{key} missing from {json}");
        }
        assert_eq!(json["election_timeout_ms"], 1000);
        assert_eq!(json["initial_cluster"]["3"], "127.0.0.1:32380");
    }

    #[test]
    fn validates() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.id = 0;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.id = 4;
        assert!(c.validate().unwrap_err().0.contains("does not list"));
        let mut c = cfg();
        c.advertise_peer = "127.0.0.1:9".into();
        assert!(c.validate().unwrap_err().0.contains("--advertise-peer"));
        let mut c = cfg();
        c.election_timeout = Duration::from_millis(300);
        assert!(c.validate().unwrap_err().0.contains("5 times"));
        let mut c = cfg();
        c.advertise_client = vec!["node1:2379".into(), "0.0.0.0:2379".into()];
        assert!(c.validate().unwrap_err().0.contains("--advertise-client"));
        let mut c = cfg();
        c.initial_cluster.insert(2, "127.0.0.1:2380".into());
        assert!(c.validate().unwrap_err().0.contains("same address"));
    }

    #[test]
    fn parses_retention_like_etcd() {
        assert_eq!(
            parse_auto_compaction("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert_eq!(parse_auto_compaction("revision", "0"), Ok(None));
        assert_eq!(
            parse_auto_compaction("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            parse_auto_compaction("periodic", "30m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(parse_auto_compaction("periodic", "0"), Ok(None));
        assert!(parse_auto_compaction("revision", "1h").is_err());
        assert!(parse_auto_compaction("periodic", "5x").is_err());
        assert!(parse_auto_compaction("weekly", "1").is_err());
    }
}
