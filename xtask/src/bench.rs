//! `cargo xtask bench [--quick | --smoke] [--compare FILE] [--backend NAME] [--only postgres-scale]`: builds the
//! benchmark runner (`benches/runner`, every backend compiled in) in release mode and runs it.
//! The report lands in `target/bench-report/`.
//!
//! `--smoke` (what CI runs) builds the runner with the test profile instead, whose
//! dependencies the tests already built, and runs the quick workloads: it checks that every
//! workload runs on every backend; its figures mean nothing and are not reported as results.

use crate::util::{cargo, run, target_dir};

/// Builds and runs `allframe-bench`, passing the arguments through.
pub fn bench(args: &[String]) -> Result<(), String> {
    let smoke = args.iter().any(|a| a == "--smoke");
    let features = features()?;
    let mut build = cargo();
    build.args(["build", "-q", "-p", "allframe-benches", "--bin", "allframe-bench", "--features", &features]);
    if !smoke {
        build.arg("--release");
    }
    run(
        if smoke { "build allframe-bench (test profile, smoke run)" } else { "build allframe-bench (release)" },
        &mut build,
    )?;
    let binary = target_dir().join(if smoke { "debug" } else { "release" }).join("allframe-bench");
    let mut command = std::process::Command::new(binary);
    let passed: Vec<&String> = args.iter().filter(|a| *a != "--smoke").collect();
    command.args(passed).env("CARGO_TARGET_DIR", target_dir());
    if smoke {
        command.args(["--quick", "--out"]).arg(target_dir().join("bench-smoke"));
    }
    run("allframe-bench", &mut command)
}

/// The backends compiled into the runner: every backend beside memory, by its scheme (the
/// benches package has one feature per backend, named so; the tidy test checks it).
fn features() -> Result<String, String> {
    let backends = crate::backends::all()?;
    let schemes: Vec<&str> = backends.iter().filter(|b| b.feature != "cqrs").map(|b| b.scheme.as_str()).collect();
    Ok(schemes.join(","))
}
