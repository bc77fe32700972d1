//! Who this member is: the data dir's identity (its member id and cluster
//! id), and the attributes it publishes to the cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Node;
use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::raft::NodeId;
use crate::store::{fnv1a_of, Command, MemberInfo};

const IDENTITY_TREE: &str = "identity";
/// Present once the member was removed from its cluster.
const REMOVED: &str = "removed";

/// Names the part of `data_dir` whose bytes could not be decoded: they were
/// written in a format this build does not read.
pub(super) fn unreadable<'a>(
    data_dir: &'a Path,
    what: &'a str,
) -> impl FnOnce(Error) -> Error + 'a {
    move |e| match e {
        Error::Codec(e) => Error::DataDir(format!(
            "{}: cannot decode its {what} ({e}); was it written by an incompatible raftkv version?",
            data_dir.display()
        )),
        other => other,
    }
}

/// The member id this data dir belongs to, if it holds one.
pub(super) fn stored_node_id(disk: &Disk) -> Result<Option<u64>> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    Ok(tree.get("node_id")?.map(|v| {
        let bytes: [u8; 8] = v.as_ref().try_into().unwrap_or_default();
        u64::from_be_bytes(bytes)
    }))
}

/// Reads this data dir's identity: its cluster's id, or `None` for an empty
/// data dir. Refuses a data dir that belongs to another node id.
pub(super) fn read_identity(disk: &Disk, cfg: &NodeConfig) -> Result<Option<u64>> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    let read_u64 = |key: &str| -> Result<Option<u64>> {
        Ok(tree.get(key)?.map(|v| {
            let bytes: [u8; 8] = v.as_ref().try_into().unwrap_or_default();
            u64::from_be_bytes(bytes)
        }))
    };
    if let Some(id) = read_u64("node_id")? {
        if tree.get(REMOVED)?.is_some() {
            return Err(Error::DataDir(format!(
                "{}: member {id} was removed from its cluster; this data dir cannot serve \
                 again. To rejoin, add a new member (kvctl member add) and start it on an \
                 empty data dir",
                cfg.data_dir.display()
            )));
        }
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
pub(super) async fn record_identity(disk: &Disk, id: NodeId, cluster_id: u64) -> Result<()> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    tree.insert("node_id", &id.to_be_bytes())?;
    tree.insert("cluster_id", &cluster_id.to_be_bytes())?;
    disk.sync().await
}

/// Marks this data dir as a removed member's, durably: it never serves
/// again (`read_identity` refuses it).
pub(super) async fn record_removed(disk: &Disk) -> Result<()> {
    let tree = disk.db().open_tree(IDENTITY_TREE)?;
    tree.insert(REMOVED, &[1u8])?;
    disk.sync().await
}

/// A cluster id every member of a new cluster derives alike from
/// `--initial-cluster` (FNV-1a over its canonical text).
pub(super) fn cluster_id_of(members: &BTreeMap<NodeId, String>) -> u64 {
    let canonical: Vec<String> = members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect();
    fnv1a_of(canonical.join(",").as_bytes())
}

/// Publishes this member's name and client URL through Raft until the
/// replicated state has them, as etcd members publish their attributes.
pub(super) async fn publish_member(node: Arc<Node>, info: MemberInfo) {
    loop {
        if node.store.members().get(&node.id) == Some(&info) {
            return;
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
