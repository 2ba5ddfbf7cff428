//! Opening a store: the directory, the manifest's Parquet segments and their index files,
//! then the log replayed frame by frame (decision 0103).

use super::*;

/// Facts from recovery, reported by `stats()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecoveryReport {
    pub segments: u32,
    pub frames: u64,
    pub bytes: u64,
    /// Events held in Parquet segments.
    pub parquet_rows: u64,
    /// Index files that were missing or damaged and were rebuilt from their Parquet segment.
    pub rebuilt_indexes: u32,
    /// `(file, offset, bytes removed)` of a repaired torn tail.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub duration: Duration,
}

/// An opened store directory: its lock and the active segment ready for the writer.
#[derive(Debug)]
pub(crate) struct Opened {
    pub lock: File,
    pub active: ActiveSegment,
    pub next_batch: u64,
    pub report: RecoveryReport,
    /// The manifest's entries (live Parquet segments).
    pub manifest: Vec<ManifestEntry>,
    /// Sealed log segments not yet rewritten as Parquet.
    pub sealed: Vec<u32>,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub seq: u32,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Where the next frame goes.
    pub offset: u64,
    /// Bytes of the file already allocated (written with zeros or data).
    pub allocated: u64,
}

/// Opens (or creates) the store at `dir`: checks it is ours, locks it, replays the log into `state`.
#[allow(clippy::too_many_arguments)] // the parts of `Shared` it fills, before `Shared` exists
pub(crate) fn open(
    dir: &Path,
    fs: &Fs,
    state: &mut State,
    segments: &Segments,
    stats: &WriterStats,
    segment_size: u64,
    zero_fill: bool,
    synchronous: bool,
    parquet: &ParquetFiles,
) -> Result<Opened> {
    let started = Instant::now();
    let crate::dir::LockedDir { lock, names } = crate::dir::open_dir(dir, fs)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = segments::read_manifest(&manifest_path)?;
    for (i, entry) in manifest.iter().enumerate() {
        if entry.seq != i as u32 + 1 {
            return Err(corruption(&manifest_path, 16 + 32 * i as u64, "manifest segments are not contiguous from 1"));
        }
    }
    let converted = manifest.len() as u32;
    let mut seqs = Vec::new();
    let mut leftovers = Vec::new();
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        } else if let Some(seq) = parse_segment_name(name) {
            if seq <= converted {
                // Rewritten as Parquet and listed in the manifest; the crash came before its
                // removal. Removed once the Parquet files are verified below.
                leftovers.push(path);
            } else {
                seqs.push(seq);
            }
        } else if let Some(seq) = segments::parse_parquet_name(name).or_else(|| cold::parse_index_name(name)) {
            if seq > converted {
                // Written but never listed: the crash came before the manifest; it is redone.
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        } else if name != MARKER_FILE && name != LOCK_FILE && name != SNAPSHOT_FILE && name != MANIFEST_FILE {
            tracing::warn!(file = %path.display(), "allsource: ignoring an unknown file in the store");
        }
    }
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    seqs.sort_unstable();
    for (i, &seq) in seqs.iter().enumerate() {
        if seq != converted + i as u32 + 1 {
            let missing = dir.join(segment_name(converted + i as u32 + 1));
            return Err(corruption(&missing, 0, "log segment is missing"));
        }
    }
    drop_empty_trailing_segments(dir, fs, &mut seqs)?;
    let parquet_rows: u64 = manifest.iter().map(|e| e.rows).sum();
    let rebuilt_indexes = load_cold_segments(dir, fs, &manifest, state, parquet)?;
    for path in leftovers {
        tracing::info!(file = %path.display(), "allsource: removing a log segment already in Parquet");
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
    }
    if !seqs.is_empty() || converted > 0 {
        fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut report = RecoveryReport { parquet_rows, rebuilt_indexes, ..RecoveryReport::default() };
    let mut next_batch = 1;
    let mut last_flags = FLAG_LAST_IN_BATCH;
    let mut active = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = dir.join(segment_name(seq));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        match format::decode_segment_header(&buf) {
            Ok(found) if found == seq as u64 => {}
            Ok(_) => return Err(corruption(&path, 0, "segment header names another segment")),
            Err(reason) => return Err(corruption(&path, 0, reason)),
        }
        let mut at = SEGMENT_HEADER_LEN;
        loop {
            let read = match format::read_frame(&buf[at..]) {
                // Zeros, then more bytes: a power cut kept later sectors of the last write but
                // not this one. Handled like a torn frame (below), so no stale frame is left
                // behind the end where the next appends go.
                FrameRead::End if buf[at..].iter().any(|&b| b != 0) => FrameRead::Bad("zeros followed by more bytes"),
                read => read,
            };
            match read {
                FrameRead::End => break,
                FrameRead::Frame(h) => {
                    let payload = &buf[at + FRAME_HEADER_LEN..at + h.frame_len()];
                    replay_frame(state, &h, payload, &path, at as u64, seq)?;
                    next_batch = h.batch + 1;
                    last_flags = h.flags;
                    report.frames += 1;
                    at += h.frame_len();
                }
                FrameRead::Bad(reason) => {
                    // A torn tail: the bad frame belongs to the last group-commit write of the
                    // last segment, and no frame of a later write follows it.
                    let torn_batch = if last_flags & FLAG_LAST_IN_BATCH != 0 { next_batch } else { next_batch - 1 };
                    let later = if is_last { later_frame(&buf, at + 1, torn_batch) } else { None };
                    // Without a sync per write, several group commits may be unsynced when the
                    // power goes, and a cut may keep a later one while losing a sector (which
                    // reads as zeros) of an earlier one: the whole unsynced tail is cut off. A
                    // synchronous store syncs each write before the next, so there the earlier
                    // one was durable and this is damage.
                    // (The sector holding the later frame's start reached the disk: only pieces before it count.)
                    let torn_unsynced =
                        later.is_some_and(|later| !synchronous && zeroed_piece(&buf[..later / 512 * 512], at));
                    if !is_last || (later.is_some() && !torn_unsynced) {
                        return Err(corruption(&path, at as u64, reason));
                    }
                    if let Some(later) = later {
                        tracing::warn!(
                            file = %path.display(),
                            offset = at,
                            later_frame = later,
                            "allsource: a power cut tore an unsynced group commit; dropping it and the unsynced ones after it"
                        );
                    }
                    let junk = buf[at..].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1) as u64;
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        bytes = junk,
                        reason,
                        "allsource: truncating a torn final frame left by a crash"
                    );
                    file.set_len(at as u64).map_err(|e| io_err(&path, e))?;
                    fs.sync_data(&file, &path).map_err(|e| io_err(&path, e))?;
                    report.torn_tail = Some((path.clone(), at as u64, junk));
                    break;
                }
            }
        }
        report.bytes += at as u64;
        let file = Arc::new(file);
        segments.insert(seq, file.clone());
        if is_last {
            let allocated = file.metadata().map_err(|e| io_err(&path, e))?.len();
            active = Some(ActiveSegment { seq, path, file, offset: at as u64, allocated });
        }
    }
    let active = match active {
        Some(active) => active,
        None => create_segment(dir, fs, converted + 1, segments, segment_size, zero_fill)?,
    };
    let sealed = seqs.iter().copied().filter(|&seq| seq != active.seq).collect();
    report.segments = seqs.len() as u32;
    report.duration = started.elapsed();
    stats.wal_bytes.store(report.bytes, Ordering::Relaxed);
    stats.segments.store(seqs.len().max(1) as u64, Ordering::Relaxed);
    state.committed = state.assigned;
    Ok(Opened { lock, active, next_batch, report, manifest, sealed })
}

