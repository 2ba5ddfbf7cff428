//! The group-commit writer thread: one write and one sync per group, rolls, the hand-over of
//! sealed segments to the Parquet converter, and what a failure does (decision 0102).

use super::pending::Group;
use super::*;

/// Counters the writer keeps.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub frames: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub conversions: AtomicU64,
    /// Times the writer waited for the Parquet converter (backlog full).
    pub backlog_waits: AtomicU64,
    /// Lone appends whose acknowledgement poll saw the commit (`AllSourceConfig::ack_spin`).
    pub ack_poll_hits: AtomicU64,
    /// Lone appends whose poll ran out of time and slept.
    pub ack_poll_misses: AtomicU64,
    /// Lone appends that slept without polling, because a recent poll missed.
    pub ack_poll_skips: AtomicU64,
}

/// The writer thread: takes the frames appenders placed, writes them with one `write`, syncs
/// (one `fdatasync` per group in synchronous mode), then makes them readable and wakes the
/// appenders.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub fs: Fs,
    pub dir: PathBuf,
    pub active: ActiveSegment,
    pub mode: SyncMode,
    pub segment_size: u64,
    pub max_batch_bytes: usize,
    /// Where sealed segments go to be rewritten as Parquet.
    pub convert_tx: Option<std::sync::mpsc::Sender<u32>>,
    /// Most sealed segments waiting for conversion before the writer waits for the converter.
    pub max_conversion_backlog: u64,
    /// The next segment's helper (set by `run`).
    pub next: Option<Arc<NextSegment>>,
    pub helper: Option<Thread>,
    /// Segments sealed while writing the current group: handed to the converter only once
    /// that group is committed (a converted segment's events are readable at once, so a
    /// segment holding frames of a group that may still fail must not be converted).
    pub sealed: Vec<u32>,
    /// Where the current group's bytes went, to be zeroed again if the group fails.
    pub written: Vec<Extent>,
}

/// Bytes of a log segment written by the group being committed.
#[derive(Debug)]
pub(crate) struct Extent {
    seq: u32,
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    len: usize,
}

/// What the writer found to do.
enum Work {
    /// A group to write (possibly only flush requests).
    Group(Group),
    /// Nothing pending, but the sync interval is over.
    IntervalDue,
    /// The store was dropped and nothing is pending.
    Stop,
}

impl Writer {
    /// Runs until the store is dropped.
    pub fn run(mut self) {
        let next = Arc::new(NextSegment::new());
        let helper = {
            let (next, fs, dir, size) = (next.clone(), self.fs.clone(), self.dir.clone(), self.segment_size);
            let zero_fill = self.zero_fill();
            std::thread::Builder::new()
                .name("allsource-prealloc".into())
                .spawn(move || next.run(&dir, &fs, size, zero_fill))
                .ok()
        };
        self.next = Some(next.clone());
        self.helper = helper.as_ref().map(|h| h.thread().clone());
        self.write_loop();
        next.stop.store(true, Ordering::SeqCst);
        if let Some(helper) = helper {
            helper.thread().unpark();
            let _ = helper.join();
        }
    }

