//! Drawing `docs/dashboard.svg` for `cargo xtask dashboard`: the panels of the Grafana
//! dashboard in a grid like Grafana's (dark theme, titles, time and value axes, one line per
//! series with its legend, stat panels), from the series Prometheus answered.

use std::fmt::Write as _;

use crate::dashboard::{Panel, PanelKind, STEP, Series};

/// Grafana's classic palette.
const PALETTE: [&str; 12] = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300",
    "#447EBC", "#C15C17",
];
const BACKGROUND: &str = "#111217";
const PANEL: &str = "#181b1f";
const BORDER: &str = "#2c3136";
const TEXT: &str = "#ccccdc";
const DIM: &str = "#8e8e99";
const GRID: &str = "#24272d";

const WIDTH: f64 = 1560.0;
const MARGIN: f64 = 12.0;
const HEADER: f64 = 56.0;
const UNIT_H: f64 = 30.0;
const GAP: f64 = 8.0;

pub(crate) fn render(title: &str, subtitle: &str, panels: &[(&Panel, Vec<Series>)], duration: f64) -> String {
    let unit_w = (WIDTH - 2.0 * MARGIN) / 24.0;
    let bottom = panels.iter().map(|(p, _)| p.grid[1] + p.grid[3]).fold(0.0, f64::max);
    let height = HEADER + bottom * UNIT_H + MARGIN;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         font-family=\"Inter, Helvetica, Arial, sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(svg, "<rect width=\"{WIDTH}\" height=\"{height}\" fill=\"{BACKGROUND}\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN}\" y=\"26\" font-size=\"18\" fill=\"{TEXT}\">{}</text>\n\
         <text x=\"{MARGIN}\" y=\"46\" fill=\"{DIM}\">{}</text>",
        escape(title),
        escape(subtitle)
    );
    for (panel, series) in panels {
        let [gx, gy, gw, gh] = panel.grid;
        let x = MARGIN + gx * unit_w;
        let y = HEADER + gy * UNIT_H;
        let (w, h) = (gw * unit_w, gh * UNIT_H);
        match panel.kind {
            PanelKind::Row => {
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"15\" font-weight=\"500\" fill=\"{TEXT}\">{}</text>",
                    x + 2.0,
                    y + 20.0,
                    escape(&panel.title)
                );
            }
            PanelKind::TimeSeries | PanelKind::Stat => {
                let (x, y, w, h) = (x + GAP / 2.0, y + GAP / 2.0, w - GAP, h - GAP);
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"2\" fill=\"{PANEL}\" stroke=\"{BORDER}\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"500\" fill=\"{TEXT}\">{}</text>",
                    x + 8.0,
                    y + 19.0,
                    escape(&panel.title)
                );
                let area = Rect { x: x + 8.0, y: y + 30.0, w: w - 16.0, h: h - 38.0 };
                if panel.kind == PanelKind::Stat {
                    stat(&mut svg, panel, series, area);
                } else {
                    time_series(&mut svg, panel, series, area, duration);
                }
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[derive(Clone, Copy, Debug)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

fn no_data(svg: &mut String, area: Rect) {
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" fill=\"{DIM}\" text-anchor=\"middle\">No data</text>",
        area.x + area.w / 2.0,
        area.y + area.h / 2.0
    );
}

/// A stat panel: the last value, mapped to its text and colour (colour mode background).
fn stat(svg: &mut String, panel: &Panel, series: &[Series], area: Rect) {
    let Some(value) = series.first().and_then(Series::last) else { return no_data(svg, area) };
    let (text, color) = panel
        .mappings
        .iter()
        .find(|(v, _, _)| *v == value)
        .map(|(_, text, color)| (text.clone(), grafana_color(color)))
        .unwrap_or_else(|| (format_value(value, &panel.unit), TEXT));
    let _ = writeln!(
        svg,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{color}\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"40\" font-weight=\"500\" fill=\"#ffffff\" text-anchor=\"middle\">{}</text>",
        area.x,
        area.y,
        area.w,
        area.h,
        area.x + area.w / 2.0,
        area.y + area.h / 2.0 + 14.0,
        escape(&text)
    );
}

fn grafana_color(name: &str) -> &'static str {
    match name {
        "green" => "#56A64B",
        "orange" => "#FF780A",
        "red" => "#E02F44",
        "yellow" => "#F2CC0C",
        "blue" => "#3274D9",
        _ => "#3d71d9",
    }
}

