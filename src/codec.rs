//! The binary encoding of everything raftkv writes to disk or sends to a peer:
//! log entries, votes, snapshots, state-machine records and peer RPC payloads.
//!
//! One place, so the format can change in one place. postcard is compact and
//! fast, and decoding untrusted bytes fails cleanly instead of panicking or
//! allocating what a length prefix claims.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
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
        let back: (u64, String, Vec<u8>) = decode(&encode(&v).unwrap()).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A length prefix claiming ~2^63 elements must not allocate or panic.
        let garbage = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Vec<String>>(&garbage).is_err());
        assert!(decode::<(u64, String)>(&[]).is_err());
    }
}
