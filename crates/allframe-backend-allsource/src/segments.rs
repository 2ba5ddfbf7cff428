//! Parquet segments: sealed log segments rewritten as Parquet files through the low-level
//! column writers (no Arrow), the manifest that lists them, and reads back.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use allframe_cqrs_core::{Bytes, Error, EventId, Metadata, RecordedEvent, Result, StreamId};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::ReaderProperties;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::FileReader;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;
use parquet::file::writer::SerializedFileWriter;

use crate::BACKEND_NAME;
use crate::cold;
use crate::format::{self, SegmentRow};
use crate::io::Fs;
use crate::wal::io_err;

/// Rows per row group: small enough that reading one event decodes little.
pub(crate) const ROW_GROUP_ROWS: usize = 1024;
/// The manifest file.
pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_MAGIC: &[u8; 8] = b"AFSRCMAN";
const MANIFEST_ENTRY_LEN: usize = 32;

/// The Parquet schema of a segment file (documentation; the code builds it with [`schema`]).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const SCHEMA: &str = "message allsource_event {
  required int64 position;
  required binary stream (STRING);
  required int64 version;
  required binary event_type (STRING);
  required binary payload;
  required binary metadata;
  required int64 timestamp (TIMESTAMP(MICROS,true));
}";

/// [`SCHEMA`], built with the type builders (the text parser would add code to every binary).
fn schema() -> parquet::errors::Result<parquet::schema::types::TypePtr> {
    use parquet::basic::{ConvertedType, LogicalType, Repetition, TimeUnit, Type as Physical};
    use parquet::schema::types::Type;
    let column = |name: &str, physical: Physical, logical: Option<LogicalType>| {
        let mut builder = Type::primitive_type_builder(name, physical).with_repetition(Repetition::REQUIRED);
        if logical == Some(LogicalType::String) {
            builder = builder.with_converted_type(ConvertedType::UTF8);
        }
        builder.with_logical_type(logical).build().map(Arc::new)
    };
    let fields = vec![
        column("position", Physical::INT64, None)?,
        column("stream", Physical::BYTE_ARRAY, Some(LogicalType::String))?,
        column("version", Physical::INT64, None)?,
        column("event_type", Physical::BYTE_ARRAY, Some(LogicalType::String))?,
        column("payload", Physical::BYTE_ARRAY, None)?,
        column("metadata", Physical::BYTE_ARRAY, None)?,
        column("timestamp", Physical::INT64, Some(LogicalType::timestamp(true, TimeUnit::MICROS)))?,
    ];
    Ok(Arc::new(Type::group_type_builder("allsource_event").with_fields(fields).build()?))
}

/// The name of the Parquet file of segment `seq`.
pub(crate) fn parquet_name(seq: u32) -> String {
    format!("seg-{seq:010}.parquet")
}

/// Parses `seg-NNNNNNNNNN.parquet`.
pub(crate) fn parse_parquet_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?.strip_suffix(".parquet")?.parse().ok()
}

fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption { backend: BACKEND_NAME, file: file.to_path_buf(), offset, reason: reason.into() }
}

fn parquet_err(file: &Path, e: parquet::errors::ParquetError) -> Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => io_err(file, *io),
            Err(other) => corruption(file, 0, other.to_string()),
        },
        other => corruption(file, 0, other.to_string()),
    }
}

/// One live Parquet file as the manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ManifestEntry {
    pub seq: u32,
    pub first_position: u64,
    pub rows: u64,
    pub file_len: u64,
    pub file_crc: u32,
}