/// Opens the manifest's Parquet files and their index files and makes them cold segments of
/// the index, in order; returns how many index files had to be rebuilt.
///
/// Opening a file (length and CRC check) and loading (or rebuilding) its index file do not
/// depend on the other files, so worker threads do it ahead (at most a few files ahead, to
/// bound memory) while this thread registers them in manifest order; the first error in that
/// order is the one reported.
fn load_cold_segments(
    dir: &Path,
    fs: &Fs,
    manifest: &[ManifestEntry],
    state: &mut State,
    parquet: &ParquetFiles,
) -> Result<u32> {
    type Loaded = Result<(ParquetSegment, ColdSegment, Vec<cold::StreamEntry>, bool)>;
    if manifest.is_empty() {
        return Ok(0);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let ahead = workers * 2;
    let next = AtomicUsize::new(0);
    // How many files have been registered; workers wait while they are `ahead` files past it.
    let registered = (std::sync::Mutex::new(0usize), std::sync::Condvar::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Loaded)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, registered, stop) = (&next, &registered, &stop);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= manifest.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut done = registered.0.lock().unwrap_or_else(PoisonError::into_inner);
                    while index >= *done + ahead && !stop.load(Ordering::SeqCst) {
                        done = registered.1.wait(done).unwrap_or_else(PoisonError::into_inner);
                    }
                    drop(done);
                    if tx.send((index, load_cold_segment(dir, fs, manifest[index]))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut ready = std::collections::BTreeMap::new();
        let mut rebuilt = 0;
        let outcome = (|| {
            for index in 0..manifest.len() {
                let loaded = loop {
                    if let Some(loaded) = ready.remove(&index) {
                        break loaded;
                    }
                    match rx.recv() {
                        Ok((i, loaded)) => {
                            ready.insert(i, loaded);
                        }
                        Err(_) => {
                            return Err(Error::Closed {
                                backend: BACKEND_NAME,
                                reason: Some("a Parquet loader stopped".into()),
                            });
                        }
                    }
                };
                let (segment, cold, entries, was_rebuilt) = loaded?;
                if cold.first_position != state.assigned + 1 {
                    return Err(corruption(
                        &segment.path,
                        0,
                        format!("segment starts at position {}, expected {}", cold.first_position, state.assigned + 1),
                    ));
                }
                state.assigned = cold.last_position();
                state.make_cold(Arc::new(cold), &entries)?;
                parquet.insert(segment);
                rebuilt += u32::from(was_rebuilt);
                *registered.0.lock().unwrap_or_else(PoisonError::into_inner) = index + 1;
                registered.1.notify_all();
            }
            Ok(rebuilt)
        })();
        stop.store(true, Ordering::SeqCst);
        registered.1.notify_all();
        outcome
    })
}

