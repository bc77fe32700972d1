//! A snapshot file as etcd writes one: a bbolt database, then the SHA-256
//! of the database (32 bytes). The database is whole pages, so its length
//! is a multiple of 512 and a trailer shows as a remainder of 32, as etcd
//! tells them apart. Also what `snapshot status` reports of a file.

use sha2::{Digest, Sha256};

use super::bbolt::{self, BoltError, Database};
use super::etcd::{self, Restored, SchemaError};

/// The SHA-256 trailer's length.
pub const HASH_LEN: usize = 32;

/// Why a snapshot file is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("snapshot file has no SHA-256 trailer ({0} bytes); a bare database (such as etcd's member/snap/db) restores only with --skip-hash-check")]
    NoHash(usize),
    #[error("snapshot file is damaged: its SHA-256 trailer does not match its contents")]
    HashMismatch,
    #[error("snapshot file is damaged: {0}")]
    Bolt(BoltError),
    #[error("snapshot file is damaged: {0}")]
    Schema(SchemaError),
}

// Not `#[from]`: that would make the cause a source too, and error chains
// would print it twice.
impl From<BoltError> for BackupError {
    fn from(e: BoltError) -> Self {
        BackupError::Bolt(e)
    }
}

impl From<SchemaError> for BackupError {
    fn from(e: SchemaError) -> Self {
        BackupError::Schema(e)
    }
}

/// `db` with its SHA-256 trailer appended: a snapshot file.
pub fn seal(mut db: Vec<u8>) -> Vec<u8> {
    let hash = Sha256::digest(&db);
    db.extend_from_slice(&hash);
    db
}

/// The database in a snapshot file, its trailer checked. Without a
/// trailer, the file is taken as a bare database only if `skip_hash_check`.
pub fn open(file: &[u8], skip_hash_check: bool) -> Result<&[u8], BackupError> {
    if file.len() % 512 == HASH_LEN {
        let (db, hash) = file.split_at(file.len() - HASH_LEN);
        if Sha256::digest(db).as_slice() != hash {
            return Err(BackupError::HashMismatch);
        }
        return Ok(db);
    }
    if skip_hash_check {
        Ok(file)
    } else {
        Err(BackupError::NoHash(file.len()))
    }
}

/// Checks a snapshot file through and through, as a restore would read
/// it: the trailer, every page of the database, every record of etcd's
/// schema.
pub fn verify(file: &[u8], skip_hash_check: bool) -> Result<(Database, Restored), BackupError> {
    let db = bbolt::read(open(file, skip_hash_check)?)?;
    let restored = etcd::from_buckets(&db.buckets)?;
    Ok((db, restored))
}

/// What `etcdctl snapshot status` reports of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C over every bucket's name, keys and values, in order (etcd's
    /// hash of a snapshot).
    pub hash: u32,
    /// The revision of the newest version in it.
    pub revision: i64,
    /// Records in all buckets.
    pub total_keys: u64,
    /// The database's size in bytes.
    pub total_size: u64,
}

/// `db`'s status, computed as etcd computes it.
pub fn status(db: &Database) -> Status {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut digest = crc.digest();
    let (mut revision, mut total_keys) = (0, 0);
    for (name, entries) in &db.buckets {
        digest.update(name);
        for (k, v) in entries {
            digest.update(k);
            digest.update(v);
            total_keys += 1;
        }
        if name == b"key" {
            if let Some((k, _)) = entries.last() {
                revision = k
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i64::from_be_bytes);
            }
        }
    }
    Status {
        hash: digest.finalize(),
        revision,
        total_keys,
        total_size: db.size,
    }
}