/// Encodes the manifest: magic, u32 version, u32 count, entries, CRC32 of all before it.
pub(crate) fn encode_manifest(entries: &[ManifestEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * MANIFEST_ENTRY_LEN + 4);
    out.extend_from_slice(MANIFEST_MAGIC);
    out.extend_from_slice(&(format::FORMAT_VERSION as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.first_position.to_le_bytes());
        out.extend_from_slice(&e.rows.to_le_bytes());
        out.extend_from_slice(&e.file_len.to_le_bytes());
        out.extend_from_slice(&e.file_crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the manifest; a damaged one is `Error::Corruption`.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    if bytes.len() < 20 || &bytes[0..8] != MANIFEST_MAGIC {
        return Err(corruption(path, 0, "manifest is cut short or has a bad magic"));
    }
    let body = bytes.len() - 4;
    if crc32fast::hash(&bytes[..body]) != format::u32_at(&bytes, body) {
        return Err(corruption(path, body as u64, "manifest checksum mismatch"));
    }
    if format::u32_at(&bytes, 8) != format::FORMAT_VERSION as u32 {
        return Err(corruption(path, 8, "unsupported manifest version"));
    }
    let count = format::u32_at(&bytes, 12) as usize;
    if 16 + count * MANIFEST_ENTRY_LEN != body {
        return Err(corruption(path, 12, "manifest entry count does not match its length"));
    }
    Ok((0..count)
        .map(|i| {
            let at = 16 + i * MANIFEST_ENTRY_LEN;
            ManifestEntry {
                seq: format::u32_at(&bytes, at),
                first_position: format::u64_at(&bytes, at + 4),
                rows: format::u64_at(&bytes, at + 12),
                file_len: format::u64_at(&bytes, at + 20),
                file_crc: format::u32_at(&bytes, at + 28),
            }
        })
        .collect())
}

/// Writes `events` (one sealed segment, in position order) as a Parquet file at `path`:
/// temporary file, fsync, rename, directory fsync. Returns its manifest entry.
pub(crate) fn write_parquet(dir: &Path, fs: &Fs, seq: u32, events: &[SegmentRow]) -> Result<ManifestEntry> {
    let path = dir.join(parquet_name(seq));
    let tmp = dir.join(format!("{}.tmp", parquet_name(seq)));
    let _ = std::fs::remove_file(&tmp);
    let file = fs.create_new(&tmp).map_err(|e| io_err(&tmp, e))?;
    let schema = schema().map_err(|e| parquet_err(&tmp, e))?;
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            // Statistics only where they prune: the sorted position column (how reads find row
            // groups), version and time. Min/max of stream, type, payload and metadata span
            // almost everything in a row group of mixed streams, and every reader keeps them in
            // memory with the footer.
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled("position".into(), EnabledStatistics::Chunk)
            .set_column_statistics_enabled("version".into(), EnabledStatistics::Chunk)
            .set_column_statistics_enabled("timestamp".into(), EnabledStatistics::Chunk)
            // Dictionaries only for the columns that repeat (stream ids, event types): for
            // payloads and metadata, unique per event, the writer would hash every value into a
            // dictionary it then abandons.
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled("stream".into(), true)
            .set_column_dictionary_enabled("event_type".into(), true)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("allframe-allsource {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    // The seam sees the write before any byte goes out (a full disk fails here in tests).
    fs.write_at(&file, &tmp, &[], 0).map_err(|e| io_err(&tmp, e))?;
    let mut out = HashingWriter { file: &file, hasher: crc32fast::Hasher::new(), len: 0 };
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).map_err(|e| parquet_err(&tmp, e))?;
    for chunk in events.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group().map_err(|e| parquet_err(&tmp, e))?;
        let mut column = 0;
        while let Some(mut col) = group.next_column().map_err(|e| parquet_err(&tmp, e))? {
            let ints = |f: &dyn Fn(&SegmentRow) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
            // Byte columns are slices of the log segment's buffer: no copy per value.
            let bytes = |f: &dyn Fn(&SegmentRow) -> &Bytes| {
                chunk.iter().map(|e| ByteArray::from(f(e).clone())).collect::<Vec<ByteArray>>()
            };
            let written = match column {
                0 => col.typed::<Int64Type>().write_batch(&ints(&|e| e.position as i64), None, None),
                1 => col.typed::<ByteArrayType>().write_batch(&bytes(&|e| &e.stream), None, None),
                2 => col.typed::<Int64Type>().write_batch(&ints(&|e| e.version as i64), None, None),
                3 => col.typed::<ByteArrayType>().write_batch(&bytes(&|e| &e.event_type), None, None),
                4 => col.typed::<ByteArrayType>().write_batch(&bytes(&|e| &e.payload), None, None),
                5 => col.typed::<ByteArrayType>().write_batch(&bytes(&|e| &e.metadata), None, None),
                _ => col.typed::<Int64Type>().write_batch(&ints(&|e| e.timestamp_micros), None, None),
            };
            written.map_err(|e| parquet_err(&tmp, e))?;
            col.close().map_err(|e| parquet_err(&tmp, e))?;
            column += 1;
        }
        group.close().map_err(|e| parquet_err(&tmp, e))?;
    }
    writer.close().map_err(|e| parquet_err(&tmp, e))?;
    let (file_len, file_crc) = (out.len, out.hasher.finalize());
    fs.sync_data(&file, &tmp).map_err(|e| io_err(&tmp, e))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    Ok(ManifestEntry {
        seq,
        first_position: events.first().map_or(0, |e| e.position),
        rows: events.len() as u64,
        file_len,
        file_crc,
    })
}

/// The Parquet writer's output: the file, with the CRC32 and length of everything written
/// (the manifest's checksum, without reading the file back).
struct HashingWriter<'a> {
    file: &'a File,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&mut &*self.file).flush()
    }
}