/// Opens one listed Parquet file and loads its index file, rebuilding the index file from the
/// Parquet rows when it is missing or damaged (the `bool`).
fn load_cold_segment(
    dir: &Path,
    fs: &Fs,
    entry: ManifestEntry,
) -> Result<(ParquetSegment, ColdSegment, Vec<cold::StreamEntry>, bool)> {
    let segment = ParquetSegment::open(dir, entry)?;
    let reason = match ColdSegment::load(dir, entry.seq, entry.first_position, entry.rows)? {
        Ok((cold, entries)) => return Ok((segment, cold, entries, false)),
        Err(reason) => reason,
    };
    let index_path = dir.join(cold::index_name(entry.seq));
    tracing::warn!(file = %index_path.display(), reason, "allsource: rebuilding an index file from its Parquet segment");
    let rows = segments::index_rows(&segment)?;
    check_rows(&rows, entry.first_position).map_err(|reason| corruption(&segment.path, 0, reason))?;
    let rows: Vec<cold::IndexRow<'_>> = rows
        .iter()
        .map(|(stream, version, position, id)| cold::IndexRow {
            stream: stream.as_bytes(),
            version: *version,
            position: *position,
            id: *id,
        })
        .collect();
    cold::write(dir, fs, entry.seq, &cold::encode(entry.seq, &rows))?;
    match ColdSegment::load(dir, entry.seq, entry.first_position, entry.rows)? {
        Ok((cold, entries)) => Ok((segment, cold, entries, true)),
        Err(reason) => Err(corruption(&index_path, 0, reason)),
    }
}

