//! Writes to the state: a `WriteBatch` holds the state's write lock while a
//! group of log entries is applied, so readers see the group whole or not
//! at all; a `Writer` is one revision's worth of changes (a put, a delete, a
//! whole transaction) inside it.
//!
//! Every change of a key at revision `rev` adds a version to its history
//! (whose newest version is its current one) and an event at `rev.sub`, so
//! current reads, reads at past revisions and watches see exactly what was
//! applied.

use std::sync::RwLockWriteGuard;

use super::auth::{AuthCommand, AuthError, AuthState};
use super::kv::{KeyRange, KeyValue, RangeQuery, RangeResult, Reads, Rejection};
use super::state::{Lease, LeaseId, MemberInfo, Revision, State, Version, VERSION_OVERHEAD};

/// Changes to the state, under its write lock until dropped.
pub struct WriteBatch<'a> {
    st: RwLockWriteGuard<'a, State>,
}

impl<'a> WriteBatch<'a> {
    pub(super) fn new(st: RwLockWriteGuard<'a, State>) -> Self {
        WriteBatch { st }
    }

    /// The revision including this batch's changes so far.
    pub fn revision(&self) -> Revision {
        self.st.revision
    }

    /// Starts the changes of one new revision.
    pub fn write(&mut self) -> Writer<'_> {
        let rev = self.st.revision + 1;
        Writer {
            st: &mut self.st,
            rev,
            sub: 0,
        }
    }

    /// Drops history below `revision`: reads before it fail from now on,
    /// and each key keeps the version current at `revision` (if it existed
    /// then). etcd's `Compact`; it does not change the revision.
    pub fn compact(&mut self, revision: Revision) -> Result<(), Rejection> {
        let st = &mut *self.st;
        if revision <= st.compacted {
            return Err(Rejection::Compacted);
        }
        if revision > st.revision {
            return Err(Rejection::FutureRevision);
        }
        // For each key, of the versions at or before `revision` only the
        // newest stays (reads at `revision` need only that one), and not
        // even that if it is a delete from before `revision`. Only keys
        // changed since the last compaction can have anything to drop: any
        // other key holds at most its one version from before that point,
        // a put (the last compaction dropped older deletes, and a delete at
        // that very point has its event there). So this walks the events
        // since then, not every key.
        let changed: std::collections::BTreeSet<&[u8]> = st
            .events
            .range((st.compacted, 0)..=(revision, u32::MAX))
            .map(|(_, key)| key.as_slice())
            .collect();
        for key in changed {
            let Some(versions) = st.history.get_mut(key) else {
                continue;
            };
            let before = versions.len();
            let bytes_before = versions.bytes(key.len());
            versions.compact(revision);
            st.versions -= before - versions.len();
            st.bytes -= bytes_before - versions.bytes(key.len());
            if versions.is_empty() {
                st.history.remove(key);
            }
        }
        st.events = st.events.split_off(&(revision, 0));
        st.compacted = revision;
        Ok(())
    }

    /// Grants lease `id` for `ttl` seconds, unless it exists; does not
    /// change the revision.
    pub fn grant(&mut self, id: LeaseId, ttl: i64) -> Result<(), Rejection> {
        if self.st.leases.contains_key(&id) {
            return Err(Rejection::LeaseExists);
        }
        let lease = Lease {
            ttl,
            remaining_ms: ttl.saturating_mul(1000),
            recorded_at: Some(std::time::Instant::now()),
            keys: Default::default(),
        };
        self.st.leases.insert(id, lease);
        self.st.lease_version += 1;
        Ok(())
    }

    /// Records how long lease `id` has left, if it exists.
    pub fn checkpoint(&mut self, id: LeaseId, remaining_ms: i64) {
        if let Some(lease) = self.st.leases.get_mut(&id) {
            lease.remaining_ms = remaining_ms.clamp(0, lease.ttl.saturating_mul(1000));
            lease.recorded_at = Some(std::time::Instant::now());
        }
    }

    /// Revokes lease `id`: deletes every key attached to it, in key order,
    /// as the changes of one revision, then the lease. Returns the store
    /// revision after.
    pub fn revoke(&mut self, id: LeaseId) -> Result<Revision, Rejection> {
        let keys = match self.st.leases.get(&id) {
            Some(lease) => lease.keys.clone(),
            None => return Err(Rejection::LeaseNotFound),
        };
        let mut w = self.write();
        for key in &keys {
            w.delete_range(&KeyRange::Single(key.clone()), false);
        }
        let revision = w.finish();
        self.st.leases.remove(&id);
        self.st.lease_version += 1;
        Ok(revision)
    }

    /// Records a member's attributes; does not change the revision.
    pub fn set_member(&mut self, id: u64, info: &MemberInfo) {
        self.st.members.insert(id, info.clone());
    }

    /// Raises (`on`) or clears alarm `alarm` of `member`.
    pub fn set_alarm(&mut self, member: u64, alarm: i32, on: bool) {
        if on {
            self.st.alarms.insert((member, alarm));
        } else {
            self.st.alarms.remove(&(member, alarm));
        }
    }

    /// Whether any member has alarm `alarm` raised.
    /// Applies a change to users, roles or whether auth is on.
    pub fn change_auth(&mut self, change: AuthCommand) -> Result<(), AuthError> {
        self.st.auth.apply(change)
    }

    /// The auth state and the leases, for judging a caller's command
    /// (`authorize`).
    pub fn auth_and_leases(&self) -> (&AuthState, &std::collections::BTreeMap<LeaseId, Lease>) {
        (&self.st.auth, &self.st.leases)
    }

    pub fn has_alarm(&self, alarm: i32) -> bool {
        self.st.alarms.iter().any(|(_, a)| *a == alarm)
    }

    /// Sets a metadata entry, seen with the rest of the batch.
    pub fn set_meta(&mut self, name: &str, value: Vec<u8>) {
        self.st.meta.insert(name.to_string(), value);
    }
}

