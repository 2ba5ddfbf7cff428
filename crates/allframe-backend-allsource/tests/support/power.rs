//! Test support: disk images a power cut can leave, built from what the store synced.
//!
//! [`Recorder`] is an I/O hook that remembers, for every file, its bytes when it was last
//! synced (the hook runs just before the sync), which files were created, written or renamed
//! over since (and the directory not yet synced). [`Recorder::image`] then builds a disk image
//! of the directory as a power cut at that moment could leave it: every synced byte kept;
//! of each file's unsynced bytes, a random subset of its 512-byte sectors (the others read as
//! what was synced, or zeros past it) and a random length between the synced and the written
//! one; a file created since the last directory sync possibly absent; a file renamed into
//! place since then possibly still under its `.tmp` name with the old file back.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use allframe_backend_allsource::{IoHook, IoOp};

/// A directory as file name → contents.
pub type Image = BTreeMap<String, Vec<u8>>;

const SECTOR: usize = 512;

/// A small deterministic generator (xorshift64*), so a failing image can be rebuilt.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

#[derive(Debug, Default)]
struct Tracked {
    /// Bytes of each file at its last sync (absent: never synced since created).
    synced: BTreeMap<String, Vec<u8>>,
    /// Files written (or created) since their last sync.
    dirty: BTreeSet<String>,
    /// Files created since the last directory sync.
    created: BTreeSet<String>,
    /// Files renamed into place since the last directory sync, with what the name held before.
    renamed: BTreeMap<String, Option<Vec<u8>>>,
}

/// The I/O hook that tracks what is durable in one store directory.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    tracked: Mutex<Tracked>,
    /// When set, images taken from inside the hook (see [`Recorder::capture`]).
    capture: Mutex<Option<Capture>>,
    /// Values the test publishes (such as how much was acknowledged), stored with each image.
    pub tags: [AtomicU64; 2],
}

/// Images taken before file operations: each one on a Parquet, index or manifest file and
/// each directory sync, else every `every`-th; at most `max`.
#[derive(Debug)]
struct Capture {
    every: u64,
    max: usize,
    calls: u64,
    rng: u64,
    images: Vec<(Image, [u64; 2])>,
}

impl Recorder {
    /// A recorder for the store in `dir`; files already there count as durable.
    pub fn new(dir: &Path) -> Self {
        let mut tracked = Tracked::default();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(bytes) = std::fs::read(e.path()) {
                    tracked.synced.insert(name, bytes);
                }
            }
        }
        Recorder {
            dir: dir.to_path_buf(),
            tracked: Mutex::new(tracked),
            capture: Mutex::new(None),
            tags: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// From now on, takes a power-cut image before file operations (see [`Capture`]).
    pub fn capture(&self, every: u64, max: usize, seed: u64) {
        *self.capture.lock().unwrap() = Some(Capture { every, max, calls: 0, rng: seed, images: Vec::new() });
    }

    /// The images taken so far, each with the tags as they were when it was taken.
    pub fn take_images(&self) -> Vec<(Image, [u64; 2])> {
        self.capture.lock().unwrap().take().map(|c| c.images).unwrap_or_default()
    }

    fn name(&self, path: &Path) -> Option<String> {
        (path.parent() == Some(self.dir.as_path())).then(|| path.file_name().unwrap().to_string_lossy().into_owned())
    }

    /// The directory as it is now (what a killed process leaves), without `LOCK`.
    pub fn current(&self) -> Image {
        read_dir(&self.dir)
    }

    /// One image a power cut now could leave, drawn with `rng`; `keep_all` keeps every
    /// written byte (the cut came after the OS wrote everything back), `lose_all` keeps only
    /// what was synced.
    pub fn image(&self, rng: &mut Rng, keep_all: bool, lose_all: bool) -> Image {
        let tracked = self.tracked.lock().unwrap();
        self.image_of(&tracked, rng, keep_all, lose_all)
    }

    fn image_of(&self, tracked: &Tracked, rng: &mut Rng, keep_all: bool, lose_all: bool) -> Image {
        let mut image = read_dir(&self.dir);
        for (name, bytes) in image.iter_mut() {
            if !tracked.dirty.contains(name) || keep_all {
                continue;
            }
            let base = tracked.synced.get(name).cloned().unwrap_or_default();
            *bytes = tear(&base, bytes, rng, lose_all);
        }
        for name in &tracked.created {
            if !keep_all && (lose_all || rng.one_in(2)) {
                image.remove(name);
            }
        }
        for (name, old) in &tracked.renamed {
            if !keep_all && (lose_all || rng.one_in(2)) {
                if let Some(new) = image.remove(name) {
                    image.insert(format!("{name}.tmp"), new);
                }
                if let Some(old) = old {
                    image.insert(name.clone(), old.clone());
                }
            }
        }
        image
    }
}

