//! `cargo xtask bench [--quick] [--compare FILE] [--backend NAME]`: builds the benchmark
//! runner (`benches/runner`, every backend compiled in) in release mode and runs it. The
//! report lands in `target/bench-report/`.

use crate::util::{cargo, run, target_dir};

/// Builds and runs `allframe-bench`, passing the arguments through.
pub fn bench(args: &[String]) -> Result<(), String> {
    run(
        "build allframe-bench (release)",
        cargo().args([
            "build",
            "-q",
            "--release",
            "-p",
            "allframe-benches",
            "--bin",
            "allframe-bench",
            "--features",
            FEATURES,
        ]),
    )?;
    let binary = target_dir().join("release").join("allframe-bench");
    let mut command = std::process::Command::new(binary);
    command.args(args).env("CARGO_TARGET_DIR", target_dir());
    run("allframe-bench", &mut command)
}

/// The backends compiled into the runner.
const FEATURES: &str = "allsource,postgres,rocksdb";
