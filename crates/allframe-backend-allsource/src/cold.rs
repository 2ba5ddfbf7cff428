//! The index of the store's cold part: log segments rewritten as Parquet.
//!
//! Beside each Parquet file `seg-N.parquet` an index file `seg-N.idx` holds, for that segment,
//! each stream's positions (in version order) and the sorted event ids with their positions.
//! Memory keeps only a summary per segment: a bloom filter of its ids (10 bits per event), the
//! id range, and one id in every [`FENCE_ROWS`]; per stream, one run (segment, first version,
//! count, row) per segment the stream appears in. So the cold part costs about 1.3 bytes per
//! event plus about 24 bytes per (stream, segment) pair, instead of the ~100 bytes per event
//! of the exact in-memory index that the log tail keeps.
//!
//! The index file is derived data: the Parquet file is the record. A missing or damaged index
//! file is rebuilt from the Parquet file on open (and said so through `tracing` and `stats()`).
//!
//! Layout (little-endian), then a CRC32 of every byte before it:
//!
//! ```text
//! 0   magic "AFSRCIDX"
//! 8   u16 format version, u16 zero
//! 12  u32 segment number
//! 16  u64 first position
//! 24  u64 rows (events)
//! 32  u32 streams
//! 36  u32 bloom blocks (64 bytes each)
//! 40  [16] smallest event id, [16] largest event id
//! 72  u64 length of the stream table in bytes
//! 80  stream table, per stream: u32 name length, name (UTF-8), u64 first version, u32 count
//!     positions: u64 per event, grouped by stream in table order, versions ascending
//!     ids: ([16] event id, u64 position) per event, sorted by id
//!     bloom filter: 64-byte blocks
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use allframe_cqrs_core::{Error, EventId, Result, StreamId};

use crate::BACKEND_NAME;
use crate::format::{self, u32_at, u64_at};
use crate::io::Fs;
use crate::wal::io_err;

const MAGIC: &[u8; 8] = b"AFSRCIDX";
const HEADER_LEN: usize = 80;
const ID_ROW: usize = 24;
const BLOCK_BYTES: usize = 64;
/// Bloom filter size: bits per event (about 2 % false positives with [`PROBES`] probes).
const BITS_PER_EVENT: u64 = 10;
const PROBES: u32 = 6;
/// One id in this many is kept in memory, so a lookup reads one short span of the id table.
pub(crate) const FENCE_ROWS: u64 = 256;

/// The name of the index file of segment `seq`.
pub(crate) fn index_name(seq: u32) -> String {
    format!("seg-{seq:010}.idx")
}

/// The segment number of an index file name.
pub(crate) fn parse_index_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?.strip_suffix(".idx")?.parse().ok()
}

/// One event of a segment as the index sees it.
pub(crate) struct IndexRow<'a> {
    /// The stream id's bytes (UTF-8, checked where the row was decoded).
    pub stream: &'a [u8],
    pub version: u64,
    pub position: u64,
    pub id: EventId,
}

/// One stream's versions in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub stream: StreamId,
    pub first_version: u64,
    pub count: u32,
    /// Index of its first position in the segment's position table.
    pub row: u64,
}

/// A run of one stream's versions held in one cold segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ColdRun {
    pub segment: u32,
    pub count: u32,
    pub first_version: u64,
    /// Index of the run's first position in the segment's position table.
    pub row: u64,
}

