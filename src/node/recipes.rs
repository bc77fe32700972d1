//! etcd's lock and election recipes, served by the member itself (etcd's
//! `v3lock` and `v3election` services), built from leases, transactions
//! and revisions exactly as etcd's client-side recipes are, so a lock taken
//! here and one taken by `etcdctl lock` exclude each other.
//!
//! A contender owns the key `<name>/<lease in hex>`, attached to its lease,
//! created in a transaction if absent. It holds the lock (or leads the
//! election) once no key under `<name>/` was created before its own: the
//! waiting follows this member's applied state. Its key goes when it
//! unlocks or resigns, or when its lease expires.

use super::Node;
use crate::error::{Error, Result};
use crate::store::{
    Command, Compare, CompareResult, CompareTarget, KeyRange, KeyValue, LeaseId, OpResult,
    RangeQuery, Response, Revision, SortOrder, SortTarget, Txn, TxnOp,
};

/// A leadership, as etcd's `LeaderKey`: the election, the key, the
/// revision it was created at, its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub name: Vec<u8>,
    pub key: Vec<u8>,
    pub rev: Revision,
    pub lease: LeaseId,
}

/// The key contender `lease` owns in `name`.
fn owner_key(name: &[u8], lease: LeaseId) -> Vec<u8> {
    [name, b"/", format!("{lease:x}").as_bytes()].concat()
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// The one response of a transaction the node ran.
fn txn_result(response: Response) -> Result<(Revision, bool, Vec<OpResult>)> {
    match response {
        Response::Txn { revision, result } => Ok((revision, result.succeeded, result.responses)),
        Response::Rejected(r) => Err(r.into()),
        other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
    }
}

fn created_at(key: &[u8], rev: Revision) -> Compare {
    Compare {
        range: KeyRange::new(key, b""),
        target: CompareTarget::Create(rev),
        result: CompareResult::Equal,
    }
}

impl Node {
    /// Creates `key` with `value` on `lease` unless it exists; returns its
    /// create revision and, if it existed, its value.
    async fn claim(
        &self,
        who: Option<&str>,
        key: &[u8],
        value: &[u8],
        lease: LeaseId,
    ) -> Result<(Revision, Option<Vec<u8>>)> {
        let txn = Txn {
            compare: vec![created_at(key, 0)],
            success: vec![TxnOp::Put {
                key: key.to_vec(),
                value: Some(value.to_vec()),
                lease: Some(lease),
                must_exist: false,
                prev_kv: false,
            }],
            failure: vec![TxnOp::Range(RangeQuery::new(KeyRange::new(key, b"")))],
        };
        let (revision, created, responses) =
            txn_result(self.write_as(who, Command::Txn(txn)).await?)?;
        if created {
            return Ok((revision, None));
        }
        match responses.into_iter().next() {
            Some(OpResult::Range(r)) => match r.kvs.into_iter().next() {
                Some(kv) => Ok((kv.create_revision, Some(kv.value))),
                // Deleted in between: try again from the start.
                None => Box::pin(self.claim(who, key, value, lease)).await,
            },
            _ => Err(Error::UnexpectedResponse("no range in a claim".into())),
        }
    }

    /// Waits until no key under `name/` was created before `rev`, with
    /// `key` (created at `rev`) still there; refused if it went (its lease
    /// expired).
    async fn wait_for_turn(&self, name: &[u8], key: &[u8], rev: Revision) -> Result<Revision> {
        let earlier = RangeQuery {
            limit: 1,
            keys_only: true,
            max_create_revision: rev - 1,
            ..RangeQuery::new(KeyRange::prefix(&prefix_of(name)))
        };
        let mut applied = self.subscribe_revisions();
        loop {
            let revision = *applied.borrow_and_update();
            match self.store.get(key) {
                Some(kv) if kv.create_revision == rev => {}
                _ => return Err(Error::SessionExpired),
            }
            let ahead = self.store.range(&earlier).map_err(Error::from)?;
            if ahead.kvs.is_empty() {
                return Ok(revision);
            }
            applied.changed().await.map_err(|_| Error::Stopped)?;
        }
    }

    /// etcd's `Lock`: waits until `lease`'s holder holds lock `name`;
    /// returns the key that represents it and the revision. `who` must
    /// be allowed to read every key under `name/` and to write its own.
    pub async fn lock(
        &self,
        who: Option<&str>,
        name: &[u8],
        lease: LeaseId,
    ) -> Result<(Vec<u8>, Revision)> {
        self.check_read(who, &KeyRange::prefix(&prefix_of(name)))?;
        let key = owner_key(name, lease);
        let (rev, _) = self.claim(who, &key, b"", lease).await?;
        let revision = self.wait_for_turn(name, &key, rev).await?;
        Ok((key, revision))
    }

    /// Deletes `key` (a lock's, or any) on behalf of `who`; the revision
    /// after.
    pub async fn delete_key(&self, who: Option<&str>, key: &[u8]) -> Result<Revision> {
        let cmd = Command::DeleteRange {
            key: key.to_vec(),
            range_end: Vec::new(),
            prev_kv: false,
        };
        match self.write_as(who, cmd).await? {
            Response::DeleteRange { revision, .. } => Ok(revision),
            Response::Rejected(r) => Err(r.into()),
            other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// etcd's `Campaign`: waits until `lease`'s holder leads election
    /// `name`, its value `value`. `who` must be allowed to read every key
    /// under `name/` and to write its own.
    pub async fn campaign(
        &self,
        who: Option<&str>,
        name: &[u8],
        lease: LeaseId,
        value: &[u8],
    ) -> Result<Leadership> {
        self.check_read(who, &KeyRange::prefix(&prefix_of(name)))?;
        let key = owner_key(name, lease);
        let (rev, existing) = self.claim(who, &key, value, lease).await?;
        let leadership = Leadership {
            name: name.to_vec(),
            key: key.clone(),
            rev,
            lease,
        };
        if existing.is_some_and(|v| v != value) {
            self.proclaim(who, &leadership, value).await?;
        }
        self.wait_for_turn(name, &key, rev).await?;
        Ok(leadership)
    }

    /// etcd's `Proclaim`: sets the leader's value, if `leadership` still
    /// leads.
    pub async fn proclaim(
        &self,
        who: Option<&str>,
        leadership: &Leadership,
        value: &[u8],
    ) -> Result<Revision> {
        let txn = Txn {
            compare: vec![created_at(&leadership.key, leadership.rev)],
            success: vec![TxnOp::Put {
                key: leadership.key.clone(),
                value: Some(value.to_vec()),
                lease: Some(leadership.lease),
                must_exist: false,
                prev_kv: false,
            }],
            failure: vec![],
        };
        match txn_result(self.write_as(who, Command::Txn(txn)).await?)? {
            (revision, true, _) => Ok(revision),
            _ => Err(Error::ElectionNotLeader),
        }
    }

    /// etcd's `Resign`: gives up `leadership`, if it still holds.
    pub async fn resign(&self, who: Option<&str>, leadership: &Leadership) -> Result<Revision> {
        let txn = Txn {
            compare: vec![created_at(&leadership.key, leadership.rev)],
            success: vec![TxnOp::DeleteRange {
                range: KeyRange::new(&leadership.key, b""),
                prev_kv: false,
            }],
            failure: vec![],
        };
        Ok(txn_result(self.write_as(who, Command::Txn(txn)).await?)?.0)
    }

    /// The leader of election `name` as this member's applied state has it
    /// (the key created first under `name/`), and the revision read at;
    /// `who` must be allowed to read every key under `name/`.
    pub fn election_leader(
        &self,
        who: Option<&str>,
        name: &[u8],
    ) -> Result<(Revision, Option<KeyValue>)> {
        self.check_read(who, &KeyRange::prefix(&prefix_of(name)))?;
        let first = RangeQuery {
            limit: 1,
            sort_target: SortTarget::Create,
            sort_order: SortOrder::Ascend,
            ..RangeQuery::new(KeyRange::prefix(&prefix_of(name)))
        };
        let revision = self.store.revision();
        let result = self.store.range(&first).map_err(Error::from)?;
        Ok((revision, result.kvs.into_iter().next()))
    }
}
