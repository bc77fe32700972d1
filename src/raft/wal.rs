//! The Raft log in files of its own: append-only segment files, synced with
//! one `fdatasync` per append.
//!
//! An append is one `pwrite` of all its records and one `fdatasync`, as
//! etcd's WAL does: openraft 0.9 waits for the leader's sync before it
//! replicates, so the cost of an append is paid twice in a row per write.
//!
//! Layout: `<dir>/<seq>.wal`, numbered in order. A segment is a run of
//! records `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`,
//! each payload one encoded `Entry`; a new segment starts once the current
//! one passes `SEGMENT_BYTES`. In memory: where each entry is, by index.
//!
//! Opening reads every segment back before it changes anything. Only an
//! append that never finished (so was never acknowledged) is cut off, where
//! the last segment ends in one: zeros, a record cut short by the end of the
//! file, or a record part of which was never written (a sector of zeros).
//! Anything else that does not check out is damage: a whole record whose
//! bytes changed (a flipped bit in its payload, checksum or length), a bad
//! record that valid ones follow, a bad record in an earlier segment. Then
//! opening fails naming the file and offset, and leaves every file as it
//! was, rather than guess (see `judge_tail`). Entries at or below the purge
//! point are skipped; whole segments behind it are deleted by `purge`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::inbound::{MAX_INDEX, MAX_TERM};
use super::typ::{Entry, LogId};
use crate::codec;
use crate::error::{Error, Result};

/// A segment is closed once it holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Length and CRC before each payload.
const HEADER_BYTES: usize = 8;

/// Where one entry is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    log_id: LogId,
    seq: u64,
    /// Offset of the record (its header) in the segment.
    offset: u64,
    /// Payload length.
    len: u32,
}

struct Segment {
    seq: u64,
    file: Arc<File>,
    /// Bytes of whole records.
    len: u64,
}

struct Inner {
    /// Oldest first; never empty.
    segments: Vec<Segment>,
    /// Every live entry, by index. openraft never leaves gaps, but its
    /// storage test suite does, so gaps are allowed.
    locs: BTreeMap<u64, Loc>,
}

/// The log. Shared by the log store and its readers.
pub struct Wal {
    dir: PathBuf,
    /// `SEGMENT_BYTES`, smaller in tests.
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn corrupt(path: &Path, offset: u64, why: &str) -> Error {
    Error::DataDir(format!(
        "raft log {} is damaged at byte {offset}: {why}",
        path.display()
    ))
}

/// Where a segment's whole records end, and what follows them.
struct SegmentEnd {
    /// Bytes of whole, valid records.
    len: u64,
    /// What follows them, if anything.
    torn: Option<Tail>,
}

/// The bytes after a segment's last valid record.
struct Tail {
    /// What is wrong with the first record there.
    why: &'static str,
    /// Why these bytes cannot be an append that never finished, if they
    /// cannot: then they are damage, and nothing may be cut.
    damage: Option<&'static str>,
}

/// Sector size for telling a torn write from damage: a write cut short
/// leaves whole sectors unwritten (zero), a flipped bit does not.
const SECTOR: usize = 512;
/// The least run of zeros, within one sector, that counts as unwritten.
const MIN_ZERO_RUN: usize = 16;

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// Fewer bytes than a header are left.
    HeaderCut,
    /// The header promises more bytes than are left.
    PayloadCut,
    /// The payload does not match the checksum.
    Checksum,
    /// Length 0 and checksum 0: zeros where a header should be.
    Empty,
}

impl Bad {
    fn describe(self) -> &'static str {
        match self {
            Bad::HeaderCut => "a record header cut short",
            Bad::PayloadCut => "a record cut short",
            Bad::Checksum => "a record failing its checksum",
            Bad::Empty => "an empty record",
        }
    }
}

/// The header at `offset` of `data`: payload length and checksum.
fn header_at(data: &[u8], offset: usize) -> Option<(usize, u32)> {
    let header = data.get(offset..offset.checked_add(HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    Some((len, crc))
}

/// The payload of the record at `offset` of `data`, if it is whole.
fn record_at(data: &[u8], offset: usize) -> std::result::Result<&[u8], Bad> {
    let (len, crc) = header_at(data, offset).ok_or(Bad::HeaderCut)?;
    let start = offset + HEADER_BYTES;
    let payload = data.get(start..start + len).ok_or(Bad::PayloadCut)?;
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Checksum);
    }
    if payload.is_empty() {
        return Err(Bad::Empty);
    }
    Ok(payload)
}

