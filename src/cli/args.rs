//! kvctl's command line (clap) and the pure translation of arguments into
//! etcd API requests, with etcdctl's rules for `--prefix` and `--from-key`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::DEFAULT_ENDPOINTS;
use crate::pb;

/// kvctl: a command-line client for raftkv (and any etcd v3 server).
#[derive(Debug, Parser)]
#[command(
    name = "kvctl",
    version,
    after_help = "Exit codes: 0 success; 1 the request failed (or a check or condition did \
                  not hold); 2 bad usage; 3 a transaction on stdin that does not parse; 5 a \
                  watch the server canceled."
)]
pub struct Cli {
    /// Comma-separated server addresses; when one is down the next is tried.
    #[arg(long, global = true, env = "KVCTL_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',', help_heading = "Global options")]
    pub endpoints: Vec<String>,
    /// Print keys and values as hex-escaped bytes (`\xNN`), as etcdctl's
    /// `--hex`; without it they are printed as they are.
    #[arg(long, global = true, help_heading = "Global options")]
    pub hex: bool,
    /// Output format [default: simple; table for `endpoint status`].
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        help_heading = "Global options"
    )]
    pub write_out: Option<Format>,
    /// Time to wait for a connection.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration, help_heading = "Global options")]
    pub dial_timeout: Duration,
    /// Time to wait for a request to complete.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, help_heading = "Global options")]
    pub command_timeout: Duration,
    /// Verify servers' certificates with this CA (PEM); endpoints without
    /// a scheme are then dialed over TLS.
    #[arg(
        long,
        global = true,
        env = "KVCTL_CACERT",
        help_heading = "Global options"
    )]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present, with --key.
    #[arg(
        long = "cert",
        global = true,
        env = "KVCTL_CERT",
        help_heading = "Global options"
    )]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        global = true,
        env = "KVCTL_KEY",
        help_heading = "Global options"
    )]
    pub key_file: Option<PathBuf>,
    /// Authenticate as this user: `NAME:PASSWORD`, or `NAME` (the password
    /// is then asked for, or taken from --password).
    #[arg(
        long = "user",
        global = true,
        env = "KVCTL_USER",
        help_heading = "Global options"
    )]
    pub auth_user: Option<String>,
    /// The password of --user, when --user gives only a name.
    #[arg(
        long = "password",
        global = true,
        env = "KVCTL_PASSWORD",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub auth_password: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Like etcdctl's default output.
    Simple,
    /// Like etcdctl's `-w json`.
    Json,
    /// An aligned table.
    Table,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put a key: `put KEY VALUE` (VALUE is read from stdin if omitted).
    Put(PutArgs),
    /// Get a key or a range of keys.
    Get(GetArgs),
    /// Delete a key or a range of keys.
    Del(DelArgs),
    /// Run a transaction read from stdin, in etcdctl's format: compares, a
    /// blank line, success requests, a blank line, failure requests, a
    /// blank line.
    Txn(TxnArgs),
    /// Print changes to a key or range as they happen. Stop with Ctrl-C.
    Watch(WatchArgs),
    /// Drop the history before a revision.
    Compaction(CompactionArgs),
    /// Load generator: `bench put|range|txn-put`, like etcd's benchmark.
    Bench(BenchArgs),
    /// Checks.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Endpoint commands.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Member commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Lease commands: grant, revoke, timetolive, list, keep-alive.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Authentication: enable (needs a user root with the root role),
    /// disable, status.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Users: add, get, list, delete, passwd, grant-role, revoke-role.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles and their key permissions: add, get, list, delete,
    /// grant-permission, revoke-permission.
    #[command(subcommand)]
    Role(RoleCommand),
    /// An interactive session: any kvctl command per line (put, get, del,
    /// watch, txn...), with line editing and history; `help`, `quit`.
    Shell,
    /// Print a shell completion script: `kvctl completion bash >
    /// /etc/bash_completion.d/kvctl` (or zsh, fish, elvish, powershell).
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Backups in etcd's snapshot format: save, status, restore.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Take a lock: `lock NAME [COMMAND...]` holds it while COMMAND runs
    /// (or until Ctrl-C).
    Lock(LockArgs),
    /// Campaign in an election (`elect NAME PROPOSAL`, leading until
    /// Ctrl-C), or print each leader (`elect --listen NAME`).
    Elect(ElectArgs),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of one member's state to FILE (etcd's snapshot
    /// format). The file is checked through before it is reported saved.
    Save {
        /// Where to write the backup (written as FILE.part until verified).
        file: PathBuf,
    },
    /// Show a snapshot file's hash, revision, total keys and size.
    Status {
        /// A snapshot file (raftkv's or etcd's).
        file: PathBuf,
    },
    /// Seed a new data dir from a snapshot file (raftkv's or etcd's) for one
    /// member of a new cluster; run it once per member, with the same FILE
    /// and --initial-cluster, then start each member on its data dir.
    Restore {
        /// A snapshot file (raftkv's or etcd's).
        file: PathBuf,
        /// The new data dir (must not exist, or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// This member's id in the new cluster.
        #[arg(long)]
        id: u64,
        /// The new cluster: `1=host:port,2=host:port,...` (peer addresses).
        #[arg(long)]
        initial_cluster: String,
        /// Accept a bare database without a SHA-256 trailer (such as a copy
        /// of etcd's member/snap/db).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (raised to the cluster's minimum).
    Grant {
        /// The lease's time to live, in seconds.
        ttl: i64,
    },
    /// Revoke a lease (its keys are deleted).
    Revoke {
        /// The lease's id, hexadecimal (as `lease grant` prints it).
        id: String,
    },
    /// How long a lease has left.
    Timetolive {
        /// The lease's id, hexadecimal.
        id: String,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List the leases.
    List,
    /// Keep a lease alive, printing each renewal (Ctrl-C stops).
    KeepAlive {
        /// The lease's id, hexadecimal.
        id: String,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name (a key prefix).
    pub name: String,
    /// The command to run while holding the lock.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// TTL of the lease that holds the lock, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name (a key prefix).
    pub name: String,
    /// The value to lead with.
    pub proposal: Option<String>,
    /// Print the leader each time it changes instead of campaigning.
    #[arg(short, long)]
    pub listen: bool,
    /// TTL of the lease that holds the leadership, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value; read from stdin (any bytes, less a trailing newline) if
    /// left out.
    #[arg(allow_hyphen_values = true)]
    pub value: Option<String>,
    /// Print the previous key-value pair.
    #[arg(long)]
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    #[arg(long)]
    pub ignore_value: bool,
    /// Attach the key to this lease (hexadecimal, as `lease grant` prints).
    #[arg(long, value_parser = parse_lease_id)]
    pub lease: Option<i64>,
    /// Keep the key's current lease (the key must exist).
    #[arg(long, conflicts_with = "lease")]
    pub ignore_lease: bool,
    /// Only if the key does not exist (compare-and-swap).
    #[arg(long, conflicts_with_all = ["if_version", "if_value", "if_mod_rev"])]
    pub if_absent: bool,
    /// Only if the key is at this version (0: absent).
    #[arg(long)]
    pub if_version: Option<i64>,
    /// Only if the key has this value.
    #[arg(long)]
    pub if_value: Option<String>,
    /// Only if the key was last modified at this revision.
    #[arg(long)]
    pub if_mod_rev: Option<i64>,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Prompt for each section, as `etcdctl txn -i`.
    #[arg(short, long)]
    pub interactive: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Watch every key with prefix KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub prefix: bool,
    /// Start at this revision (replaying what happened since); 0: now.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Also print each key's previous version.
    #[arg(long)]
    pub prev_kv: bool,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// Drop the history before this revision.
    pub revision: i64,
    /// Accepted for etcdctl compatibility; compaction is always physical.
    #[arg(long)]
    pub physical: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Get every key with prefix KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Get every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// At most this many keys.
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Print only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// Print values only.
    #[arg(long)]
    pub print_value_only: bool,
    /// l (linearizable, the default) or s (serializable: served from the
    /// endpoint's local state, possibly stale).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
    /// Read at this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Sort order: ASCEND or DESCEND.
    #[arg(long, value_parser = ["ASCEND", "DESCEND"])]
    pub order: Option<String>,
    /// Sort by: CREATE, KEY, MODIFY, VALUE or VERSION.
    #[arg(long, value_parser = ["CREATE", "KEY", "MODIFY", "VALUE", "VERSION"])]
    pub sort_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Delete every key with prefix KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Delete every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Print the deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Each endpoint's Raft status: leader, term, indexes, revision.
    Status(StatusArgs),
    /// Whether each endpoint serves a linearizable read, and how fast.
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Check every member of the cluster (found through --endpoints).
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show every member of the cluster (found through --endpoints).
    #[arg(long)]
    pub cluster: bool,
    /// Keep refreshing, and print a line at each leader change with how long
    /// the cluster had no leader. Stop with Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Refresh interval for --watch.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// A fixed 60 s put load, judged PASS or FAIL like `etcdctl check perf`.
    Perf(PerfArgs),
}

#[derive(Debug, Args)]
pub struct PerfArgs {
    /// s (150 writes/s, 50 clients), m (1000, 200), l (8000, 500) or xl
    /// (15000, 1000).
    #[arg(long, default_value = "s", value_parser = ["s", "m", "l", "xl"])]
    pub load: String,
    /// How long the load runs.
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    pub duration: Duration,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the cluster's members.
    List,
    /// Add a member (prints the kvd command line that starts it).
    Add {
        /// A name for it (shown in the command line printed).
        name: Option<String>,
        /// Its peer URL, e.g. http://10.0.0.4:2380.
        #[arg(long = "peer-urls")]
        peer_urls: String,
        /// Add it as a learner: it receives the log but does not vote
        /// until promoted.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Change a member's peer URL.
    Update {
        /// The member's id.
        id: u64,
        /// Its new peer URL.
        #[arg(long = "peer-urls")]
        peer_urls: String,
    },
    /// Promote a learner that caught up to a voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Turn authentication on (a user `root` with the role `root` must
    /// exist).
    Enable,
    /// Turn authentication off.
    Disable,
    /// Whether authentication is on, and the auth revision.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: `NAME:PASSWORD`, or `NAME` and the password is asked
    /// for (read from stdin when it is not a terminal).
    Add {
        /// `NAME` or `NAME:PASSWORD`.
        #[arg(value_name = "NAME[:PASSWORD]")]
        name_password: String,
        /// A user without a password (it can authenticate only by a
        /// client certificate naming it).
        #[arg(long)]
        no_password: bool,
    },
    /// Show a user's roles.
    Get {
        name: String,
        /// Show each role's permissions too.
        #[arg(long)]
        detail: bool,
    },
    /// List the users.
    List,
    /// Delete a user.
    Delete { name: String },
    /// Change a user's password (asked for, or read from stdin).
    Passwd { name: String },
    /// Grant a role to a user.
    GrantRole { name: String, role: String },
    /// Revoke a role from a user.
    RevokeRole { name: String, role: String },
}

/// A key permission's keys: `KEY`, `KEY RANGE_END`, `--prefix KEY` or
/// `--from-key KEY`.
#[derive(Debug, Args)]
pub struct PermRange {
    pub key: String,
    pub range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub from_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Add a role.
    Add { name: String },
    /// Show a role's permissions.
    Get { name: String },
    /// List the roles.
    List,
    /// Delete a role (it is revoked from every user).
    Delete { name: String },
    /// Grant a role a permission: `read`, `write` or `readwrite` on a key
    /// or range.
    GrantPermission {
        name: String,
        /// `read`, `write` or `readwrite`.
        perm_type: String,
        #[command(flatten)]
        range: PermRange,
    },
    /// Revoke a permission from a role (the same key or range it was
    /// granted on).
    RevokePermission {
        name: String,
        #[command(flatten)]
        range: PermRange,
    },
}

/// Parses `1500ms`, `2s`, `1m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms or 2s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// etcd's prefix end: the smallest key greater than every key starting with
/// `prefix` (`"\0"`, meaning no end, when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `(key, range_end)` for a key argument with etcdctl's range flags.
fn key_range(
    key: &str,
    range_end: Option<&str>,
    prefix: bool,
    from_key: bool,
) -> (Vec<u8>, Vec<u8>) {
    let key = key.as_bytes().to_vec();
    if prefix {
        if key.is_empty() {
            return (vec![0], vec![0]);
        }
        let end = prefix_end(&key);
        return (key, end);
    }
    if from_key {
        let key = if key.is_empty() { vec![0] } else { key };
        return (key, vec![0]);
    }
    (
        key,
        range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default(),
    )
}

pub fn get_request(a: &GetArgs) -> pb::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    let (key, range_end) = key_range(&a.key, a.range_end.as_deref(), a.prefix, a.from_key);
    let sort_order = match a.order.as_deref() {
        Some("ASCEND") => SortOrder::Ascend,
        Some("DESCEND") => SortOrder::Descend,
        _ => SortOrder::None,
    };
    let sort_target = match a.sort_by.as_deref() {
        Some("CREATE") => SortTarget::Create,
        Some("MODIFY") => SortTarget::Mod,
        Some("VALUE") => SortTarget::Value,
        Some("VERSION") => SortTarget::Version,
        _ => SortTarget::Key,
    };
    pb::RangeRequest {
        key,
        range_end,
        limit: a.limit,
        revision: a.rev,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: a.consistency == "s",
        keys_only: a.keys_only,
        count_only: a.count_only,
        ..Default::default()
    }
}

pub fn put_request(a: &PutArgs, value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: a.key.as_bytes().to_vec(),
        value,
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        lease: a.lease.unwrap_or(0),
        ignore_lease: a.ignore_lease,
    }
}

/// A lease id as etcdctl takes it: hexadecimal.
pub fn parse_lease_id(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|id| id as i64)
        .map_err(|_| format!("bad lease ID {s:?} (hexadecimal, as etcdctl prints it)"))
}

