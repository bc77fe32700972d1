//! bbolt's file format, the one etcd keeps its data in and streams as its
//! snapshots: enough of it to write a database of flat buckets and to read
//! one back, as plain bytes in memory.
//!
//! A database is a run of fixed-size pages. Pages 0 and 1 hold two meta
//! records (the valid one with the higher transaction id wins), page 2 the
//! freelist (empty here), and the rest B+trees: leaf pages of key-value
//! elements, branch pages of (first key, child page) elements. The root
//! tree's elements name the buckets; each bucket is a tree of its own, or,
//! when small, a leaf page stored inline in its root element's value. An
//! element larger than a page spans consecutive "overflow" pages.
//!
//! Written here rather than taken from the `bbolt-rs` crate: that port maps
//! the file and reads pages through raw pointers, so a damaged or hostile
//! snapshot could crash `kvctl`, and it brings some twenty dependencies for
//! what is, for a whole database written once and read once, a few hundred
//! lines. The reader treats the file as untrusted: every offset and length
//! is checked against the page it lies in, a page is read at most once,
//! depth is bounded and keys must ascend; anything else is an error, never
//! a panic. It refuses nested buckets (etcd has none).

use std::collections::{BTreeMap, HashSet};

/// The page size raftkv writes (the one bbolt picks on x86-64 and arm64
/// Linux); any power of two bbolt allows is read.
pub const PAGE_SIZE: usize = 4096;
const MAGIC: u32 = 0xED0C_DAED;
const FORMAT_VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
/// Leaf and branch elements are both 16 bytes.
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const META_CHECKSUMMED: usize = 56;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
const BUCKET_ELEMENT: u32 = 0x01;
const FREELIST_PGID: u64 = 2;
/// Deeper than any tree a file of 2^64 bytes could need.
const MAX_DEPTH: usize = 32;

/// A bucket's key-value pairs, keys ascending.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;
/// Buckets by name.
pub type Buckets = BTreeMap<Vec<u8>, Entries>;

/// Why a file is not a bbolt database this reader accepts.
#[derive(Debug, thiserror::Error)]
#[error("not a valid bbolt database: {0}")]
pub struct BoltError(String);

fn bad<T>(why: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(why.into()))
}

/// A database read back.
#[derive(Debug)]
pub struct Database {
    /// Its buckets, each in key order.
    pub buckets: Buckets,
    /// Its size as bbolt counts it: pages in use times the page size.
    pub size: u64,
}

/// 64-bit FNV-1a, bbolt's meta checksum.
pub(super) fn fnv64a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ---------------------------------------------------------------- writing

