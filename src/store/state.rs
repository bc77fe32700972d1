//! The replicated state, in memory: what every applied command changes and
//! every read reads. It is made durable as snapshots (a file of their own),
//! with the Raft log holding everything after the last one (see
//! `state_machine.rs`).
//!
//! - `history`: every version of every key until compaction, by key then
//!   revision: the MVCC history for reads at past revisions. A key is live
//!   (in the current state) when its newest version is a put; compaction
//!   always keeps that version, so the current state is read from here too
//!   and a put or delete walks one map for its key, not two;
//! - `events`: which key changed at each `revision.sub`, for watches;
//! - `leases`: etcd's leases, each with the keys attached to it.
//!
//! Snapshots written before leases existed read as they are: a put without
//! a lease encodes as before, and the leases follow the rest of the state
//! (see `State::encode`).

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::auth::AuthState;

/// etcd's cluster-wide revision: starts at 1, +1 per write that changes a key.
pub type Revision = i64;

/// A lease's id; 0 means no lease.
pub type LeaseId = i64;

/// A lease as the replicated state holds it.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// The TTL it was granted, in seconds.
    pub ttl: i64,
    /// Its time left, in milliseconds, as of the last checkpoint of it (or
    /// of its grant): what a new leader carries on from.
    pub remaining_ms: i64,
    /// When this member applied that checkpoint (or the grant, or read the
    /// lease from disk): `remaining_ms` counts from then. Local, neither
    /// replicated nor compared.
    pub recorded_at: Option<std::time::Instant>,
    /// The keys attached to it (derived from the history on decoding).
    pub keys: BTreeSet<Vec<u8>>,
}

impl PartialEq for Lease {
    fn eq(&self, other: &Lease) -> bool {
        (self.ttl, self.remaining_ms, &self.keys) == (other.ttl, other.remaining_ms, &other.keys)
    }
}

impl Eq for Lease {}

/// A lease's record as one member's clock reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClock {
    pub id: LeaseId,
    /// When this member applied the lease's last checkpoint (or grant).
    pub recorded_at: std::time::Instant,
    /// The deadline that record implies.
    pub deadline: std::time::Instant,
}

/// What a member tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The revision of a store nobody has written to.
pub const INITIAL_REVISION: Revision = 1;

/// A live key's latest version, without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    /// Not in the encoding (this struct is also the layout of a part of
    /// snapshots that predates leases and is skipped on reading).
    #[serde(skip)]
    pub lease: LeaseId,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "VersionRepr<serde_bytes::ByteBuf>")]
pub enum Version {
    Put {
        create_revision: Revision,
        version: i64,
        value: Vec<u8>,
        /// The lease the key was attached to by this put; 0 if none.
        lease: LeaseId,
    },
    Delete,
}

/// What a version costs beyond its key and value, counted in the state's
/// size (the revision, counters, lease and the vector slot).
pub const VERSION_OVERHEAD: u64 = 48;

impl Version {
    /// The bytes of its value (none for a delete).
    pub fn value_len(&self) -> u64 {
        match self {
            Version::Put { value, .. } => value.len() as u64,
            Version::Delete => 0,
        }
    }
}

/// `Version` as it is encoded: a put without a lease as before leases
/// existed, one with a lease as a variant of its own.
#[derive(Serialize, Deserialize)]
enum VersionRepr<B> {
    Put {
        create_revision: Revision,
        version: i64,
        value: B,
    },
    Delete,
    LeasedPut {
        create_revision: Revision,
        version: i64,
        value: B,
        lease: LeaseId,
    },
}