/// A time-series panel: axes, one polyline per series (broken where a point is missing), legend.
fn time_series(svg: &mut String, panel: &Panel, series: &[Series], area: Rect, duration: f64) {
    if series.is_empty() {
        return no_data(svg, area);
    }
    // The legend: below (flowing, at most 4 lines) or on the right (one entry a line).
    let names: Vec<String> = series
        .iter()
        .map(|s| match s.last() {
            Some(v) if panel.legend_right => format!("{}  {}", s.name, format_value(v, &panel.unit)),
            _ => s.name.clone(),
        })
        .collect();
    let entry_w = |name: &str| 20.0 + name.chars().count() as f64 * 6.0 + 14.0;
    let mut placed: Vec<(f64, f64)> = Vec::new(); // legend positions, relative to the legend's origin
    let (plot, legend_origin) = if panel.legend_right {
        let width = names.iter().map(|n| entry_w(n)).fold(0.0, f64::max).min(area.w * 0.45);
        let lines = ((area.h / 15.0).floor() as usize).max(1);
        placed.extend((0..names.len().min(lines)).map(|i| (0.0, i as f64 * 15.0)));
        (Rect { w: area.w - width - 8.0, ..area }, (area.x + area.w - width, area.y + 6.0))
    } else {
        let (mut col, mut line) = (0.0, 0.0);
        for name in &names {
            let need = entry_w(name);
            if col > 0.0 && col + need > area.w {
                col = 0.0;
                line += 1.0;
            }
            if line >= 4.0 {
                break;
            }
            placed.push((col, line * 15.0));
            col += need;
        }
        let lines = placed.last().map(|(_, y)| y / 15.0 + 1.0).unwrap_or(0.0);
        let legend_h = lines * 15.0 + 4.0;
        (Rect { h: area.h - legend_h, ..area }, (area.x, area.y + area.h - legend_h + 12.0))
    };
    for (i, ((dx, dy), name)) in placed.iter().zip(&names).enumerate() {
        let (lx, ly) = (legend_origin.0 + dx, legend_origin.1 + dy);
        let _ = writeln!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" rx=\"1\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\" fill=\"{TEXT}\">{}</text>",
            ly - 5.0,
            PALETTE[i % PALETTE.len()],
            lx + 20.0,
            escape(name)
        );
    }
    if placed.len() < names.len() {
        let ly = legend_origin.1 + placed.last().map(|p| p.1).unwrap_or(0.0);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{ly:.1}\" fill=\"{DIM}\" text-anchor=\"end\">+{} more</text>",
            area.x + area.w,
            names.len() - placed.len()
        );
    }

    // Axes: the y axis from the panel's minimum (or the data's) to a round maximum.
    let values = series.iter().flat_map(|s| s.points.iter().map(|(_, v)| *v)).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = panel.min.unwrap_or(lo.min(0.0));
    let hi = panel.max.map_or(hi, |max| hi.max(max));
    // A flat series still gets an axis: up to its value, or to 1 when it is all zeros.
    let span = if hi > lo {
        hi - lo
    } else if hi != 0.0 {
        hi.abs()
    } else {
        1.0
    };
    let mut step = nice_step(span / 4.0, span);
    if panel.decimals == Some(0.0) {
        step = step.max(1.0).round();
    }
    let top = (span / step).ceil().max(1.0) * step + lo;
    let ticks: Vec<f64> = (0..).map(|k| lo + k as f64 * step).take_while(|t| *t <= top + step * 0.01).collect();
    let labels: Vec<String> = ticks.iter().map(|t| format_value(*t, &panel.unit)).collect();
    let axis_w = labels.iter().map(|l| l.chars().count() as f64 * 6.2 + 10.0).fold(30.0, f64::max);
    let inner = Rect { x: plot.x + axis_w, y: plot.y + 4.0, w: plot.w - axis_w, h: plot.h - 22.0 };
    let to_y = |v: f64| inner.y + inner.h - (v - lo) / (top - lo) * inner.h;
    let to_x = |t: f64| inner.x + t.clamp(0.0, duration) / duration.max(1.0) * inner.w;
    for (tick, label) in ticks.iter().zip(&labels) {
        let y = to_y(*tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{GRID}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{DIM}\" text-anchor=\"end\">{}</text>",
            inner.x,
            inner.x + inner.w,
            inner.x - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    let time_step = [5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| duration / s <= (inner.w / 55.0).floor())
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= duration {
        let x = to_x(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{GRID}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" fill=\"{DIM}\" text-anchor=\"middle\">{t:.0} s</text>",
            inner.y,
            inner.y + inner.h,
            inner.y + inner.h + 15.0
        );
        t += time_step;
    }
    // One polyline per run of points without a gap (a missing scrape or a NaN breaks the line).
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        let mut previous: Option<f64> = None;
        for &(t, v) in &s.points {
            let broken = !v.is_finite() || previous.is_some_and(|p| t - p > 2.5 * STEP as f64);
            if broken && !runs.last().is_some_and(Vec::is_empty) {
                runs.push(Vec::new());
            }
            if v.is_finite() {
                if let Some(run) = runs.last_mut() {
                    run.push((to_x(t), to_y(v)));
                }
                previous = Some(t);
            } else {
                previous = None;
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            if run.len() == 1 {
                let (x, y) = run[0];
                let _ = writeln!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.5\" fill=\"{color}\"/>");
            } else {
                let _ = writeln!(
                    svg,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"/>",
                    points.join(" ")
                );
            }
        }
    }
}

