//! `cargo xtask size-report [--check]`: binary size per feature against the budgets.
//!
//! Builds one probe per facade feature and per backend crate (`xtask/probes/*`) with the
//! `size-report` profile, strips a copy, and reports the growth over the tokio-only
//! baseline, the budget (`xtask/size-budgets.toml`), the headroom and the largest crates
//! (cargo-bloat). Writes `target/size-report/{report.md,report.json,chart.svg}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cargo, have_cargo_subcommand, output, root, run, target_dir};

/// A probe: its package, the label and budget key used in the report.
#[derive(Debug, Clone)]
struct Probe {
    package: String,
    key: String,
    what: String,
}

/// Probes of the application layer (not backends): their budget keys are their names.
const APPLICATION_PROBES: &[(&str, &str)] = &[
    (
        "cqrs-commands",
        "command bus: a command with field checks, its handler, an idempotent dispatch, a query (`cqrs`)",
    ),
    ("cqrs-validation", "the same with garde rules for the checks (`cqrs-validation`)"),
    ("cqrs-json-schema", "command bus taking JSON checked against a JSON Schema (`cqrs-json-schema`)"),
    ("cqrs-versioning", "upcasters: a store reading events of version 1 as version 2, an aggregate loaded (`cqrs`)"),
    (
        "cqrs-schema-registry",
        "schema registry: version 2 of an event type checked against version 1 and registered (`cqrs-schema-registry`)",
    ),
    ("cqrs-metrics", "metrics: the memory store through `Metered`, every operation counted and timed (`cqrs-metrics`)"),
    ("prometheus", "the Prometheus endpoint: recorder, /metrics and /health over HTTP (`prometheus`)"),
];

/// Two probes per backend (`crates/*/Cargo.toml`'s `[package.metadata.allframe]`): the facade
/// with only its feature (`size-probe-cqrs-rocksdb`), and the backend crate used directly
/// (`size-probe-rocksdb`); then the application layer's probes.
fn probes() -> Result<Vec<Probe>, String> {
    let mut probes = Vec::new();
    for backend in crate::backends::all()? {
        probes.push(Probe {
            package: format!("size-probe-{}", backend.feature),
            key: backend.feature.clone(),
            what: format!("facade, feature `{}`", backend.feature),
        });
        probes.push(Probe {
            package: format!("size-probe-{}", backend.scheme),
            key: backend.scheme.clone(),
            what: format!("{} directly", backend.crate_name),
        });
    }
    for (key, what) in APPLICATION_PROBES {
        probes.push(Probe { package: format!("size-probe-{key}"), key: key.to_string(), what: what.to_string() });
    }
    Ok(probes)
}

struct Measured {
    probe: Probe,
    bytes: u64,
    growth: i64,
    budget: Option<u64>,
    total_budget: Option<u64>,
    top_crates: Vec<(String, u64)>,
}

/// Runs the report; with `--check`, fails when a probe is over its budget.
pub fn size_report(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    let budgets = read_budgets(&root().join("xtask/size-budgets.toml"))?;
    let out_dir = target_dir().join("size-report");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;

    let baseline = build_and_strip("size-probe-baseline", &out_dir)?;
    let mut measured = Vec::new();
    for probe in probes()? {
        let bytes = build_and_strip(&probe.package, &out_dir)?;
        let top_crates = top_crates(&probe.package).unwrap_or_else(|e| {
            eprintln!("    cargo bloat for {}: {e}", probe.package);
            Vec::new()
        });
        measured.push(Measured {
            budget: budgets.get(&format!("growth.{}", probe.key)).copied(),
            total_budget: budgets.get(&format!("total.{}", probe.key)).copied(),
            probe,
            bytes,
            growth: bytes as i64 - baseline as i64,
            top_crates,
        });
    }

    let markdown = markdown(baseline, &measured);
    println!("\n{markdown}");
    write(&out_dir.join("report.md"), &markdown)?;
    write(&out_dir.join("report.json"), &json(baseline, &measured))?;
    write(&out_dir.join("chart.svg"), &chart(&measured))?;
    eprintln!("wrote {}/report.md, report.json and chart.svg", out_dir.display());

    let over: Vec<String> = measured.iter().flat_map(over_budget).collect();
    if check && !over.is_empty() {
        return Err(format!("over budget:\n  {}", over.join("\n  ")));
    }
    Ok(())
}

