//! What a member reports about itself and its cluster: `Status`, the
//! members, health, the metrics read from its state, and the log of leader
//! changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::bootstrap::ClusterInfo;
use super::Node;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::raft::typ::RaftMetrics;
use crate::raft::NodeId;
use crate::store::Revision;

/// A snapshot of this member's view of the cluster, for `Status`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub revision: Revision,
    /// The size of the state the store holds (`KvStore::size_bytes`).
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

impl Node {
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
        m.db_size
            .set(i64::try_from(self.store.size_bytes()).unwrap_or(i64::MAX));
        m.data_dir_size.set(dir_size(&self.data_dir) as i64);
        m.keys.set(self.store.key_count());
        m.versions.set(self.store.version_count());
        m.current_revision.set(self.store.revision());
        m.compact_revision.set(self.store.compacted());
    }

    /// Whether this member knows a leader and can serve a linearizable read
    /// within `timeout`; the reason if not.
    /// Whether this member is alive: its Raft core runs, so it serves
    /// serializable reads (etcd's `/livez`).
    pub fn check_live(&self) -> std::result::Result<(), String> {
        if self.is_running() {
            Ok(())
        } else {
            Err("the Raft core has stopped".into())
        }
    }

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

    /// This member's status.
    pub fn status(&self) -> Result<NodeStatus> {
        let m = self.raft.metrics().borrow().clone();
        Ok(NodeStatus {
            leader: leader_of(&m),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            revision: self.store.revision(),
            db_size: self.store.size_bytes(),
        })
    }

    /// Whether this member is a learner in its view of the membership.
    pub fn is_learner(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .learner_ids()
            .any(|id| id == self.id)
    }

    /// What this member knows of its cluster, for a member starting on an
    /// empty data dir (see `bootstrap`).
    pub fn cluster_info(&self) -> Result<ClusterInfo> {
        let published = self.store.members();
        let addrs: BTreeMap<NodeId, String> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        Ok(ClusterInfo {
            cluster_id: self.cluster_id,
            members: addrs.keys().copied().collect(),
            addrs,
            started: published
                .into_iter()
                .filter(|(_, info)| !info.client_urls.is_empty())
                .map(|(id, _)| id)
                .collect(),
        })
    }

    /// Every member: Raft's membership joined with what members published.
    pub fn members(&self) -> Result<Vec<MemberView>> {
        let published = self.store.members();
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

/// The leader `m` knows, if its Raft core runs: a stopped core's metrics
/// keep the last leader it saw.
pub fn leader_of(m: &RaftMetrics) -> Option<NodeId> {
    m.running_state.as_ref().ok().and(m.current_leader)
}

/// Total size of the files under `dir`.
pub(super) fn dir_size(dir: &Path) -> u64 {
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

/// Logs when this member becomes leader and whenever it sees a new leader
/// elected, one line per election (`leader changed old=3 new=1 term=2`),
/// and counts the changes to a new leader, as etcd does. The gaps without
/// a leader in between are not changes; nor is this member's own vote
/// while it campaigns (openraft names a candidate the leader of its own
/// uncommitted vote): it leads once it has won.
pub(super) async fn watch_leader(
    id: NodeId,
    mut rx: tokio::sync::watch::Receiver<RaftMetrics>,
    metrics: Arc<Metrics>,
) {
    // The last leader elected, and in which term.
    let mut last: Option<(NodeId, u64)> = None;
    loop {
        let elected = {
            let m = rx.borrow_and_update();
            match m.current_leader {
                Some(l) if l == id && m.state != openraft::ServerState::Leader => None,
                Some(l) => Some((l, m.current_term)),
                None => None,
            }
        };
        if let Some((leader, term)) = elected.filter(|e| Some(*e) != last) {
            let show = last.map_or_else(|| "none".to_string(), |(l, _)| l.to_string());
            if leader == id {
                tracing::info!(term, previous = %show, "this node became leader");
            } else {
                tracing::info!(old = %show, new = leader, term, "leader changed");
            }
            if last.is_none_or(|(l, _)| l != leader) {
                metrics.leader_changes.inc();
            }
            last = Some((leader, term));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