/// Checks that a segment's rows hold consecutive positions from `first_position` and, within
/// the segment, consecutive versions per stream.
fn check_rows(rows: &[segments::IndexRow], first_position: u64) -> std::result::Result<(), String> {
    let mut last_version: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (i, (stream, version, position, _)) in rows.iter().enumerate() {
        if *position != first_position + i as u64 {
            return Err(format!("row {i} has position {position}, expected {}", first_position + i as u64));
        }
        if let Some(last) = last_version.insert(stream.as_str(), *version)
            && *version != last + 1
        {
            return Err(format!("stream `{stream}` continues at version {version}, expected {}", last + 1));
        }
    }
    Ok(())
}

/// Replays one frame into the index, checking positions and versions are contiguous.
fn replay_frame(state: &mut State, h: &FrameHeader, payload: &[u8], path: &Path, offset: u64, seq: u32) -> Result<()> {
    if h.count == 0 {
        return Err(corruption(path, offset, "frame holds no events"));
    }
    if h.first_position != state.assigned + 1 {
        return Err(corruption(
            path,
            offset,
            format!("frame starts at position {}, expected {}", h.first_position, state.assigned + 1),
        ));
    }
    let (stream, ids) = format::decode_append_ids(h, payload).map_err(|reason| corruption(path, offset, reason))?;
    let current = state.assigned_version(&stream);
    if h.first_version != current + 1 {
        return Err(corruption(
            path,
            offset,
            format!("stream `{stream}` continues at version {}, expected {}", h.first_version, current + 1),
        ));
    }
    let loc = Loc { segment: seq, offset, len: h.frame_len() as u32 };
    state.register(&stream, h.first_position, h.first_version, &ids, Some(loc));
    Ok(())
}

/// Whether a piece of `buf[from..]` between 512-byte sector boundaries of the file is all
/// zeros: a sector a power cut lost (preallocated or sparse space reads as zeros), not a
/// flipped bit.
fn zeroed_piece(buf: &[u8], from: usize) -> bool {
    const SECTOR: usize = 512;
    let mut start = from;
    while start < buf.len() {
        let end = ((start / SECTOR + 1) * SECTOR).min(buf.len());
        if buf[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// The first whole frame at or after `from` whose group-commit write is later than `batch`.
fn later_frame(buf: &[u8], from: usize, batch: u64) -> Option<usize> {
    let end = buf.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=end).find(|&at| {
        let h = &buf[at..];
        format::u16_at(h, 4) == format::FORMAT_VERSION
            && h[6] == format::KIND_APPEND
            && matches!(format::read_frame(h), FrameRead::Frame(f) if f.batch > batch)
    })
}

/// Whether log segment `seq` holds no frame: all zeros after its header (`whole`), or only a
/// zero first frame header (a cheap look, for the segment before the last).
fn segment_is_empty(dir: &Path, seq: u32, whole: bool) -> Result<bool> {
    let path = dir.join(segment_name(seq));
    let file = File::open(&path).map_err(|e| io_err(&path, e))?;
    if whole {
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        return Ok(buf.get(SEGMENT_HEADER_LEN..).is_some_and(|rest| rest.iter().all(|&b| b == 0)));
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    match file.read_exact_at(&mut header, SEGMENT_HEADER_LEN as u64) {
        Ok(()) => Ok(header.iter().all(|&b| b == 0)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// A failed group commit that spanned rolls leaves the segments it rolled into all zeros
/// (`Writer::fail`); when one of them could not be removed, several empty segments end the
/// log, and every one but the last would be sealed with no frame, which the converter cannot
/// turn into a Parquet file (a file of no rows has no position): conversion would stop for
/// good. Removes empty segments from the end, highest first, while the one before is empty
/// too, so that only the lowest stays, as the active segment.
fn drop_empty_trailing_segments(dir: &Path, fs: &Fs, seqs: &mut Vec<u32>) -> Result<()> {
    let mut removed = false;
    while let [.., before, last] = seqs[..]
        && segment_is_empty(dir, before, false)?
        && segment_is_empty(dir, last, true)?
    {
        let path = dir.join(segment_name(last));
        tracing::warn!(file = %path.display(), "allsource: removing an empty log segment left by a failed write");
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        seqs.pop();
        removed = true;
    }
    if removed {
        fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}
