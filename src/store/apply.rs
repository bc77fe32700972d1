//! Applies one `Command` to a `WriteBatch`: the deterministic heart of the
//! state machine, with no Raft in sight.

use super::authorize::check_command;
use super::batch::WriteBatch;
use super::command::{Command, Response, ALARM_CORRUPT, ALARM_NOSPACE};
use super::kv::{KeyRange, Rejection};
use super::txn;

/// Applies `cmd`, from a log entry of no particular term (a `LeaseExpire`
/// changes nothing).
pub fn apply(batch: &mut WriteBatch<'_>, cmd: Command) -> Response {
    apply_in_term(batch, cmd, None)
}

/// Applies `cmd`, from a log entry proposed in `term`. Deterministic and
/// infallible: what a command could not do is in its `Response`.
pub fn apply_in_term(batch: &mut WriteBatch<'_>, cmd: Command, term: Option<u64>) -> Response {
    // While the space quota is exceeded, nothing that adds data applies
    // (each command of a batch is judged alone, below).
    if !matches!(cmd, Command::Batch(_)) {
        // While members' data differ, no client write applies anywhere.
        if cmd.is_client_write() && batch.has_alarm(ALARM_CORRUPT) {
            return Response::Rejected(Rejection::Corrupt);
        }
        if cmd.adds_data() && batch.has_alarm(ALARM_NOSPACE) {
            return Response::Rejected(Rejection::NoSpace);
        }
    }
    match cmd {
        Command::PutV1 {
            key,
            value,
            must_exist,
            prev_kv,
        } => apply(
            batch,
            Command::Put {
                key,
                value,
                lease: Some(0),
                must_exist,
                prev_kv,
            },
        ),
        Command::Put {
            key,
            value,
            lease,
            must_exist,
            prev_kv,
        } => {
            let mut w = batch.write();
            match w.put(&key, value, lease, must_exist, prev_kv) {
                Ok(prev) => Response::Put {
                    revision: w.finish(),
                    prev_kv: prev,
                },
                Err(rejection) => Response::Rejected(rejection),
            }
        }
        Command::DeleteRange {
            key,
            range_end,
            prev_kv,
        } => {
            let mut w = batch.write();
            let (count, deleted) = w.delete_range(&KeyRange::new(&key, &range_end), prev_kv);
            Response::DeleteRange {
                revision: w.finish(),
                deleted: count,
                prev_kvs: deleted,
            }
        }
        Command::Txn(t) => {
            let mut w = batch.write();
            match txn::apply(&mut w, &t) {
                Ok(result) => Response::Txn {
                    revision: w.finish(),
                    result,
                },
                Err(rejection) => Response::Rejected(rejection),
            }
        }
        Command::Compact { revision } => match batch.compact(revision) {
            Ok(()) => Response::Compacted {
                revision: batch.revision(),
            },
            Err(rejection) => Response::Rejected(rejection),
        },
        Command::Batch(cmds) => {
            let mut responses = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                responses.push(apply_in_term(batch, cmd, term));
            }
            Response::Batch(responses)
        }
        Command::LeaseGrant { id, ttl } => match batch.grant(id, ttl) {
            Ok(()) => Response::LeaseGranted {
                id,
                ttl,
                revision: batch.revision(),
            },
            Err(rejection) => Response::Rejected(rejection),
        },
        Command::LeaseRevoke { id } => match batch.revoke(id) {
            Ok(revision) => Response::LeaseRevoked { revision },
            Err(rejection) => Response::Rejected(rejection),
        },
        Command::LeaseExpire { id, term: of } if term == Some(of) => match batch.revoke(id) {
            Ok(revision) => Response::LeaseRevoked { revision },
            Err(rejection) => Response::Rejected(rejection),
        },
        Command::LeaseExpire { .. } => Response::Applied {
            revision: batch.revision(),
        },
        Command::LeaseCheckpoint { remaining_ms } => {
            for (id, ms) in remaining_ms {
                batch.checkpoint(id, ms);
            }
            Response::Applied {
                revision: batch.revision(),
            }
        }
        Command::Alarm {
            activate,
            member,
            alarm,
        } => {
            batch.set_alarm(member, alarm, activate);
            Response::Applied {
                revision: batch.revision(),
            }
        }
        Command::PublishMember { id, info } => {
            batch.set_member(id, &info);
            Response::Applied {
                revision: batch.revision(),
            }
        }
        Command::Auth(change) => match batch.change_auth(change) {
            Ok(()) => Response::Applied {
                revision: batch.revision(),
            },
            Err(e) => Response::Rejected(Rejection::Auth(e)),
        },
        Command::AsUser { user, cmd } => {
            let (auth, leases) = batch.auth_and_leases();
            match check_command(auth, leases, user.as_deref(), &cmd) {
                Ok(()) => apply_in_term(batch, *cmd, term),
                Err(e) => Response::Rejected(Rejection::Auth(e)),
            }
        }
    }
}