/// What a power cut leaves of a file that held `base` when last synced and `written` now.
fn tear(base: &[u8], written: &[u8], rng: &mut Rng, lose_all: bool) -> Vec<u8> {
    if lose_all {
        return base.to_vec();
    }
    // The file's length: the synced one, the written one, or a sector boundary between.
    let (short, long) = (base.len().min(written.len()), base.len().max(written.len()));
    let len = match rng.next() % 3 {
        0 => written.len(),
        1 => base.len(),
        _ => short + (rng.next() as usize % (long - short + 1)) / SECTOR * SECTOR,
    }
    .max(short)
    .min(long);
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let end = ((at / SECTOR + 1) * SECTOR).min(len);
        let keep_new = !rng.one_in(3);
        for (i, byte) in out[at..end].iter_mut().enumerate() {
            let i = at + i;
            let old = base.get(i).copied().unwrap_or(0);
            *byte = if keep_new { written.get(i).copied().unwrap_or(old) } else { old };
        }
        at = end;
    }
    out
}

impl IoHook for Recorder {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        let mut tracked = self.tracked.lock().unwrap();
        if let Some(capture) = self.capture.lock().unwrap().as_mut() {
            capture.calls += 1;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // Directory syncs too: just before one, renames and creations are not yet durable.
            let conversion = name.contains("parquet")
                || name.contains(".idx")
                || name.contains("MANIFEST")
                || path == self.dir.as_path();
            if capture.images.len() < capture.max && (conversion || capture.calls.is_multiple_of(capture.every)) {
                let mut rng = Rng(capture.rng);
                let pick = rng.next() % 4;
                let image = self.image_of(&tracked, &mut rng, pick == 0, pick == 1);
                capture.rng = rng.next();
                let tags = [self.tags[0].load(Ordering::SeqCst), self.tags[1].load(Ordering::SeqCst)];
                capture.images.push((image, tags));
            }
        }
        if path == self.dir {
            if op == IoOp::Sync {
                tracked.created.clear();
                tracked.renamed.clear();
            }
            return Ok(());
        }
        let Some(name) = self.name(path) else { return Ok(()) };
        match op {
            IoOp::Create => {
                tracked.created.insert(name.clone());
                tracked.synced.remove(&name);
                tracked.dirty.insert(name);
            }
            IoOp::Write => {
                tracked.dirty.insert(name);
            }
            IoOp::Sync => {
                // Runs before the sync: the file's bytes now are what the sync makes durable.
                if let Ok(bytes) = std::fs::read(path) {
                    tracked.synced.insert(name.clone(), bytes);
                }
                tracked.dirty.remove(&name);
            }
            IoOp::Rename => {
                // `path` is the target; its source is `<name>[.something].tmp`, synced before
                // the rename.
                let old = std::fs::read(path).ok();
                tracked.renamed.insert(name.clone(), old);
                let tmp = std::fs::read_dir(&self.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.starts_with(&format!("{name}.")) && n.ends_with(".tmp"))
                    .unwrap_or_else(|| format!("{name}.tmp"));
                if let Some(bytes) = tracked.synced.remove(&tmp) {
                    tracked.synced.insert(name.clone(), bytes);
                }
                tracked.dirty.remove(&tmp);
                tracked.created.remove(&tmp);
                tracked.dirty.remove(&name);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The files of `dir` (without `LOCK`) and their contents.
pub fn read_dir(dir: &Path) -> Image {
    let mut image = Image::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "LOCK"
            && let Ok(bytes) = std::fs::read(e.path())
        {
            image.insert(name, bytes);
        }
    }
    image
}

/// Writes `image` into the (empty) directory `to`.
pub fn write_image(image: &Image, to: &Path) {
    for (name, bytes) in image {
        std::fs::write(to.join(name), bytes).unwrap();
    }
}
