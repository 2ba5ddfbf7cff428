//! `cargo xtask test` and `cargo xtask ci`.

use std::time::Instant;

use crate::util::{cargo, have_cargo_subcommand, output, run};

/// The whole test suite of the workspace, every backend included.
pub fn test(args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut command = cargo();
    command.args(["test", "--workspace", "--all-features"]).args(args);
    run("cargo test --workspace --all-features", &mut command)?;
    eprintln!("tests passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Every check CI runs after the tests.
pub fn ci(args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let skip_deny = args.iter().any(|a| a == "--no-deny");
    run("cargo fmt --check", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "cargo clippy",
        cargo().args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]),
    )?;
    run(
        "cargo doc (warnings denied)",
        cargo().env("RUSTDOCFLAGS", "-D warnings").args(["doc", "-q", "--no-deps", "--workspace", "--all-features"]),
    )?;
    run("allframe without features", cargo().args(["check", "-q", "-p", "allframe", "--no-default-features"]))?;
    let backends = crate::backends::all()?;
    for feature in backends.iter().map(|b| &b.feature) {
        run(
            &format!("allframe with only `{feature}`"),
            cargo().args(["check", "-q", "-p", "allframe", "--no-default-features", "--features", feature]),
        )?;
    }
    dependency_guards(&backends)?;
    if skip_deny {
        eprintln!("==> cargo deny: skipped (--no-deny)");
    } else {
        deny()?;
    }
    run("bank demo", cargo().args(["run", "-q", "-p", "allframe", "--example", "bank", "--", "--backend", "memory"]))?;
    let saga_example = [
        "run",
        "-q",
        "-p",
        "allframe",
        "--features",
        "cqrs-sagas",
        "--example",
        "order_fulfilment",
        "--",
        "--backend",
        "memory",
    ];
    run("order fulfilment saga", cargo().args(saga_example))?;
    eprintln!("ci checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Each facade feature pulls in only its own backend's heavy dependencies (as each backend
/// crate's `[package.metadata.allframe]` names them).
fn dependency_guards(backends: &[crate::backends::Backend]) -> Result<(), String> {
    for feature in backends.iter().map(|b| &b.feature) {
        let banned = crate::backends::banned_for(backends, feature);
        let tree = output(
            &format!("cargo tree (feature {feature})"),
            cargo().args([
                "tree",
                "-p",
                "allframe",
                "--no-default-features",
                "--features",
                feature,
                "-e",
                "normal",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ]),
        )?;
        let names: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
        let found: Vec<&String> = banned.iter().filter(|b| names.contains(&b.as_str())).collect();
        if !found.is_empty() {
            return Err(format!("feature `{feature}` pulls in {found:?}, which belong to other backends"));
        }
        eprintln!("==> dependency guard `{feature}`: none of {banned:?}");
    }
    Ok(())
}

/// cargo-deny: bans, licenses and sources (advisories need the advisory database, which
/// these machines cannot fetch; run `cargo deny check` with a network for them).
fn deny() -> Result<(), String> {
    if !have_cargo_subcommand("deny") {
        // A debug build compiles in about half the time of a release one (measured: 2.3 against
        // 3.9 minutes on 2 cores) and still checks this workspace in seconds.
        run("install cargo-deny (debug build)", cargo().args(["install", "--locked", "--debug", "cargo-deny"]))?;
    }
    run("cargo deny", cargo().args(["deny", "--all-features", "check", "bans", "licenses", "sources"]))
}