/// An open Parquet segment.
pub(crate) struct ParquetSegment {
    pub path: PathBuf,
    pub entry: ManifestEntry,
    reader: SerializedFileReader<File>,
    file: Arc<PositionalFile>,
    props: Arc<ReaderProperties>,
    /// First position of each row group (from the position column's statistics).
    group_starts: Vec<u64>,
    /// Bytes of memory its footer takes, measured once at open (for `stats()`).
    footer_bytes: usize,
}

impl std::fmt::Debug for ParquetSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSegment").field("path", &self.path).field("entry", &self.entry).finish()
    }
}

impl ParquetSegment {
    /// Opens a listed file, checking its length and CRC against the manifest.
    pub fn open(dir: &Path, entry: ManifestEntry) -> Result<ParquetSegment> {
        let path = dir.join(parquet_name(entry.seq));
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => corruption(&path, 0, "Parquet segment listed in the manifest is missing"),
            _ => io_err(&path, e),
        })?;
        // Checked in pieces: holding whole files while several are opened at once would raise
        // the memory the allocator keeps after open.
        let (len, crc) = file_crc(&file).map_err(|e| io_err(&path, e))?;
        if len != entry.file_len || crc != entry.file_crc {
            return Err(corruption(&path, 0, "Parquet segment does not match the length and CRC in the manifest"));
        }
        let reader_file = file.try_clone().map_err(|e| io_err(&path, e))?;
        let reader = SerializedFileReader::new(reader_file).map_err(|e| parquet_err(&path, e))?;
        let file = Arc::new(PositionalFile { file, len });
        let props = Arc::new(ReaderProperties::builder().build());
        let mut group_starts = Vec::with_capacity(reader.num_row_groups());
        let mut next = entry.first_position;
        for group in reader.metadata().row_groups() {
            let min = match group.column(0).statistics() {
                Some(parquet::file::statistics::Statistics::Int64(s)) => s.min_opt().map(|&m| m as u64),
                _ => None,
            };
            if min.is_some_and(|m| m != next) {
                return Err(corruption(&path, 0, "row group statistics do not match the positions"));
            }
            group_starts.push(next);
            next += group.num_rows() as u64;
        }
        if next - entry.first_position != entry.rows {
            return Err(corruption(&path, 0, "row count does not match the manifest"));
        }
        let footer_bytes = reader.metadata().memory_size();
        Ok(ParquetSegment { path, entry, reader, file, props, group_starts, footer_bytes })
    }

    /// A reader of row group `index` (used statically: a `dyn RowGroupReader` would link
    /// parquet's whole record API into every binary).
    fn row_group(&self, index: usize) -> Result<SerializedRowGroupReader<'_, PositionalFile>> {
        let metadata = self.reader.metadata();
        let group = metadata.row_groups().get(index).ok_or_else(|| corruption(&self.path, 0, "no such row group"))?;
        SerializedRowGroupReader::new(
            self.file.clone(),
            group,
            metadata.page_index_for_row_group(index),
            self.props.clone(),
        )
        .map_err(|e| parquet_err(&self.path, e))
    }

    /// Reads the columns of row group `index` (values decoded, rows not yet built).
    pub fn read_group(&self, index: usize) -> Result<GroupColumns> {
        let path = &self.path;
        let group = self.row_group(index)?;
        let rows = group.metadata().num_rows() as usize;
        let ints = |column: usize| read_column::<Int64Type>(&group, column, rows, path);
        let blobs = |column: usize| read_column::<ByteArrayType>(&group, column, rows, path);
        Ok(GroupColumns {
            positions: ints(0)?,
            streams: blobs(1)?,
            versions: ints(2)?,
            types: blobs(3)?,
            payloads: blobs(4)?,
            metadata: blobs(5)?,
        })
    }

    /// The row groups holding positions `first..first + count`.
    pub fn groups_for(&self, first: u64, count: u64) -> std::ops::Range<usize> {
        let start = self.group_starts.partition_point(|&s| s <= first).saturating_sub(1);
        let end = self.group_starts.partition_point(|&s| s < first + count);
        start..end.max(start + 1).min(self.group_starts.len())
    }

    /// Number of row groups.
    pub fn groups(&self) -> usize {
        self.group_starts.len()
    }
}

