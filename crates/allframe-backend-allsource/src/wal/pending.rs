//! Frames placed by appenders and not yet written, and how the writer and the appenders
//! wake each other (decision 0102).

use super::*;

/// Where one segment's part of a [`PendingLog`] buffer starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    /// Log segment the bytes go to.
    pub seq: u32,
    /// Offset in that segment of the first byte.
    pub offset: u64,
    /// Index in the buffer of the first byte.
    pub start: usize,
}

/// Frames that appenders have placed in the log but the writer has not yet written.
///
/// Lives in the index ([`State::log`]) so that an append assigns its positions and its place
/// in the log under one lock: frames are in position order in the log by construction. The
/// appender copies its frame into `buf` (a `memcpy`; the payload and its CRC were computed
/// before the lock) and learns at once where it will be on disk.
#[derive(Debug)]
pub(crate) struct PendingLog {
    pub buf: Vec<u8>,
    pub chunks: Vec<Chunk>,
    /// Frames in `buf`.
    pub frames: usize,
    /// Index in `buf` of the last frame.
    pub last_frame: usize,
    /// First and last position of the events in `buf`.
    pub first_position: u64,
    pub last_position: u64,
    /// Group-commit number given to every frame in `buf`.
    pub epoch: u64,
    /// Where the next frame goes.
    pub seq: u32,
    pub offset: u64,
    pub segment_size: u64,
    /// `flush()` calls waiting for the next sync.
    pub flushes: Vec<oneshot::Sender<Result<()>>>,
}

impl PendingLog {
    /// An empty buffer continuing the active segment at its end.
    pub fn new(active: &ActiveSegment, epoch: u64, segment_size: u64) -> Self {
        PendingLog {
            buf: Vec::with_capacity(1 << 16),
            chunks: Vec::new(),
            frames: 0,
            last_frame: 0,
            first_position: 0,
            last_position: 0,
            epoch,
            seq: active.seq,
            offset: active.offset,
            segment_size,
            flushes: Vec::new(),
        }
    }

    /// Places one frame after the others (starting the next segment when this one is full)
    /// and returns where it will be in the log.
    pub fn place(&mut self, mut header: FrameHeader, payload: &[u8]) -> Loc {
        let len = header.frame_len() as u64;
        if self.offset + len > self.segment_size && self.offset > SEGMENT_HEADER_LEN as u64 {
            self.seq += 1;
            self.offset = SEGMENT_HEADER_LEN as u64;
        }
        if self.chunks.last().is_none_or(|c| c.seq != self.seq) {
            self.chunks.push(Chunk { seq: self.seq, offset: self.offset, start: self.buf.len() });
        }
        if self.frames == 0 {
            self.first_position = header.first_position;
        }
        header.batch = self.epoch;
        header.flags = 0;
        self.last_frame = self.buf.len();
        format::write_frame(&mut self.buf, &header, payload);
        let loc = Loc { segment: self.seq, offset: self.offset, len: len as u32 };
        self.offset += len;
        self.frames += 1;
        self.last_position = header.first_position + header.count as u64 - 1;
        loc
    }

    /// Takes everything placed so far as one group; later frames get the next group number.
    pub(super) fn take(&mut self, spare: Vec<u8>) -> Group {
        let buf = std::mem::replace(&mut self.buf, spare);
        let group = Group {
            buf,
            chunks: std::mem::take(&mut self.chunks),
            frames: self.frames,
            last_frame: self.last_frame,
            first_position: self.first_position,
            last_position: self.last_position,
            flushes: std::mem::take(&mut self.flushes),
        };
        if self.frames > 0 {
            self.epoch += 1;
        }
        self.frames = 0;
        group
    }
}

/// Frames taken by the writer to be written (and synced) together.
pub(super) struct Group {
    pub(super) buf: Vec<u8>,
    pub(super) chunks: Vec<Chunk>,
    pub(super) frames: usize,
    pub(super) last_frame: usize,
    pub(super) first_position: u64,
    pub(super) last_position: u64,
    pub(super) flushes: Vec<oneshot::Sender<Result<()>>>,
}

/// How the writer and the appenders wake each other.
#[derive(Debug)]
pub(crate) struct Wakeup {
    /// The writer wants waking once this many frames are pending (`usize::MAX`: busy).
    pub wake_at: AtomicUsize,
    /// Set when the store is dropped: write what is pending, sync, stop.
    pub closing: AtomicBool,
    /// Set once the store is poisoned (details in `State::poisoned`).
    pub poisoned: AtomicBool,
    /// Set by an appender that wakes the writer, for a writer that spins instead of parking.
    pub poke: AtomicBool,
    /// Appenders waiting for their group commit.
    pub acks: Notify,
    /// In synchronous mode, how long the last group's write and sync took (ns) if that group
    /// held one frame, else 0: a lone appender polls for its acknowledgement for at most twice
    /// this (see `AllSourceConfig::ack_spin`).
    pub lone_sync_nanos: AtomicU64,
    /// Whether polling for acknowledgements has paid off lately: below zero, lone appenders
    /// skip polling (each skip adds one) because a recent poll ran out of time, the sign of a
    /// busy CPU where polling only takes time from the writer and everything else.
    pub poll_credit: AtomicI32,
    /// The writer thread, to unpark.
    pub writer: OnceLock<Thread>,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            wake_at: AtomicUsize::new(usize::MAX),
            closing: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            poke: AtomicBool::new(false),
            acks: Notify::new(),
            lone_sync_nanos: AtomicU64::new(0),
            poll_credit: AtomicI32::new(0),
            writer: OnceLock::new(),
        }
    }
}

impl Wakeup {
    /// Called by an appender after placing a frame, with the number now pending.
    pub fn placed(&self, pending: usize) {
        if pending >= self.wake_at.load(Ordering::SeqCst) {
            self.poke.store(true, Ordering::SeqCst);
            self.unpark();
        }
    }

    /// Wakes the writer whatever it waits for.
    pub fn unpark(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}