pub fn watch_request(a: &WatchArgs) -> pb::WatchCreateRequest {
    let (key, range_end) = key_range(&a.key, a.range_end.as_deref(), a.prefix, false);
    pb::WatchCreateRequest {
        key,
        range_end,
        start_revision: a.rev,
        prev_kv: a.prev_kv,
        ..Default::default()
    }
}

/// The compare `put --if-*` asks for, if any.
pub fn put_condition(a: &PutArgs) -> Option<pb::Compare> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let (target, union) = if a.if_absent {
        (CompareTarget::Create, TargetUnion::CreateRevision(0))
    } else if let Some(v) = a.if_version {
        (CompareTarget::Version, TargetUnion::Version(v))
    } else if let Some(v) = &a.if_value {
        (
            CompareTarget::Value,
            TargetUnion::Value(v.clone().into_bytes()),
        )
    } else if let Some(r) = a.if_mod_rev {
        (CompareTarget::Mod, TargetUnion::ModRevision(r))
    } else {
        return None;
    };
    Some(pb::Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: a.key.as_bytes().to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

pub fn del_request(a: &DelArgs) -> pb::DeleteRangeRequest {
    let (key, range_end) = key_range(&a.key, a.range_end.as_deref(), a.prefix, a.from_key);
    pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: a.prev_kv,
    }
}

