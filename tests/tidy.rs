//! Tidy: checks that keep the workspace's structure true to its docs, the way
//! rust-analyzer's `tidy.rs` does. Each failure says what to fix.
//!
//! * every point of the contract (on `EventStoreBackend`) has a conformance case that quotes it;
//! * the cases the suite macro runs are exactly the cases defined in `cases.rs`;
//! * every path named in `docs/ARCHITECTURE.md`'s code map exists;
//! * no Rust file is above the line budget unless it is listed below with a reason, and every
//!   listed file is still over it (so the list stays true);
//! * every Rust file's first line says what it is for (a `//!` doc comment, or a `//` comment
//!   for a file that is `include!`d);
//! * the on-disk format docs state the sizes, magics and markers the code uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most lines in one Rust source file.
const LINE_BUDGET: usize = 800;

/// Files allowed above [`LINE_BUDGET`], each with the reason.
const OVER_BUDGET: &[(&str, &str)] = &[
    ("crates/allframe-backend-postgres/src/lib.rs", "SQL, connection handling and the trait impl: to be split"),
    ("crates/allframe-cqrs-core/src/types.rs", "the record types every backend shares, with their tests"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `(name, doc comment)` of every `pub async fn` in the conformance cases.
fn cases() -> Vec<(String, String)> {
    let source = read("crates/allframe-cqrs-testkit/src/cases.rs");
    let mut cases = Vec::new();
    let mut doc = String::new();
    for line in source.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push_str(text);
            doc.push('\n');
        } else if let Some(rest) = line.strip_prefix("pub async fn ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            cases.push((name, std::mem::take(&mut doc)));
        } else {
            doc.clear();
        }
    }
    cases
}

/// The contract points a doc comment quotes: numbers after "contract" or "contracts", with
/// ranges (`1–4`) and lists (`1, 3 and 9`), up to the next colon.
fn quoted_points(doc: &str) -> BTreeSet<u32> {
    let mut points = BTreeSet::new();
    let lower = doc.to_lowercase();
    for (at, _) in lower.match_indices("contract") {
        let rest = &lower[at + "contract".len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let quoted = rest.split(':').next().unwrap_or("");
        let mut previous: Option<u32> = None;
        let mut range = false;
        let mut number = String::new();
        for c in quoted.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if let Ok(n) = number.parse::<u32>() {
                match (range, previous) {
                    (true, Some(start)) => points.extend(start..=n),
                    _ => {
                        points.insert(n);
                    }
                }
                previous = Some(n);
                range = false;
            }
            number.clear();
            if c == '–' || c == '-' {
                range = true;
            } else if !(c == ' ' || c == ',' || c == '/' || "and".contains(c)) {
                break;
            }
        }
    }
    points
}

#[test]
fn every_contract_point_has_a_case_that_quotes_it() {
    let backend = read("crates/allframe-cqrs-core/src/backend.rs");
    let points: Vec<u32> = backend
        .lines()
        .filter_map(|line| line.trim().strip_prefix("/// "))
        .filter_map(|line| line.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert!(points.len() >= 12, "the contract on EventStoreBackend lists its points as `/// N. …` ({points:?})");
    let quoted: BTreeSet<u32> = cases().iter().flat_map(|(_, doc)| quoted_points(doc)).collect();
    let missing: Vec<u32> = points.iter().copied().filter(|p| !quoted.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "contract points {missing:?} have no conformance case quoting them (write `/// Contract N: …` on a case in cases.rs)"
    );
}

#[test]
fn the_suite_runs_every_case_defined() {
    let defined: BTreeSet<String> = cases().into_iter().map(|(name, _)| name).collect();
    let lib = read("crates/allframe-cqrs-testkit/src/lib.rs");
    let list = lib.split("$crate::$callback! { ($($args)*)").nth(1).expect("the case list in __for_each_case!");
    let list = list.split('}').next().unwrap_or("");
    let listed: BTreeSet<String> = list.split_whitespace().map(str::to_owned).collect();
    let not_run: Vec<&String> = defined.difference(&listed).collect();
    let not_defined: Vec<&String> = listed.difference(&defined).collect();
    assert!(not_run.is_empty(), "cases defined in cases.rs but not listed in __for_each_case! (lib.rs): {not_run:?}");
    assert!(not_defined.is_empty(), "cases listed in __for_each_case! but not defined in cases.rs: {not_defined:?}");
}

#[test]
fn every_path_in_the_code_map_exists() {
    let architecture = read("docs/ARCHITECTURE.md");
    let map = architecture.split("## Code map").nth(1).expect("a `## Code map` section");
    let map = map.split("\n## ").next().unwrap_or("");
    let mut section = root();
    let mut missing = Vec::new();
    for line in map.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let first = heading.split('`').nth(1).unwrap_or("").split(',').next().unwrap_or("").trim();
            section = root().join(first.trim_end_matches('/'));
            continue;
        }
        for token in line.split('`').skip(1).step_by(2) {
            let looks_like_path = [".rs", ".md", ".toml"].iter().any(|ext| token.ends_with(ext))
                || ["crates/", "docs/", "xtask/", "tests/", "benches/"].iter().any(|dir| token.starts_with(dir));
            if !looks_like_path || token.contains(' ') || token.contains('*') {
                continue;
            }
            let candidates = [root().join(token), section.join(token), section.join("src").join(token)];
            if !candidates.iter().any(|path| path.exists()) {
                missing.push(format!("{token} (under {})", section.strip_prefix(root()).unwrap_or(&section).display()));
            }
        }
    }
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md's code map names paths that do not exist: {missing:#?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != ".git" {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_is_over_the_line_budget_without_a_reason() {
    let mut files = Vec::new();
    for dir in ["crates", "tests", "benches", "xtask"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut over = Vec::new();
    for file in &files {
        let lines = std::fs::read_to_string(file).map_or(0, |text| text.lines().count());
        let relative = file.strip_prefix(root()).unwrap_or(file).to_string_lossy().into_owned();
        let listed = OVER_BUDGET.iter().any(|(path, _)| *path == relative);
        if lines > LINE_BUDGET && !listed {
            over.push(format!("{relative}: {lines} lines"));
        }
        if lines <= LINE_BUDGET && listed {
            over.push(format!(
                "{relative} is listed in OVER_BUDGET but has only {lines} lines: remove it from the list"
            ));
        }
    }
    assert!(
        over.is_empty(),
        "files over {LINE_BUDGET} lines: split them by role, or list them in OVER_BUDGET (tests/tidy.rs) with the reason:\n  {}",
        over.join("\n  ")
    );
}