/// The decoded columns of one row group (byte arrays share the decompressed pages).
#[derive(Debug)]
pub(crate) struct GroupColumns {
    positions: Vec<i64>,
    streams: Vec<ByteArray>,
    versions: Vec<i64>,
    types: Vec<ByteArray>,
    payloads: Vec<ByteArray>,
    metadata: Vec<ByteArray>,
}

impl GroupColumns {
    /// Builds the events of rows `rows` (only those: building one costs a few allocations).
    fn events(&self, rows: std::ops::Range<usize>, path: &Path, out: &mut Vec<RecordedEvent>) -> Result<()> {
        let mut last_stream: Option<StreamId> = None;
        let mut last_type: Option<std::borrow::Cow<'static, str>> = None;
        for i in rows {
            let stream_id = shared_stream_id(self.streams[i].data(), &mut last_stream, path)?;
            let event_type = match &last_type {
                Some(t) if t.as_bytes() == self.types[i].data() => t.clone(),
                _ => {
                    let text = std::str::from_utf8(self.types[i].data())
                        .map_err(|_| corruption(path, 0, "event type is not UTF-8"))?;
                    std::borrow::Cow::Owned(text.to_string())
                }
            };
            last_type = Some(event_type.clone());
            let meta = Metadata::decode(self.metadata[i].data()).map_err(|e| corruption(path, 0, e.to_string()))?;
            out.push(RecordedEvent {
                stream_id,
                version: self.versions[i] as u64,
                position: self.positions[i] as u64,
                event_type,
                payload: Bytes::copy_from_slice(self.payloads[i].data()),
                metadata: meta,
            });
        }
        Ok(())
    }
}

