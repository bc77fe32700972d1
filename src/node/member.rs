//! The member itself: the `Node` every service holds, how it starts (data
//! dir, Raft, its background tasks) and what it is made of. Its write path
//! is in `writes.rs`, its read path in `reads.rs`, what it reports about
//! itself in `status.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::bootstrap::{self, Start};
use super::forwarder::Forwarder;
use super::identity::{
    cluster_id_of, publish_member, read_identity, record_identity, stored_node_id, unreadable,
};
use super::leases::min_lease_ttl;
use super::lessor::{self, Lessor};
use super::proposer::Proposer;
use super::read_index::ReadIndex;
use super::status::{leader_of, watch_leader};
use super::to_leader;
use crate::config::{ClusterState, NodeConfig};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::{self, Acks, Inbound, NodeId, PeerClients, Raft};
use crate::store::{KvStore, Limits, MemberInfo, Revision, StateMachine};
use crate::tls::PeerTls;

/// The sled database's directory in a data dir.
pub(super) const SLED_DIR: &str = "raftkv.sled";

/// One running member. Shared by all services behind an `Arc`.
pub struct Node {
    pub(super) id: NodeId,
    pub(super) cluster_id: u64,
    pub(super) raft: Raft,
    pub(super) store: KvStore,
    pub(super) disk: Disk,
    pub(super) data_dir: PathBuf,
    pub(super) request_timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
    /// The applied store revision, for watchers.
    pub(super) revisions: tokio::sync::watch::Receiver<Revision>,
    /// Which watch streams watch which keys.
    pub(super) watchers: super::watchers::Watchers,
    pub(super) election_timeout: Duration,
    pub(super) watch_progress_interval: Duration,
    /// The space quota, in bytes of state.
    pub(super) quota_bytes: u64,
    /// Group commit of this member's proposals as leader.
    pub(super) proposer: Proposer,
    /// Forwards writes to the leader, many per call, while following.
    pub(super) forwarder: Forwarder,
    /// Shared read-index rounds for linearizable reads.
    pub(super) reads: ReadIndex,
    /// What a write may carry, for clients' and forwarded writes alike.
    pub(super) limits: Limits,
    /// Admission of peers' Raft messages.
    pub(super) inbound: Inbound,
    /// TLS on the peer port, if configured.
    pub(super) peer_tls: Option<Arc<PeerTls>>,
    /// Channels to the other members.
    pub(super) peers: PeerClients,
    /// Leases' deadlines, while this member leads.
    pub(super) lessor: Lessor,
    /// Followers' acknowledgements of this member's leadership.
    pub(super) acks: Acks,
    /// kvd's hidden `--test-corrupt-snapshot`: backups come out damaged.
    pub(super) test_corrupt_snapshot: bool,
    /// Auth tokens seen in use here.
    pub(super) tokens: super::auth::Tokens,
    /// bcrypt's cost for new password hashes.
    pub(super) bcrypt_cost: u32,
    /// Whether clients must show a certificate (whose common name is then
    /// their user when they send no token).
    pub(super) client_cert_auth: bool,
    /// Set when the leader tells this member it was removed.
    pub(super) removed: tokio::sync::watch::Sender<bool>,
}