/// A round step (1, 2, 2.5 or 5 times a power of ten) at least `raw`.
pub(crate) fn nice_step(raw: f64, scale: f64) -> f64 {
    let raw = raw.max(scale * 1e-6);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power)
}

/// A value in Grafana's way for the unit: `s` (ms, µs), `Bps`, `ops`, `suffix: …`, `short`.
pub(crate) fn format_value(value: f64, unit: &str) -> String {
    let abs = value.abs();
    match unit {
        "s" => {
            let (scaled, name) = match abs {
                0.0 => (value, "s"),
                a if a < 1e-6 => (value * 1e9, "ns"),
                a if a < 1e-3 => (value * 1e6, "µs"),
                a if a < 1.0 => (value * 1e3, "ms"),
                _ => (value, "s"),
            };
            format!("{} {name}", number(scaled))
        }
        "Bps" => {
            let (scaled, prefix) = si(value);
            format!("{} {prefix}B/s", number(scaled))
        }
        "ops" => format!("{} ops/s", short(value)),
        _ => match unit.strip_prefix("suffix:") {
            Some(suffix) => format!("{} {}", short(value), suffix.trim()),
            None => short(value),
        },
    }
}

fn si(value: f64) -> (f64, &'static str) {
    match value.abs() {
        a if a >= 1e9 => (value / 1e9, "G"),
        a if a >= 1e6 => (value / 1e6, "M"),
        a if a >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    }
}

fn short(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        a if a >= 1e9 => (value / 1e9, " B"),
        a if a >= 1e6 => (value / 1e6, " Mil"),
        a if a >= 1e3 => (value / 1e3, " K"),
        _ => (value, ""),
    };
    format!("{}{suffix}", number(scaled))
}

/// Three significant digits at most, without trailing zeros.
fn number(value: f64) -> String {
    let abs = value.abs();
    let text = if abs >= 100.0 || abs == 0.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    };
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