/// The changes of one revision: every key it changes gets that revision,
/// in order (`rev.sub`). Reads through it see its own earlier changes.
pub struct Writer<'b> {
    st: &'b mut State,
    rev: Revision,
    /// Changes made so far.
    sub: u32,
}

/// Reads through a `Writer` see this revision's changes so far; a read as
/// of `q.revision` must name an earlier revision.
impl Reads for Writer<'_> {
    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.st.get(key)
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult, Rejection> {
        self.st.range(q)
    }

    fn has_lease(&self, id: LeaseId) -> bool {
        self.st.has_lease(id)
    }
}

impl Writer<'_> {
    /// Adds `version` of `key` at this revision (the key is copied only
    /// when new), its event, and keeps the live-key count and the leases'
    /// key sets.
    fn record(&mut self, key: &[u8], version: Version) {
        let st = &mut *self.st;
        let old_lease = st.current(key).map_or(0, |(c, _)| c.lease);
        let new_lease = match &version {
            Version::Put { lease, .. } => *lease,
            Version::Delete => 0,
        };
        if old_lease != new_lease {
            if let Some(lease) = st.leases.get_mut(&old_lease) {
                lease.keys.remove(key);
            }
            if let Some(lease) = st.leases.get_mut(&new_lease) {
                lease.keys.insert(key.to_vec());
            }
        }
        let versions = match st.history.get_mut(key) {
            Some(v) => v,
            None => st.history.entry(key.to_vec()).or_default(),
        };
        let was_live = versions.is_live();
        let added = version.value_len();
        match versions.insert(self.rev, version) {
            None => {
                st.versions += 1;
                st.bytes += key.len() as u64 + added + VERSION_OVERHEAD;
            }
            Some(replaced) => st.bytes = st.bytes + added - replaced.value_len(),
        }
        match (was_live, versions.is_live()) {
            (false, true) => st.live += 1,
            (true, false) => st.live -= 1,
            _ => {}
        }
        st.events.insert((self.rev, self.sub), key.to_vec());
        self.sub += 1;
    }

    /// Sets `key` to `value` (`None`: keep its value) attached to `lease`
    /// (`None`: keep its lease) and returns the previous pair if `prev_kv`
    /// asks for it (it is copied only then). Changes nothing and returns a
    /// `Rejection` if `must_exist` (or keeping the value or the lease) and
    /// the key is absent, or if the lease does not exist.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
        must_exist: bool,
        prev_kv: bool,
    ) -> Result<Option<KeyValue>, Rejection> {
        if let Some(id) = lease.filter(|id| *id != 0) {
            if !self.st.leases.contains_key(&id) {
                return Err(Rejection::LeaseNotFound);
            }
        }
        let prev = self.st.current(key);
        if lease.is_none() && prev.is_none() {
            return Err(Rejection::KeyNotFound);
        }
        let value = match (value, prev) {
            (_, None) if must_exist => return Err(Rejection::KeyNotFound),
            (Some(v), _) => v,
            (None, Some((_, v))) => v.to_vec(),
            (None, None) => return Err(Rejection::KeyNotFound),
        };
        let prev_pair = match prev {
            Some((c, v)) if prev_kv => Some(KeyValue::from_current(key, &c, v)),
            _ => None,
        };
        let prev = prev.map(|(c, _)| c);
        let version = Version::Put {
            create_revision: prev.map_or(self.rev, |p| p.create_revision),
            version: prev.map_or(1, |p| p.version + 1),
            value,
            lease: lease.unwrap_or_else(|| prev.map_or(0, |p| p.lease)),
        };
        self.record(key, version);
        Ok(prev_pair)
    }

    /// Deletes every key in `range`; returns how many, and the deleted
    /// pairs in key order if `prev_kv` asks for them (copied only then).
    pub fn delete_range(&mut self, range: &KeyRange, prev_kv: bool) -> (i64, Vec<KeyValue>) {
        let keys: Vec<Vec<u8>> = match range.bounds() {
            Some(bounds) => self
                .st
                .history
                .range::<[u8], _>(bounds)
                .filter(|(_, v)| v.is_live())
                .map(|(k, _)| k.clone())
                .collect(),
            None => Vec::new(),
        };
        let mut deleted = Vec::new();
        for key in &keys {
            if prev_kv {
                deleted.extend(self.st.get(key));
            }
            self.record(key, Version::Delete);
        }
        (keys.len() as i64, deleted)
    }

    /// Ends the revision: the store's revision moves to it if anything
    /// changed. Returns the store revision after.
    pub fn finish(self) -> Revision {
        if self.sub > 0 {
            self.st.revision = self.rev;
        }
        self.st.revision
    }
}