impl Node {
    /// Opens the data dir, starts Raft (forming the cluster if the data dir is
    /// new), and starts the background tasks that log leader changes and
    /// publish this member's client address.
    pub async fn start(cfg: &NodeConfig) -> Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let disk = Disk::open(&cfg.data_dir.join(SLED_DIR))?;
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
        // A joining member without --id: its data dir's, or the one the
        // cluster gave its peer address.
        let mut resolved = cfg.clone();
        if resolved.id == 0 {
            let id = match stored_node_id(&disk)? {
                Some(id) => id,
                None => {
                    bootstrap::learn_id(&peers, &cfg.initial_cluster, &cfg.advertise_peer).await?
                }
            };
            tracing::info!(id, "no --id given: this member's id is {id}");
            resolved.id = id;
            resolved
                .initial_cluster
                .insert(id, cfg.advertise_peer.clone());
        }
        let cfg = &resolved;
        // Whose Raft messages to admit before the membership is known.
        let mut admitted: BTreeSet<NodeId> = cfg.initial_cluster.keys().copied().collect();
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
                    Start::Join {
                        cluster_id,
                        members,
                    } => {
                        admitted.extend(members);
                        (cluster_id, false)
                    }
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
        let proposer = Proposer::start(raft.clone(), metrics.clone());
        let forwarder = Forwarder::start(cfg.id, raft.clone(), peers.clone());
        let reads = {
            let (raft, peers, me, timeout) =
                (raft.clone(), peers.clone(), cfg.id, cfg.request_timeout);
            ReadIndex::start(move || {
                let (raft, peers) = (raft.clone(), peers.clone());
                async move {
                    to_leader::read_index_round(&raft, &peers, me, floor, Instant::now() + timeout)
                        .await
                }
            })
        };
        let watchers =
            super::watchers::Watchers::start(store.clone(), revisions.clone(), metrics.clone());
        let node = Arc::new(Node {
            id: cfg.id,
            cluster_id,
            store,
            disk,
            data_dir: cfg.data_dir.clone(),
            request_timeout: cfg.request_timeout,
            metrics: metrics.clone(),
            watchers,
            revisions,
            election_timeout: cfg.election_timeout,
            watch_progress_interval: cfg.watch_progress_notify_interval,
            quota_bytes: cfg.quota_backend_bytes,
            proposer,
            forwarder,
            reads,
            limits,
            inbound: Inbound::new(
                raft.clone(),
                cfg.id,
                admitted,
                cfg.election_timeout,
                acks.clone(),
                metrics.clone(),
            ),
            acks,
            removed: tokio::sync::watch::Sender::new(false),
            test_corrupt_snapshot: cfg.test_corrupt_snapshot,
            tokens: super::auth::Tokens::new(cfg.auth_token_ttl),
            bcrypt_cost: cfg.bcrypt_cost,
            client_cert_auth: cfg.client_tls.as_ref().is_some_and(|t| t.client_cert_auth),
            raft,
            peer_tls: tls,
            peers: peers.clone(),
            lessor: Lessor::new(min_lease_ttl(cfg.election_timeout)),
        });
        if let Some(key) = cfg.test_corrupt_key.clone() {
            // Once the key is in this member's state (the log may still be
            // replaying), corrupt it here alone: at once if it is there
            // already, so the start-up check below sees it.
            let present = node.store.get(key.as_bytes()).is_some();
            let (store, mut applied) = (node.store.clone(), node.revisions.clone());
            let corrupt = async move {
                while store.get(key.as_bytes()).is_none() {
                    if applied.changed().await.is_err() {
                        return;
                    }
                }
                tracing::warn!(%key, "test-only: corrupting a key in this member's state");
                store.corrupt_for_tests(key.as_bytes());
            };
            if present {
                corrupt.await;
            } else {
                tokio::spawn(corrupt);
            }
        }
        if cfg.corrupt_check_interval.is_some() {
            if let Err(e) = node.check_at_startup().await {
                node.raft.shutdown().await.ok();
                return Err(e);
            }
        }
        tokio::spawn(watch_leader(
            node.id,
            node.raft.metrics(),
            node.metrics.clone(),
        ));
        let info = MemberInfo {
            name: format!("node{}", cfg.id),
            client_urls: cfg
                .advertise_client
                .iter()
                .map(|addr| {
                    let scheme = if cfg.client_tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://{addr}")
                })
                .collect(),
        };
        tokio::spawn(publish_member(node.clone(), info));
        tokio::spawn(lessor::run(node.clone()));
        if let Some(every) = cfg.corrupt_check_interval {
            tokio::spawn(super::corruption::run(node.clone(), every));
        }
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
    /// Whether clients must show a certificate from the trusted CA.
    pub fn client_cert_auth(&self) -> bool {
        self.client_cert_auth
    }

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

    /// The registry of this member's watch streams.
    pub fn watchers(&self) -> &super::watchers::Watchers {
        &self.watchers
    }

    /// Whether this member is the leader right now.
    pub fn is_leader(&self) -> bool {
        leader_of(&self.raft.metrics().borrow()) == Some(self.id)
    }

    /// Whether this member leads and a quorum acknowledged it within a
    /// quarter of an election timeout: no other leader can have been
    /// elected since, for a follower refuses votes for half an election
    /// timeout after it hears from its leader (`raft::inbound`).
    pub fn leads_confirmed(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        leader_of(&m) == Some(self.id)
            && self.acks.quorum_within(
                self.id,
                &m.vote,
                m.membership_config.membership(),
                self.election_timeout / 4,
            )
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

    /// Waits until this member knows a leader, until `deadline`.
    pub(super) async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId> {
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
    let entry = super::proposer::MAX_BATCH_BYTES.saturating_add(command);
    let forward = super::forwarder::MAX_BATCH_BYTES.saturating_add(command);
    entry
        .max(raft::APPEND_BATCH_BYTES)
        .max(raft::SNAPSHOT_CHUNK_BYTES as usize)
        .max(forward)
        .saturating_add(ENVELOPE)
}