/// Writes `buckets` as a bbolt database (keys within each must ascend and
/// be unique; empty keys are not allowed, as in bbolt).
pub fn write(buckets: &Buckets) -> Vec<u8> {
    let mut w = Writer {
        out: vec![0; 3 * PAGE_SIZE],
    };
    let root_elements: Vec<Element> = buckets
        .iter()
        .map(|(name, entries)| Element {
            key: name,
            value: w.bucket(entries),
            flags: BUCKET_ELEMENT,
        })
        .collect();
    let root = w.tree(&root_elements);
    let high_water = (w.out.len() / PAGE_SIZE) as u64;
    w.header(FREELIST_PGID, FREELIST_PAGE, 0, 0);
    for pgid in 0..2u64 {
        w.header(pgid, META_PAGE, 0, 0);
        let at = pgid as usize * PAGE_SIZE + PAGE_HEADER;
        let meta = &mut w.out[at..at + META_CHECKSUMMED + 8];
        meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        meta[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        meta[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        // flags (12..16) and the root bucket's sequence (24..32) stay 0.
        meta[16..24].copy_from_slice(&root.to_le_bytes());
        meta[32..40].copy_from_slice(&FREELIST_PGID.to_le_bytes());
        meta[40..48].copy_from_slice(&high_water.to_le_bytes());
        meta[48..56].copy_from_slice(&pgid.to_le_bytes());
        let sum = fnv64a(&meta[..META_CHECKSUMMED]);
        meta[56..64].copy_from_slice(&sum.to_le_bytes());
    }
    w.out
}

struct Element<'a> {
    key: &'a [u8],
    value: Vec<u8>,
    flags: u32,
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// A bucket's value in its parent: inline when small, as bbolt does,
    /// else the root page of a tree of its own.
    fn bucket(&mut self, entries: &Entries) -> Vec<u8> {
        let elements: Vec<Element> = entries
            .iter()
            .map(|(k, v)| Element {
                key: k,
                value: v.clone(),
                flags: 0,
            })
            .collect();
        let mut value = vec![0u8; BUCKET_HEADER];
        if leaf_size(&elements) <= PAGE_SIZE / 4 {
            let start = value.len();
            value.resize(start + leaf_size(&elements), 0);
            fill_leaf(&mut value[start..], 0, 0, &elements);
        } else {
            let root = self.tree(&elements);
            value[..8].copy_from_slice(&root.to_le_bytes());
        }
        value
    }

    /// Writes a tree of `elements` and returns its root page.
    fn tree(&mut self, elements: &[Element]) -> u64 {
        let mut level: Vec<(&[u8], u64)> = Vec::new();
        for chunk in pack(elements, |e| ELEMENT + e.key.len() + e.value.len()) {
            let size = leaf_size(chunk);
            let (pgid, at, overflow) = self.allocate(size);
            let span = (overflow as usize + 1) * PAGE_SIZE;
            fill_leaf(&mut self.out[at..at + span], pgid, overflow, chunk);
            level.push((chunk.first().map(|e| e.key).unwrap_or_default(), pgid));
        }
        while level.len() > 1 {
            let mut up = Vec::new();
            for chunk in pack(&level, |(k, _)| ELEMENT + k.len()) {
                let size =
                    PAGE_HEADER + chunk.iter().map(|(k, _)| ELEMENT + k.len()).sum::<usize>();
                let (pgid, at, overflow) = self.allocate(size);
                self.header(pgid, BRANCH_PAGE, chunk.len(), overflow);
                let mut data = PAGE_HEADER + chunk.len() * ELEMENT;
                for (i, (key, child)) in chunk.iter().enumerate() {
                    let e = at + PAGE_HEADER + i * ELEMENT;
                    let pos = (data - (PAGE_HEADER + i * ELEMENT)) as u32;
                    self.out[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                    self.out[e + 4..e + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
                    self.out[e + 8..e + 16].copy_from_slice(&child.to_le_bytes());
                    self.out[at + data..at + data + key.len()].copy_from_slice(key);
                    data += key.len();
                }
                up.push((chunk[0].0, pgid));
            }
            level = up;
        }
        level[0].1
    }

    /// Appends the pages `size` bytes need: (first page id, its offset,
    /// overflow page count).
    fn allocate(&mut self, size: usize) -> (u64, usize, u32) {
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let at = self.out.len();
        self.out.resize(at + pages * PAGE_SIZE, 0);
        ((at / PAGE_SIZE) as u64, at, (pages - 1) as u32)
    }

    fn header(&mut self, pgid: u64, flags: u16, count: usize, overflow: u32) {
        let at = pgid as usize * PAGE_SIZE;
        write_header(&mut self.out[at..], pgid, flags, count, overflow);
    }
}

fn write_header(page: &mut [u8], pgid: u64, flags: u16, count: usize, overflow: u32) {
    page[0..8].copy_from_slice(&pgid.to_le_bytes());
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    page[10..12].copy_from_slice(&(count as u16).to_le_bytes());
    page[12..16].copy_from_slice(&overflow.to_le_bytes());
}

fn leaf_size(elements: &[Element]) -> usize {
    PAGE_HEADER
        + elements
            .iter()
            .map(|e| ELEMENT + e.key.len() + e.value.len())
            .sum::<usize>()
}

/// Lays out a leaf page of `elements` in `page` (as long as their size).
fn fill_leaf(page: &mut [u8], pgid: u64, overflow: u32, elements: &[Element]) {
    write_header(page, pgid, LEAF_PAGE, elements.len(), overflow);
    let mut data = PAGE_HEADER + elements.len() * ELEMENT;
    for (i, el) in elements.iter().enumerate() {
        let e = PAGE_HEADER + i * ELEMENT;
        page[e..e + 4].copy_from_slice(&el.flags.to_le_bytes());
        page[e + 4..e + 8].copy_from_slice(&((data - e) as u32).to_le_bytes());
        page[e + 8..e + 12].copy_from_slice(&(el.key.len() as u32).to_le_bytes());
        page[e + 12..e + 16].copy_from_slice(&(el.value.len() as u32).to_le_bytes());
        page[data..data + el.key.len()].copy_from_slice(el.key);
        data += el.key.len();
        page[data..data + el.value.len()].copy_from_slice(&el.value);
        data += el.value.len();
    }
}

/// Splits `items` into runs that each fit a page (a run of one may not),
/// at least one run even when there are none.
fn pack<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut used) = (0, PAGE_HEADER);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && used + s > PAGE_SIZE {
            runs.push(&items[start..i]);
            (start, used) = (i, PAGE_HEADER);
        }
        used += s;
    }
    runs.push(&items[start..]);
    runs
}

