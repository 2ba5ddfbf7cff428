//! Small helpers: run commands, find the workspace root, time steps.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    // `cargo xtask` (cargo run) sets CARGO_MANIFEST_DIR for the process. Prefer it to the value
    // compiled in: with a target directory shared by several checkouts, cargo may reuse an
    // xtask binary built in another checkout, whose compiled-in path points there.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `cargo` as invoked by the user (respects `CARGO`), linking the prebuilt RocksDB library
/// once `rocksdb_lib::prepare` has run.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    if let Some(dir) = crate::rocksdb_lib::lib_dir() {
        command.env("ROCKSDB_LIB_DIR", dir).env("ROCKSDB_STATIC", "1");
    }
    command
}

/// Runs a command, echoing it, failing with its exit status.
pub fn run(step: &str, command: &mut Command) -> Result<(), String> {
    let started = Instant::now();
    eprintln!("==> {step}");
    let status = command.status().map_err(|e| format!("{step}: could not start: {e}"))?;
    eprintln!("    {step}: {:.1}s", started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

/// Runs a command and returns its standard output.
pub fn output(step: &str, command: &mut Command) -> Result<String, String> {
    let out = command.stderr(Stdio::inherit()).output().map_err(|e| format!("{step}: could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!("{step} failed ({})", out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{step}: output is not UTF-8"))
}

/// Whether a cargo subcommand (`cargo <name> --version`) is installed.
pub fn have_cargo_subcommand(name: &str) -> bool {
    cargo().args([name, "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The cargo target directory in use (`CARGO_TARGET_DIR`, else `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// `scripts/install-deps.sh`: installs what the build needs (a C++ compiler, libclang for
/// RocksDB's bindgen) only when it is missing, saying first which packages and why.
pub fn install_system_packages() -> Result<(), String> {
    run("system packages (scripts/install-deps.sh)", Command::new("bash").arg(root().join("scripts/install-deps.sh")))
}