    fn write_loop(&mut self) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut spare = Vec::with_capacity(1 << 16);
        let mut last_group = 0usize;
        let mut last_sync_time = Duration::ZERO;
        loop {
            // In synchronous mode, wait a little (at most half a sync) for as many appends as the
            // last group had: the appenders it acknowledged are coming back, and a group that
            // leaves without them costs them a whole extra sync.
            let (target, linger) = match self.mode {
                SyncMode::Synchronous => (last_group.max(1), (last_sync_time / 2).min(MAX_LINGER)),
                _ => (1, Duration::ZERO),
            };
            // A lone synchronous appender comes back a few µs after its acknowledgement: spin
            // briefly for it rather than pay a futex wake-up on top of every sync.
            let spin = if self.mode == SyncMode::Synchronous && last_group <= 1 { IDLE_SPIN } else { Duration::ZERO };
            let interval = match self.mode {
                SyncMode::Interval(every) if dirty => Some(last_sync + every),
                _ => None,
            };
            let mut group = match self.gather(std::mem::take(&mut spare), target, linger, interval, spin) {
                Work::Group(group) => group,
                Work::IntervalDue => {
                    // Failed or not, nothing is left to sync: a failure poisons the store.
                    let _ = self.sync_or_poison();
                    dirty = false;
                    last_sync = Instant::now();
                    continue;
                }
                Work::Stop => break,
            };
            if group.frames > 0 {
                last_group = group.frames;
                let started = Instant::now();
                // Only this group's bytes may be undone if it fails.
                self.written.clear();
                let outcome = if self.shared.wakeup.poisoned.load(Ordering::SeqCst) {
                    Err(Error::Closed { backend: BACKEND_NAME, reason: Some("an earlier write failed".into()) })
                } else {
                    self.write_group(&mut group)
                };
                last_sync_time = started.elapsed();
                let lone = self.mode == SyncMode::Synchronous && group.frames == 1;
                let nanos = if lone { (last_sync_time.as_nanos() as u64).max(1) } else { 0 };
                self.shared.wakeup.lone_sync_nanos.store(nanos, Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        let synced = self.mode == SyncMode::Synchronous;
                        crate::metrics::group_committed(group.frames, synced.then_some(last_sync_time));
                        dirty = self.mode != SyncMode::Synchronous;
                        if self.mode == SyncMode::Synchronous {
                            last_sync = Instant::now();
                        }
                        self.written.clear();
                        self.commit(&group);
                        self.hand_over_sealed();
                    }
                    Err(error) => self.fail(&group, error),
                }
            }
            let interval_due = matches!(self.mode, SyncMode::Interval(every) if last_sync.elapsed() >= every);
            let poisoned = || self.shared.wakeup.poisoned.load(Ordering::SeqCst);
            let result = if poisoned() {
                // A flush after a failure must not report success: the failure is its answer.
                Err(self.poison_error())
            } else if dirty && (interval_due || !group.flushes.is_empty()) {
                let result = self.sync_or_poison();
                dirty = false;
                last_sync = Instant::now();
                result
            } else {
                Ok(())
            };
            for ack in group.flushes.drain(..) {
                let _ = ack.send(result.as_ref().map(|_| ()).map_err(clone_error));
            }
            spare = group.buf;
            spare.clear();
        }
        if dirty && !self.shared.wakeup.poisoned.load(Ordering::SeqCst) {
            // Nobody waits for this one; a failure is still logged (by the poisoning).
            let _ = self.sync_or_poison();
        }
    }

    /// Syncs the active segment; a failure poisons the store (see [`crate::poison`]): every
    /// append acknowledged since the last good sync may have lost its pages, so nothing more is
    /// acknowledged, and the pending appends (positions past the committed head) will fail.
    fn sync_or_poison(&self) -> Result<()> {
        let started = Instant::now();
        self.sync().inspect(|()| crate::metrics::log_synced(started.elapsed())).inspect_err(|error| {
            let committed = self.shared.state.read().unwrap_or_else(PoisonError::into_inner).committed;
            crate::poison::poison(&self.shared, clone_error(error), committed + 1);
        })
    }

    /// A copy of the error that poisoned the store.
    fn poison_error(&self) -> Error {
        let state = self.shared.state.read().unwrap_or_else(PoisonError::into_inner);
        match &state.poisoned {
            Some(poison) => poison.original(),
            None => Error::Closed { backend: BACKEND_NAME, reason: Some("the log writer failed".into()) },
        }
    }

    /// Waits until there is something to do: `target` frames pending (or fewer once `linger`
    /// has passed since the first), a flush request, the sync `interval` over, or the end.
    fn gather(
        &self,
        spare: Vec<u8>,
        target: usize,
        linger: Duration,
        interval: Option<Instant>,
        spin: Duration,
    ) -> Work {
        let wakeup = &self.shared.wakeup;
        let mut first_seen: Option<Instant> = None;
        let mut spare = Some(spare);
        let mut spin_until = (!spin.is_zero()).then(|| Instant::now() + spin);
        loop {
            // Say what we wait for before looking: an appender that places a frame after the
            // look sees it and unparks us (an unpark before the park makes the park return).
            wakeup.wake_at.store(if first_seen.is_some() { target } else { 1 }, Ordering::SeqCst);
            let closing = wakeup.closing.load(Ordering::SeqCst);
            let pending = {
                let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
                let log = state.log.as_mut().expect("a durable store has a pending log");
                let lingered = first_seen.is_some_and(|t| t.elapsed() >= linger);
                if log.frames >= target || (log.frames > 0 && (lingered || closing)) || !log.flushes.is_empty() {
                    wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                    return Work::Group(log.take(spare.take().unwrap_or_default()));
                }
                log.frames
            };
            if closing {
                wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                return Work::Stop;
            }
            let now = Instant::now();
            if interval.is_some_and(|due| now >= due) {
                wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                return Work::IntervalDue;
            }
            if pending > 0 && first_seen.is_none() {
                first_seen = Some(now);
                continue;
            }
            if let Some(until) = spin_until.take() {
                wakeup.poke.store(false, Ordering::SeqCst);
                while Instant::now() < until && !wakeup.poke.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut until = interval;
            if let Some(seen) = first_seen {
                let due = seen + linger;
                until = Some(until.map_or(due, |u| u.min(due)));
            }
            match until {
                Some(until) => std::thread::park_timeout(until.saturating_duration_since(now)),
                None => std::thread::park(),
            }
        }
    }

    fn sync(&self) -> Result<()> {
        self.shared.writer_stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.fs.sync_data(&self.active.file, &self.active.path).map_err(|e| io_err(&self.active.path, e))
    }

    /// Writes one group (one `write` per segment it touches, at most `max_batch_bytes` each)
    /// and, in synchronous mode, syncs it.
    fn write_group(&mut self, group: &mut Group) -> Result<()> {
        let last = group.last_frame;
        format::reseal_frame(&mut group.buf[last..], FLAG_LAST_IN_BATCH);
        for (i, chunk) in group.chunks.iter().enumerate() {
            let end = group.chunks.get(i + 1).map_or(group.buf.len(), |next| next.start);
            if chunk.seq != self.active.seq {
                self.roll()?;
                if chunk.seq != self.active.seq || chunk.offset != self.active.offset {
                    return Err(Error::Closed {
                        backend: BACKEND_NAME,
                        reason: Some("log placement out of step".into()),
                    });
                }
            }
            let bytes = &group.buf[chunk.start..end];
            let file_end = chunk.offset + bytes.len() as u64;
            if file_end > self.active.allocated {
                self.preallocate(file_end)?;
            }
            self.ask_for_next();
            self.written.push(Extent {
                seq: self.active.seq,
                file: self.active.file.clone(),
                path: self.active.path.clone(),
                offset: chunk.offset,
                len: bytes.len(),
            });
            let path = &self.active.path;
            for (n, piece) in bytes.chunks(self.max_batch_bytes).enumerate() {
                let at = chunk.offset + (n * self.max_batch_bytes) as u64;
                self.fs.write_at(&self.active.file, path, piece, at).map_err(|e| io_err(path, e))?;
            }
            self.active.offset = file_end;
        }
        if self.mode == SyncMode::Synchronous {
            self.sync()?;
        }
        let stats = &self.shared.writer_stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.frames.fetch_add(group.frames as u64, Ordering::Relaxed);
        stats.wal_bytes.fetch_add(group.buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Whether new log space is written with zeros (every mode that syncs; see
    /// [`write_new_segment`]).
    fn zero_fill(&self) -> bool {
        self.mode != SyncMode::NoSync
    }

    /// Extends the active segment with zeros to cover `end`, so later syncs overwrite
    /// allocated blocks instead of growing the file. (Segments prepared by the helper are
    /// allocated in full; a store's first segment grows this way.)
    fn preallocate(&mut self, end: u64) -> Result<()> {
        let step = self.active.allocated.clamp(MIN_PREALLOC, MAX_PREALLOC);
        let target = (end + step).min(self.segment_size.max(end));
        if !self.zero_fill() {
            let path = &self.active.path;
            self.fs.set_len(&self.active.file, path, target).map_err(|e| io_err(path, e))?;
            self.active.allocated = target;
            return Ok(());
        }
        let zeros = vec![0u8; (target - self.active.allocated) as usize];
        let path = &self.active.path;
        self.fs.write_at(&self.active.file, path, &zeros, self.active.allocated).map_err(|e| io_err(path, e))?;
        self.fs.sync_data(&self.active.file, path).map_err(|e| io_err(path, e))?;
        self.active.allocated = target;
        Ok(())
    }

    /// Once the active segment is half full, asks the helper to prepare the next one.
    fn ask_for_next(&self) {
        let (Some(next), Some(helper)) = (&self.next, &self.helper) else { return };
        let seq = self.active.seq + 1;
        if self.active.offset > self.segment_size / 2 && next.want.load(Ordering::SeqCst) != seq {
            next.want.store(seq, Ordering::SeqCst);
            helper.unpark();
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let seq = self.active.seq + 1;
        let next = match self.next.as_ref().and_then(|next| next.take(seq)) {
            Some((tmp, file)) => {
                let path = self.dir.join(segment_name(seq));
                self.fs.rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
                self.fs.sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
                self.shared.segments.insert(seq, file.clone());
                let offset = SEGMENT_HEADER_LEN as u64;
                ActiveSegment { seq, path, file, offset, allocated: self.segment_size.max(offset) }
            }
            None => {
                create_segment(&self.dir, &self.fs, seq, &self.shared.segments, self.segment_size, self.zero_fill())?
            }
        };
        let sealed = std::mem::replace(&mut self.active, next);
        // Not converted yet: the group being written may have frames in it and may still fail.
        self.sealed.push(sealed.seq);
        self.shared.writer_stats.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a group is committed, hands the segments sealed while writing it to the
    /// converter (every frame in them is now committed), then applies backpressure.
    fn hand_over_sealed(&mut self) {
        if self.sealed.is_empty() {
            return;
        }
        let Some(tx) = &self.convert_tx else {
            self.sealed.clear();
            return;
        };
        for seq in self.sealed.drain(..) {
            let backlog = self.shared.conversion_backlog.fetch_add(1, Ordering::SeqCst) + 1;
            crate::metrics::conversion_backlog(backlog);
            let _ = tx.send(seq);
        }
        self.wait_for_converter();
    }

    /// Backpressure: while more sealed segments wait for conversion than allowed, waits (and
    /// so do the appenders) until the converter catches up, stops, or the store closes.
    fn wait_for_converter(&self) {
        let shared = &self.shared;
        let over = || shared.conversion_backlog.load(Ordering::SeqCst) > self.max_conversion_backlog;
        if !over() {
            return;
        }
        shared.writer_stats.backlog_waits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("allsource: appends wait for the Parquet converter to catch up");
        while over() && shared.converter_running.load(Ordering::SeqCst) && !shared.wakeup.closing.load(Ordering::SeqCst)
        {
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    /// Makes a written group readable, then wakes its appenders.
    fn commit(&self, group: &Group) {
        {
            let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
            state.committed = state.committed.max(group.last_position);
        }
        self.shared.signal.publish(group.last_position);
        self.shared.wakeup.acks.notify_waiters();
    }

    /// After an I/O error while writing `group`: zeroes the bytes the group wrote (and syncs
    /// them), so that no append whose appender gets the error comes back after reopen, then
    /// removes the segments the group rolled into (they hold nothing else; a group longer than
    /// a segment would otherwise leave an all-zero segment before the last), then poisons the
    /// store. The segments sealed on the way are left for the next open to convert. (The rule
    /// is in [`crate::poison`].)
    fn fail(&mut self, group: &Group, error: Error) {
        self.sealed.clear();
        let written = std::mem::take(&mut self.written);
        for extent in &written {
            let zeros = vec![0u8; extent.len];
            let undone = self
                .fs
                .write_at(&extent.file, &extent.path, &zeros, extent.offset)
                .and_then(|()| self.fs.sync_data(&extent.file, &extent.path));
            if let Err(undo) = undone {
                tracing::error!(
                    file = %extent.path.display(),
                    offset = extent.offset,
                    error = %undo,
                    "allsource: could not undo a failed log write; its appends may reappear after reopen"
                );
            }
        }
        if let Some(first) = written.first() {
            let rolled_into: Vec<&Extent> = written.iter().filter(|e| e.seq > first.seq).collect();
            // Highest first, stopping at the first that cannot be removed: whatever happens, the
            // segments left are numbered without a gap (recovery refuses a missing segment) and
            // the last of them is all zeros.
            for extent in rolled_into.iter().rev() {
                self.shared.segments.remove(extent.seq);
                if let Err(undo) = std::fs::remove_file(&extent.path) {
                    tracing::error!(file = %extent.path.display(), error = %undo, "allsource: could not remove a log segment of a failed write");
                    break;
                }
            }
            if !rolled_into.is_empty()
                && let Err(undo) = self.fs.sync_dir(&self.dir)
            {
                tracing::error!(error = %undo, "allsource: could not sync the removal of a failed write's log segments");
            }
        }
        crate::poison::poison(&self.shared, error, group.first_position);
    }
}
