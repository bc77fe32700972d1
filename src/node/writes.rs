//! The write path: a write is committed through Raft (group-committed on
//! the leader, forwarded by a follower), answered once this member applied
//! it, and retried only when it certainly had no effect.

use std::time::Duration;

use tokio::time::Instant;

use super::Node;
use crate::error::{Error, Result};
use crate::raft::NodeId;
use crate::store::{
    check_member_info, check_write, Command, Response, ALARM_NOSPACE, VERSION_OVERHEAD,
};

/// How long to wait before retrying a request that was not proposed.
pub(super) const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// A request's attempts to reach the leader, as its deadline finds them.
#[derive(Default)]
pub(super) struct Attempts {
    /// The leader an attempt is out to.
    out: Option<NodeId>,
    /// The leader the last attempt went to, if it refused the connection.
    refused: Option<NodeId>,
}

impl Attempts {
    /// An attempt goes out to `leader`.
    pub(super) fn start(&mut self, leader: NodeId) {
        self.out = Some(leader);
    }

    /// The attempt out failed with `e`, and nothing was sent.
    pub(super) fn failed(&mut self, e: &Error) {
        let leader = self.out.take();
        self.refused = leader.filter(|_| matches!(e, Error::LeaderUnreachable(_)));
    }

    /// What the deadline means: `Timeout` if a leader may have taken the
    /// request (an attempt is out, and not to a leader that refused the
    /// last one), so its outcome is unknown; otherwise `NoLeader`. A member
    /// still counting on a leader that was killed retries it until it sees
    /// an election, and that attempt is refused too.
    pub(super) fn deadline_error(&self) -> Error {
        if self.out.is_some() && self.out != self.refused {
            Error::Timeout
        } else {
            Error::NoLeader
        }
    }
}

impl Node {
    /// Commits `cmd` through Raft (here or on the leader) and returns what
    /// applying it produced. Fails after the request timeout.
    pub async fn write(&self, cmd: Command) -> Result<Response> {
        self.check_quota(&cmd).await?;
        let result = self.write_inner(&cmd).await;
        match &result {
            Ok(response) => self.catch_up(&cmd, response).await,
            Err(_) => self.metrics.proposals_failed.inc(),
        }
        result
    }

    /// Raises (`activate`) or clears alarm `alarm` of `member`, through
    /// Raft.
    pub async fn set_alarm(&self, activate: bool, member: NodeId, alarm: i32) -> Result<()> {
        self.write(Command::Alarm {
            activate,
            member,
            alarm,
        })
        .await
        .map(|_| ())
    }

