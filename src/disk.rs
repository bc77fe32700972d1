//! The sled database a member keeps on disk, and making what is written to
//! it durable.
//!
//! sled's own `flush` is not an fsync: it writes its buffers out with
//! `sync_file_range`, which waits for the data to reach the device but
//! neither flushes the device's write cache nor persists file metadata (such
//! as a grown file size), and it writes values over ~128 KiB ("blobs") to
//! files of their own without syncing them at all. Only a background thread
//! calls `fsync`, every half second. A write acknowledged after `flush` alone
//! survives a crash of the process, not a power loss or a kernel crash.
//!
//! `Disk::sync` is the durability point everything else uses: sled's flush,
//! then `fdatasync` on the database file, and `fsync` on every blob file that
//! changed since the last sync and on the blob directory. It runs before a
//! vote, a purge point or the data dir's identity is reported durable (the
//! Raft log and snapshots are files of their own, synced by their owners).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// sled's cache; etcd's bbolt relies on the OS page cache instead.
///
/// It holds the log's tail (read back to replicate it, soon after it was
/// written) and snapshots; the key-value state itself is in memory.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A member's sled database. Cheap to clone.
#[derive(Clone)]
pub struct Disk {
    db: sled::Db,
    files: Arc<Files>,
}

/// What `sync` fsyncs beyond sled's flush.
struct Files {
    /// sled's one data file (`<dir>/db`).
    db_file: File,
    /// sled's directory of large values, one file each.
    blob_dir: PathBuf,
    /// Blob files as last synced: name and length. A blob is written once,
    /// but it may have been half written when a sync listed it.
    synced_blobs: Mutex<HashMap<String, u64>>,
}

impl Disk {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: &Path) -> crate::Result<Disk> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let db_file = File::open(path.join("db"))?;
        // The database's own directory entries, created just now if new.
        File::open(path)?.sync_all()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(Disk {
            db,
            files: Arc::new(Files {
                db_file,
                blob_dir: path.join("blobs"),
                synced_blobs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The database, for opening trees and reading.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything written to the database so far durable.
    pub async fn sync(&self) -> crate::Result<()> {
        self.db.flush_async().await?;
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.sync())
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }
}

impl Disk {
    /// `sync`, for callers outside the async runtime (opening).
    pub fn sync_blocking(&self) -> crate::Result<()> {
        self.db.flush()?;
        self.files.sync()?;
        Ok(())
    }
}

impl Files {
    fn sync(&self) -> io::Result<()> {
        self.db_file.sync_data()?;
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashMap::new();
        let mut changed = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled removed it meanwhile: nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if synced.get(&name) != Some(&len) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                changed = true;
            }
            present.insert(name, len);
        }
        if changed {
            File::open(&self.blob_dir)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }

    #[cfg(test)]
    fn synced_blob_count(&self) -> usize {
        self.synced_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sync` relies on where sled puts things: one data file `db`, and
    /// large values as files under `blobs/`. If a sled upgrade moved them,
    /// this fails instead of syncs silently missing them.
    #[tokio::test]
    async fn sync_covers_where_sled_writes_small_and_large_values() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("db.sled")).unwrap();
        let tree = disk.db().open_tree("t").unwrap();
        tree.insert("small", &b"x"[..]).unwrap();
        disk.sync().await.unwrap();
        assert_eq!(disk.files.synced_blob_count(), 0);

        tree.insert("large", vec![7u8; 1 << 20]).unwrap();
        disk.sync().await.unwrap();
        assert_eq!(
            disk.files.synced_blob_count(),
            1,
            "a 1 MiB value should be one blob file under blobs/"
        );
        assert!(dir.path().join("db.sled/db").metadata().unwrap().len() > 0);

        // Reopened, it reads what was synced.
        tree.remove("large").unwrap();
        disk.sync().await.unwrap();
        drop(tree);
        drop(disk);
        let disk = Disk::open(&dir.path().join("db.sled")).unwrap();
        let tree = disk.db().open_tree("t").unwrap();
        assert_eq!(tree.get("small").unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(tree.get("large").unwrap(), None);
    }
}
