//! How a member on an empty data dir starts: it forms a new cluster, or
//! joins one that runs, as etcd's `--initial-cluster-state new|existing`.
//!
//! - `existing`: the member never forms a cluster. It asks the members in
//!   `--initial-cluster` about the cluster until one answers, takes the
//!   cluster's id, and waits for the leader to send it the log (or a
//!   snapshot, once the log was purged). This is how a member whose disk
//!   was replaced rejoins.
//! - `new`: before forming the cluster, it asks the others whether one
//!   already runs that knows this member as started (it has published its
//!   client URLs, as etcd checks). If so its data dir was lost, and forming
//!   a cluster again would at best be refused by the others' logs: it
//!   refuses to start and says to use `existing`. Members that do not
//!   answer (they have not started yet) are no obstacle.
//!
//! A member whose data dir holds its identity resumes; none of this runs.
//! The peer service answers the question (`ClusterInfo`) from its state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::config::ClusterState;
use crate::error::{Error, Result};
use crate::pb::peer::Payload;
use crate::raft::{NodeId, PeerClients};

/// How long one question to a peer may take. A running member answers in
/// milliseconds; one that is itself starting does not answer at all (it
/// knows nothing yet), and a new cluster's members all start together.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a joining member asks again while no peer answers.
const RETRY: Duration = Duration::from_secs(1);

/// What a member says about its cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's id (the header's `cluster_id`).
    pub cluster_id: u64,
    /// The Raft membership's voters and learners, if it has one.
    pub members: BTreeSet<NodeId>,
    /// Members that have started and published their client URLs.
    pub started: BTreeSet<NodeId>,
    /// Every member's peer address.
    pub addrs: BTreeMap<NodeId, String>,
}

/// How this member starts on an empty data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Form the cluster of `--initial-cluster`, whose id is derived from it.
    Form,
    /// Join the running cluster with this id; never form one. `members`:
    /// the cluster's members as the member that answered knows them, whose
    /// messages this member admits until it learns the membership from the
    /// log (the leader may be one `--initial-cluster` never named).
    Join {
        cluster_id: u64,
        members: BTreeSet<NodeId>,
    },
}

/// Asks member `id` at `addr` about its cluster.
async fn ask(peers: &PeerClients, id: NodeId, addr: &str) -> Result<ClusterInfo> {
    let mut client = peers
        .get(id, addr)
        .map_err(|e| Error::LeaderUnreachable(e.to_string()))?;
    let mut request = tonic::Request::new(Payload { data: Vec::new() });
    request.set_timeout(ASK_TIMEOUT);
    let reply = tokio::time::timeout(ASK_TIMEOUT, client.cluster_info(request))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|s| Error::LeaderUnreachable(s.message().to_string()))?;
    Ok(codec::decode(&reply.into_inner().data)?)
}

/// What every other member of `initial_cluster` answers now (those that
/// do not are left out).
async fn ask_all(
    peers: &PeerClients,
    me: NodeId,
    initial_cluster: &BTreeMap<NodeId, String>,
) -> Vec<(NodeId, ClusterInfo)> {
    let asks = initial_cluster
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, addr)| async move { (*id, ask(peers, *id, addr).await) });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(id, info)| info.ok().map(|info| (id, info)))
        .collect()
}

/// The id the running cluster gave the member at `advertise_peer` (`member
/// add`), asked of the members in `initial_cluster` until one answers.
pub async fn learn_id(
    peers: &PeerClients,
    initial_cluster: &BTreeMap<NodeId, String>,
    advertise_peer: &str,
) -> Result<NodeId> {
    loop {
        let answers = ask_all(peers, 0, initial_cluster).await;
        if let Some((asked, info)) = answers.iter().find(|(_, i)| !i.members.is_empty()) {
            return info
                .addrs
                .iter()
                .find(|(_, addr)| *addr == advertise_peer)
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    Error::DataDir(format!(
                        "no member of the running cluster has the peer address {advertise_peer} \
                         (member {asked} lists {:?}); add it first (kvctl member add)",
                        info.addrs
                    ))
                });
        }
        tracing::info!("no --id: waiting for a member of the running cluster to answer");
        tokio::time::sleep(RETRY).await;
    }
}

/// Decides how member `me`, on an empty data dir, starts (see the module
/// doc). With `existing` it waits until a member answers.
pub async fn decide(
    state: ClusterState,
    peers: &PeerClients,
    me: NodeId,
    initial_cluster: &BTreeMap<NodeId, String>,
) -> Result<Start> {
    match state {
        ClusterState::New => {
            for (id, info) in ask_all(peers, me, initial_cluster).await {
                if info.started.contains(&me) {
                    return Err(Error::DataDir(format!(
                        "member {me} has already started in a running cluster (member {id} \
                         knows it), but its data dir is empty: start it with \
                         --initial-cluster-state existing to rejoin and catch up from the leader"
                    )));
                }
            }
            Ok(Start::Form)
        }
        ClusterState::Existing => loop {
            let answers = ask_all(peers, me, initial_cluster).await;
            if let Some((id, info)) = answers.iter().find(|(_, i)| !i.members.is_empty()) {
                if !info.members.contains(&me) {
                    return Err(Error::DataDir(format!(
                        "member {me} is not a member of the running cluster (member {id} \
                         lists {:?}); add it to the cluster first",
                        info.members
                    )));
                }
                tracing::info!(
                    cluster_id = info.cluster_id,
                    asked = id,
                    "joining the running cluster"
                );
                return Ok(Start::Join {
                    cluster_id: info.cluster_id,
                    members: info.members.clone(),
                });
            }
            tracing::info!(
                "--initial-cluster-state existing: waiting for a member of the running cluster to answer"
            );
            tokio::time::sleep(RETRY).await;
        },
    }
}
