//! A small tmpfs for the full-disk tests (mounting needs root and a sandbox that allows
//! `mount`; elsewhere `mount_tmpfs` says the test skipped), and a ballast file that fills it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).stderr(Stdio::null()).status();
    }
}

/// Mounts a tmpfs of `bytes` at `dir`; `None` (after saying that `test` skipped) where that is
/// not allowed.
pub fn mount_tmpfs(test: &str, dir: &Path, bytes: u64) -> Option<Mount> {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Some(Mount(dir.to_path_buf())),
        _ => {
            eprintln!("{test}: SKIPPED, a tmpfs cannot be mounted here (needs root and permission to mount)");
            None
        }
    }
}

/// Fills the filesystem with a ballast file, then gives back `leave` bytes of it.
pub fn fill(ballast: &Path, leave: u64) {
    let mut file = std::fs::File::create(ballast).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    // Bounded by the filesystem's size (the mounts here are a few MiB).
    for _ in 0..4096 {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    file.set_len(written.saturating_sub(leave)).unwrap();
    file.sync_all().unwrap();
}