/// What to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    /// Put random or sequential keys.
    Put,
    /// Read keys (written once beforehand).
    Range,
    /// A Txn holding one put per request.
    TxnPut,
    /// Keep-alives: each client keeps a lease of its own alive over one
    /// stream, one renewal at a time.
    LeaseKeepalive,
    /// `--watchers` watchers over `--streams` streams on the key space,
    /// then `--total` puts to it: events delivered per second, and each
    /// event's delay from its put.
    Watch,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub kind: BenchKind,
    /// gRPC connections to open, spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all.
    #[arg(long, default_value_t = 10_000)]
    pub total: usize,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// How many distinct keys to use.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: usize,
    /// Use keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Range consistency: l (linearizable) or s (serializable).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
    /// Send every request to the leader.
    #[arg(long)]
    pub target_leader: bool,
    /// Requests per second in all (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Run for this long instead of `--total` requests (with `--rate`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// bench watch: watchers in all (watcher i watches key i modulo
    /// --key-space-size).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// bench watch: watch streams, spread over the connections.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Put before every key (`check perf` keeps to a prefix of its own).
    #[arg(skip)]
    pub key_prefix: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kvctl").chain(args.iter().copied())).unwrap()
    }

    fn get(args: &[&str]) -> pb::RangeRequest {
        match parse(args).command {
            Command::Get(a) => get_request(&a),
            other => panic!("not a get: {other:?}"),
        }
    }

    #[test]
    fn prefix_end_rules() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b"\x7f"), vec![0x80]);
    }

    #[test]
    fn get_requests() {
        let cases: &[(&[&str], &[u8], &[u8])] = &[
            (&["get", "foo"], b"foo", b""),
            (&["get", "foo", "fop"], b"foo", b"fop"),
            (&["get", "foo", "--prefix"], b"foo", b"fop"),
            (&["get", "", "--prefix"], b"\0", b"\0"),
            (&["get", "a", "--from-key"], b"a", b"\0"),
            (&["get", "", "--from-key"], b"\0", b"\0"),
        ];
        for (args, key, end) in cases {
            let r = get(args);
            assert_eq!(
                (r.key.as_slice(), r.range_end.as_slice()),
                (*key, *end),
                "{args:?}"
            );
            assert!(!r.serializable);
        }
        let r = get(&[
            "get",
            "k",
            "--consistency",
            "s",
            "--limit",
            "3",
            "--keys-only",
            "--rev",
            "4",
        ]);
        assert!(r.serializable && r.keys_only);
        assert_eq!((r.limit, r.revision), (3, 4));
        let r = get(&[
            "get",
            "k",
            "--prefix",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
        ]);
        assert_eq!((r.sort_target, r.sort_order), (3, 2));
    }

    #[test]
    fn conflicting_flags_are_usage_errors() {
        for args in [
            &["kvctl", "get", "a", "--prefix", "--from-key"][..],
            &["kvctl", "get", "a", "b", "--prefix"],
            &["kvctl", "get", "a", "--consistency", "x"],
            &["kvctl", "del", "a", "b", "--from-key"],
            &["kvctl", "-w", "yaml", "get", "a"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn del_and_put_requests() {
        match parse(&["del", "p/", "--prefix", "--prev-kv"]).command {
            Command::Del(a) => {
                let r = del_request(&a);
                assert_eq!(
                    (r.key.as_slice(), r.range_end.as_slice(), r.prev_kv),
                    (&b"p/"[..], &b"p0"[..], true)
                );
            }
            other => panic!("{other:?}"),
        }
        match parse(&["put", "k", "-v-", "--prev-kv"]).command {
            Command::Put(a) => {
                let r = put_request(&a, a.value.clone().unwrap().into_bytes());
                assert_eq!(
                    (r.key.as_slice(), r.value.as_slice(), r.prev_kv),
                    (&b"k"[..], &b"-v-"[..], true)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoints_and_durations() {
        let cli = parse(&[
            "--endpoints",
            "a:1,b:2",
            "--dial-timeout",
            "500ms",
            "get",
            "k",
        ]);
        assert_eq!(cli.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.dial_timeout, Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
