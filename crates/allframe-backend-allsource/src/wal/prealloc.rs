//! The helper thread that prepares the next log segment ahead of the writer.

use super::*;

/// The next log segment, created and filled with zeros to its full size by a helper thread
/// (`allsource-prealloc`) while the writer fills the current one.
///
/// The writer used to extend the active segment itself, 8 MiB of zeros and an `fdatasync` at a
/// time (10 to 20 ms during which every appender waited). Extending the *active* file from
/// another thread is no better: its `fdatasync`s would then flush the helper's zeros and
/// size changes too. A separate file is independent: when the writer rolls, it renames the
/// prepared file into place, and every sync of that segment overwrites allocated blocks.
#[derive(Debug)]
pub(crate) struct NextSegment {
    /// A prepared segment: its number, temporary path and open file.
    ready: Mutex<Option<(u32, PathBuf, Arc<File>)>>,
    /// The segment number the writer wants prepared (0: none).
    pub(super) want: AtomicU32,
    pub(super) stop: AtomicBool,
}

impl NextSegment {
    /// A helper with nothing wanted yet.
    pub(super) fn new() -> Self {
        NextSegment { ready: Mutex::new(None), want: AtomicU32::new(0), stop: AtomicBool::new(false) }
    }

    /// The temporary name of a prepared segment (removed on open, like every `*.tmp`).
    fn tmp_path(dir: &Path, seq: u32) -> PathBuf {
        dir.join(format!("{}.next.tmp", segment_name(seq)))
    }

    /// Creates segment `seq` under its temporary name: header, zeros to `size`, `fdatasync`.
    fn prepare(dir: &Path, fs: &Fs, seq: u32, size: u64, zero_fill: bool) -> Result<(PathBuf, Arc<File>)> {
        let tmp = Self::tmp_path(dir, seq);
        let file = write_new_segment(fs, &tmp, seq, size, zero_fill)?;
        Ok((tmp, Arc::new(file)))
    }

    /// The helper thread: prepares the segment the writer asks for, until stopped.
    pub(super) fn run(&self, dir: &Path, fs: &Fs, size: u64, zero_fill: bool) {
        while !self.stop.load(Ordering::SeqCst) {
            let Some((seq, prepared)) = self.job() else {
                std::thread::park();
                continue;
            };
            if let Some(stale) = prepared {
                let _ = std::fs::remove_file(Self::tmp_path(dir, stale));
            }
            match Self::prepare(dir, fs, seq, size, zero_fill) {
                Ok((tmp, file)) => *self.ready.lock().unwrap_or_else(PoisonError::into_inner) = Some((seq, tmp, file)),
                Err(error) => {
                    // The writer creates the segment itself at the roll, and reports the error
                    // to the appenders if it persists.
                    tracing::debug!(%error, segment = seq, "allsource: preparing the next log segment failed");
                    let _ = self.want.compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
        }
    }

    /// The segment to prepare now and the stale prepared one to remove first, if any; `None`
    /// when there is nothing to do. Decided under the lock [`Self::take`] holds, so that the
    /// helper never sees the wanted segment as not prepared just after the writer took it
    /// (preparing it again would remove the file the writer is renaming into place).
    fn job(&self) -> Option<(u32, Option<u32>)> {
        let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.want.load(Ordering::SeqCst);
        let prepared = ready.as_ref().map(|r| r.0);
        (seq != 0 && prepared != Some(seq)).then_some((seq, prepared))
    }

    /// Takes the prepared segment `seq`, if it is ready; either way `seq` is no longer wanted
    /// (the writer creates it itself when it was not ready).
    pub(super) fn take(&self, seq: u32) -> Option<(PathBuf, Arc<File>)> {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.want.compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst);
        match ready.take() {
            Some((ready_seq, tmp, file)) if ready_seq == seq => Some((tmp, file)),
            other => {
                *ready = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next-segment helper must not prepare a segment again once the writer has taken it:
    /// preparing starts by removing the temporary file, which the writer is renaming into place
    /// (the fault sweep saw rolls fail with `NotFound` on the new segment).
    #[test]
    fn the_helper_does_not_prepare_again_a_segment_the_writer_took() {
        let dir = tempfile::tempdir().unwrap();
        let next = NextSegment { ready: Mutex::new(None), want: AtomicU32::new(0), stop: AtomicBool::new(false) };
        assert_eq!(next.job(), None, "nothing wanted");
        next.want.store(7, Ordering::SeqCst);
        assert_eq!(next.job(), Some((7, None)));
        let (tmp, file) = NextSegment::prepare(dir.path(), &Fs::default(), 7, 64 * 1024, true).unwrap();
        *next.ready.lock().unwrap() = Some((7, tmp.clone(), file));
        assert_eq!(next.job(), None, "prepared");
        let (taken, _) = next.take(7).expect("ready");
        assert_eq!(taken, tmp);
        assert_eq!(next.job(), None, "taken by the writer: not wanted any more");
        // A segment the writer wanted but had to create itself is not wanted either.
        next.want.store(8, Ordering::SeqCst);
        assert!(next.take(8).is_none());
        assert_eq!(next.job(), None);
        // A stale prepared segment is removed before the next one is prepared.
        let (tmp, file) = NextSegment::prepare(dir.path(), &Fs::default(), 9, 64 * 1024, true).unwrap();
        *next.ready.lock().unwrap() = Some((9, tmp, file));
        next.want.store(10, Ordering::SeqCst);
        assert_eq!(next.job(), Some((10, Some(9))));
    }
}