// ---------------------------------------------------------------- reading

struct Meta {
    page_size: usize,
    root: u64,
    high_water: u64,
    txid: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The meta record at `at`, if it is one and checks out.
fn meta_at(file: &[u8], at: usize) -> Option<Meta> {
    let m = file.get(at + PAGE_HEADER..at + PAGE_HEADER + META_CHECKSUMMED + 8)?;
    if u32_at(m, 0)? != MAGIC
        || u32_at(m, 4)? != FORMAT_VERSION
        || u64_at(m, 56)? != fnv64a(&m[..META_CHECKSUMMED])
    {
        return None;
    }
    let page_size = u32_at(m, 8)? as usize;
    if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
        return None;
    }
    Some(Meta {
        page_size,
        root: u64_at(m, 16)?,
        high_water: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// Reads the database in `file` (trailing bytes past its pages, such as
/// etcd's checksum, are ignored).
pub fn read(file: &[u8]) -> Result<Database, BoltError> {
    let first = meta_at(file, 0);
    let second_at = first.as_ref().map_or(PAGE_SIZE, |m| m.page_size);
    let meta = match (first, meta_at(file, second_at)) {
        (Some(a), Some(b)) => {
            if b.txid > a.txid && b.page_size == a.page_size {
                b
            } else {
                a
            }
        }
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => return bad("no valid meta page (wrong magic, version or checksum)"),
    };
    let size = meta
        .high_water
        .checked_mul(meta.page_size as u64)
        .filter(|s| *s <= file.len() as u64)
        .ok_or_else(|| {
            BoltError(format!(
                "truncated: {} pages of {} bytes, but the file has {} bytes",
                meta.high_water,
                meta.page_size,
                file.len()
            ))
        })?;
    let mut reader = Reader {
        file: &file[..size as usize],
        page_size: meta.page_size,
        high_water: meta.high_water,
        seen: HashSet::new(),
    };
    let mut roots = Vec::new();
    reader.tree(meta.root, 0, &mut roots)?;
    let mut buckets = Buckets::new();
    for (name, value, flags) in roots {
        if flags & BUCKET_ELEMENT == 0 {
            return bad(format!("key {name:?} in the root is not a bucket"));
        }
        let mut entries = Vec::new();
        reader.bucket(&value, &mut entries)?;
        let mut pairs = Vec::with_capacity(entries.len());
        for (key, value, flags) in entries {
            if flags & BUCKET_ELEMENT != 0 {
                return bad(format!(
                    "bucket {} holds a nested bucket, which etcd never writes",
                    String::from_utf8_lossy(&name)
                ));
            }
            pairs.push((key, value));
        }
        buckets.insert(name, pairs);
    }
    Ok(Database { buckets, size })
}

type Raw = (Vec<u8>, Vec<u8>, u32);

struct Reader<'a> {
    file: &'a [u8],
    page_size: usize,
    high_water: u64,
    /// Pages already read: a page reachable twice is damage (or a loop).
    seen: HashSet<u64>,
}

impl Reader<'_> {
    /// A bucket's elements, from its value in the parent.
    fn bucket(&mut self, value: &[u8], out: &mut Vec<Raw>) -> Result<(), BoltError> {
        let root = u64_at(value, 0).ok_or_else(|| BoltError("bucket value too short".into()))?;
        if root != 0 {
            return self.tree(root, 0, out);
        }
        let page = &value[BUCKET_HEADER.min(value.len())..];
        match u16_at(page, 8) {
            Some(LEAF_PAGE) => leaf(page, out),
            _ => bad("inline bucket is not a leaf page"),
        }
    }

    /// The elements of the tree rooted at page `pgid`, in key order.
    fn tree(&mut self, pgid: u64, depth: usize, out: &mut Vec<Raw>) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return bad("tree too deep");
        }
        // Pages 0 and 1 are the metas; any other may hold a tree (the
        // freelist moves once a database has been written to).
        if pgid < 2 || pgid >= self.high_water {
            return bad(format!("page {pgid} is out of bounds"));
        }
        let at = pgid as usize * self.page_size;
        let head = &self.file[at..at + PAGE_HEADER];
        let (id, flags) = (u64_at(head, 0), u16_at(head, 8));
        let overflow = u32_at(head, 12).unwrap_or(u32::MAX) as u64;
        if id != Some(pgid) {
            return bad(format!("page {pgid} carries the id {id:?}"));
        }
        let last = pgid
            .checked_add(overflow)
            .filter(|l| *l < self.high_water)
            .ok_or_else(|| BoltError(format!("page {pgid}'s overflow runs past the end")))?;
        for p in pgid..=last {
            if !self.seen.insert(p) {
                return bad(format!("page {p} is referenced twice"));
            }
        }
        let page = &self.file[at..(last as usize + 1) * self.page_size];
        match flags {
            Some(LEAF_PAGE) => leaf(page, out),
            Some(BRANCH_PAGE) => {
                let count = u16_at(page, 10).unwrap_or(0) as usize;
                if count == 0 {
                    return bad(format!("branch page {pgid} is empty"));
                }
                for i in 0..count {
                    let e = PAGE_HEADER + i * ELEMENT;
                    let (pos, ksize, child) =
                        (u32_at(page, e), u32_at(page, e + 4), u64_at(page, e + 8));
                    let (Some(pos), Some(ksize), Some(child)) = (pos, ksize, child) else {
                        return bad(format!("branch page {pgid} is cut short"));
                    };
                    let key = slice(page, e, pos, ksize).ok_or_else(|| {
                        BoltError(format!("branch page {pgid}: key out of bounds"))
                    })?;
                    let before = out.len();
                    self.tree(child, depth + 1, out)?;
                    if out
                        .get(before)
                        .is_some_and(|(first, _, _)| first.as_slice() < key)
                    {
                        return bad(format!("page {child} holds a key below its parent's"));
                    }
                }
                Ok(())
            }
            _ => bad(format!("page {pgid} is neither a leaf nor a branch")),
        }
    }
}