impl From<VersionRepr<serde_bytes::ByteBuf>> for Version {
    fn from(v: VersionRepr<serde_bytes::ByteBuf>) -> Self {
        match v {
            VersionRepr::Put {
                create_revision,
                version,
                value,
            } => Version::Put {
                create_revision,
                version,
                value: value.into_vec(),
                lease: 0,
            },
            VersionRepr::LeasedPut {
                create_revision,
                version,
                value,
                lease,
            } => Version::Put {
                create_revision,
                version,
                value: value.into_vec(),
                lease,
            },
            VersionRepr::Delete => Version::Delete,
        }
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            Version::Put {
                create_revision,
                version,
                value,
                lease: 0,
            } => VersionRepr::Put {
                create_revision: *create_revision,
                version: *version,
                value: serde_bytes::Bytes::new(value),
            },
            Version::Put {
                create_revision,
                version,
                value,
                lease,
            } => VersionRepr::LeasedPut {
                create_revision: *create_revision,
                version: *version,
                value: serde_bytes::Bytes::new(value),
                lease: *lease,
            },
            Version::Delete => VersionRepr::Delete,
        };
        repr.serialize(s)
    }
}

/// One key's versions, oldest first: a sorted vector rather than a map, as
/// most keys have one or a few versions and a map node costs ~600 bytes.
/// Encodes exactly as a map from revision to version would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Versions(Vec<(Revision, Version)>);

impl Versions {
    /// How many versions the key has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The versions, oldest first, with their revisions.
    pub fn iter(&self) -> impl Iterator<Item = &(Revision, Version)> {
        self.0.iter()
    }

    /// The key's current version and value, if its newest version is a put.
    pub fn current(&self) -> Option<(Current, &[u8])> {
        match self.0.last()? {
            (
                rev,
                Version::Put {
                    create_revision,
                    version,
                    value,
                    lease,
                },
            ) => Some((
                Current {
                    create_revision: *create_revision,
                    mod_revision: *rev,
                    version: *version,
                    lease: *lease,
                },
                value,
            )),
            (_, Version::Delete) => None,
        }
    }

    /// Whether the key is in the current state.
    pub fn is_live(&self) -> bool {
        matches!(self.0.last(), Some((_, Version::Put { .. })))
    }

    /// The version at exactly `rev`.
    pub fn get(&self, rev: Revision) -> Option<&Version> {
        let i = self.0.binary_search_by_key(&rev, |(r, _)| *r).ok()?;
        Some(&self.0[i].1)
    }

    /// The newest version at or before `rev`.
    pub fn at_or_before(&self, rev: Revision) -> Option<(Revision, &Version)> {
        let n = self.0.partition_point(|(r, _)| *r <= rev);
        n.checked_sub(1).map(|i| (self.0[i].0, &self.0[i].1))
    }

    /// The newest version strictly before `rev`.
    pub fn before(&self, rev: Revision) -> Option<(Revision, &Version)> {
        self.at_or_before(rev.saturating_sub(1))
    }

    /// What the versions of a key of `key_len` bytes count in the state's
    /// size.
    pub fn bytes(&self, key_len: usize) -> u64 {
        self.0
            .iter()
            .map(|(_, v)| key_len as u64 + v.value_len() + VERSION_OVERHEAD)
            .sum()
    }

    /// Flips the bits of the newest version's value (see
    /// `KvStore::corrupt_for_tests`).
    pub fn corrupt_last_value(&mut self) {
        if let Some((_, Version::Put { value, .. })) = self.0.last_mut() {
            for b in value.iter_mut() {
                *b = !*b;
            }
        }
    }

    /// Records `version` at `rev`, replacing one already there; returns
    /// the one it replaced, if any (else the key has one version more).
    pub fn insert(&mut self, rev: Revision, version: Version) -> Option<Version> {
        match self.0.last() {
            Some((last, _)) if *last >= rev => {
                match self.0.binary_search_by_key(&rev, |(r, _)| *r) {
                    Ok(i) => Some(std::mem::replace(&mut self.0[i].1, version)),
                    Err(i) => {
                        self.0.insert(i, (rev, version));
                        None
                    }
                }
            }
            _ => {
                // Grow by half, from one: `Vec` would jump straight to four.
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact((self.0.len() / 2).max(1));
                }
                self.0.push((rev, version));
                None
            }
        }
    }

    /// Keeps what reads at `revision` and later need: every version after
    /// `revision`, and the newest at or before it unless that is a delete
    /// from before `revision` (a delete at `revision` stays: a watch from
    /// there must see it).
    pub fn compact(&mut self, revision: Revision) {
        let newer = self.0.partition_point(|(r, _)| *r <= revision);
        let keep_from = match newer.checked_sub(1) {
            Some(i) if matches!(self.0[i].1, Version::Delete) && self.0[i].0 < revision => newer,
            Some(i) => i,
            None => newer,
        };
        self.0.drain(..keep_from);
        if self.0.capacity() > 2 * self.0.len() {
            self.0.shrink_to_fit();
        }
    }
}