    /// Has this member take a snapshot now, after which the Raft log
    /// behind it is purged (etcd's defragment, as far as raftkv has one).
    /// Returns once a snapshot covering everything applied when it was
    /// called is on disk (or the request timeout passed).
    pub async fn snapshot_now(&self) -> Result<()> {
        let mut metrics = self.raft.metrics();
        let Some(target) = metrics.borrow_and_update().last_applied.map(|l| l.index) else {
            return Ok(());
        };
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| Error::Stopped)?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            if metrics
                .borrow_and_update()
                .snapshot
                .is_some_and(|s| s.index >= target)
            {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Stopped),
                Err(_) => return Err(Error::Timeout),
            }
        }
    }

    /// The space quota, in bytes of state.
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Refuses a write that adds data past the space quota, as etcd's
    /// quota check does: it raises the NOSPACE alarm for this member
    /// through Raft (so every member refuses such writes until it is
    /// disarmed) and fails with "database space exceeded".
    async fn check_quota(&self, cmd: &Command) -> Result<()> {
        if !cmd.adds_data() {
            return Ok(());
        }
        let cost = cmd.payload_size() as u64 + VERSION_OVERHEAD;
        if self.store.size_bytes().saturating_add(cost) <= self.quota_bytes {
            return Ok(());
        }
        let raised = self.store.alarms().contains(&(self.id, ALARM_NOSPACE));
        if !raised {
            let alarm = Command::Alarm {
                activate: true,
                member: self.id,
                alarm: ALARM_NOSPACE,
            };
            match self.write_inner(&alarm).await {
                Ok(_) => tracing::warn!(
                    quota = self.quota_bytes,
                    size = self.store.size_bytes(),
                    "space quota exceeded: raised the NOSPACE alarm"
                ),
                Err(e) => tracing::warn!(error = %e, "raising the NOSPACE alarm"),
            }
        }
        Err(Error::NoSpace)
    }

    /// Waits until this member has applied a write the leader applied, as
    /// etcd answers a write only once the member the client called applied
    /// it: a serializable read or a watch sent here next then sees it (and
    /// after a compaction, a watch from before it is refused here too).
    /// Immediate on the leader. The write is committed either way, so after
    /// the request timeout it is reported as done without waiting longer.
    async fn catch_up(&self, cmd: &Command, response: &Response) {
        let revision = match response {
            Response::Put { revision, .. }
            | Response::DeleteRange { revision, .. }
            | Response::Txn { revision, .. }
            | Response::Compacted { revision }
            | Response::Applied { revision }
            | Response::LeaseGranted { revision, .. }
            | Response::LeaseRevoked { revision } => *revision,
            Response::Rejected(_) | Response::Batch(_) => return,
        };
        let cmd = match cmd {
            Command::AsUser { cmd, .. } => cmd,
            cmd => cmd,
        };
        let compacted = match (cmd, response) {
            (Command::Compact { revision }, Response::Compacted { .. }) => *revision,
            _ => 0,
        };
        let deadline = Instant::now() + self.request_timeout;
        let mut applied = self.revisions.clone();
        loop {
            // The applied revision as published after each applied batch:
            // no store lock on this path, which every write takes.
            let revision_ok = *applied.borrow_and_update() >= revision;
            let compacted_ok = compacted == 0 || self.store.compacted() >= compacted;
            if revision_ok && compacted_ok {
                return;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        revision,
                        "answering a write this member has not applied yet"
                    );
                    return;
                }
            }
        }
    }

    async fn write_inner(&self, cmd: &Command) -> Result<Response> {
        let deadline = Instant::now() + self.request_timeout;
        let state = std::sync::Mutex::new(Attempts::default());
        let attempts = || state.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = async {
            loop {
                let leader = self.wait_for_leader(deadline).await?;
                attempts().start(leader);
                let outcome = if leader == self.id {
                    self.propose(cmd.clone()).await
                } else {
                    self.forwarder.forward(leader, cmd.clone(), deadline).await
                };
                match outcome {
                    Err(e) if e.is_retryable() => {
                        attempts().failed(&e);
                        tokio::time::sleep(RETRY_BACKOFF).await
                    }
                    other => return other,
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, attempt).await;
        result.unwrap_or_else(|_| Err(attempts().deadline_error()))
    }

    /// Proposes `cmd` on this member, which must be the leader, batched
    /// with other writes (see `proposer`).
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        self.proposer.propose(cmd).await
    }

    /// Proposes the writes member `from` forwarded together; each one's
    /// outcome, in order. Each is checked as the client services check
    /// writes (the peer port is trusted no more than the client port), and a
    /// member may announce only itself. Refused as a whole if `from` is not
    /// a member.
    pub async fn propose_forwarded(
        &self,
        from: NodeId,
        cmds: Vec<Command>,
    ) -> Result<Vec<Result<Response>>> {
        if !self.is_member(from) {
            return Err(Error::NotAMember(from));
        }
        let checks: Vec<Result<()>> = cmds
            .iter()
            .map(|cmd| match cmd {
                Command::PublishMember { id, info } if *id == from => check_member_info(info),
                other => check_write(other, &self.limits),
            })
            .collect();
        let valid: Vec<Command> = cmds
            .into_iter()
            .zip(&checks)
            .filter(|(_, check)| check.is_ok())
            .map(|(cmd, _)| cmd)
            .collect();
        let mut proposed = self.proposer.propose_many(valid).await.into_iter();
        Ok(checks
            .into_iter()
            .map(|check| match check {
                Ok(()) => proposed.next().unwrap_or(Err(Error::Stopped)),
                Err(e) => Err(e),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_a_timeout_only_if_a_leader_may_have_the_request() {
        let mut a = Attempts::default();
        assert!(
            matches!(a.deadline_error(), Error::NoLeader),
            "nothing went out"
        );
        a.start(3);
        assert!(
            matches!(a.deadline_error(), Error::Timeout),
            "out to a leader"
        );
        a.failed(&Error::LeaderUnreachable("refused".into()));
        assert!(
            matches!(a.deadline_error(), Error::NoLeader),
            "refused, waiting"
        );
        a.start(3);
        assert!(
            matches!(a.deadline_error(), Error::NoLeader),
            "out again to the leader that refused the last attempt"
        );
        a.start(2);
        assert!(
            matches!(a.deadline_error(), Error::Timeout),
            "out to another leader"
        );
        a.failed(&Error::NotLeader);
        a.start(2);
        assert!(
            matches!(a.deadline_error(), Error::Timeout),
            "a leader that answered may take the next attempt"
        );
    }
}
