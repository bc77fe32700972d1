//! A running member: its Raft instance, its store, its peers, and the one
//! entry point the gRPC services use to write and to read linearizably.
//!
//! Writes: on the leader, through the group-committing `Proposer`; on a
//! follower, through the `Forwarder`, which sends them to the leader's peer
//! service many per call over the long-lived peer channel. Linearizable
//! reads: the leader confirms its leadership with a quorum (ReadIndex); a
//! follower asks the leader for that read index, waits until it has applied
//! up to it, then reads locally. While there is no leader, both wait for one
//! until the request timeout.
//!
//! Retries happen only when the request certainly had no effect (openraft
//! refused to propose it, or the leader could not be connected to); a request
//! that may have been applied is never sent twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bootstrap::{self, ClusterInfo, Start};
use crate::config::{ClusterState, NodeConfig};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::forwarder::Forwarder;
use crate::leader;
use crate::metrics::Metrics;
use crate::proposer::Proposer;
use crate::raft::typ::RaftMetrics;
use crate::raft::{self, Acks, Inbound, NodeId, PeerClients, Raft};
use crate::read_index::ReadIndex;
use crate::store::{
    check_member_info, check_write, fnv1a_of, Command, KvStore, Limits, MemberInfo, Rejection,
    Response, Revision, StateMachine, Txn, TxnResult,
};
use crate::tls::PeerTls;

/// How long to wait before retrying a request that was not proposed.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);
const IDENTITY_TREE: &str = "identity";

/// A snapshot of this member's view of the cluster, for `Status`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub revision: Revision,
    pub db_size: u64,
}

/// A member as `MemberList` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// One running member. Shared by all services behind an `Arc`.
pub struct Node {
    id: NodeId,
    cluster_id: u64,
    raft: Raft,
    store: KvStore,
    disk: Disk,
    data_dir: PathBuf,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The applied store revision, for watchers.
    revisions: tokio::sync::watch::Receiver<Revision>,
    election_timeout: Duration,
    watch_progress_interval: Duration,
    /// Group commit of this member's proposals as leader.
    proposer: Proposer,
    /// Forwards writes to the leader, many per call, while following.
    forwarder: Forwarder,
    /// Shared read-index rounds for linearizable reads.
    reads: ReadIndex,
    /// What a write may carry, for clients' and forwarded writes alike.
    limits: Limits,
    /// Admission of peers' Raft messages.
    inbound: Inbound,
    /// TLS on the peer port, if configured.
    peer_tls: Option<Arc<PeerTls>>,
}

impl Node {
    /// Opens the data dir, starts Raft (forming the cluster if the data dir is
    /// new), and starts the background tasks that log leader changes and
    /// publish this member's client address.
    pub async fn start(cfg: &NodeConfig) -> Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let disk = Disk::open(&cfg.data_dir.join("raftkv.sled"))?;
        let limits = Limits {
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
        };
        let tls = cfg
            .peer_tls
            .as_ref()
            .map(PeerTls::load)
            .transpose()?
            .map(Arc::new);
        let peers = PeerClients::new(
            cfg.peer_dial_overrides.clone(),
            peer_message_limit(&limits),
            tls.clone(),
        );
        let (cluster_id, form) = match read_identity(&disk, cfg)? {
            Some(cluster_id) => (cluster_id, cfg.initial_cluster_state == ClusterState::New),
            None => {
                let start = bootstrap::decide(
                    cfg.initial_cluster_state,
                    &peers,
                    cfg.id,
                    &cfg.initial_cluster,
                )
                .await?;
                let (cluster_id, form) = match start {
                    Start::Form => (cluster_id_of(&cfg.initial_cluster), true),
                    Start::Join { cluster_id } => (cluster_id, false),
                };
                record_identity(&disk, cfg.id, cluster_id).await?;
                (cluster_id, form)
            }
        };
        let metrics = Arc::new(Metrics::new());
        let sm = StateMachine::open(
            &disk,
            &cfg.data_dir.join(crate::store::SNAPSHOT_DIR),
            metrics.clone(),
        )
        .map_err(unreadable(&cfg.data_dir, "snapshot"))?;
        let store = sm.store();
        let revisions = sm.revisions();
        let acks = Acks::default();
        let (raft, floor) = raft::start(
            cfg,
            form,
            &disk,
            sm,
            peers.clone(),
            acks.clone(),
            metrics.clone(),
        )
        .await
        .map_err(unreadable(&cfg.data_dir, "Raft log"))?;
        let proposer = Proposer::start(raft.clone());
        let forwarder = Forwarder::start(cfg.id, raft.clone(), peers.clone());
        let reads = {
            let (raft, peers, me, timeout) =
                (raft.clone(), peers.clone(), cfg.id, cfg.request_timeout);
            ReadIndex::start(move || {
                let (raft, peers) = (raft.clone(), peers.clone());
                async move {
                    leader::read_index_round(&raft, &peers, me, floor, Instant::now() + timeout)
                        .await
                }
            })
        };
        let node = Arc::new(Node {
            id: cfg.id,
            cluster_id,
            store,
            disk,
            data_dir: cfg.data_dir.clone(),
            request_timeout: cfg.request_timeout,
            metrics: metrics.clone(),
            revisions,
            election_timeout: cfg.election_timeout,
            watch_progress_interval: cfg.watch_progress_notify_interval,
            proposer,
            forwarder,
            reads,
            limits,
            inbound: Inbound::new(
                raft.clone(),
                cfg.id,
                cfg.initial_cluster.keys().copied().collect(),
                cfg.election_timeout,
                acks,
                metrics.clone(),
            ),
            raft,
            peer_tls: tls,
        });
        tokio::spawn(watch_leader(
            node.id,
            node.raft.metrics(),
            node.metrics.clone(),
        ));
        let info = MemberInfo {
            name: format!("node{}", cfg.id),
            client_urls: vec![format!("http://{}", cfg.advertise_client)],
        };
        tokio::spawn(publish_member(node.clone(), info));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The applied state, for reads.
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The Raft instance, for the peer service.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// TLS on the peer port, if configured.
    pub fn peer_tls(&self) -> Option<&PeerTls> {
        self.peer_tls.as_deref()
    }