#[test]
fn every_file_says_what_it_is_for() {
    let mut files = Vec::new();
    for dir in ["crates", "tests", "benches", "xtask"] {
        rust_files(&root().join(dir), &mut files);
    }
    let silent: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let first = text.lines().next().unwrap_or("");
            !(first.starts_with("//") || first.starts_with("#![doc"))
        })
        .map(|file| file.strip_prefix(root()).unwrap_or(file).display().to_string())
        .collect();
    assert!(
        silent.is_empty(),
        "files whose first line does not say what they are for (start with `//! …`): {silent:#?}"
    );
}

/// The value of `const NAME` in `source` (the text between `=` and `;`).
fn constant(source: &str, name: &str) -> String {
    let at = source.find(&format!("const {name}:")).unwrap_or_else(|| panic!("no `const {name}`"));
    let value = &source[at..][source[at..].find('=').expect("=") + 1..];
    value[..value.find(";\n").expect(";")].trim().to_owned()
}

#[test]
fn format_docs_match_the_constants() {
    let format = read("crates/allframe-backend-allsource/src/format.rs");
    let docs = read("crates/allframe-backend-allsource/src/lib.rs");
    let index = read("crates/allframe-backend-allsource/src/cold.rs");
    let manifest = read("crates/allframe-backend-allsource/src/segments.rs");
    let wanted = [
        format!("Segment header, {} bytes", constant(&format, "SEGMENT_HEADER_LEN")),
        format!("Frame header, {} bytes", constant(&format, "FRAME_HEADER_LEN")),
        format!("magic `{}`", constant(&format, "SEGMENT_MAGIC").trim_start_matches("*b").trim_matches('"')),
        format!("| format version ({}) |", constant(&format, "FORMAT_VERSION")),
        format!("magic `{}`", constant(&index, "MAGIC").trim_start_matches('b').trim_matches('"')),
        format!("magic `{}`", constant(&manifest, "MANIFEST_MAGIC").trim_start_matches('b').trim_matches('"')),
    ];
    for text in &wanted {
        assert!(docs.contains(text.as_str()), "AllSource's crate docs (lib.rs) must say `{text}`, as format.rs does");
    }
    let marker = constant(&read("crates/allframe-backend-allsource/src/dir.rs"), "MARKER_CONTENTS");
    let marker = marker.trim_start_matches('b').trim_matches('"');
    assert!(
        read("docs/ALLSOURCE_INTEGRATION.md").contains(&format!("marker: \"{marker}\"")),
        "docs/ALLSOURCE_INTEGRATION.md must show the marker as dir.rs writes it: {marker}"
    );
    let layout = constant(&read("crates/allframe-backend-rocksdb/src/layout.rs"), "FORMAT_V1");
    let layout = layout.trim_start_matches('b').trim_matches('"');
    assert!(read("docs/ROCKSDB.md").contains(layout), "docs/ROCKSDB.md must name RocksDB's format marker `{layout}`");
}

