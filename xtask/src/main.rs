//! Project automation, run as `cargo xtask <command>`.
//!
//! * `test`  — the whole test suite (the README's test command);
//! * `ci`    — everything CI checks after the tests: format, lints, docs, feature builds,
//!   dependency guards, cargo-deny, the demo;
//! * `size-report [--check]` — binary size per feature against the budgets;
//! * `bench [--quick] [--compare FILE]` — one workload, every backend, side by side;
//! * `dashboard [--load SECONDS]` — the Grafana dashboard drawn from a real run of the demo.
//!
//! Kept free of dependencies so that it builds in seconds.

mod backends;
mod bench;
mod ci;
mod dashboard;
mod dashboard_svg;
mod json;
mod rocksdb_lib;
mod size_report;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // Every command that builds RocksDB links one prebuilt copy of its C++ (decision 0405).
    let quick = rest.iter().any(|a| a == "--quick" || a == "--smoke");
    let opt = if command == "bench" && !quick { rocksdb_lib::Opt::Speed } else { rocksdb_lib::Opt::Size };
    let prepared = match command.as_str() {
        "test" | "ci" | "size-report" | "bench" => {
            util::install_system_packages().and_then(|()| rocksdb_lib::prepare(opt))
        }
        _ => Ok(()),
    };
    let result = prepared.and_then(|()| match command.as_str() {
        "test" => ci::test(rest),
        "ci" => ci::ci(rest),
        "size-report" => size_report::size_report(rest),
        "bench" => bench::bench(rest),
        "dashboard" => dashboard::dashboard(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test                   run every test of the workspace (all backends; PostgreSQL tests skip
                         with a notice when no server is reachable, except under CI=true)
  ci                     format, clippy, cargo doc, feature builds, dependency guards, cargo-deny, demo
  size-report [--check]  binary size per feature against xtask/size-budgets.toml;
                         writes target/size-report/{report.md,report.json,chart.svg}
  bench [--quick | --smoke] [--compare FILE] [--backend NAME]
                         the same workloads on every backend, side by side; writes
                         target/bench-report/{report.md,report.json,throughput.svg,latency.svg};
                         --smoke (CI) builds with the test profile and only checks that it runs
  dashboard [--load SECONDS]
                         runs the demo under load (default 90 s) with a Prometheus of its own
                         (scripts/install-prometheus.sh) and draws the panels of
                         docs/grafana/allframe.json from it into docs/dashboard.svg
  help                   this text";
