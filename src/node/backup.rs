//! Backups in etcd's snapshot format (`crate::backup`): this member's state
//! as a snapshot file (`Maintenance.Snapshot`), and a new data dir seeded
//! from one (`kvctl snapshot restore`, as `etcdutl snapshot restore`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::identity::{cluster_id_of, record_identity};
use super::Node;
use crate::backup::{self, bbolt, etcd, Member, Position};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::raft::typ::{LogId, Membership};
use crate::raft::{MemberAddr, NodeId};
use crate::store::{self, fnv1a_of, State};

impl Node {
    /// This member's applied state as a snapshot file (an etcd database
    /// and its SHA-256 trailer): a consistent point-in-time copy with every
    /// revision still held, the leases and the members. Built off the
    /// async threads; the state is only read-locked while it is encoded.
    pub async fn backup(&self) -> Result<Vec<u8>> {
        let store = self.store.clone();
        let scheme = if self.peer_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let corrupt = self.test_corrupt_snapshot;
        let file = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let state = State::decode(&store.encode()?)?;
            let (applied, membership) = store::applied_of(&state)?;
            let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
            let members: Vec<Member> = membership
                .membership()
                .nodes()
                .map(|(id, addr)| {
                    let info = state.members.get(id).cloned().unwrap_or_default();
                    Member {
                        id: *id,
                        peer_urls: vec![format!("{scheme}://{}", addr.addr)],
                        name: info.name,
                        client_urls: info.client_urls,
                        is_learner: !voters.contains(id),
                    }
                })
                .collect();
            let at = applied.map_or(Position::default(), |id| Position {
                index: id.index,
                term: id.leader_id.term,
            });
            let db = bbolt::write(&etcd::to_buckets(&state, &members, at));
            let mut file = backup::file::seal(db);
            if corrupt {
                // kvd's hidden --test-corrupt-snapshot: a damaged copy.
                let middle = (file.len() - backup::file::HASH_LEN) / 2;
                file[middle] ^= 0xff;
            }
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(file)
    }
}

/// Where and as whom `restore` seeds a data dir.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// The new data dir; it must not exist yet (or be empty).
    pub data_dir: PathBuf,
    /// The member it belongs to.
    pub id: NodeId,
    /// The new cluster: every member's id and peer address.
    pub initial_cluster: BTreeMap<NodeId, String>,
}

/// Seeds a new data dir with a backup's state: the member starts from it
/// as from its own snapshot, in a new cluster of `initial_cluster` (every
/// member restored from the same file, with the same `initial_cluster`,
/// so the Raft logs agree). The cluster id is new: derived from the
/// members and the file's SHA-256, so members restored from different
/// files refuse each other. Returns the cluster id.
///
/// The data dir is built beside its final path and renamed into place
/// last: an interrupted restore leaves no data dir that looks whole.
pub async fn restore(target: &RestoreTarget, mut state: State, file_hash: &[u8]) -> Result<u64> {
    let dir = &target.data_dir;
    if !target.initial_cluster.contains_key(&target.id) {
        return Err(Error::DataDir(format!(
            "--initial-cluster does not list member {}",
            target.id
        )));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::DataDir(format!(
            "{} already exists and is not empty; restore into a new data dir",
            dir.display()
        )));
    }
    let building = sibling(dir, ".restoring")?;
    if building.exists() {
        std::fs::remove_dir_all(&building)?;
    }
    std::fs::create_dir_all(&building)?;

    // The old cluster's members, alarms and log position mean nothing in
    // the new one: its members publish themselves when they start.
    state.members.clear();
    state.alarms.clear();
    state.meta.clear();
    let voters: BTreeSet<NodeId> = target.initial_cluster.keys().copied().collect();
    let nodes: BTreeMap<NodeId, MemberAddr> = target
        .initial_cluster
        .iter()
        .map(|(id, addr)| (*id, MemberAddr::new(addr)))
        .collect();
    let membership = Membership::new(vec![voters], nodes);
    // The position a newly formed cluster's first entry has.
    let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), 0);
    let snapshot_dir = building.join(store::SNAPSHOT_DIR);
    tokio::task::spawn_blocking(move || {
        store::seed_snapshot(&snapshot_dir, state, log_id, membership)
    })
    .await
    .map_err(std::io::Error::other)??;

    let mut token = cluster_id_of(&target.initial_cluster)
        .to_be_bytes()
        .to_vec();
    token.extend_from_slice(file_hash);
    let cluster_id = fnv1a_of(&token);
    {
        let disk = Disk::open(&building.join(super::member::SLED_DIR))?;
        record_identity(&disk, target.id, cluster_id).await?;
    }
    if dir.exists() {
        std::fs::remove_dir(dir)?;
    }
    std::fs::rename(&building, dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(cluster_id)
}

/// `dir` with `suffix` added to its last component.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::DataDir(format!("{} is not a directory name", dir.display())))?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(dir.with_file_name(name))
}