/// Encodes the index file of one segment from its events (in position order).
pub(crate) fn encode(seq: u32, rows: &[IndexRow<'_>]) -> Vec<u8> {
    // Streams in order of first appearance, with each event's slot in its stream's run.
    let mut order: Vec<(&[u8], u64, u32)> = Vec::new();
    let mut slot_of: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    let mut event_slot = Vec::with_capacity(rows.len());
    // Consecutive rows mostly share a stream (one append is one frame): look up only changes.
    let mut last: Option<(&[u8], usize)> = None;
    for row in rows {
        let slot = match last {
            Some((name, slot)) if name == row.stream => slot,
            _ => *slot_of.entry(row.stream).or_insert_with(|| {
                order.push((row.stream, row.version, 0));
                order.len() - 1
            }),
        };
        last = Some((row.stream, slot));
        event_slot.push((slot, order[slot].2));
        order[slot].2 += 1;
    }
    let mut table = Vec::new();
    let mut starts = Vec::with_capacity(order.len());
    let mut next_row = 0u64;
    for (name, first_version, count) in &order {
        table.extend_from_slice(&(name.len() as u32).to_le_bytes());
        table.extend_from_slice(name);
        table.extend_from_slice(&first_version.to_le_bytes());
        table.extend_from_slice(&count.to_le_bytes());
        starts.push(next_row);
        next_row += u64::from(*count);
    }
    let mut positions = vec![0u64; rows.len()];
    for (row, (slot, offset)) in rows.iter().zip(&event_slot) {
        positions[(starts[*slot] + u64::from(*offset)) as usize] = row.position;
    }
    // Sorted as 128-bit integers, the same order as the ids' bytes, at a fraction of the cost
    // of comparing byte arrays (the sort was 12 % of the converter's instructions).
    let mut ids: Vec<(u128, u64)> = rows.iter().map(|r| (u128::from_be_bytes(r.id.0), r.position)).collect();
    ids.sort_unstable();
    let blocks = bloom_blocks(rows.len() as u64);
    let mut bloom = vec![0u8; blocks as usize * BLOCK_BYTES];
    for (id, _) in &ids {
        bloom_insert(&mut bloom, blocks, &EventId(id.to_be_bytes()));
    }
    let (min, max) = (
        ids.first().map_or(EventId::nil(), |r| EventId(r.0.to_be_bytes())),
        ids.last().map_or(EventId::nil(), |r| EventId(r.0.to_be_bytes())),
    );
    let mut out = Vec::with_capacity(HEADER_LEN + table.len() + rows.len() * (8 + ID_ROW) + bloom.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&rows.first().map_or(0, |r| r.position).to_le_bytes());
    out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    out.extend_from_slice(&(order.len() as u32).to_le_bytes());
    out.extend_from_slice(&blocks.to_le_bytes());
    out.extend_from_slice(min.as_bytes());
    out.extend_from_slice(max.as_bytes());
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    out.extend_from_slice(&table);
    for p in positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
    for (id, position) in &ids {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    out.extend_from_slice(&bloom);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes the index file of segment `seq` durably (temporary file, fsync, rename, directory fsync).
pub(crate) fn write(dir: &Path, fs: &Fs, seq: u32, bytes: &[u8]) -> Result<()> {
    fs.write_file_atomic(dir, &index_name(seq), bytes).map_err(|e| io_err(&dir.join(index_name(seq)), e))
}

/// The in-memory part of one cold segment's index; the rest is read from its file on demand.
#[derive(Debug)]
pub(crate) struct ColdSegment {
    pub seq: u32,
    pub first_position: u64,
    pub rows: u64,
    pub min_id: EventId,
    pub max_id: EventId,
    path: PathBuf,
    file: File,
    positions_at: u64,
    ids_at: u64,
    bloom: Box<[u8]>,
    /// The id at every [`FENCE_ROWS`]-th row of the sorted id table.
    fences: Box<[EventId]>,
}

/// Why an index file could not be used (it is then rebuilt from the Parquet file).
pub(crate) type Unusable = String;

impl ColdSegment {
    /// Loads the index file of the segment the manifest lists as (`seq`, `first_position`,
    /// `rows`): the whole file is CRC-checked; the stream table is returned, the bloom filter
    /// and fences are kept. `Ok(Err(reason))` when the file is missing or damaged.
    pub fn load(
        dir: &Path,
        seq: u32,
        first_position: u64,
        rows: u64,
    ) -> Result<std::result::Result<(ColdSegment, Vec<StreamEntry>), Unusable>> {
        let path = dir.join(index_name(seq));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err("the index file is missing".into())),
            Err(e) => return Err(io_err(&path, e)),
        };
        let (entries, layout) = match parse(&bytes, seq, first_position, rows) {
            Ok(parsed) => parsed,
            Err(reason) => return Ok(Err(reason)),
        };
        let file = File::open(&path).map_err(|e| io_err(&path, e))?;
        let fences = (0..rows.div_ceil(FENCE_ROWS))
            .map(|i| {
                let at = layout.ids_at as usize + (i * FENCE_ROWS) as usize * ID_ROW;
                EventId(bytes[at..at + 16].try_into().expect("16 bytes"))
            })
            .collect();
        let min_id = EventId(bytes[40..56].try_into().expect("16 bytes"));
        let max_id = EventId(bytes[56..72].try_into().expect("16 bytes"));
        let bloom = bytes[layout.bloom_at..layout.bloom_at + layout.blocks as usize * BLOCK_BYTES].into();
        let segment = ColdSegment {
            seq,
            first_position,
            rows,
            min_id,
            max_id,
            path,
            file,
            positions_at: layout.positions_at,
            ids_at: layout.ids_at,
            bloom,
            fences,
        };
        Ok(Ok((segment, entries)))
    }

    /// The last position held.
    pub fn last_position(&self) -> u64 {
        self.first_position + self.rows - 1
    }

    /// Bytes of memory this summary holds (bloom filter and fences).
    pub fn memory(&self) -> usize {
        self.bloom.len() + self.fences.len() * 16
    }

    /// Whether `id` may be stored here (false positives, never false negatives).
    pub fn may_contain(&self, id: &EventId) -> bool {
        *id >= self.min_id && *id <= self.max_id && bloom_contains(&self.bloom, self.bloom_blocks(), id)
    }

    fn bloom_blocks(&self) -> u32 {
        (self.bloom.len() / BLOCK_BYTES) as u32
    }

    /// The position of `id` if it is stored in this segment (one read of the id table).
    pub fn find(&self, id: &EventId) -> Result<Option<u64>> {
        if !self.may_contain(id) {
            return Ok(None);
        }
        let fence = self.fences.partition_point(|f| f <= id).saturating_sub(1) as u64;
        let first = fence * FENCE_ROWS;
        let count = FENCE_ROWS.min(self.rows - first);
        let mut buf = vec![0u8; count as usize * ID_ROW];
        self.read_at(&mut buf, self.ids_at + first * ID_ROW as u64)?;
        let rows: Vec<&[u8]> = buf.chunks_exact(ID_ROW).collect();
        let found = rows.binary_search_by(|row| row[..16].cmp(id.as_bytes()));
        Ok(found.ok().map(|i| u64_at(rows[i], 16)))
    }

    /// Positions of rows `row..row + count` of the position table (one stream's versions).
    pub fn positions(&self, row: u64, count: u64) -> Result<Vec<u64>> {
        if row + count > self.rows {
            return Err(self.damaged(row, "a stream run goes past the end of the position table"));
        }
        let mut buf = vec![0u8; count as usize * 8];
        self.read_at(&mut buf, self.positions_at + row * 8)?;
        Ok(buf.chunks_exact(8).map(|b| u64_at(b, 0)).collect())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| io_err(&self.path, e))
    }

    /// A corruption error naming this index file.
    pub fn damaged(&self, offset: u64, reason: &str) -> Error {
        Error::Corruption { backend: BACKEND_NAME, file: self.path.clone(), offset, reason: reason.into() }
    }
}

