//! The latest snapshot on disk: one file, `<dir>/snapshot`, always replaced
//! whole. A new snapshot is written to `snapshot.tmp`, synced, renamed over
//! the old one and the directory synced, so a crash at any point leaves
//! either the old snapshot or the new one, never a mix.
//!
//! Layout: `RKVSNAP1`, the metadata's length and the data's length (u64
//! LE), a crc32 of metadata then data (u32 LE), the metadata, the data. A
//! file that does not check out is an error, not an empty snapshot: the Raft
//! log behind it may already be purged.
//!
//! Saves are serialized (a snapshot being built and one being installed
//! may finish at the same time), and the caller decides from the stored
//! metadata whether a new snapshot replaces it: an older one never does.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const HEADER: usize = 8 + 8 + 8 + 4;
const NAME: &str = "snapshot";
const TEMP_NAME: &str = "snapshot.tmp";

/// Where a member keeps its latest snapshot. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// Held while a snapshot is written, so two never share the temp file.
    saving: Arc<Mutex<()>>,
}

impl SnapshotFile {
    /// Opens (creating if needed) the snapshot directory `dir`, dropping a
    /// half-written snapshot a crash left behind.
    pub fn open(dir: &Path) -> Result<SnapshotFile> {
        fs::create_dir_all(dir)?;
        match fs::remove_file(dir.join(TEMP_NAME)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(SnapshotFile {
            dir: dir.to_path_buf(),
            saving: Arc::default(),
        })
    }

    /// The stored snapshot's metadata and data, if there is one.
    pub fn load(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let path = self.dir.join(NAME);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let damaged = |why: &str| Error::DataDir(format!("{}: {why}", path.display()));
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(damaged("not a raftkv snapshot"));
        }
        let len = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (meta_len, data_len) = (len(8), len(16));
        let crc = u32::from_le_bytes(bytes[24..HEADER].try_into().expect("4 bytes"));
        if (bytes.len() - HEADER) as u64 != meta_len.saturating_add(data_len) {
            return Err(damaged("truncated or too long"));
        }
        if crc32fast::hash(&bytes[HEADER..]) != crc {
            return Err(damaged("checksum mismatch"));
        }
        let meta_end = HEADER + meta_len as usize;
        let meta = bytes[HEADER..meta_end].to_vec();
        // The data stays in the buffer it was read into.
        bytes.drain(..meta_end);
        Ok(Some((meta, bytes)))
    }

    /// The stored snapshot's metadata only, without reading its data (the
    /// whole file is checked when it is loaded).
    fn stored_meta(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(NAME);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Err(Error::DataDir(format!(
                "{}: not a raftkv snapshot",
                path.display()
            )));
        }
        let meta_len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let mut meta = Vec::new();
        file.take(meta_len).read_to_end(&mut meta)?;
        Ok(Some(meta))
    }

    /// Replaces the stored snapshot with `meta` and `data`, durably (when
    /// this returns, a crash leaves the new snapshot), unless `keep` says,
    /// from the stored snapshot's metadata, that the stored one is to stay.
    /// Returns whether it replaced it.
    pub fn save_unless(
        &self,
        meta: &[u8],
        data: &[u8],
        keep: impl FnOnce(&[u8]) -> bool,
    ) -> Result<bool> {
        let _saving = self
            .saving
            .lock()
            .expect("invariant: the snapshot lock is never poisoned");
        if self.stored_meta()?.is_some_and(|stored| keep(&stored)) {
            return Ok(false);
        }
        self.write(meta, data)?;
        Ok(true)
    }

    /// Replaces the stored snapshot with `meta` and `data`, durably.
    pub fn save(&self, meta: &[u8], data: &[u8]) -> Result<()> {
        self.save_unless(meta, data, |_| false).map(|_| ())
    }

    fn write(&self, meta: &[u8], data: &[u8]) -> Result<()> {
        let temp = self.dir.join(TEMP_NAME);
        let mut crc = crc32fast::Hasher::new();
        crc.update(meta);
        crc.update(data);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        let mut file = File::create(&temp)?;
        file.write_all(&header)?;
        file.write_all(meta)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(NAME))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_snapshot_loads_back_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(&dir.path().join("snap")).unwrap();
        assert_eq!(file.load().unwrap(), None);
        file.save(b"meta-1", b"data-1").unwrap();
        file.save(b"m2", &[7u8; 100_000]).unwrap();
        let reopened = SnapshotFile::open(&dir.path().join("snap")).unwrap();
        let (meta, data) = reopened.load().unwrap().unwrap();
        assert_eq!(meta, b"m2");
        assert_eq!(data, vec![7u8; 100_000]);
    }

    #[test]
    fn a_half_written_snapshot_is_ignored_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        file.save(b"meta", b"good data").unwrap();
        // A crash while writing the next one leaves only a temp file.
        fs::write(dir.path().join(TEMP_NAME), b"RKVSNAP1 half").unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        assert!(!dir.path().join(TEMP_NAME).exists());
        assert_eq!(file.load().unwrap().unwrap().1, b"good data");
        // One flipped bit, or a cut, is refused rather than read as empty.
        let path = dir.path().join(NAME);
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&path, &flipped).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        fs::write(&path, b"junk").unwrap();
        assert!(file.load().is_err());
    }

    #[test]
    fn the_caller_can_keep_the_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        // Nothing stored: it saves whatever `keep` would say.
        assert!(file.save_unless(b"5", b"five", |_| true).unwrap());
        let newer = |stored: &[u8]| stored > b"3".as_slice();
        assert!(!file.save_unless(b"3", b"three", newer).unwrap());
        assert_eq!(
            file.load().unwrap().unwrap(),
            (b"5".to_vec(), b"five".to_vec())
        );
        assert!(file
            .save_unless(b"7", b"seven", |s| s > b"7".as_slice())
            .unwrap());
        assert_eq!(file.load().unwrap().unwrap().1, b"seven");
    }
}
