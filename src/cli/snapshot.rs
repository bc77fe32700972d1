//! `kvctl snapshot save|status|restore`: backups in etcd's snapshot format
//! (`crate::backup`). `save` streams one member's backup into a file and
//! checks it through before it says "saved"; `status` reads a file as
//! etcdctl does; `restore` seeds a new member's data dir from one, raftkv's
//! or etcd's. `restore` is the one kvctl command that works on a data dir
//! rather than the API (as `etcdutl` does for etcd), through `node`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::args::Format;
use super::output::{human_bytes, table};
use crate::backup::{self, file::HASH_LEN};
use crate::client::Client;
use crate::config::parse_initial_cluster;
use crate::node::{restore as seed, RestoreTarget};

/// `path` with `.part` added: where a save is written until it checks out.
fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

/// Saves a backup of the first endpoint that answers to `path`: written
/// to `path.part`, synced, read back and verified (trailer, every page,
/// every record), and only then renamed to `path`. A backup that does not
/// check out is deleted and reported as an error.
pub async fn save(client: &mut Client, path: &Path) -> anyhow::Result<String> {
    let part = part_path(path);
    let result = receive(client, &part).await.and_then(|_| {
        let bytes = std::fs::read(&part).with_context(|| format!("reading {}", part.display()))?;
        let (db, _) = backup::file::verify(&bytes, false)
            .context("the server sent a backup that does not check out; nothing was saved")?;
        Ok(backup::file::status(&db))
    });
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, path)
        .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(format!(
        "Verified: revision {}, {} keys, {}, hash {:x}\nSnapshot saved at {}\n",
        status.revision,
        status.total_keys,
        human_bytes(status.total_size as i64),
        status.hash,
        path.display()
    ))
}

/// Writes the snapshot stream to `part`, synced; the stream must end
/// with nothing remaining.
async fn receive(client: &mut Client, part: &Path) -> anyhow::Result<()> {
    let mut stream = client.snapshot().await?;
    let mut file =
        std::fs::File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let mut remaining = None;
    let mut received = 0u64;
    while let Some(piece) = stream.message().await? {
        file.write_all(&piece.blob)?;
        received += piece.blob.len() as u64;
        remaining = Some(piece.remaining_bytes);
    }
    if remaining != Some(0) || received < HASH_LEN as u64 {
        bail!("the snapshot stream ended early ({received} bytes received); nothing was saved");
    }
    file.sync_all()?;
    Ok(())
}

/// A snapshot file's status, as `etcdctl snapshot status` prints it.
pub fn status(path: &Path, format: Format) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let db = backup::bbolt::read(backup::file::open(&bytes, true)?)?;
    let st = backup::file::status(&db);
    Ok(match format {
        Format::Simple => format!(
            "{:x}, {}, {}, {}\n",
            st.hash,
            st.revision,
            st.total_keys,
            human_bytes(st.total_size as i64)
        ),
        Format::Json => {
            json!({
                "hash": st.hash,
                "revision": st.revision,
                "totalKey": st.total_keys,
                "totalSize": st.total_size,
            })
            .to_string()
                + "\n"
        }
        Format::Table => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_keys.to_string(),
                human_bytes(st.total_size as i64),
            ]],
        ),
    })
}

/// What `kvctl snapshot restore` was asked.
pub struct RestoreArgs<'a> {
    pub file: &'a Path,
    pub data_dir: &'a Path,
    pub id: u64,
    pub initial_cluster: &'a str,
    pub skip_hash_check: bool,
}

/// Seeds a new data dir from a snapshot file, checked through first.
pub async fn restore(a: RestoreArgs<'_>) -> anyhow::Result<String> {
    let initial_cluster = parse_initial_cluster(a.initial_cluster)?;
    let bytes = std::fs::read(a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let (db, restored) = backup::file::verify(&bytes, a.skip_hash_check)?;
    let status = backup::file::status(&db);
    let (revision, compacted) = (restored.state.revision, restored.state.compacted);
    let (live, leases) = (restored.state.live, restored.state.leases.len());
    let target = RestoreTarget {
        data_dir: a.data_dir.to_path_buf(),
        id: a.id,
        initial_cluster: initial_cluster.clone(),
    };
    let cluster_id = seed(&target, restored.state, &Sha256::digest(&bytes)).await?;
    let out = format!(
        "Restored {} into {}: revision {revision} (compacted at {compacted}), {live} keys, \
         {leases} leases, snapshot hash {:x}\nMember {} of a new cluster ({cluster_id:x}); start \
         it with --data-dir {} --id {} --initial-cluster {} and its usual --listen-* and \
         --advertise-* flags\n",
        a.file.display(),
        a.data_dir.display(),
        status.hash,
        a.id,
        a.data_dir.display(),
        a.id,
        a.initial_cluster,
    );
    Ok(out)
}