struct Layout {
    positions_at: u64,
    ids_at: u64,
    bloom_at: usize,
    blocks: u32,
}

/// Checks an index file against the manifest entry and parses its stream table.
fn parse(
    bytes: &[u8],
    seq: u32,
    first_position: u64,
    rows: u64,
) -> std::result::Result<(Vec<StreamEntry>, Layout), Unusable> {
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return Err("the index file is cut short or has a bad magic".into());
    }
    let body = bytes.len() - 4;
    if crc32fast::hash(&bytes[..body]) != u32_at(bytes, body) {
        return Err("the index file's checksum does not match".into());
    }
    if format::u16_at(bytes, 8) != format::FORMAT_VERSION {
        return Err("the index file has an unknown format version".into());
    }
    if u32_at(bytes, 12) != seq || u64_at(bytes, 16) != first_position || u64_at(bytes, 24) != rows {
        return Err("the index file describes other rows than the manifest".into());
    }
    let streams = u32_at(bytes, 32) as usize;
    let blocks = u32_at(bytes, 36);
    let table_len = u64_at(bytes, 72) as usize;
    let positions_at = HEADER_LEN + table_len;
    let ids_at = positions_at + rows as usize * 8;
    let bloom_at = ids_at + rows as usize * ID_ROW;
    if blocks != bloom_blocks(rows) || bloom_at + blocks as usize * BLOCK_BYTES != body {
        return Err("the index file's sections do not add up to its length".into());
    }
    let mut entries = Vec::with_capacity(streams);
    let mut at = HEADER_LEN;
    let mut row = 0u64;
    for _ in 0..streams {
        let bad = || "the index file's stream table is malformed".to_string();
        let len = bytes.get(at..at + 4).map(|b| u32_at(b, 0) as usize).ok_or_else(bad)?;
        let name = bytes.get(at + 4..at + 4 + len).ok_or_else(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        let fixed = bytes.get(at + 4 + len..at + 16 + len).ok_or_else(bad)?;
        let count = u32_at(fixed, 8);
        entries.push(StreamEntry { stream: StreamId::from(name), first_version: u64_at(fixed, 0), count, row });
        row += u64::from(count);
        at += 16 + len;
    }
    if at != positions_at || row != rows {
        return Err("the index file's stream table does not cover its rows".into());
    }
    Ok((entries, Layout { positions_at: positions_at as u64, ids_at: ids_at as u64, bloom_at, blocks }))
}