    /// Where peers' Raft messages are admitted (or refused) before Raft
    /// sees them.
    pub fn inbound(&self) -> &Inbound {
        &self.inbound
    }

    /// Follows the applied store revision.
    pub fn subscribe_revisions(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.revisions.clone()
    }

    /// Whether this member is the leader right now.
    pub fn is_leader(&self) -> bool {
        leader_of(&self.raft.metrics().borrow()) == Some(self.id)
    }

    /// Whether this member knows a leader right now.
    pub fn has_leader(&self) -> bool {
        leader_of(&self.raft.metrics().borrow()).is_some()
    }

    /// Whether this member's Raft core runs: false once it stopped on a
    /// fatal error, until the process exits.
    pub fn is_running(&self) -> bool {
        self.raft.metrics().borrow().running_state.is_ok()
    }

    /// Refuses a read of this member's own state (a serializable read) once
    /// its Raft core has stopped: nothing vouches for that state any more.
    pub fn check_running(&self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(Error::Stopped)
        }
    }

    /// Returns once this member's Raft core has stopped on a fatal error
    /// (a disk that failed, a log entry that cannot be applied), with it;
    /// never while it runs. The process should then end: the member cannot
    /// serve, and a supervisor can restart it.
    pub async fn failed(&self) -> Error {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_and_update().running_state {
                return Error::Fatal(fatal.to_string());
            }
            if rx.changed().await.is_err() {
                return Error::Fatal("the Raft core stopped".into());
            }
        }
    }

    /// The limits every write is checked against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The largest message the peer service accepts.
    pub fn peer_message_limit(&self) -> usize {
        peer_message_limit(&self.limits)
    }

    /// Whether `id` is in this member's view of the Raft membership
    /// (voters and learners).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// The configured election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    /// How often an idle watch with `progress_notify` hears the revision.
    pub fn watch_progress_interval(&self) -> Duration {
        self.watch_progress_interval
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A shared handle on the node's metrics, for recorders outside it.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Sets the metrics read from the node's state, before a scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        {
            let raft = self.raft.metrics();
            let r = raft.borrow();
            let leader = leader_of(&r);
            m.has_leader.set(leader.is_some() as i64);
            m.is_leader.set((leader == Some(self.id)) as i64);
            m.term.set(r.current_term as i64);
            m.applied_index
                .set(r.last_applied.map_or(0, |l| l.index) as i64);
        }
        if let Ok(size) = self.disk.db().size_on_disk() {
            m.db_size.set(size as i64);
        }
        m.data_dir_size.set(dir_size(&self.data_dir) as i64);
        if let Ok(keys) = self.store.key_count() {
            m.keys.set(keys);
        }
        if let Ok(versions) = self.store.version_count() {
            m.versions.set(versions);
        }
        if let Ok(revision) = self.store.revision() {
            m.current_revision.set(revision);
        }
        if let Ok(compacted) = self.store.compacted() {
            m.compact_revision.set(compacted);
        }
    }

    /// Whether this member knows a leader and can serve a linearizable read
    /// within `timeout`; the reason if not.
    pub async fn check_health(&self, timeout: Duration) -> std::result::Result<(), String> {
        if !self.is_running() {
            return Err("the Raft core has stopped".into());
        }
        if !self.has_leader() {
            return Err("no leader".into());
        }
        match tokio::time::timeout(timeout, self.read_barrier()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("linearizable read failed: {e}")),
            Err(_) => Err(format!("linearizable read took longer than {timeout:?}")),
        }
    }

    /// The current Raft term as this member knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Stops Raft and flushes the store.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.disk.sync().await {
            tracing::warn!(error = %e, "flushing the store at shutdown");
        }
    }

    /// Commits `cmd` through Raft (here or on the leader) and returns what
    /// applying it produced. Fails after the request timeout.
    pub async fn write(&self, cmd: Command) -> Result<Response> {
        let result = self.write_inner(&cmd).await;
        match &result {
            Ok(response) => self.catch_up(&cmd, response).await,
            Err(_) => self.metrics.proposals_failed.inc(),
        }
        result
    }

    /// Waits until this member has applied a write the leader applied, as
    /// etcd answers a write only once the member the client called applied
    /// it: a serializable read or a watch sent here next then sees it (and
    /// after a compaction, a watch from before it is refused here too).
    /// Immediate on the leader. The write is committed either way, so after
    /// the request timeout it is reported as done without waiting longer.
    async fn catch_up(&self, cmd: &Command, response: &Response) {
        let revision = match response {
            Response::Put { revision, .. }
            | Response::DeleteRange { revision, .. }
            | Response::Txn { revision, .. }
            | Response::Compacted { revision }
            | Response::Applied { revision } => *revision,
            Response::Rejected(_) | Response::Batch(_) => return,
        };
        let compacted = match (cmd, response) {
            (Command::Compact { revision }, Response::Compacted { .. }) => *revision,
            _ => 0,
        };
        let deadline = Instant::now() + self.request_timeout;
        let mut applied = self.revisions.clone();
        loop {
            // The applied revision as published after each applied batch:
            // no store lock on this path, which every write takes.
            let revision_ok = *applied.borrow_and_update() >= revision;
            let compacted_ok =
                compacted == 0 || self.store.compacted().map_or(true, |c| c >= compacted);
            if revision_ok && compacted_ok {
                return;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        revision,
                        "answering a write this member has not applied yet"
                    );
                    return;
                }
            }
        }
    }

    async fn write_inner(&self, cmd: &Command) -> Result<Response> {
        let deadline = Instant::now() + self.request_timeout;
        // Whether an attempt is out that may have been proposed: if the
        // deadline passes then, the outcome is unknown (`Timeout`);
        // otherwise nothing was proposed and it is `NoLeader`.
        let in_flight = std::sync::atomic::AtomicBool::new(false);
        let attempt = async {
            loop {
                let leader = self.wait_for_leader(deadline).await?;
                in_flight.store(true, std::sync::atomic::Ordering::Relaxed);
                let outcome = if leader == self.id {
                    self.propose(cmd.clone()).await
                } else {
                    self.forwarder.forward(leader, cmd.clone(), deadline).await
                };
                match outcome {
                    Err(e) if e.is_retryable() => {
                        in_flight.store(false, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(RETRY_BACKOFF).await
                    }
                    other => return other,
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, attempt).await;
        result.unwrap_or_else(|_| {
            Err(if in_flight.load(std::sync::atomic::Ordering::Relaxed) {
                Error::Timeout
            } else {
                Error::NoLeader
            })
        })
    }

    /// Returns once this member's applied state includes every write
    /// committed before the call: after it, a local read is linearizable.
    pub async fn read_barrier(&self) -> Result<()> {
        let deadline = Instant::now() + self.request_timeout;
        let attempt = async {
            loop {
                self.wait_for_leader(deadline).await?;
                match self.reads.get().await.map_err(Error::from) {
                    Ok(index) => return self.wait_applied(index).await,
                    Err(e) if e.is_retryable() => tokio::time::sleep(RETRY_BACKOFF).await,
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// Runs a transaction that only reads against this member's applied
    /// state, without proposing it; returns the revision it read at, or
    /// `None` if the transaction writes (it needs a proposal).
    pub fn read_only_txn(
        &self,
        txn: &Txn,
    ) -> Option<(Revision, std::result::Result<TxnResult, Rejection>)> {
        self.store.read_txn(txn)
    }

    /// Proposes `cmd` on this member, which must be the leader, batched
    /// with other writes (see `proposer`).
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        self.proposer.propose(cmd).await
    }

    /// Proposes the writes member `from` forwarded together; each one's
    /// outcome, in order. Each is checked as the client services check
    /// writes (the peer port is trusted no more than the client port), and a
    /// member may announce only itself. Refused as a whole if `from` is not
    /// a member.
    pub async fn propose_forwarded(
        &self,
        from: NodeId,
        cmds: Vec<Command>,
    ) -> Result<Vec<Result<Response>>> {
        if !self.is_member(from) {
            return Err(Error::NotAMember(from));
        }
        let checks: Vec<Result<()>> = cmds
            .iter()
            .map(|cmd| match cmd {
                Command::PublishMember { id, info } if *id == from => check_member_info(info),
                other => check_write(other, &self.limits),
            })
            .collect();
        let valid: Vec<Command> = cmds
            .into_iter()
            .zip(&checks)
            .filter(|(_, check)| check.is_ok())
            .map(|(cmd, _)| cmd)
            .collect();
        let mut proposed = self.proposer.propose_many(valid).await.into_iter();
        Ok(checks
            .into_iter()
            .map(|check| match check {
                Ok(()) => proposed.next().unwrap_or(Err(Error::Stopped)),
                Err(e) => Err(e),
            })
            .collect())
    }

    /// The read index this member, as leader, confirms for a follower's
    /// read; rounds are shared with the leader's own reads.
    pub async fn read_index(&self) -> Result<u64> {
        if !self.is_leader() {
            return Err(Error::NotLeader);
        }
        self.reads.get().await.map_err(Error::from)
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        if self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .is_some_and(|l| l.index >= index)
        {
            return Ok(());
        }
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| Error::Stopped)
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(leader) = leader_of(&rx.borrow_and_update()) {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(Error::NoLeader),
                Ok(Err(_)) => return Err(Error::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// This member's status.
    pub fn status(&self) -> Result<NodeStatus> {
        let m = self.raft.metrics().borrow().clone();
        Ok(NodeStatus {
            leader: leader_of(&m),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            revision: self.store.revision()?,
            db_size: self.disk.db().size_on_disk()?,
        })
    }

    /// What this member knows of its cluster, for a member starting on an
    /// empty data dir (see `bootstrap`).
    pub fn cluster_info(&self) -> Result<ClusterInfo> {
        let published = self.store.members()?;
        let members = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        Ok(ClusterInfo {
            cluster_id: self.cluster_id,
            members,
            started: published
                .into_iter()
                .filter(|(_, info)| !info.client_urls.is_empty())
                .map(|(id, _)| id)
                .collect(),
        })
    }

    /// Every member: Raft's membership joined with what members published.
    pub fn members(&self) -> Result<Vec<MemberView>> {
        let published = self.store.members()?;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let scheme = if self.peer_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut members: BTreeMap<NodeId, MemberView> = BTreeMap::new();
        for (id, node) in membership.nodes() {
            let info = published.get(id).cloned().unwrap_or_default();
            members.insert(
                *id,
                MemberView {
                    id: *id,
                    name: info.name,
                    peer_urls: vec![format!("{scheme}://{}", node.addr)],
                    client_urls: info.client_urls,
                    is_learner: learners.contains(id),
                },
            );
        }
        Ok(members.into_values().collect())
    }
}

/// The largest message a member sends or accepts on the peer port: the
/// largest of an AppendEntries (entries up to `APPEND_BATCH_BYTES`, or one
/// entry: a proposal batch plus the write that crossed its limit), a
/// snapshot chunk, and a follower's batch of forwarded writes; plus room for
/// what travels with them (votes, log ids, the membership). Every member
/// derives it from `--max-request-bytes`, which should match across the
/// cluster.
pub fn peer_message_limit(limits: &Limits) -> usize {
    const ENVELOPE: usize = 1 << 20;
    let command = limits.max_command_bytes();
    let entry = crate::proposer::MAX_BATCH_BYTES.saturating_add(command);
    let forward = crate::forwarder::MAX_BATCH_BYTES.saturating_add(command);
    entry
        .max(raft::APPEND_BATCH_BYTES)
        .max(raft::SNAPSHOT_CHUNK_BYTES as usize)
        .max(forward)
        .saturating_add(ENVELOPE)
}

/// The leader `m` knows, if its Raft core runs: a stopped core's metrics
/// keep the last leader it saw.
pub fn leader_of(m: &RaftMetrics) -> Option<NodeId> {
    m.running_state.as_ref().ok().and(m.current_leader)
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Names the part of `data_dir` whose bytes could not be decoded: they were
/// written in a format this build does not read.
fn unreadable<'a>(data_dir: &'a Path, what: &'a str) -> impl FnOnce(Error) -> Error + 'a {
    move |e| match e {
        Error::Codec(e) => Error::DataDir(format!(
            "{}: cannot decode its {what} ({e}); was it written by an incompatible raftkv version?",
            data_dir.display()
        )),
        other => other,
    }
}

/// Reads this data dir's identity: its cluster's id, or `None` for an empty
/// data dir. Refuses a data dir that belongs to another node id.
fn read_identity(disk: &Disk, cfg: &NodeConfig) -> Result<Option<u64>> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    let read_u64 = |key: &str| -> Result<Option<u64>> {
        Ok(tree.get(key)?.map(|v| {
            let bytes: [u8; 8] = v.as_ref().try_into().unwrap_or_default();
            u64::from_be_bytes(bytes)
        }))
    };
    if let Some(id) = read_u64("node_id")? {
        if id != cfg.id {
            return Err(Error::DataDir(format!(
                "{} belongs to node {id}, not --id {}",
                cfg.data_dir.display(),
                cfg.id
            )));
        }
        return read_u64("cluster_id")?
            .map(Some)
            .ok_or_else(|| Error::DataDir("identity has no cluster id".into()));
    }
    Ok(None)
}

/// Records that this data dir belongs to member `id` of cluster
/// `cluster_id`, durably, before anything else is written to it.
async fn record_identity(disk: &Disk, id: NodeId, cluster_id: u64) -> Result<()> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    tree.insert("node_id", &id.to_be_bytes())?;
    tree.insert("cluster_id", &cluster_id.to_be_bytes())?;
    disk.sync().await
}

/// A cluster id every member of a new cluster derives alike from
/// `--initial-cluster` (FNV-1a over its canonical text).
fn cluster_id_of(members: &BTreeMap<NodeId, String>) -> u64 {
    let canonical: Vec<String> = members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect();
    fnv1a_of(canonical.join(",").as_bytes())
}

/// Logs when this member becomes leader and whenever it sees the leader
/// change, and counts the changes to a new leader, as etcd does.
async fn watch_leader(
    id: NodeId,
    mut rx: tokio::sync::watch::Receiver<RaftMetrics>,
    metrics: Arc<Metrics>,
) {
    let mut last: Option<NodeId> = None;
    loop {
        let (leader, term) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            let show = |l: Option<NodeId>| l.map_or_else(|| "none".to_string(), |l| l.to_string());
            if leader == Some(id) {
                tracing::info!(term, previous = %show(last), "this node became leader");
            } else {
                tracing::info!(old = %show(last), new = %show(leader), term, "leader changed");
            }
            if leader.is_some() {
                metrics.leader_changes.inc();
            }
            last = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Publishes this member's name and client URL through Raft until the
/// replicated state has them, as etcd members publish their attributes.
async fn publish_member(node: Arc<Node>, info: MemberInfo) {
    loop {
        match node.store.members() {
            Ok(members) if members.get(&node.id) == Some(&info) => return,
            _ => {}
        }
        let cmd = Command::PublishMember {
            id: node.id,
            info: info.clone(),
        };
        match node.write(cmd).await {
            Ok(_) => {
                tracing::info!(client_urls = ?info.client_urls, "published member attributes");
                return;
            }
            Err(Error::Stopped) => return,
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_stable_and_depends_on_members() {
        let a = BTreeMap::from([
            (1, "127.0.0.1:2380".to_string()),
            (2, "127.0.0.1:22380".to_string()),
        ]);
        let mut b = a.clone();
        assert_eq!(cluster_id_of(&a), cluster_id_of(&b));
        b.insert(3, "127.0.0.1:32380".into());
        assert_ne!(cluster_id_of(&a), cluster_id_of(&b));
        assert_ne!(cluster_id_of(&a), 0);
    }
}
