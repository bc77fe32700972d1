//! What every outbound gRPC connection shares, whoever makes it: kvctl's
//! client, the Raft network and a follower's calls to the leader.

use std::error::Error as StdError;

/// The innermost cause of an error, which is the informative part
/// ("Connection refused (os error 111)").
pub fn innermost_cause(e: &dyn StdError) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Whether a failed call never reached the peer (the connection could not be
/// made), so it certainly had no effect there.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        if err.to_string().contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}