fn over_budget(m: &Measured) -> Vec<String> {
    let top =
        m.top_crates.iter().take(5).map(|(name, size)| format!("{name} {}", kb(*size))).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    if let Some(budget) = m.budget.filter(|b| m.growth > *b as i64) {
        out.push(format!(
            "{}: growth {} over budget {} (largest crates: {top})",
            m.probe.key,
            kb(m.growth as u64),
            kb(budget)
        ));
    }
    if let Some(budget) = m.total_budget.filter(|b| m.bytes > *b) {
        out.push(format!(
            "{}: whole binary {} over budget {} (largest crates: {top})",
            m.probe.key,
            kb(m.bytes),
            kb(budget)
        ));
    }
    out
}

fn build_and_strip(package: &str, out_dir: &Path) -> Result<u64, String> {
    run(&format!("build {package}"), cargo().args(["build", "-q", "--profile", "size-report", "-p", package]))?;
    let binary = target_dir().join("size-report").join(package);
    let stripped = out_dir.join(format!("{package}.stripped"));
    std::fs::copy(&binary, &stripped).map_err(|e| format!("copy {}: {e}", binary.display()))?;
    let status = Command::new("strip").arg(&stripped).status().map_err(|e| format!("strip: {e}"))?;
    if !status.success() {
        return Err(format!("strip {} failed", stripped.display()));
    }
    std::fs::metadata(&stripped).map(|m| m.len()).map_err(|e| format!("{}: {e}", stripped.display()))
}

/// The largest crates of a probe, from `cargo bloat --crates` (installed when missing).
fn top_crates(package: &str) -> Result<Vec<(String, u64)>, String> {
    if !have_cargo_subcommand("bloat") {
        run("install cargo-bloat", cargo().args(["install", "--locked", "cargo-bloat"]))?;
    }
    let table = output(
        &format!("cargo bloat {package}"),
        cargo().args(["bloat", "--profile", "size-report", "-p", package, "--crates", "-n", "8"]),
    )?;
    // Rows look like: " 31.2%  68.9% 101.8KiB std".
    Ok(table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [file, _text, size, name] if file.ends_with('%') => Some(((*name).to_owned(), parse_size(size)?)),
                _ => None,
            }
        })
        .filter(|(name, _)| !name.starts_with('['))
        .collect())
}

fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor) as u64)
}

fn read_budgets(path: &Path) -> Result<BTreeMap<String, u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut section = String::new();
    let mut budgets = BTreeMap::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| format!("{}:{}: expected `key = bytes`", path.display(), number + 1))?;
        let value = value.trim().replace('_', "");
        let bytes = value
            .parse()
            .map_err(|_| format!("{}:{}: `{value}` is not a number of bytes", path.display(), number + 1))?;
        budgets.insert(format!("{section}.{}", key.trim()), bytes);
    }
    Ok(budgets)
}

fn kb(bytes: u64) -> String {
    if bytes >= 1_000_000 { format!("{:.2} MB", bytes as f64 / 1e6) } else { format!("{:.1} KB", bytes as f64 / 1e3) }
}

fn markdown(baseline: u64, measured: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Baseline (tokio runtime only): {} stripped.\n", kb(baseline));
    let _ = writeln!(out, "| probe | what | stripped | growth | budget | headroom | largest crates |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|");
    for m in measured {
        let (budget, headroom) = match m.budget {
            Some(b) => (kb(b), format!("{:+.1} KB", (b as i64 - m.growth) as f64 / 1e3)),
            None => ("–".into(), "–".into()),
        };
        let top = m.top_crates.iter().take(4).map(|(n, s)| format!("{n} {}", kb(*s))).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | +{} | {budget} | {headroom} | {top} |",
            m.probe.key,
            m.probe.what,
            kb(m.bytes),
            kb(m.growth.max(0) as u64)
        );
        if let Some(total) = m.total_budget {
            let _ = writeln!(
                out,
                "| {} (whole binary) | | {} | | {} | {:+.1} KB | |",
                m.probe.key,
                kb(m.bytes),
                kb(total),
                (total as i64 - m.bytes as i64) as f64 / 1e3
            );
        }
    }
    out
}

