//! The report: Markdown, JSON and two SVG charts, with an optional comparison to an earlier run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::{Scale, TargetResult, targets};

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// Whether it was a `--quick` run.
    pub quick: bool,
    /// Its sizes.
    pub scale: Scale,
    /// One result per target.
    pub results: Vec<TargetResult>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// Loads an earlier `report.json`.
pub fn load(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a bench report: {e}", path.display()))
}

fn rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

fn micros(value: f64) -> String {
    if value >= 1000.0 { format!("{:.2} ms", value / 1000.0) } else { format!("{value:.1} µs") }
}

/// Writes report.md, report.json, throughput.svg and latency.svg; returns the Markdown.
pub fn write_all(report: &Report, compare: Option<&Report>, dir: &Path) -> Result<String, String> {
    let markdown = markdown(report, compare);
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("report.md", markdown.clone()),
        ("report.json", json),
        ("throughput.svg", throughput_svg(report)),
        ("latency.svg", latency_svg(report)),
    ] {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    Ok(markdown)
}

fn workloads(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for result in &report.results {
        for m in &result.measurements {
            if !names.contains(&m.workload) {
                names.push(m.workload.clone());
            }
        }
    }
    names
}

fn measured(report: &Report) -> Vec<&TargetResult> {
    report.results.iter().filter(|r| r.skipped.is_none()).collect()
}

fn find<'a>(result: &'a TargetResult, workload: &str) -> Option<&'a crate::Measurement> {
    result.measurements.iter().find(|m| m.workload == workload)
}

fn markdown(report: &Report, compare: Option<&Report>) -> String {
    let m = &report.machine;
    let mut out = String::new();
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} ({} logical cores) |", m.cpu, m.cores);
    let _ = writeln!(out, "| memory | {:.1} GiB |", m.memory_bytes as f64 / (1u64 << 30) as f64);
    let _ = writeln!(
        out,
        "| 4 KiB overwrite + fdatasync | p50 {}, p99 {} |",
        micros(m.fdatasync_p50_us),
        micros(m.fdatasync_p99_us)
    );
    let _ =
        writeln!(out, "| raw ceiling: 200-byte write + fdatasync, one at a time | {}/s |", rate(m.raw_sync_per_sec));
    let _ = writeln!(out, "| sequential write | {:.0} MB/s |", m.raw_write_mb_per_sec);
    let _ = writeln!(
        out,
        "| run | {} run, {} s per timed workload, median of {} run(s), store of {} events, {:.0} s in all |\n",
        if report.quick { "quick" } else { "full" },
        report.scale.seconds,
        report.scale.runs,
        report.scale.store_events,
        report.seconds
    );
    let results = measured(report);
    let _ = writeln!(out, "## Throughput (events/s unless marked; p99 latency of one operation)\n");
    let _ = write!(out, "| workload |");
    for r in &results {
        let _ = write!(out, " {} |", r.target);
    }
    let _ = write!(out, "\n|---|");
    for _ in &results {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for workload in workloads(report) {
        let unit = results.iter().find_map(|r| find(r, &workload)).map(|m| m.rate_unit.as_str()).unwrap_or_default();
        let label =
            if unit.is_empty() || unit == "events/s" { workload.clone() } else { format!("{workload} ({unit})") };
        let _ = write!(out, "| {label} |");
        for r in &results {
            match find(r, &workload) {
                Some(x) => {
                    let p99 = x.latency_us.map(|l| format!(" ({})", micros(l[1]))).unwrap_or_default();
                    let _ = write!(out, " {}{p99} |", rate(x.events_per_sec));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\n## Latency percentiles (p50 / p99 / p99.9 of one operation)\n");
    let _ = writeln!(out, "| workload | target | unit | p50 | p99 | p99.9 |\n|---|---|---|---:|---:|---:|");
    for workload in workloads(report) {
        for r in &results {
            if let Some(x) = find(r, &workload)
                && let Some([p50, p99, p999]) = x.latency_us
            {
                let _ = writeln!(
                    out,
                    "| {workload} | {} | {} | {} | {} | {} |",
                    r.target,
                    x.unit,
                    micros(p50),
                    micros(p99),
                    micros(p999)
                );
            }
        }
    }
    let _ = writeln!(out, "\n## Durable appends against the disk\n");
    let _ = writeln!(
        out,
        "The raw ceiling is one 200-byte write plus fdatasync at a time: {}/s on this disk.\n",
        rate(m.raw_sync_per_sec)
    );
    let _ = writeln!(out, "| target | workload | events/s | × raw ceiling |\n|---|---|---:|---:|");
    for r in results.iter().filter(|r| targets::is_durable(&r.target)) {
        for workload in ["append_single", "concurrent_64", "append_batch100"] {
            if let Some(x) = find(r, workload) {
                let _ = writeln!(
                    out,
                    "| {} | {workload} | {} | {:.2} |",
                    r.target,
                    rate(x.events_per_sec),
                    x.events_per_sec / m.raw_sync_per_sec
                );
            }
        }
    }
    let _ = writeln!(out, "\n## Peak memory (whole benchmark process per target)\n");
    let _ = writeln!(out, "| target | peak RSS |\n|---|---:|");
    for r in &results {
        let _ = writeln!(
            out,
            "| {} | {} |",
            r.target,
            r.peak_rss_bytes.map_or("–".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
        );
    }
    let skipped: Vec<_> =
        report.results.iter().filter_map(|r| r.skipped.as_ref().map(|s| (r.target.as_str(), s))).collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "\n## Skipped\n");
        for (target, reason) in skipped {
            let _ = writeln!(out, "- {target}: {reason}");
        }
    }
    if let Some(before) = compare {
        let _ = writeln!(out, "\n## Change against the earlier run\n");
        let _ = writeln!(out, "| target | workload | before | now | change |\n|---|---|---:|---:|---:|");
        let old: BTreeMap<(String, String), f64> = before
            .results
            .iter()
            .flat_map(|r| r.measurements.iter().map(|x| ((x.target.clone(), x.workload.clone()), x.events_per_sec)))
            .collect();
        for r in &results {
            for x in &r.measurements {
                if let Some(was) = old.get(&(x.target.clone(), x.workload.clone())) {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {:+.1}% |",
                        x.target,
                        x.workload,
                        rate(*was),
                        rate(x.events_per_sec),
                        (x.events_per_sec / was - 1.0) * 100.0
                    );
                }
            }
        }
    }
    out
}

const COLORS: &[&str] = &["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];

/// Grouped bars per workload, one bar per target, on a log scale.
fn throughput_svg(report: &Report) -> String {
    let results = measured(report);
    let names = workloads(report);
    let (left, width, bar) = (190.0, 900.0, 12.0);
    let group = bar * results.len() as f64 + 10.0;
    let height = 60.0 + group * names.len() as f64 + 20.0 * results.len() as f64;
    let max = results.iter().flat_map(|r| r.measurements.iter().map(|m| m.events_per_sec)).fold(1.0, f64::max);
    let scale = |v: f64| (width - left - 90.0) * (v.max(1.0).log10() / max.log10());
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Throughput, events/s (log scale)</text>\n"
    );
    for (w, workload) in names.iter().enumerate() {
        let y0 = 35.0 + group * w as f64;
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\">{workload}</text>", y0 + group / 2.0);
        for (t, r) in results.iter().enumerate() {
            if let Some(x) = find(r, workload) {
                let y = y0 + bar * t as f64;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
                    scale(x.events_per_sec),
                    bar - 2.0,
                    COLORS[t % COLORS.len()],
                    left + scale(x.events_per_sec) + 4.0,
                    y + bar - 3.0,
                    rate(x.events_per_sec)
                );
            }
        }
    }
    legend(&mut svg, &results, height - 20.0 * results.len() as f64);
    svg.push_str("</svg>\n");
    svg
}

