//! How the replicated state is laid out in its one sled tree. Everything
//! lives in one tree so that one batch changes it atomically.
//!
//! | tree key                       | value                                |
//! |--------------------------------|--------------------------------------|
//! | `k` + key                      | `Current`: the key's latest version  |
//! | `h` + esc(key) + rev (8 BE)    | `Version`: the key at revision `rev` |
//! | `r` + rev (8 BE) + sub (4 BE)  | the key changed at `rev.sub`         |
//! | `m` + name                     | metadata (revision, compaction, ...) |
//!
//! `k` serves reads of the current state. `h` is the MVCC history: every
//! version of every key until compaction, ordered by key then revision, for
//! reads at a past revision. `r` orders the changes by revision, for watches.
//! esc() keeps key order in `h` for keys of any bytes: 0x00 becomes
//! 0x00 0xff, and 0x00 0x00 ends the key.

use serde::{Deserialize, Serialize};

/// etcd's cluster-wide revision: starts at 1, +1 per write that changes a key.
pub type Revision = i64;

pub const CURRENT: u8 = b'k';
pub const HISTORY: u8 = b'h';
pub const EVENTS: u8 = b'r';
pub const META: u8 = b'm';

/// A key's latest version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Current {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub value: Vec<u8>,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Version {
    Put {
        create_revision: Revision,
        version: i64,
        value: Vec<u8>,
    },
    Delete,
}

pub fn current_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(CURRENT);
    k.extend_from_slice(key);
    k
}

pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(META);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `h` + esc(key), without the terminator: a bound below every version of
/// `key` and of every greater key.
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 12);
    k.push(HISTORY);
    for &b in key {
        k.push(b);
        if b == 0 {
            k.push(0xff);
        }
    }
    k
}

/// The history key of `key` at `rev`.
pub fn history_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut k = history_prefix(key);
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&rev.to_be_bytes());
    k
}

/// Splits a history key into the user key and the revision.
pub fn parse_history_key(tree_key: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let body = tree_key.strip_prefix(&[HISTORY])?;
    let (escaped, rev) = body.split_at(body.len().checked_sub(10)?);
    let (terminator, rev) = rev.split_at(2);
    if terminator != [0, 0] {
        return None;
    }
    let mut key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        key.push(b);
        if b == 0 && bytes.next() != Some(&0xff) {
            return None;
        }
    }
    Some((key, Revision::from_be_bytes(rev.try_into().ok()?)))
}

pub fn event_key(rev: Revision, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(EVENTS);
    k.extend_from_slice(&rev.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

pub fn parse_event_key(tree_key: &[u8]) -> Option<(Revision, u32)> {
    let body = tree_key.strip_prefix(&[EVENTS])?;
    if body.len() != 12 {
        return None;
    }
    let rev = Revision::from_be_bytes(body[..8].try_into().ok()?);
    let sub = u32::from_be_bytes(body[8..].try_into().ok()?);
    Some((rev, sub))
}

pub fn encode_i64(v: i64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn decode_i64(bytes: &[u8]) -> i64 {
    let arr: [u8; 8] = bytes
        .try_into()
        .expect("invariant: counters are stored as 8 bytes");
    i64::from_be_bytes(arr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_keep_key_then_revision_order() {
        let keys: [&[u8]; 6] = [b"", b"a", b"a\0", b"a\0b", b"ab", b"b"];
        let mut encoded = Vec::new();
        for k in keys {
            for rev in [1, 2, 300] {
                encoded.push((history_key(k, rev), k.to_vec(), rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted, encoded, "tree order is (key, revision) order");
        for (tk, k, rev) in &encoded {
            assert_eq!(parse_history_key(tk), Some((k.clone(), *rev)));
        }
        // Prefix bounds: everything for keys >= "a\0" and < "ab".
        let lo = history_prefix(b"a\0");
        let hi = history_prefix(b"ab");
        let inside: Vec<&Vec<u8>> = encoded
            .iter()
            .filter(|e| e.0 >= lo && e.0 < hi)
            .map(|e| &e.1)
            .collect();
        assert!(inside
            .iter()
            .all(|k| k.as_slice() == b"a\0" || k.as_slice() == b"a\0b"));
        assert_eq!(inside.len(), 6);
    }

    #[test]
    fn event_keys_order_by_revision_then_sub() {
        assert!(event_key(2, 9) < event_key(3, 0));
        assert!(event_key(3, 0) < event_key(3, 1));
        assert_eq!(parse_event_key(&event_key(7, 2)), Some((7, 2)));
    }
}