fn json(baseline: u64, measured: &[Measured]) -> String {
    let mut out = format!(
        "{{\n  \"baseline_bytes\": {baseline},\n  \"profile\": \"size-report (opt-level z, fat LTO, codegen-units 1, panic abort, stripped)\",\n  \"probes\": [\n"
    );
    for (i, m) in measured.iter().enumerate() {
        let top = m
            .top_crates
            .iter()
            .map(|(n, s)| format!("{{\"crate\": \"{n}\", \"bytes\": {s}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "    {{\"probe\": \"{}\", \"package\": \"{}\", \"bytes\": {}, \"growth\": {}, \"growth_budget\": {}, \"total_budget\": {}, \"top_crates\": [{top}]}}{}",
            m.probe.key,
            m.probe.package,
            m.bytes,
            m.growth,
            opt(m.budget),
            opt(m.total_budget),
            if i + 1 < measured.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// A horizontal bar chart: growth per probe against its budget.
fn chart(measured: &[Measured]) -> String {
    let width = 720.0;
    let left = 150.0;
    let bar_area = width - left - 120.0;
    let row = 34.0;
    let height = 40.0 + row * measured.len() as f64;
    let scale_max =
        measured.iter().map(|m| m.budget.unwrap_or(0).max(m.growth.max(0) as u64)).max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Growth over the tokio baseline (bar) against the budget (line)</text>\n"
    );
    for (i, m) in measured.iter().enumerate() {
        let y = 35.0 + row * i as f64;
        let growth = m.growth.max(0) as f64;
        let over = m.budget.is_some_and(|b| m.growth > b as i64);
        let color = if over { "#d9534f" } else { "#5b8def" };
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\">{}</text>", y + 15.0, m.probe.key);
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"20\" fill=\"{color}\"/>",
            bar_area * growth / scale_max
        );
        if let Some(budget) = m.budget {
            let x = left + bar_area * budget as f64 / scale_max;
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#222\" stroke-width=\"2\"/>",
                y - 3.0,
                y + 23.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\">{} / {}</text>",
            left + bar_area + 8.0,
            y + 15.0,
            kb(growth as u64),
            m.budget.map_or("–".into(), kb)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_bloat_sizes() {
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("2.0MiB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("12%"), None);
    }

    #[test]
    fn the_checked_in_budgets_parse_and_cover_every_probe() {
        let budgets = read_budgets(&root().join("xtask/size-budgets.toml")).expect("budgets parse");
        let probes = probes().expect("backends described");
        assert_eq!(
            probes.len(),
            8 + APPLICATION_PROBES.len(),
            "two probes for each of the four backends, and the application's"
        );
        for probe in probes {
            assert!(budgets.contains_key(&format!("growth.{}", probe.key)), "a budget for {}", probe.key);
            let dir = root().join("xtask/probes").join(probe.package.trim_start_matches("size-probe-"));
            assert!(dir.join("Cargo.toml").exists(), "a probe crate at {}", dir.display());
        }
        assert_eq!(budgets.get("total.cqrs"), Some(&650_000));
    }

    #[test]
    fn over_budget_names_the_probe_and_its_largest_crates() {
        let probe = probes().expect("backends described").remove(0);
        let m = Measured {
            probe,
            bytes: 700_000,
            growth: 200_000,
            budget: Some(150_000),
            total_budget: Some(650_000),
            top_crates: vec![("serde_json".into(), 40_000)],
        };
        let over = over_budget(&m);
        assert_eq!(over.len(), 2);
        assert!(
            over[0].contains("cqrs: growth 200.0 KB over budget 150.0 KB") && over[0].contains("serde_json 40.0 KB")
        );
    }
}