#[test]
fn quoted_points_reads_ranges_and_lists() {
    assert_eq!(quoted_points("Contract 4: no skip"), BTreeSet::from([4]));
    assert_eq!(quoted_points("Contracts 1–4 and 8 under concurrency: x"), BTreeSet::from([1, 2, 3, 4, 8]));
    assert_eq!(quoted_points("Contract 3/12: only whole"), BTreeSet::from([3, 12]));
    assert_eq!(quoted_points("Contract 8 and 10: settings"), BTreeSet::from([8, 10]));
    assert!(quoted_points("Seed operations: flush").is_empty());
}

/// A backend crate's `[package.metadata.allframe]` key, if the crate has the section.
fn backend_metadata(manifest: &str, key: &str) -> Option<String> {
    let section = manifest.split("[package.metadata.allframe]").nth(1)?;
    let section = section.split("\n[").next().unwrap_or(section);
    section.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Adding a backend means a crate, a facade feature, one descriptor in the facade, two size
/// probes with budgets, a row in the README's feature table: this names what is missing.
#[test]
fn every_backend_crate_is_described_everywhere_it_must_be() {
    let descriptors = read("crates/allframe/src/backends.rs");
    let facade_manifest = read("crates/allframe/Cargo.toml");
    let budgets = read("xtask/size-budgets.toml");
    let readme = read("README.md");
    let benches_manifest = read("benches/Cargo.toml");
    let workspace_manifest = read("Cargo.toml");
    let mut schemes = Vec::new();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap().filter_map(Result::ok) {
        let Ok(manifest) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else { continue };
        let crate_name = entry.file_name().to_string_lossy().to_string();
        let Some(scheme) = backend_metadata(&manifest, "scheme") else {
            if crate_name.starts_with("allframe-backend-") {
                missing.push(format!("{crate_name}: no [package.metadata.allframe] section"));
            }
            continue;
        };
        let feature = backend_metadata(&manifest, "feature").unwrap_or_default();
        schemes.push(scheme.clone());
        let descriptor =
            format!("scheme: \"{scheme}\",\n        feature: \"{feature}\",\n        crate_name: \"{crate_name}\",");
        if !descriptors.contains(&descriptor) {
            missing.push(format!(
                "{crate_name}: no entry in BACKENDS (crates/allframe/src/backends.rs) with {descriptor}"
            ));
        }
        if !facade_manifest.lines().any(|line| line.starts_with(&format!("{feature} = "))) {
            missing.push(format!("{crate_name}: no feature `{feature}` in crates/allframe/Cargo.toml"));
        }
        for key in [feature.as_str(), scheme.as_str()] {
            if !root().join("xtask/probes").join(key).join("Cargo.toml").exists() {
                missing.push(format!("{crate_name}: no size probe xtask/probes/{key}"));
            }
            if !budgets.lines().any(|line| line.starts_with(&format!("{key} = "))) {
                missing.push(format!("{crate_name}: no budget `{key}` in xtask/size-budgets.toml"));
            }
        }
        if !readme.contains(&format!("| `{feature}`")) {
            missing.push(format!("{crate_name}: no row for `{feature}` in the README's feature table"));
        }
        if feature != "cqrs" && !benches_manifest.lines().any(|line| line.starts_with(&format!("{scheme} = "))) {
            missing.push(format!(
                "{crate_name}: no feature `{scheme}` in benches/Cargo.toml (the bench runner's backends)"
            ));
        }
        if !workspace_manifest.contains(&format!("\"crates/{crate_name}\"")) {
            missing.push(format!("{crate_name}: not a member of the workspace (Cargo.toml)"));
        }
        let runs_the_suite = std::fs::read_dir(entry.path().join("tests"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|test| std::fs::read_to_string(test.path()).is_ok_and(|code| code.contains("conformance_suite!")));
        if !runs_the_suite {
            missing.push(format!("{crate_name}: no test under tests/ runs allframe_cqrs_testkit::conformance_suite!"));
        }
    }
    let described = descriptors.matches("    BackendDescriptor {\n        scheme:").count();
    if described != schemes.len() {
        missing.push(format!(
            "BACKENDS has {described} entries, crates/ has {} backend crates ({schemes:?})",
            schemes.len()
        ));
    }
    assert!(missing.is_empty(), "backends not described everywhere:\n  {}", missing.join("\n  "));
    assert_eq!(schemes.len(), 4, "memory, allsource, postgres, rocksdb: {schemes:?}");
}

/// The command line and the benchmark runner take their backends from the descriptors: their
/// address and target code names no backend.
#[test]
fn the_command_line_and_the_bench_runner_name_no_backend() {
    for path in ["crates/allframe-cli/src/address.rs", "benches/runner/targets.rs"] {
        let code = read(path);
        let code = code.split("#[cfg(test)]").next().unwrap_or(&code);
        for name in
            ["AllSourceBackend", "RocksDbBackend", "PostgresBackend", "InMemoryBackend", "\"allsource", "\"rocksdb"]
        {
            assert!(!code.contains(name), "{path} names `{name}`: open backends through allframe::backends");
        }
    }
}