/// Length and CRC32 of a whole file, read in 256 KiB pieces.
fn file_crc(file: &File) -> std::io::Result<(u64, u32)> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 256 * 1024];
    let mut hasher = crc32fast::Hasher::new();
    let mut at = 0u64;
    loop {
        match file.read_at(&mut buf, at) {
            Ok(0) => return Ok((at, hasher.finalize())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A Parquet file read with positional reads (`pread`), so that any number of threads can
/// read one segment at once.
///
/// parquet's own `ChunkReader` for `File` clones the descriptor and seeks it, and clones share
/// one file offset: two readers of one segment at the same moment (two subscribers catching
/// up, a read beside the converter) read each other's bytes ("Invalid page header"; found by
/// the concurrent-history test).
#[derive(Debug)]
pub(crate) struct PositionalFile {
    file: File,
    len: u64,
}

impl parquet::file::reader::Length for PositionalFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for PositionalFile {
    type T = PositionalRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PositionalRead> {
        let file = self.file.try_clone().map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(PositionalRead { file, at: start })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buffer = vec![0; length];
        self.file
            .read_exact_at(&mut buffer, start)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(buffer.into())
    }
}

/// A reader at its own offset of a shared file (positional reads; never moves the
/// descriptor's offset).
#[derive(Debug)]
pub(crate) struct PositionalRead {
    file: File,
    at: u64,
}

impl std::io::Read for PositionalRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let read = self.file.read_at(buf, self.at)?;
        self.at += read as u64;
        Ok(read)
    }
}

/// A decoded row group: (segment, row group) and its columns.
type CachedGroup = ((u32, usize), Arc<GroupColumns>);

/// The live Parquet segments plus a small cache of decoded row groups.
#[derive(Debug, Default)]
pub(crate) struct ParquetFiles {
    files: RwLock<HashMap<u32, Arc<ParquetSegment>>>,
    cache: Mutex<VecDeque<CachedGroup>>,
}

const CACHE_GROUPS: usize = 16;

impl ParquetFiles {
    pub fn insert(&self, segment: ParquetSegment) {
        let seq = segment.entry.seq;
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        files.insert(seq, Arc::new(segment));
        crate::metrics::parquet_segments(files.len());
    }

    pub fn get(&self, seq: u32) -> Option<Arc<ParquetSegment>> {
        self.files.read().unwrap_or_else(PoisonError::into_inner).get(&seq).cloned()
    }

    pub fn len(&self) -> usize {
        self.files.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Bytes of memory held by the open files' Parquet footers (row-group metadata).
    pub fn footer_memory(&self) -> usize {
        self.files.read().unwrap_or_else(PoisonError::into_inner).values().map(|f| f.footer_bytes).sum()
    }

    /// Paths of the live files, in segment order.
    pub fn paths(&self) -> Vec<PathBuf> {
        let files = self.files.read().unwrap_or_else(PoisonError::into_inner);
        let mut seqs: Vec<_> = files.keys().copied().collect();
        seqs.sort_unstable();
        seqs.iter().map(|s| files[s].path.clone()).collect()
    }

    /// Events at positions `first..first + count` of segment `seq`.
    pub fn read(&self, seq: u32, first: u64, count: u64) -> Result<Option<Vec<RecordedEvent>>> {
        let Some(segment) = self.get(seq) else { return Ok(None) };
        let mut out = Vec::with_capacity(count as usize);
        for group in segment.groups_for(first, count) {
            let columns = self.group(&segment, group)?;
            // Rows of a group hold consecutive positions from the group's start.
            let start = segment.group_starts[group];
            let rows = columns.positions.len();
            let from = (first.saturating_sub(start) as usize).min(rows);
            let to = ((first + count).saturating_sub(start) as usize).min(rows);
            columns.events(from..to, &segment.path, &mut out)?;
        }
        if out.iter().enumerate().any(|(i, e)| e.position != first + i as u64) {
            return Err(corruption(&segment.path, 0, format!("positions {first}.. are not where the index says")));
        }
        if out.len() as u64 != count {
            return Err(corruption(&segment.path, 0, format!("positions {first}.. are not all in this segment")));
        }
        Ok(Some(out))
    }

    fn group(&self, segment: &ParquetSegment, group: usize) -> Result<Arc<GroupColumns>> {
        let key = (segment.entry.seq, group);
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, rows)) = cache.iter().find(|(k, _)| *k == key) {
                return Ok(rows.clone());
            }
        }
        let rows = Arc::new(segment.read_group(group)?);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_GROUPS {
            cache.pop_back();
        }
        cache.push_front((key, rows.clone()));
        Ok(rows)
    }
}

/// The stream id stored in `bytes`, sharing one allocation with the previous row's id when it
/// is the same stream (rows of one append are consecutive).
fn shared_stream_id(bytes: &[u8], last: &mut Option<StreamId>, path: &Path) -> Result<StreamId> {
    let stream = std::str::from_utf8(bytes).map_err(|_| corruption(path, 0, "stream id is not UTF-8"))?;
    let stream_id = match last {
        Some(s) if s.as_str() == stream => s.clone(),
        _ => StreamId::from(stream),
    };
    *last = Some(stream_id.clone());
    Ok(stream_id)
}

/// One row of the index columns of a Parquet segment: stream, version, position, event id.
pub(crate) type IndexRow = (StreamId, u64, u64, EventId);