/// Whether some sector-aligned piece of `data[range]` (clipped to `data`)
/// of at least `MIN_ZERO_RUN` bytes is all zeros: part of it was never
/// written.
fn has_unwritten_sector(data: &[u8], range: std::ops::Range<usize>) -> bool {
    let end = range.end.min(data.len());
    let mut at = range.start;
    while at < end {
        let next = (at / SECTOR + 1) * SECTOR;
        let piece = &data[at..next.min(end)];
        if piece.len() >= MIN_ZERO_RUN && piece.iter().all(|&b| b == 0) {
            return true;
        }
        at = next;
    }
    false
}

/// Judges the bytes from `offset`, where the first bad record of the last
/// segment starts. They are an append that never finished (and may be cut)
/// only if no valid record of a later entry follows them, and they are all
/// zeros, or the record is cut short by the end of the file, or part of it
/// was never written. A whole record whose bytes changed is damage (a
/// flipped bit in its payload, its checksum or its length), and so is
/// anything a valid record follows. `last` is the last entry before it.
fn judge_tail(data: &[u8], offset: usize, bad: Bad, last: Option<u64>) -> Tail {
    let why = bad.describe();
    let torn = Tail { why, damage: None };
    let damage = |d| Tail {
        why,
        damage: Some(d),
    };
    if data[offset..].iter().all(|&b| b == 0) {
        return torn;
    }
    let later_record = (offset + 1..data.len()).any(|p| {
        record_at(data, p).is_ok_and(|payload| {
            codec::decode::<Entry>(payload).is_ok_and(|e| last.is_none_or(|l| e.log_id.index > l))
        })
    });
    if later_record {
        return damage("valid records follow it");
    }
    let start = offset + HEADER_BYTES;
    match bad {
        Bad::HeaderCut => torn,
        Bad::PayloadCut => {
            // A record whose rest, to the end of the file, matches its
            // checksum is whole: only its length changed.
            let (_, crc) = header_at(data, offset).expect("a whole header");
            if crc32fast::hash(&data[start..]) == crc {
                damage("the record is whole but its length changed")
            } else {
                torn
            }
        }
        Bad::Checksum => {
            let (len, _) = header_at(data, offset).expect("a whole header");
            if has_unwritten_sector(data, offset..start + len) {
                torn
            } else {
                damage("the record is whole but its bytes changed")
            }
        }
        Bad::Empty => {
            if has_unwritten_sector(data, offset..offset + SECTOR) {
                torn
            } else {
                damage("an empty record before other bytes")
            }
        }
    }
}

/// Reads the records of segment `seq` (`data`, from `path`) into `locs`,
/// skipping entries at or below `purged`; says where its whole records end.
fn scan_segment(
    path: &Path,
    seq: u64,
    data: &[u8],
    purged: Option<u64>,
    locs: &mut BTreeMap<u64, Loc>,
) -> Result<SegmentEnd> {
    let mut offset = 0usize;
    while offset < data.len() {
        let last = locs.last_key_value().map(|(&i, _)| i);
        let payload = match record_at(data, offset) {
            Ok(payload) => payload,
            Err(bad) => {
                return Ok(SegmentEnd {
                    len: offset as u64,
                    torn: Some(judge_tail(data, offset, bad, last)),
                })
            }
        };
        let entry: Entry =
            codec::decode(payload).map_err(|e| corrupt(path, offset as u64, &e.to_string()))?;
        if entry.log_id.leader_id.term >= MAX_TERM || entry.log_id.index >= MAX_INDEX {
            return Err(corrupt(
                path,
                offset as u64,
                &format!("entry {} is out of range", entry.log_id),
            ));
        }
        let index = entry.log_id.index;
        if purged.is_none_or(|p| index > p) {
            if let Some(prev) = last.filter(|&prev| index <= prev) {
                return Err(corrupt(
                    path,
                    offset as u64,
                    &format!("entry {index} follows entry {prev}"),
                ));
            }
            locs.insert(
                index,
                Loc {
                    log_id: entry.log_id,
                    seq,
                    offset: offset as u64,
                    len: payload.len() as u32,
                },
            );
        }
        offset += HEADER_BYTES + payload.len();
    }
    Ok(SegmentEnd {
        len: offset as u64,
        torn: None,
    })
}

