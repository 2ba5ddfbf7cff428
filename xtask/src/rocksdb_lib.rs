//! RocksDB's C++ built once and linked into every cargo profile (decision 0405).
//!
//! `librocksdb-sys` compiles about 12 minutes of C++ in each cargo profile that links it
//! (dev for the tests and checks, release for the benchmark runner, size-report for the size
//! probes): on a new 2-core machine that was most of a cold CI run. Its build script can link
//! a prebuilt static library instead (`ROCKSDB_LIB_DIR` + `ROCKSDB_STATIC`), so `cargo xtask`
//! builds the library once per optimisation level, keeps it under the target directory, keyed
//! by the `librocksdb-sys` version in `Cargo.lock`, and points every cargo command it runs at it.
//!
//! Two levels exist: `-Os` (built by the `size-report` profile, exactly what the size probes
//! measured before) for tests, checks, size probes and the benchmark smoke run, and `-O3`
//! (the `release` profile) for measured benchmarks. A user's own `ROCKSDB_LIB_DIR` wins, and
//! `ALLFRAME_ROCKSDB_FROM_SOURCE=1` turns this off (every profile compiles its own copy).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::util::{cargo, root, run, target_dir};

/// Which build of the C++ library a command links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// `-Os`, from the `size-report` profile: tests, checks, size probes, the smoke benchmark.
    Size,
    /// `-O3`, from the `release` profile: benchmarks whose figures are reported.
    Speed,
}

impl Opt {
    fn profile(self) -> &'static str {
        match self {
            Opt::Size => "size-report",
            Opt::Speed => "release",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Opt::Size => "-Os",
            Opt::Speed => "-O3",
        }
    }
}

/// The directory every later cargo command links RocksDB from (`None`: build from source).
static LIB_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The prepared library directory, once `prepare` ran; cargo commands get it as
/// `ROCKSDB_LIB_DIR`.
pub fn lib_dir() -> Option<&'static Path> {
    LIB_DIR.get().and_then(|dir| dir.as_deref())
}

/// Builds the library for `opt` if it is not there yet, and makes every cargo command this
/// process runs from now on link it. Call once, before the first cargo command.
pub fn prepare(opt: Opt) -> Result<(), String> {
    let dir = if std::env::var_os("ROCKSDB_LIB_DIR").is_some() {
        eprintln!("==> RocksDB: linking the library in ROCKSDB_LIB_DIR (set by you)");
        None
    } else if std::env::var("ALLFRAME_ROCKSDB_FROM_SOURCE").is_ok_and(|v| v == "1") {
        eprintln!("==> RocksDB: ALLFRAME_ROCKSDB_FROM_SOURCE=1, each cargo profile compiles its own copy");
        None
    } else {
        Some(build_once(opt)?)
    };
    LIB_DIR.set(dir).map_err(|_| "rocksdb_lib::prepare called twice".to_string())
}

/// The library for `opt`: reused when present, else compiled by `librocksdb-sys`'s own build
/// script in `opt`'s profile and copied out of its output directory.
fn build_once(opt: Opt) -> Result<PathBuf, String> {
    let version = locked_version("librocksdb-sys")?;
    let dir = target_dir().join("rocksdb-lib").join(format!("{version}-{}", opt.profile()));
    let lib = dir.join("librocksdb.a");
    if lib.exists() {
        eprintln!("==> RocksDB {version} ({}): prebuilt, {}", opt.flag(), dir.display());
        return Ok(dir);
    }
    eprintln!(
        "==> RocksDB {version} ({}): compiling its C++ once (about 12 minutes on 2 cores); every cargo profile will link {}",
        opt.flag(),
        lib.display()
    );
    run(
        &format!("librocksdb-sys C++ ({}, profile {})", opt.flag(), opt.profile()),
        cargo().env_remove("ROCKSDB_LIB_DIR").env_remove("ROCKSDB_STATIC").args([
            "build",
            "-q",
            "--profile",
            opt.profile(),
            "-p",
            "allframe-backend-rocksdb",
            "--lib",
        ]),
    )?;
    let built = newest_archive(&target_dir().join(opt.profile()).join("build"))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let partial = dir.join("librocksdb.a.partial");
    std::fs::copy(&built, &partial).map_err(|e| format!("copy {}: {e}", built.display()))?;
    std::fs::rename(&partial, &lib).map_err(|e| format!("rename {}: {e}", partial.display()))?;
    Ok(dir)
}

/// The `librocksdb.a` most recently written by a `librocksdb-sys` build script under `build`.
fn newest_archive(build: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(build).map_err(|e| format!("read {}: {e}", build.display()))?;
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("librocksdb-sys-"))
        .map(|entry| entry.path().join("out").join("librocksdb.a"))
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .max()
        .map(|(_, path)| path)
        .ok_or_else(|| format!("no librocksdb.a under {}/librocksdb-sys-*/out", build.display()))
}

/// The version of `package` that `Cargo.lock` pins.
fn locked_version(package: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| format!("read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines.next().unwrap_or_default().trim();
            if let Some(v) = version.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')) {
                return Ok(v.to_string());
            }
        }
    }
    Err(format!("{package} is not in Cargo.lock"))
}