/// Everything the state machine holds.
#[derive(Debug)]
pub struct State {
    pub revision: Revision,
    /// History before this revision is gone; 0 if never compacted.
    pub compacted: Revision,
    pub history: BTreeMap<Vec<u8>, Versions>,
    /// How many keys of `history` are live (kept by every write).
    pub live: usize,
    /// How many versions `history` holds in all (kept by every write and
    /// compaction).
    pub versions: usize,
    /// The size of `history`: keys and values of every version, plus
    /// `VERSION_OVERHEAD` each (kept by every write and compaction). What
    /// the space quota counts.
    pub bytes: u64,
    pub events: BTreeMap<(Revision, u32), Vec<u8>>,
    pub members: BTreeMap<u64, MemberInfo>,
    /// Metadata owned by the caller (the Raft adapter's applied log id and
    /// membership), changed atomically with the rest.
    pub meta: BTreeMap<String, Vec<u8>>,
    pub leases: BTreeMap<LeaseId, Lease>,
    /// Bumped whenever a lease is granted or revoked (not encoded): tells a
    /// lease clock when to look again.
    pub lease_version: u64,
    /// Raised alarms: (member id, etcd's alarm type).
    pub alarms: BTreeSet<(u64, i32)>,
    /// Users, roles and whether auth is on.
    pub auth: AuthState,
}

impl Default for State {
    fn default() -> Self {
        State {
            revision: INITIAL_REVISION,
            compacted: 0,
            history: BTreeMap::new(),
            live: 0,
            versions: 0,
            bytes: 0,
            events: BTreeMap::new(),
            members: BTreeMap::new(),
            meta: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_version: 0,
            alarms: BTreeSet::new(),
            auth: AuthState::default(),
        }
    }
}

impl State {
    /// `key`'s current version and value, if it is live.
    pub fn current(&self, key: &[u8]) -> Option<(Current, &[u8])> {
        self.history.get(key)?.current()
    }

    /// The whole state, for a snapshot: the state as encoded before leases
    /// existed, then, if there are any leases or alarms, the leases (id,
    /// granted TTL, time left), then, if there are any, the alarms. A state
    /// without either encodes exactly as before.
    pub fn encode(&self) -> Result<Vec<u8>, crate::codec::CodecError> {
        let mut bytes = crate::codec::encode(self)?;
        let auth = self.auth != AuthState::default();
        if self.leases.is_empty() && self.alarms.is_empty() && !auth {
            return Ok(bytes);
        }
        let leases: Vec<(LeaseId, i64, i64)> = self
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl, l.remaining_ms))
            .collect();
        bytes.extend(crate::codec::encode(&leases)?);
        if !self.alarms.is_empty() || auth {
            bytes.extend(crate::codec::encode(&self.alarms)?);
        }
        if auth {
            bytes.extend(crate::codec::encode(&self.auth)?);
        }
        Ok(bytes)
    }

    /// Reads what `encode` wrote (or a snapshot from before leases, alarms
    /// or auth). Each lease's keys are the live keys whose current version
    /// names it.
    pub fn decode(bytes: &[u8]) -> Result<State, crate::codec::CodecError> {
        let (mut state, rest) = crate::codec::decode_prefix::<State>(bytes)?;
        if !rest.is_empty() {
            let (leases, rest): (Vec<(LeaseId, i64, i64)>, _) = crate::codec::decode_prefix(rest)?;
            if !rest.is_empty() {
                let (alarms, rest) = crate::codec::decode_prefix(rest)?;
                state.alarms = alarms;
                if !rest.is_empty() {
                    state.auth = crate::codec::decode(rest)?;
                }
            }
            state.leases = leases
                .into_iter()
                .map(|(id, ttl, remaining_ms)| {
                    let lease = Lease {
                        ttl,
                        remaining_ms,
                        recorded_at: Some(std::time::Instant::now()),
                        keys: BTreeSet::new(),
                    };
                    (id, lease)
                })
                .collect();
        }
        state.attach_lease_keys();
        Ok(state)
    }

    /// Derives what a state built from its history, events and leases
    /// alone (a restored backup) keeps beside them: the counts, the size
    /// and each lease's keys.
    pub fn recount(&mut self) {
        self.live = self.history.values().filter(|v| v.is_live()).count();
        self.versions = self.history.values().map(Versions::len).sum();
        self.bytes = self.history.iter().map(|(k, v)| v.bytes(k.len())).sum();
        for lease in self.leases.values_mut() {
            lease.keys.clear();
        }
        self.attach_lease_keys();
    }

    /// Each lease's keys: the live keys whose current version names it.
    fn attach_lease_keys(&mut self) {
        for (key, versions) in &self.history {
            if let Some((current, _)) = versions.current() {
                if let Some(lease) = self.leases.get_mut(&current.lease) {
                    lease.keys.insert(key.clone());
                }
            }
        }
    }
}