impl Wal {
    /// Opens the log in `dir` (created if missing); entries at or below
    /// `purged` are treated as gone.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Wal> {
        Self::open_with(dir, purged, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, purged: Option<u64>, segment_bytes: u64) -> Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        // Read everything first: a damaged log is refused before any file
        // is touched.
        let mut scanned = Vec::with_capacity(seqs.len());
        let mut locs: BTreeMap<u64, Loc> = BTreeMap::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let data = std::fs::read(&path)?;
            let end = scan_segment(&path, seq, &data, purged, &mut locs)?;
            if let Some(torn) = &end.torn {
                let damage = if i + 1 < seqs.len() {
                    Some("a later segment follows it")
                } else {
                    torn.damage
                };
                if let Some(damage) = damage {
                    return Err(corrupt(
                        &path,
                        end.len,
                        &format!("{} ({damage}); nothing was changed on disk", torn.why),
                    ));
                }
            }
            scanned.push((seq, path, end));
        }
        let mut segments = Vec::with_capacity(scanned.len());
        for (seq, path, end) in scanned {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if let Some(torn) = end.torn {
                // An append that never finished, so never acknowledged.
                tracing::warn!(
                    segment = %path.display(),
                    offset = end.len,
                    why = torn.why,
                    "cutting an unfinished append off the raft log"
                );
                file.set_len(end.len)?;
                file.sync_all()?;
            }
            segments.push(Segment {
                seq,
                file: Arc::new(file),
                len: end.len,
            });
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner { segments, locs }),
        };
        if wal.lock().segments.is_empty() {
            let mut inner = wal.lock();
            wal.start_segment(&mut inner, 1)?;
        }
        Ok(wal)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_segment(&self, inner: &mut Inner, seq: u64) -> Result<()> {
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        inner.segments.push(Segment {
            seq,
            file: Arc::new(file),
            len: 0,
        });
        Ok(())
    }

    /// The last entry's id, if any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().locs.last_key_value().map(|(_, l)| l.log_id)
    }

    /// Whether the log holds no live entry.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().locs.is_empty()
    }

    /// Entries with index in `start..end`, as far as the log has them.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let inner = self.lock();
        if start >= end {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for loc in inner.locs.range(start..end).map(|(_, l)| l) {
            let i = inner
                .segments
                .binary_search_by_key(&loc.seq, |s| s.seq)
                .map_err(|_| Error::DataDir(format!("raft log segment {} is missing", loc.seq)))?;
            let mut buf = vec![0; loc.len as usize];
            inner.segments[i]
                .file
                .read_exact_at(&mut buf, loc.offset + HEADER_BYTES as u64)?;
            // Checked when the log was opened or written, so only a disk
            // that changed under us gets here: fatal, naming the entry.
            let entry = codec::decode(&buf).map_err(|e| {
                Error::DataDir(format!(
                    "raft log entry {} in segment {} cannot be read back: {e}",
                    loc.log_id, loc.seq
                ))
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Writes `entries` after the last one (each must come after it) and
    /// returns the file to sync before they count as durable.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Arc<File>> {
        let mut inner = self.lock();
        let current = inner.segments.last().expect("invariant: a segment");
        if current.len >= self.segment_bytes {
            // Everything in it was synced by the appends that wrote it.
            let seq = current.seq + 1;
            self.start_segment(&mut inner, seq)?;
        }
        let (seq, base) = {
            let s = inner.segments.last().expect("invariant: a segment");
            (s.seq, s.len)
        };
        let mut last = inner.locs.last_key_value().map(|(&i, _)| i);
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(last) = last.filter(|&l| index <= l) {
                return Err(Error::LogOutOfOrder { index, last });
            }
            last = Some(index);
            let payload = codec::encode(&entry)?;
            added.push(Loc {
                log_id: entry.log_id,
                seq,
                offset: base + buf.len() as u64,
                len: payload.len() as u32,
            });
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        let segment = inner.segments.last_mut().expect("invariant: a segment");
        segment.file.write_all_at(&buf, base)?;
        segment.len += buf.len() as u64;
        let file = segment.file.clone();
        inner
            .locs
            .extend(added.into_iter().map(|l| (l.log_id.index, l)));
        Ok(file)
    }

    /// Removes entries with index `>= since`, durably.
    pub fn truncate(&self, since: u64) -> Result<()> {
        let mut inner = self.lock();
        let Some(cut) = inner.locs.range(since..).next().map(|(_, l)| *l) else {
            return Ok(());
        };
        let mut removed = false;
        while inner.segments.len() > 1 && inner.segments.last().is_some_and(|s| s.seq > cut.seq) {
            let s = inner.segments.pop().expect("checked");
            std::fs::remove_file(segment_path(&self.dir, s.seq))?;
            removed = true;
        }
        let segment = inner.segments.last_mut().expect("invariant: a segment");
        segment.file.set_len(cut.offset)?;
        segment.len = cut.offset;
        segment.file.sync_all()?;
        if removed {
            sync_dir(&self.dir)?;
        }
        inner.locs.split_off(&since);
        Ok(())
    }

    /// Forgets entries with index `<= upto` and deletes the segments that
    /// hold nothing else. The caller records the purge point first.
    pub fn purge(&self, upto: u64) -> Result<()> {
        let mut inner = self.lock();
        inner.locs = inner.locs.split_off(&upto.saturating_add(1));
        let last_seq = inner.segments.last().expect("invariant: a segment").seq;
        let keep_from = inner
            .locs
            .first_key_value()
            .map_or(last_seq, |(_, l)| l.seq);
        let mut removed = false;
        while inner.segments.first().is_some_and(|s| s.seq < keep_from) {
            let s = inner.segments.remove(0);
            std::fs::remove_file(segment_path(&self.dir, s.seq))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn entries(term: u64, range: std::ops::Range<u64>) -> Vec<Entry> {
        range.map(|i| entry(term, i)).collect()
    }

    fn ids(wal: &Wal, start: u64, end: u64) -> Vec<(u64, u64)> {
        wal.read(start, end)
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn segment_files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// Small segments, so a few entries span several files.
    const SMALL: u64 = 64;

    #[test]
    fn appends_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        wal.append(entries(1, 0..5)).unwrap().sync_data().unwrap();
        for i in 5..20 {
            wal.append(entries(1, i..i + 1))
                .unwrap()
                .sync_data()
                .unwrap();
        }
        assert!(
            segment_files(dir.path()) > 2,
            "entries should span segments"
        );
        let all: Vec<_> = (0..20).map(|i| (1, i)).collect();
        assert_eq!(ids(&wal, 0, u64::MAX), all);
        assert_eq!(ids(&wal, 7, 9), vec![(1, 7), (1, 8)]);
        assert_eq!(wal.last_log_id().map(|l| l.index), Some(19));
        drop(wal);
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        assert_eq!(ids(&wal, 0, u64::MAX), all);
        // Rewriting an index without truncating first is refused.
        assert!(wal.append(entries(2, 19..20)).is_err());
        assert_eq!(ids(&wal, 19, 20), vec![(1, 19)]);
    }

    #[test]
    fn truncate_and_purge_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        wal.append(entries(1, 0..30)).unwrap();
        for i in 30..40 {
            wal.append(entries(1, i..i + 1)).unwrap();
        }
        wal.truncate(25).unwrap();
        wal.append(entries(2, 25..28)).unwrap().sync_data().unwrap();
        let before = segment_files(dir.path());
        wal.purge(26).unwrap();
        assert!(segment_files(dir.path()) <= before);
        assert_eq!(ids(&wal, 0, u64::MAX), vec![(2, 27)]);
        drop(wal);
        // Reopened with the purge point the caller recorded.
        let wal = Wal::open_with(dir.path(), Some(26), SMALL).unwrap();
        assert_eq!(ids(&wal, 0, u64::MAX), vec![(2, 27)]);
        // Purging past the end leaves an empty log that takes any next entry.
        wal.purge(40).unwrap();
        assert!(wal.is_empty());
        wal.append(entries(3, 41..43)).unwrap().sync_data().unwrap();
        drop(wal);
        let wal = Wal::open_with(dir.path(), Some(40), SMALL).unwrap();
        assert_eq!(ids(&wal, 0, u64::MAX), vec![(3, 41), (3, 42)]);
    }

    #[test]
    fn an_unfinished_append_at_the_end_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(entries(1, 0..3)).unwrap().sync_data().unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        // Half a record: a header promising more bytes than follow.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert_eq!(ids(&wal, 0, 10), vec![(1, 0), (1, 1), (1, 2)]);
        wal.append(entries(1, 3..4)).unwrap().sync_data().unwrap();
        drop(wal);
        // A whole last record whose bytes do not match its checksum is
        // damage, not an unfinished append: refused, and left as it is.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir.path(), None).err().expect("damaged log");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    /// A log of `n` entries with distinct, zero-free payloads, one append
    /// each, in segments of `segment_bytes`; the record boundaries of the
    /// first segment.
    fn written(dir: &Path, n: u64, segment_bytes: u64) -> Vec<u64> {
        let wal = Wal::open_with(dir, None, segment_bytes).unwrap();
        for i in 0..n {
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), i + 1),
                payload: EntryPayload::Normal(crate::store::Command::Put {
                    lease: Some(0),
                    key: format!("key-{i}").into_bytes(),
                    value: Some(vec![b'a' + (i % 26) as u8; 20 + (i as usize * 37) % 700]),
                    must_exist: true,
                    prev_kv: true,
                }),
            };
            wal.append([entry]).unwrap().sync_data().unwrap();
        }
        let inner = wal.lock();
        let mut bounds = vec![0];
        bounds.extend(
            inner
                .locs
                .values()
                .filter(|l| l.seq == 1)
                .map(|l| l.offset + HEADER_BYTES as u64 + l.len as u64),
        );
        bounds
    }

    fn indexes(wal: &Wal) -> Vec<u64> {
        wal.read(0, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A log cut anywhere opens with every record that was whole before
        /// the cut, nothing else, and the file cut back to them.
        #[test]
        fn a_cut_keeps_every_whole_record(n in 1u64..30, at in 0.0f64..1.0) {
            let dir = tempfile::tempdir().unwrap();
            let bounds = written(dir.path(), n, SEGMENT_BYTES);
            let path = segment_path(dir.path(), 1);
            let len = std::fs::metadata(&path).unwrap().len();
            let cut = (len as f64 * at) as u64;
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            let wal = Wal::open(dir.path(), None).unwrap();
            let whole = bounds.iter().filter(|&&b| b <= cut).count() as u64 - 1;
            prop_assert_eq!(indexes(&wal), (1..=whole).collect::<Vec<_>>());
            prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), bounds[whole as usize]);
        }

        /// One flipped bit anywhere in a log, in any segment, is damage:
        /// opening fails naming the file, and no file changes.
        #[test]
        fn a_flipped_bit_is_refused_and_left_alone(
            n in 1u64..30,
            small in any::<bool>(),
            at in 0.0f64..1.0,
            bit in 0u8..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            written(dir.path(), n, if small { 2048 } else { SEGMENT_BYTES });
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).collect();
            let total: u64 = sizes.iter().sum();
            let mut pos = (total as f64 * at) as u64;
            let mut victim = 0;
            while pos >= sizes[victim] {
                pos -= sizes[victim];
                victim += 1;
            }
            let mut bytes = std::fs::read(&files[victim]).unwrap();
            bytes[pos as usize] ^= 1 << bit;
            std::fs::write(&files[victim], &bytes).unwrap();
            let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            let err = Wal::open(dir.path(), None).err().expect("a damaged log must not open");
            prop_assert!(err.to_string().contains(&*files[victim].to_string_lossy()), "{}", err);
            let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            prop_assert!(before == after, "a damaged log was modified");
        }

        /// A tail of zeros (a file extended but never written) is cut off;
        /// so is a last record with a sector that was never written.
        #[test]
        fn unwritten_tails_are_cut(n in 1u64..30, zeros in 1usize..5000, hole in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let bounds = written(dir.path(), n, SEGMENT_BYTES);
            let path = segment_path(dir.path(), 1);
            let mut bytes = std::fs::read(&path).unwrap();
            let last_start = bounds[bounds.len() - 2] as usize;
            let kept = if hole && bytes.len() - last_start > HEADER_BYTES + 2 * SECTOR {
                // Zero one whole sector inside the last record.
                let from = (last_start + HEADER_BYTES).div_ceil(SECTOR) * SECTOR;
                bytes[from..from + SECTOR].fill(0);
                n - 1
            } else {
                bytes.resize(bytes.len() + zeros, 0);
                n
            };
            std::fs::write(&path, &bytes).unwrap();
            let wal = Wal::open(dir.path(), None).unwrap();
            prop_assert_eq!(indexes(&wal), (1..=kept).collect::<Vec<_>>());
            prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), bounds[kept as usize]);
        }
    }

    /// Scenario: a flipped bit in the middle of the last segment, with 50
    /// whole records after it. Opening refuses, naming the offset, and the
    /// 50 records are still in the file.
    #[test]
    fn damage_followed_by_records_is_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = written(dir.path(), 100, SEGMENT_BYTES);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let victim = bounds[50] as usize + HEADER_BYTES + 3;
        bytes[victim] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir.path(), None).err().expect("damaged log");
        let msg = err.to_string();
        assert!(msg.contains(&format!("at byte {}", bounds[50])), "{msg}");
        assert!(msg.contains("valid records follow"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn damage_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        for i in 0..20 {
            wal.append(entries(1, i..i + 1)).unwrap();
        }
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open_with(dir.path(), None, SMALL)
            .err()
            .expect("damaged log");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