/// p50, p99 and p99.9 of single appends and of 64 concurrent appenders, per target.
fn latency_svg(report: &Report) -> String {
    let results = measured(report);
    let names = ["append_single", "concurrent_64", "append_batch100", "read_stream_1000"];
    let (left, width, bar) = (190.0, 900.0, 9.0);
    let group = bar * 3.0 * results.len() as f64 + 12.0;
    let height = 60.0 + group * names.len() as f64 + 20.0 * results.len() as f64;
    let max = results
        .iter()
        .flat_map(|r| r.measurements.iter().filter_map(|m| m.latency_us.map(|l| l[2])))
        .fold(10.0, f64::max);
    let scale = |v: f64| (width - left - 90.0) * ((v.max(1.0)).log10() / max.log10());
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Latency of one operation, p50 / p99 / p99.9 (µs, log scale)</text>\n"
    );
    for (w, workload) in names.iter().enumerate() {
        let y0 = 35.0 + group * w as f64;
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\">{workload}</text>", y0 + group / 2.0);
        for (t, r) in results.iter().enumerate() {
            let Some(latency) = find(r, workload).and_then(|x| x.latency_us) else { continue };
            for (p, value) in latency.iter().enumerate() {
                let y = y0 + bar * (3 * t + p) as f64;
                let opacity = [1.0, 0.7, 0.4][p];
                let _ = writeln!(
                    svg,
                    "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\" fill-opacity=\"{opacity}\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"9\">{}</text>",
                    scale(*value),
                    bar - 1.0,
                    COLORS[t % COLORS.len()],
                    left + scale(*value) + 4.0,
                    y + bar - 1.5,
                    micros(*value)
                );
            }
        }
    }
    legend(&mut svg, &results, height - 20.0 * results.len() as f64);
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String, results: &[&TargetResult], top: f64) {
    for (t, r) in results.iter().enumerate() {
        let y = top + 20.0 * t as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"10\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"28\" y=\"{}\">{}</text>",
            COLORS[t % COLORS.len()],
            y + 10.0,
            r.target
        );
    }
}