/// Rows of a segment used to rebuild the index: stream, version, position, event id. Reads
/// only those four columns, and takes the event id straight from the metadata bytes.
pub(crate) fn index_rows(segment: &ParquetSegment) -> Result<Vec<IndexRow>> {
    let path = &segment.path;
    let mut out = Vec::with_capacity(segment.entry.rows as usize);
    let mut last_stream: Option<StreamId> = None;
    for index in 0..segment.groups() {
        let group = segment.row_group(index)?;
        let rows = group.metadata().num_rows() as usize;
        let positions = read_column::<Int64Type>(&group, 0, rows, path)?;
        let streams = read_column::<ByteArrayType>(&group, 1, rows, path)?;
        let versions = read_column::<Int64Type>(&group, 2, rows, path)?;
        let metadata = read_column::<ByteArrayType>(&group, 5, rows, path)?;
        for i in 0..rows {
            let stream_id = shared_stream_id(streams[i].data(), &mut last_stream, path)?;
            let id: [u8; 16] = metadata[i]
                .data()
                .get(1..17)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corruption(path, 0, "metadata too short"))?;
            out.push((stream_id, versions[i] as u64, positions[i] as u64, EventId(id)));
        }
    }
    Ok(out)
}

/// All `rows` values of one required column of a row group.
fn read_column<T: parquet::data_type::DataType>(
    group: &SerializedRowGroupReader<'_, PositionalFile>,
    column: usize,
    rows: usize,
    path: &Path,
) -> Result<Vec<T::T>> {
    let reader = group.get_column_reader(column).map_err(|e| parquet_err(path, e))?;
    let mut reader = parquet::column::reader::get_typed_column_reader::<T>(reader);
    let mut values = Vec::with_capacity(rows);
    while values.len() < rows {
        let (records, _, _) =
            reader.read_records(rows - values.len(), None, None, &mut values).map_err(|e| parquet_err(path, e))?;
        if records == 0 {
            return Err(corruption(path, 0, "column ends early"));
        }
    }
    Ok(values)
}

/// Lowers the calling thread's CPU priority (nice 10), so that conversion, which can always
/// wait, yields the CPU to appenders and readers; like RocksDB's low-priority compaction pool.
/// (On Linux the nice value is per thread.) Failure only costs throughput, so it is logged.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority` takes plain integers and touches no memory of ours; `who = 0`
        // is the calling thread.
        let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CONVERTER_NICE) };
        if status != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "allsource: could not lower the converter's priority");
        }
    }
}

/// The nice value of the Parquet converter thread (0 is normal, 19 the lowest).
#[cfg(target_os = "linux")]
const CONVERTER_NICE: libc::c_int = 10;

/// The background thread that rewrites sealed log segments as Parquet.
pub(crate) struct Converter {
    pub shared: Arc<crate::Shared>,
    pub dir: PathBuf,
    pub fs: Fs,
    pub rx: std::sync::mpsc::Receiver<u32>,
    pub manifest: Vec<ManifestEntry>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Converter {
    /// Converts segments as they are sealed, until the writer is gone or `stop` is set.
    pub fn run(mut self) {
        use std::sync::atomic::Ordering;
        lower_priority();
        while let Ok(seq) = self.rx.recv() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Err(error) = self.convert(seq) {
                tracing::error!(%error, segment = seq, "allsource: Parquet conversion failed; the log segment is kept");
                // With its cause: an I/O error's text names only the file.
                let reason = match std::error::Error::source(&error) {
                    Some(source) => format!("{error}: {source}"),
                    None => error.to_string(),
                };
                *self.shared.conversion_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                break;
            }
            self.shared.writer_stats.conversions.fetch_add(1, Ordering::Relaxed);
            let backlog = self.shared.conversion_backlog.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
            crate::metrics::conversion_backlog(backlog);
            self.wake_writer();
        }
        self.shared.converter_running.store(false, Ordering::SeqCst);
        self.wake_writer();
    }

    /// Wakes the writer if it waits for the converter (a spurious wake-up costs it nothing).
    fn wake_writer(&self) {
        if let Some(writer) = self.shared.wakeup.writer.get() {
            writer.unpark();
        }
    }

