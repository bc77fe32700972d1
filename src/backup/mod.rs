//! Backups in etcd's snapshot format, so data moves between etcd and raftkv
//! both ways: `bbolt` the database file format, `etcd` etcd's buckets and
//! raftkv's state mapped onto them, `file` the snapshot file (the database
//! and its SHA-256 trailer) and its status. Pure: bytes in, bytes out. The
//! node takes backups (`Maintenance.Snapshot`) and seeds a data dir from
//! one; kvctl saves, checks and restores them.

pub mod bbolt;
pub mod etcd;
pub mod file;

pub use etcd::{Member, Position, Restored};
pub use file::{BackupError, Status};

#[cfg(test)]
mod tests;