// Snapshots encode the state as it was when live keys were kept in a map of
// their own (`current`, between `compacted` and `history`), so data written
// before and after that change reads the same either way: the map is
// written from `history`, and on reading it is skipped: `history` says the
// same.

/// The live keys' current versions, encoded as the old `current` map.
struct CurrentView<'a>(&'a State);

impl Serialize for CurrentView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.live))?;
        for (key, versions) in &self.0.history {
            if let Some((current, _)) = versions.current() {
                map.serialize_entry(key, &current)?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct StateOut<'a> {
    revision: Revision,
    compacted: Revision,
    current: CurrentView<'a>,
    history: &'a BTreeMap<Vec<u8>, Versions>,
    events: &'a BTreeMap<(Revision, u32), Vec<u8>>,
    members: &'a BTreeMap<u64, MemberInfo>,
    meta: &'a BTreeMap<String, Vec<u8>>,
}

#[derive(Deserialize)]
struct StateIn {
    revision: Revision,
    compacted: Revision,
    #[allow(dead_code)]
    current: BTreeMap<Vec<u8>, Current>,
    history: BTreeMap<Vec<u8>, Versions>,
    events: BTreeMap<(Revision, u32), Vec<u8>>,
    members: BTreeMap<u64, MemberInfo>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StateOut {
            revision: self.revision,
            compacted: self.compacted,
            current: CurrentView(self),
            history: &self.history,
            events: &self.events,
            members: &self.members,
            meta: &self.meta,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StateIn::deserialize(d)?;
        let live = s.history.values().filter(|v| v.is_live()).count();
        let versions = s.history.values().map(Versions::len).sum();
        let bytes = s.history.iter().map(|(k, v)| v.bytes(k.len())).sum();
        Ok(State {
            revision: s.revision,
            compacted: s.compacted,
            history: s.history,
            live,
            versions,
            bytes,
            events: s.events,
            members: s.members,
            meta: s.meta,
            leases: BTreeMap::new(),
            lease_version: 0,
            alarms: BTreeSet::new(),
            auth: AuthState::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: &str) -> Version {
        Version::Put {
            create_revision: 2,
            version: 1,
            value: value.as_bytes().to_vec(),
            lease: 0,
        }
    }

    fn revs(v: &Versions) -> Vec<Revision> {
        v.0.iter().map(|(r, _)| *r).collect()
    }

    #[test]
    fn versions_stay_sorted_and_answer_lookups() {
        let mut v = Versions::default();
        for rev in [2, 5, 9] {
            v.insert(rev, put("x"));
        }
        v.insert(7, Version::Delete);
        v.insert(5, put("again"));
        assert_eq!(revs(&v), [2, 5, 7, 9]);
        assert_eq!(v.get(5), Some(&put("again")));
        assert_eq!(v.get(6), None);
        assert_eq!(v.at_or_before(6).map(|(r, _)| r), Some(5));
        assert_eq!(v.at_or_before(7).map(|(r, _)| r), Some(7));
        assert_eq!(v.at_or_before(1), None);
        assert_eq!(v.before(7).map(|(r, _)| r), Some(5));
        assert_eq!(v.before(2), None);
    }

    #[test]
    fn compaction_keeps_the_newest_version_at_or_before_it() {
        let build = || {
            let mut v = Versions::default();
            v.insert(2, put("a"));
            v.insert(4, put("b"));
            v.insert(6, Version::Delete);
            v.insert(8, put("c"));
            v
        };
        let mut v = build();
        v.compact(5);
        assert_eq!(revs(&v), [4, 6, 8]);
        // A delete before the compaction revision goes too...
        let mut v = build();
        v.compact(7);
        assert_eq!(revs(&v), [8]);
        // ...but one at it stays, for watches from there.
        let mut v = build();
        v.compact(6);
        assert_eq!(revs(&v), [6, 8]);
        let mut v = build();
        v.compact(1);
        assert_eq!(revs(&v), [2, 4, 6, 8]);
    }

    #[test]
    fn versions_encode_as_the_map_they_replaced() {
        let mut v = Versions::default();
        let mut map = BTreeMap::new();
        for (rev, version) in [(3, put("a")), (4, Version::Delete), (9, put("b"))] {
            v.insert(rev, version.clone());
            map.insert(rev, version);
        }
        let bytes = crate::codec::encode(&map).unwrap();
        assert_eq!(crate::codec::encode(&v).unwrap(), bytes);
        assert_eq!(crate::codec::decode::<Versions>(&bytes).unwrap(), v);
    }

    /// A put without a lease encodes exactly as before leases existed (so
    /// older snapshots read as they are); one with a lease round-trips.
    #[test]
    fn versions_without_a_lease_keep_their_old_encoding() {
        #[derive(Serialize)]
        enum Before {
            Put {
                create_revision: Revision,
                version: i64,
                #[serde(with = "serde_bytes")]
                value: Vec<u8>,
            },
        }
        let old = Before::Put {
            create_revision: 2,
            version: 1,
            value: b"x".to_vec(),
        };
        let bytes = crate::codec::encode(&old).unwrap();
        assert_eq!(crate::codec::encode(&put("x")).unwrap(), bytes);
        assert_eq!(crate::codec::decode::<Version>(&bytes).unwrap(), put("x"));
        let leased = Version::Put {
            create_revision: 2,
            version: 1,
            value: b"x".to_vec(),
            lease: 7,
        };
        let bytes = crate::codec::encode(&leased).unwrap();
        assert_eq!(crate::codec::decode::<Version>(&bytes).unwrap(), leased);
    }

    /// Auth state travels in snapshots (with or without leases and
    /// alarms), and a state without any encodes as before auth existed.
    #[test]
    fn auth_state_round_trips_through_a_snapshot() {
        use crate::store::auth::AuthCommand;
        let plain = State::default();
        let before = plain.encode().unwrap();
        assert_eq!(before, crate::codec::encode(&plain).unwrap());
        let mut st = State::default();
        st.auth
            .apply(AuthCommand::UserAdd {
                name: "root".into(),
                password: Some("$2b$04$hash".into()),
            })
            .unwrap();
        st.auth
            .apply(AuthCommand::RoleAdd { name: "r".into() })
            .unwrap();
        let back = State::decode(&st.encode().unwrap()).unwrap();
        assert_eq!(back.auth, st.auth);
        assert!(back.alarms.is_empty() && back.leases.is_empty());
        st.alarms.insert((1, 1));
        let back = State::decode(&st.encode().unwrap()).unwrap();
        assert_eq!((back.auth, back.alarms), (st.auth, st.alarms));
    }
}
