//! The read path: where the events asked for are (memory, a log segment, a Parquet file, a
//! cold segment's index file), then one read per run of adjacent bytes and the decoding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use allframe_cqrs_core::{Bytes, Error, RecordedEvent, Result, StreamId};

use crate::cold::ColdSegment;
use crate::format::{self, FRAME_HEADER_LEN, FrameRead};
use crate::state::{Loc, MEMORY_SEGMENT, State};
use crate::{AllSourceBackend, BACKEND_NAME, segments, wal};

/// Where the bytes of some events are, as found under the index lock.
pub(crate) enum Source {
    /// One frame of an in-memory store.
    Memory(Bytes),
    /// One frame of the log (or of the Parquet file that replaced its segment): its location,
    /// first position and count.
    Disk(Loc, u64, u32),
    /// Positions `first..first + count` of a cold segment.
    Parquet(u32, u64, u64),
    /// One stream's versions `first_version..first_version + count` in a cold segment, starting
    /// at `row` of the segment's position table.
    Run { segment: Arc<ColdSegment>, stream: StreamId, first_version: u64, row: u64, count: u64 },
}

impl AllSourceBackend {
    pub(crate) fn source(state: &State, index: usize) -> Result<Source> {
        let frame = &state.frames[index];
        match frame.loc {
            Some(loc) if loc.segment == MEMORY_SEGMENT => {
                Ok(Source::Memory(state.mem_frames[loc.offset as usize].clone()))
            }
            Some(loc) => Ok(Source::Disk(loc, frame.first_position, frame.count)),
            None => Err(Self::closed("a committed frame has no location")),
        }
    }

    /// Reads and decodes the frames: from memory, from the log (adjacent frames of a segment
    /// with one read), or from the Parquet file that replaced a log segment.
    pub(crate) fn load(&self, sources: Vec<Source>) -> Result<Vec<Vec<RecordedEvent>>> {
        let dir = self.config.data_dir.as_deref().unwrap_or(Path::new(""));
        let mut out = Vec::with_capacity(sources.len());
        let mut i = 0;
        while i < sources.len() {
            match &sources[i] {
                Source::Memory(bytes) => {
                    out.push(decode(bytes, None, dir)?);
                    i += 1;
                }
                Source::Parquet(seq, first, count) => {
                    out.push(self.read_parquet(*seq, *first, *count)?);
                    i += 1;
                }
                Source::Run { segment, stream, first_version, row, count } => {
                    out.push(self.read_run(segment, stream, *first_version, *row, *count)?);
                    i += 1;
                }
                Source::Disk(first, first_position, count) => {
                    let Some(file) = self.shared.segments.get(first.segment) else {
                        let events = self.shared.parquet.read(first.segment, *first_position, *count as u64)?;
                        out.push(events.ok_or_else(|| Error::Corruption {
                            backend: BACKEND_NAME,
                            file: dir.join(wal::segment_name(first.segment)),
                            offset: first.offset,
                            reason: "segment is neither in the log nor in a Parquet file".into(),
                        })?);
                        i += 1;
                        continue;
                    };
                    let mut end = i + 1;
                    let mut span = first.len as u64;
                    while let Some(Source::Disk(next, _, _)) = sources.get(end) {
                        if next.segment != first.segment || next.offset != first.offset + span || span > 4 << 20 {
                            break;
                        }
                        span += next.len as u64;
                        end += 1;
                    }
                    let bytes = wal::read_span(dir, &file, first.segment, first.offset, span as usize)?;
                    for source in &sources[i..end] {
                        if let Source::Disk(loc, _, _) = source {
                            let start = (loc.offset - first.offset) as usize;
                            out.push(decode(&bytes.slice(start..start + loc.len as usize), Some(*loc), dir)?);
                        }
                    }
                    i = end;
                }
            }
        }
        Ok(out)
    }

    /// Positions `first..first + count` of Parquet segment `seq`.
    fn read_parquet(&self, seq: u32, first: u64, count: u64) -> Result<Vec<RecordedEvent>> {
        let dir = self.config.data_dir.as_deref().unwrap_or(Path::new(""));
        self.shared.parquet.read(seq, first, count)?.ok_or_else(|| Error::Corruption {
            backend: BACKEND_NAME,
            file: dir.join(segments::parquet_name(seq)),
            offset: 0,
            reason: "a cold segment has no open Parquet file".into(),
        })
    }

    /// One stream's run of a cold segment: positions from the index file, events from the
    /// Parquet file (one read per run of consecutive positions), checked against the stream.
    fn read_run(
        &self,
        segment: &ColdSegment,
        stream: &StreamId,
        first_version: u64,
        row: u64,
        count: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let positions = segment.positions(row, count)?;
        let mut out = Vec::with_capacity(positions.len());
        let mut i = 0;
        while i < positions.len() {
            let mut end = i + 1;
            while end < positions.len() && positions[end] == positions[end - 1] + 1 {
                end += 1;
            }
            out.extend(self.read_parquet(segment.seq, positions[i], (end - i) as u64)?);
            i = end;
        }
        for (i, event) in out.iter().enumerate() {
            if event.stream_id != *stream || event.version != first_version + i as u64 {
                return Err(segment.damaged(row * 8, "the index file points at another stream's events"));
            }
        }
        Ok(out)
    }
}

/// Decodes one frame's events.
fn decode(bytes: &Bytes, loc: Option<Loc>, dir: &Path) -> Result<Vec<RecordedEvent>> {
    let bad = |reason: &str| Error::Corruption {
        backend: BACKEND_NAME,
        file: match loc {
            Some(loc) => dir.join(wal::segment_name(loc.segment)),
            None => PathBuf::from("(memory)"),
        },
        offset: loc.map_or(0, |l| l.offset),
        reason: reason.to_string(),
    };
    let FrameRead::Frame(header) = format::read_frame(bytes) else { return Err(bad("bad frame")) };
    format::decode_append(&header, &bytes.slice(FRAME_HEADER_LEN..header.frame_len())).map_err(bad)
}