    /// Parquet file, then manifest, both durable; only then the log segment is removed.
    fn convert(&mut self, seq: u32) -> Result<()> {
        let wal_path = self.dir.join(crate::wal::segment_name(seq));
        // One read of the segment; every row's byte fields are slices of this buffer.
        let buf = Bytes::from(std::fs::read(&wal_path).map_err(|e| io_err(&wal_path, e))?);
        let mut events = Vec::new();
        let mut at = format::SEGMENT_HEADER_LEN;
        loop {
            match format::read_frame(&buf[at..]) {
                format::FrameRead::End => break,
                format::FrameRead::Bad(reason) => return Err(corruption(&wal_path, at as u64, reason)),
                format::FrameRead::Frame(h) => {
                    let payload = buf.slice(at + format::FRAME_HEADER_LEN..at + h.frame_len());
                    format::decode_rows(&h, &payload, &mut events).map_err(|r| corruption(&wal_path, at as u64, r))?;
                    at += h.frame_len();
                }
            }
        }
        // A converted segment's events are readable at once (the cold index counts them as
        // committed), and after reopen too: a segment holding a frame that is not yet
        // committed, and so may still fail, must never get here. The writer hands a segment
        // over only once the group with its last frame is committed; this checks it.
        // A sealed segment holds at least one frame; an empty one (left by a failed write that
        // could not be undone) stays a log segment: a Parquet file of no rows has no position.
        let Some(last) = events.last().map(|e| e.position) else {
            return Err(corruption(
                &wal_path,
                format::SEGMENT_HEADER_LEN as u64,
                "a sealed log segment holds no frames",
            ));
        };
        let committed = self.shared.state.read().unwrap_or_else(PoisonError::into_inner).committed;
        if last > committed {
            return Err(Error::Closed {
                backend: BACKEND_NAME,
                reason: Some(format!("segment {seq} holds position {last}, past the committed head {committed}")),
            });
        }
        let entry = write_parquet(&self.dir, &self.fs, seq, &events)?;
        // Stream ids were checked as UTF-8 once per frame by `decode_rows`.
        let rows: Vec<cold::IndexRow<'_>> = events
            .iter()
            .map(|e| cold::IndexRow { stream: &e.stream, version: e.version, position: e.position, id: e.id })
            .collect();
        cold::write(&self.dir, &self.fs, seq, &cold::encode(seq, &rows))?;
        self.manifest.push(entry);
        if let Err(e) = self.fs.write_file_atomic(&self.dir, MANIFEST_FILE, &encode_manifest(&self.manifest)) {
            self.manifest.pop();
            return Err(io_err(&self.dir.join(MANIFEST_FILE), e));
        }
        let index_path = self.dir.join(cold::index_name(seq));
        let (cold, entries) = cold::ColdSegment::load(&self.dir, seq, entry.first_position, entry.rows)?
            .map_err(|reason| corruption(&index_path, 0, reason))?;
        let segment = ParquetSegment::open(&self.dir, entry)?;
        self.shared.parquet.insert(segment);
        // The segment's events are now read through its index file and Parquet file; its
        // exact event-id map leaves the index whole, and is freed outside the lock.
        let forgotten = {
            let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
            state.make_cold(Arc::new(cold), &entries)?;
            state.shrink_tail();
            state.ids.take_segment(seq)
        };
        drop(forgotten);
        self.shared.segments.remove(seq);
        std::fs::remove_file(&wal_path).map_err(|e| io_err(&wal_path, e))?;
        self.fs.sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        tracing::debug!(segment = seq, rows = entry.rows, "allsource: log segment rewritten as Parquet");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn built_schema_matches_the_documented_text() {
        let parsed = parquet::schema::parser::parse_message_type(super::SCHEMA).expect("parse");
        assert_eq!(*super::schema().expect("build"), parsed);
    }

    #[test]
    fn manifest_round_trip_and_damage() {
        let entries = vec![super::ManifestEntry { seq: 1, first_position: 1, rows: 10, file_len: 99, file_crc: 7 }];
        let bytes = super::encode_manifest(&entries);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("MANIFEST");
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(super::read_manifest(&path).expect("read"), entries);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            std::fs::write(&path, &damaged).expect("write");
            assert!(super::read_manifest(&path).is_err(), "flip at {at} not caught");
        }
    }
}
