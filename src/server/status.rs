//! The one place a crate `Error` becomes a `tonic::Status`, with etcd's gRPC
//! codes and exact messages (etcd's clients match on the message text).

use tonic::{Code, Status};

use crate::error::{Error, MemberRefusal};
use crate::store::AuthError;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::EmptyKey
            | Error::RequestTooLarge
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::TxnTooDeep { .. }
            | Error::NotAClientWrite(_)
            | Error::RefusedByLeader(_)
            | Error::InvalidMember(_)
            | Error::DuplicateKey => Code::InvalidArgument,
            Error::NotAMember(_) | Error::PeerCertificate(_) => Code::PermissionDenied,
            Error::BadPeerMessage(_) => Code::InvalidArgument,
            Error::LeaderLeaseHeld(_) => Code::FailedPrecondition,
            Error::Auth(a) => auth_code(*a),
            Error::LeaseNotFound => Code::NotFound,
            Error::LeaseExists => Code::FailedPrecondition,
            Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::FutureRevision | Error::Compacted => Code::OutOfRange,
            Error::NoLeader
            | Error::NotLeader
            | Error::LeaderUnreachable(_)
            | Error::Timeout
            | Error::LeaderLost
            | Error::Stopped => Code::Unavailable,
            Error::Unimplemented(_) | Error::Unsupported(_) => Code::Unimplemented,
            Error::NoSpace => Code::ResourceExhausted,
            Error::Corrupt => Code::DataLoss,
            Error::UnknownAlarm => Code::InvalidArgument,
            Error::Member(r) => match r {
                MemberRefusal::NotFound => Code::NotFound,
                MemberRefusal::BadUrls => Code::InvalidArgument,
                MemberRefusal::InProgress => Code::Unavailable,
                MemberRefusal::PeerUrlExists
                | MemberRefusal::NotLearner
                | MemberRefusal::LearnerNotReady
                | MemberRefusal::NotEnoughStarted
                | MemberRefusal::LastVoter => Code::FailedPrecondition,
            },
            Error::Removed(_) => Code::Unavailable,
            // etcd's recipes return plain errors: gRPC's Unknown.
            Error::SessionExpired | Error::ElectionNotLeader | Error::ElectionNoLeader => {
                Code::Unknown
            }
            Error::Config(_)
            | Error::Storage(_)
            | Error::Codec(_)
            | Error::Backup(_)
            | Error::DataDir(_)
            | Error::RaftStart(_)
            | Error::ProposalRefused(_)
            | Error::LeaderFailed(_)
            | Error::UnexpectedResponse(_)
            | Error::LogOutOfOrder { .. }
            | Error::SnapshotBuilderReused
            | Error::Fatal(_)
            | Error::Io(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error answering a client");
        }
        Status::new(code, e.to_string())
    }
}

/// etcd's gRPC code for each auth error (`rpctypes/error.go`).
fn auth_code(e: AuthError) -> Code {
    match e {
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::NotEnabled => Code::FailedPrecondition,
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::PermissionNotGiven
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidToken => Code::Unauthenticated,
        // etcd leaves this one unmapped: gRPC's Unknown.
        AuthError::NoPasswordUser => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_codes_and_messages() {
        let cases = [
            (
                Error::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                Error::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (Error::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (
                Error::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                Error::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                Error::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                Error::Auth(AuthError::PermissionDenied),
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                Error::Auth(AuthError::InvalidToken),
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                Error::Auth(AuthError::UserEmpty),
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                Error::Auth(AuthError::NotEnabled),
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
        ];
        for (e, code, msg) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }
}
