//! The binary encoding of everything raftkv writes to disk or sends to a peer:
//! log entries, votes, snapshots, state-machine records and peer RPC payloads.
//!
//! One place, so the format can change in one place. postcard is compact and
//! fast, and decoding untrusted bytes fails cleanly instead of panicking or
//! allocating what a length prefix claims.
//!
//! Types that can hold themselves (a batch of commands, a transaction in a
//! transaction) decode their recursive fields through `nested`, which
//! refuses to go deeper than `MAX_NESTING`: a few kilobytes of crafted
//! bytes could otherwise nest thousands deep and overflow the stack of
//! whoever decodes, applies or drops the value.

use std::cell::Cell;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};

/// How deep self-containing values may nest in decoded bytes. Far above
/// anything raftkv writes (a batch of transactions nested as deep as the
/// client API allows), far below what the stack can take.
pub const MAX_NESTING: usize = 64;

thread_local! {
    /// `nested` levels open on this thread. Decoding never awaits, so a
    /// decode runs on one thread from start to end.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Closes one `nested` level, however the decode inside it ended.
struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Decodes a recursive field one level deeper, refusing to pass
/// `MAX_NESTING`. Use as `#[serde(deserialize_with = "crate::codec::nested")]`.
pub fn nested<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let depth = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    let _level = Level;
    if depth > MAX_NESTING {
        return Err(D::Error::custom(format!(
            "value nested deeper than {MAX_NESTING} levels"
        )));
    }
    T::deserialize(deserializer)
}

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// How many bytes `value` encodes to, counted without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // Counting cannot fail for our types (postcard fails only on a full
    // buffer or a sequence of unknown length, which serde derives never
    // produce); count such a value as unbounded.
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

/// Decodes one value from the front of `bytes`; returns it and the bytes
/// after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), CodecError> {
    Ok(postcard::take_from_bytes(bytes)?)
}

/// Decodes a value from `bytes`, which must hold exactly one encoded value
/// (trailing bytes are allowed and ignored).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v: (u64, String, Vec<u8>) = (7, "k".into(), vec![1, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(encoded_len(&v), bytes.len());
        let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(v, back);
    }

    /// A list that holds lists, nested as deep as the bytes say.
    #[derive(Debug, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(#[serde(deserialize_with = "nested")] Vec<Tree>),
    }

    fn deep(levels: usize) -> Vec<u8> {
        // Node(vec![Node(vec![... Leaf])]) written by hand, as an attacker
        // would: encoding it through serde would itself recurse.
        let mut bytes = Vec::new();
        for _ in 0..levels {
            bytes.extend_from_slice(&[1, 1]); // variant Node, one element
        }
        bytes.push(0); // Leaf
        bytes
    }

    #[test]
    fn nesting_is_bounded() {
        assert!(decode::<Tree>(&deep(MAX_NESTING)).is_ok());
        assert!(decode::<Tree>(&deep(MAX_NESTING + 1)).is_err());
        // Far deeper than the stack could take: refused, not a crash.
        assert!(decode::<Tree>(&deep(1_000_000)).is_err());
        // A refused decode leaves no level open behind it.
        assert!(decode::<Tree>(&deep(MAX_NESTING)).is_ok());
        assert_eq!(DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A length prefix claiming ~2^63 elements must not allocate or panic.
        let garbage = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Vec<String>>(&garbage).is_err());
        assert!(decode::<(u64, String)>(&[]).is_err());
    }
}