fn bloom_blocks(rows: u64) -> u32 {
    (rows * BITS_PER_EVENT).div_ceil(BLOCK_BYTES as u64 * 8).max(1) as u32
}

/// Two fixed 64-bit hashes of an id (fixed, because the filter is stored on disk).
fn id_hashes(id: &EventId) -> (u64, u64) {
    let fold = |a: u64, b: u64| {
        let product = u128::from(a) * u128::from(b);
        (product as u64) ^ ((product >> 64) as u64)
    };
    let bytes = id.as_bytes();
    let (a, b) = (u64_at(bytes, 0), u64_at(bytes, 8));
    let h1 = fold(a ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344);
    let h2 = fold(h1 ^ 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89);
    (h1, h2)
}

/// The block and the bit indexes (within the 512-bit block) of an id.
fn bloom_bits(blocks: u32, id: &EventId) -> (usize, impl Iterator<Item = usize>) {
    let (h1, h2) = id_hashes(id);
    let block = ((u128::from(h1) * u128::from(blocks)) >> 64) as usize;
    (block, (0..PROBES).map(move |i| ((h2 >> (i * 9)) & 511) as usize))
}

fn bloom_insert(bloom: &mut [u8], blocks: u32, id: &EventId) {
    let (block, bits) = bloom_bits(blocks, id);
    for bit in bits {
        bloom[block * BLOCK_BYTES + bit / 8] |= 1 << (bit % 8);
    }
}

fn bloom_contains(bloom: &[u8], blocks: u32, id: &EventId) -> bool {
    let (block, mut bits) = bloom_bits(blocks, id);
    bits.all(|bit| bloom[block * BLOCK_BYTES + bit / 8] & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(streams: &[&'static str]) -> Vec<IndexRow<'static>> {
        let mut versions = std::collections::HashMap::new();
        streams
            .iter()
            .enumerate()
            .map(|(i, &stream)| {
                let version = versions.entry(stream).or_insert(0u64);
                *version += 1;
                IndexRow { stream: stream.as_bytes(), version: *version, position: 101 + i as u64, id: EventId::new() }
            })
            .collect()
    }

    #[test]
    fn round_trip_finds_every_id_and_each_streams_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<&'static str> = (0..2000).map(|i| ["a", "b", "c"][i % 3]).chain(["d"]).collect();
        let rows = rows_of(&names);
        write(dir.path(), &Fs::default(), 7, &encode(7, &rows)).expect("write");
        let (segment, entries) = ColdSegment::load(dir.path(), 7, 101, rows.len() as u64).expect("io").expect("usable");
        assert_eq!(entries.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        for row in &rows {
            assert_eq!(segment.find(&row.id).expect("find"), Some(row.position));
        }
        let absent = (0..1000).filter(|_| segment.find(&EventId::new()).expect("find").is_some()).count();
        assert_eq!(absent, 0, "ids that were never stored are not found");
        let random =
            (0..10_000u128).filter(|&i| segment.may_contain(&EventId::from_u128(i * 0x9e37_79b9_7f4a_7c15))).count();
        assert!(random < 500, "bloom filter lets {random} of 10,000 foreign ids through");
        for entry in &entries {
            let positions = segment.positions(entry.row, u64::from(entry.count)).expect("positions");
            let expected: Vec<u64> =
                rows.iter().filter(|r| r.stream == entry.stream.as_str().as_bytes()).map(|r| r.position).collect();
            assert_eq!(positions, expected, "stream {}", entry.stream);
        }
    }

    #[test]
    fn damage_and_mismatches_make_the_file_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = rows_of(&["a", "b", "a"]);
        let bytes = encode(3, &rows);
        let path = dir.path().join(index_name(3));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).expect("write");
            assert!(ColdSegment::load(dir.path(), 3, 101, 3).expect("io").is_err(), "flip at {at} not caught");
        }
        std::fs::write(&path, &bytes).expect("write");
        assert!(ColdSegment::load(dir.path(), 3, 101, 3).expect("io").is_ok());
        assert!(ColdSegment::load(dir.path(), 3, 102, 3).expect("io").is_err(), "other first position");
        assert!(ColdSegment::load(dir.path(), 4, 101, 3).expect("io").is_err(), "other segment");
        std::fs::remove_file(&path).expect("remove");
        assert!(ColdSegment::load(dir.path(), 3, 101, 3).expect("io").is_err(), "missing");
    }
}