/// `len` bytes at `base + pos` of `page`, if they lie within it.
fn slice(page: &[u8], base: usize, pos: u32, len: u32) -> Option<&[u8]> {
    let start = base.checked_add(pos as usize)?;
    page.get(start..start.checked_add(len as usize)?)
}

/// A leaf page's elements, appended to `out`.
fn leaf(page: &[u8], out: &mut Vec<Raw>) -> Result<(), BoltError> {
    let start = out.len();
    let count = u16_at(page, 10).unwrap_or(0) as usize;
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        let fields = (
            u32_at(page, e),
            u32_at(page, e + 4),
            u32_at(page, e + 8),
            u32_at(page, e + 12),
        );
        let (Some(flags), Some(pos), Some(ksize), Some(vsize)) = fields else {
            return bad("leaf page is cut short");
        };
        let key = slice(page, e, pos, ksize);
        let value = pos
            .checked_add(ksize)
            .and_then(|vpos| slice(page, e, vpos, vsize));
        let (Some(key), Some(value)) = (key, value) else {
            return bad("leaf element out of bounds");
        };
        out.push((key.to_vec(), value.to_vec(), flags));
    }
    // With the last key before this page: the whole bucket ascends.
    check_order(&out[start.saturating_sub(1)..])
}

/// Keys must ascend strictly, as bbolt keeps them.
fn check_order(out: &[Raw]) -> Result<(), BoltError> {
    match out.windows(2).find(|w| w[0].0 >= w[1].0) {
        Some(w) => bad(format!(
            "keys out of order at {:?}",
            String::from_utf8_lossy(&w[1].0)
        )),
        None => Ok(()),
    }
}
