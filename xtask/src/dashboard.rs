//! `cargo xtask dashboard [--load SECONDS]`: draws `docs/dashboard.svg`, the Grafana dashboard
//! of `docs/grafana/allframe.json` as it looks during a real run of the demo under load.
//!
//! It builds the CLI, starts its own Prometheus (installed by `scripts/install-prometheus.sh`;
//! configuration and data in a temporary directory, on a free port) scraping
//! `allframe demo --backend allsource --serve … --load SECONDS` every 2 s, waits for the load to
//! end, evaluates every panel's queries over the run through Prometheus' HTTP API and draws the
//! panels in a grid like Grafana's. Both processes are stopped at the end, also on an error.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dashboard_svg::{format_value, render};
use crate::json::{self, Json};
use crate::util::{cargo, root, run, target_dir};

/// Seconds between two scrapes, and between two points of every query.
pub(crate) const STEP: u64 = 2;
/// What `$__rate_interval` stands for: five scrapes.
const RATE_INTERVAL: &str = "10s";
/// Load seconds when `--load` is not given.
const DEFAULT_LOAD: u64 = 90;

/// Runs the demo under load with Prometheus scraping it and draws the dashboard.
pub fn dashboard(args: &[String]) -> Result<(), String> {
    let load = match args {
        [] => DEFAULT_LOAD,
        [flag, seconds] if flag == "--load" => {
            seconds.parse().map_err(|_| format!("--load takes whole seconds, not `{seconds}`"))?
        }
        _ => return Err("usage: cargo xtask dashboard [--load SECONDS]".into()),
    };
    let root = root();
    let source = std::fs::read_to_string(root.join("docs/grafana/allframe.json"))
        .map_err(|e| format!("docs/grafana/allframe.json: {e}"))?;
    let known = known_metrics(&root)?;
    let unknown = unknown_names(&source, &known);
    if !unknown.is_empty() {
        return Err(format!("docs/grafana/allframe.json names metrics no code reports: {}", unknown.join(", ")));
    }
    let dashboard = json::parse(&source).map_err(|e| format!("docs/grafana/allframe.json: {e}"))?;
    let panels = panels(&dashboard)?;
    let variables = variables(&dashboard);

    run(
        "prometheus (scripts/install-prometheus.sh)",
        Command::new("bash").arg(root.join("scripts/install-prometheus.sh")),
    )?;
    run("build allframe-cli", cargo().args(["build", "-q", "-p", "allframe-cli"]))?;
    let cli = target_dir().join("debug").join(format!("allframe{}", std::env::consts::EXE_SUFFIX));

    // Dropped last: the processes below stop before their directory goes.
    let work = TempDir::new()?;
    let demo_port = free_port()?;
    let prometheus_port = free_port()?;
    let config = format!(
        "global:\n  scrape_interval: {STEP}s\n  scrape_timeout: {STEP}s\n  evaluation_interval: {STEP}s\n\
         scrape_configs:\n  - job_name: allframe-demo\n    static_configs:\n      - targets: ['127.0.0.1:{demo_port}']\n"
    );
    write(&work.0.join("prometheus.yml"), &config)?;
    let prometheus_log = std::fs::File::create(work.0.join("prometheus.log")).map_err(|e| e.to_string())?;
    eprintln!("==> prometheus on 127.0.0.1:{prometheus_port}, scraping 127.0.0.1:{demo_port} every {STEP} s");
    let mut prometheus = Running::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", work.0.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", work.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(prometheus_log),
    )?;
    wait_until_ready(&mut prometheus, prometheus_port, &work.0.join("prometheus.log"))?;

    eprintln!("==> allframe demo --backend allsource --serve 127.0.0.1:{demo_port} --load {load}");
    let started = unix_now();
    let mut demo = Running::spawn(
        "allframe demo",
        Command::new(&cli)
            .args(["demo", "--backend", "allsource", "--data"])
            .arg(work.0.join("store"))
            .args(["--serve", &format!("127.0.0.1:{demo_port}"), "--load", &load.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let (log, summary) = follow_demo(&mut demo.child, load)?;
    let status = demo.child.wait().map_err(|e| format!("allframe demo: {e}"))?;
    let ended = unix_now();
    if !status.success() {
        return Err(format!("allframe demo failed ({status}); its output:\n{}", tail(&log, 30)));
    }
    eprintln!("    demo done in {:.0} s{summary}", ended - started);

    let mut drawn = Vec::new();
    for panel in &panels {
        let mut series = Vec::new();
        for target in &panel.targets {
            let expr = substitute(&target.expr, &variables);
            let answer = query_range(prometheus_port, &expr, started, ended)?;
            for (labels, points) in answer {
                if points.iter().any(|(_, v)| v.is_finite()) {
                    series.push(Series { name: legend(&target.legend, &labels), points });
                }
            }
        }
        drawn.push((panel, series));
    }
    drop(demo);
    drop(prometheus);

    let title = dashboard.get("title").and_then(Json::as_str).unwrap_or("AllFrame");
    let subtitle = format!(
        "allframe demo --backend allsource --load {load}: 8 workers on 64 accounts, scraped by Prometheus every {STEP} s; \
         $__rate_interval = {RATE_INTERVAL}; time in seconds since the demo started"
    );
    let svg = render(title, &subtitle, &drawn, ended - started);
    let out = root.join("docs/dashboard.svg");
    write(&out, &svg)?;
    print_table(&drawn);
    eprintln!("wrote {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The dashboard's panels and the metric names they use.

/// One query of a panel.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) expr: String,
    pub(crate) legend: String,
}

/// One panel, as the figure needs it.
#[derive(Debug)]
pub(crate) struct Panel {
    pub(crate) kind: PanelKind,
    pub(crate) title: String,
    pub(crate) unit: String,
    /// The y axis starts at this value when set (fieldConfig.defaults.min).
    pub(crate) min: Option<f64>,
    /// The y axis reaches at least this value when set (fieldConfig.defaults.max).
    pub(crate) max: Option<f64>,
    /// Whole ticks only when 0 (fieldConfig.defaults.decimals).
    pub(crate) decimals: Option<f64>,
    pub(crate) legend_right: bool,
    /// Value mappings of a stat panel: value, text, colour.
    pub(crate) mappings: Vec<(f64, String, String)>,
    /// Grid position: x, y, w, h in Grafana's units (24 columns).
    pub(crate) grid: [f64; 4],
    pub(crate) targets: Vec<Target>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum PanelKind {
    Row,
    TimeSeries,
    Stat,
}

fn panels(dashboard: &Json) -> Result<Vec<Panel>, String> {
    let mut out = Vec::new();
    for panel in dashboard.get("panels").map(Json::items).unwrap_or_default() {
        let text = |path: &[&str]| panel.at(path).and_then(Json::as_str).unwrap_or_default().to_owned();
        let kind = match text(&["type"]).as_str() {
            "row" => PanelKind::Row,
            "stat" => PanelKind::Stat,
            "timeseries" => PanelKind::TimeSeries,
            other => return Err(format!("panel `{}`: type `{other}` is not drawn", text(&["title"]))),
        };
        let grid = ["x", "y", "w", "h"].map(|k| panel.at(&["gridPos", k]).and_then(Json::as_f64).unwrap_or(0.0));
        let defaults = panel.at(&["fieldConfig", "defaults"]);
        let mut mappings = Vec::new();
        for mapping in defaults.and_then(|d| d.get("mappings")).map(Json::items).unwrap_or_default() {
            for (value, to) in mapping.get("options").map(Json::fields).unwrap_or_default() {
                let text = to.get("text").and_then(Json::as_str).unwrap_or(value).to_owned();
                let color = to.get("color").and_then(Json::as_str).unwrap_or("text").to_owned();
                if let Ok(value) = value.parse() {
                    mappings.push((value, text, color));
                }
            }
        }
        let targets = panel
            .get("targets")
            .map(Json::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                let expr = t.get("expr")?.as_str()?.to_owned();
                let legend = t.get("legendFormat").and_then(Json::as_str).unwrap_or_default().to_owned();
                Some(Target { expr, legend })
            })
            .collect();
        out.push(Panel {
            kind,
            title: text(&["title"]),
            unit: defaults.and_then(|d| d.get("unit")).and_then(Json::as_str).unwrap_or("short").to_owned(),
            min: defaults.and_then(|d| d.get("min")).and_then(Json::as_f64),
            max: defaults.and_then(|d| d.get("max")).and_then(Json::as_f64),
            decimals: defaults.and_then(|d| d.get("decimals")).and_then(Json::as_f64),
            legend_right: text(&["options", "legend", "placement"]) == "right",
            mappings,
            grid,
            targets,
        });
    }
    if out.is_empty() {
        return Err("docs/grafana/allframe.json has no panels".into());
    }
    Ok(out)
}

/// The dashboard's template variables beside the data source (each stands for every value).
fn variables(dashboard: &Json) -> Vec<String> {
    let list = dashboard.at(&["templating", "list"]).map(Json::items).unwrap_or_default();
    list.iter()
        .filter(|v| v.get("type").and_then(Json::as_str) != Some("datasource"))
        .filter_map(|v| v.get("name").and_then(Json::as_str).map(str::to_owned))
        .collect()
}

/// A panel's query as Prometheus takes it: `$__rate_interval` and `$__interval` become fixed
/// windows, every template variable `.*` (the dashboard matches them with `=~`, "All").
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", &format!("{STEP}s"));
    for name in variables {
        out = out.replace(&format!("${{{name}}}"), ".*").replace(&format!("${name}"), ".*");
    }
    out
}

/// The metric names of `metric_names::ALL`, read from its source (`NAME = "allframe_…"`).
fn known_metrics(root: &Path) -> Result<Vec<String>, String> {
    let path = root.join("crates/allframe-cqrs-core/src/metric_names.rs");
    let source = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let names: Vec<String> = source
        .lines()
        .filter_map(|line| line.split_once("= \"allframe_"))
        .filter_map(|(_, rest)| rest.split_once('"').map(|(name, _)| format!("allframe_{name}")))
        .collect();
    if names.is_empty() { Err(format!("{}: no metric names found", path.display())) } else { Ok(names) }
}

/// Every `allframe_…` word of `text` that is not a known metric (histogram series may add
/// `_bucket`, `_sum` or `_count`).
fn unknown_names(text: &str, known: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("allframe_"))
        .filter(|word| {
            let base = ["_bucket", "_sum", "_count"].iter().fold(*word, |w, s| w.strip_suffix(s).unwrap_or(w));
            !known.iter().any(|k| k == base || k == word)
        })
        .map(str::to_owned)
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

// ---------------------------------------------------------------------------------------------
// The processes.

/// A child process stopped (TERM, then KILL after 5 s) when dropped.
struct Running {
    name: &'static str,
    child: Child,
}

impl Running {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Self, String> {
        let child = command.spawn().map_err(|e| format!("{name}: could not start: {e}"))?;
        Ok(Running { name, child })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("    {} did not stop on TERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("allframe-dashboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now (the system picks it).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_until_ready(prometheus: &mut Running, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("prometheus exited ({status}):\n{}", tail(&log, 15)));
        }
        if http_get(port, "/-/ready").is_ok_and(|(code, _)| code == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("prometheus was not ready after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reads the demo's output until it ends, showing its load lines as one progress line.
/// Returns the whole output and a summary of the last load line.
fn follow_demo(demo: &mut Child, load: u64) -> Result<(String, String), String> {
    let stderr = demo.stderr.take().ok_or("allframe demo: no stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let stdout = demo.stdout.take().ok_or("allframe demo: no stdout")?;
    let mut log = String::new();
    let mut last = String::new();
    let terminal = std::io::stderr().is_terminal();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("allframe demo: {e}"))?;
        log.push_str(&line);
        log.push('\n');
        // `   12 s     1111 commands/s      13656 done      85 refused    0 failed  health ok`
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [
            seconds,
            "s",
            rate,
            "commands/s",
            done,
            "done",
            refused,
            "refused",
            failed,
            "failed",
            "health",
            health,
        ] = words[..]
        {
            let progress = format!(
                "    load {seconds:>3}/{load} s: {rate:>6} commands/s, {done:>8} done, {refused} refused, {failed} failed, health {health}"
            );
            // One line rewritten in place on a terminal; a line every 10 s in a log.
            if terminal {
                eprint!("\r{progress}   ");
                let _ = std::io::stderr().flush();
            } else if seconds.ends_with('0') {
                eprintln!("{progress}");
            }
            last = format!(": {done} commands, {refused} refused, {failed} failed, health {health}");
        }
    }
    if terminal {
        eprintln!();
    }
    log.push_str(&errors.join().unwrap_or_default());
    Ok((log, last))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Prometheus' HTTP API.

/// One series of a query: its labels and its points (seconds since the demo started, value).
type Answer = Vec<(Vec<(String, String)>, Vec<(f64, f64)>)>;

/// `/api/v1/query_range` over the run, one point every `STEP` seconds.
fn query_range(port: u16, expr: &str, start: f64, end: f64) -> Result<Answer, String> {
    let path = format!(
        "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={STEP}",
        percent_encode(expr),
        start.floor(),
        end.ceil()
    );
    let (code, body) = http_get(port, &path).map_err(|e| format!("query `{expr}`: {e}"))?;
    let answer = json::parse(&body).map_err(|e| format!("query `{expr}`: {e}"))?;
    if code != 200 || answer.get("status").and_then(Json::as_str) != Some("success") {
        let error = answer.get("error").and_then(Json::as_str).unwrap_or(&body);
        return Err(format!("query `{expr}`: HTTP {code}: {error}"));
    }
    let mut out = Vec::new();
    for series in answer.at(&["data", "result"]).map(Json::items).unwrap_or_default() {
        let labels = series
            .get("metric")
            .map(Json::fields)
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let points = series
            .get("values")
            .map(Json::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|point| {
                let time = point.items().first()?.as_f64()?;
                let value = point.items().get(1)?.as_str()?.parse::<f64>().ok()?;
                Some((time - start, value))
            })
            .collect();
        out.push((labels, points));
    }
    Ok(out)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A GET over HTTP/1.1 on 127.0.0.1: the status code and the body (chunked or not).
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((code, String::from_utf8(body).map_err(|_| "the body is not UTF-8")?))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).ok_or("short chunk")?);
        body = body.get(size + 2..).ok_or("short chunk")?;
    }
}

// ---------------------------------------------------------------------------------------------
// The figure.

/// One line of a panel.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

impl Series {
    pub(crate) fn last(&self) -> Option<f64> {
        self.points.iter().rev().map(|(_, v)| *v).find(|v| v.is_finite())
    }
}

/// A series' name from the target's legend format (`{{label}}`), or its labels.
fn legend(format: &str, labels: &[(String, String)]) -> String {
    if format.is_empty() {
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        return format!("{{{}}}", inner.join(", "));
    }
    let mut out = format.to_owned();
    for (key, value) in labels {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    // Labels a series does not have (`{{saga}}` on a query without it) show as nothing.
    while let (Some(start), Some(end)) = (out.find("{{"), out.find("}}")) {
        if end < start {
            break;
        }
        out.replace_range(start..end + 2, "");
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The panels and the last value of each series, as a table on standard output.
fn print_table(panels: &[(&Panel, Vec<Series>)]) {
    println!("{:<44} {:<34} {:>16}", "panel", "series", "last");
    for (panel, series) in panels {
        if panel.kind == PanelKind::Row {
            println!("-- {} --", panel.title);
            continue;
        }
        if series.is_empty() {
            println!("{:<44} {:<34} {:>16}", panel.title, "-", "no data");
        }
        for (i, s) in series.iter().enumerate() {
            let value = match s.last() {
                Some(v) => match panel.mappings.iter().find(|(m, _, _)| *m == v) {
                    Some((_, text, _)) => text.clone(),
                    None => format_value(v, &panel.unit),
                },
                None => "-".into(),
            };
            let title = if i == 0 { panel.title.as_str() } else { "" };
            println!("{title:<44} {:<34} {value:>16}", s.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard_svg::nice_step;

    #[test]
    fn the_dashboard_names_only_metrics_of_the_table_and_every_panel_is_drawn() {
        let root = root();
        let source = std::fs::read_to_string(root.join("docs/grafana/allframe.json")).unwrap();
        let known = known_metrics(&root).unwrap();
        assert!(known.iter().any(|k| k == "allframe_health_status"), "{known:?}");
        assert_eq!(unknown_names(&source, &known), Vec::<String>::new());
        assert_eq!(
            unknown_names("rate(allframe_nope_total[1m]) allframe_sync_duration_seconds_bucket", &known),
            ["allframe_nope_total"]
        );
        let dashboard = json::parse(&source).unwrap();
        let panels = panels(&dashboard).unwrap();
        assert!(panels.iter().filter(|p| p.kind != PanelKind::Row).all(|p| !p.targets.is_empty()));
        assert_eq!(variables(&dashboard), ["backend"]);
    }

    #[test]
    fn queries_and_legends_are_filled_in() {
        let vars = vec!["backend".to_owned()];
        assert_eq!(
            substitute("rate(x{backend=~\"$backend\"}[$__rate_interval]) + y{b=~\"${backend}\"}", &vars),
            format!("rate(x{{backend=~\".*\"}}[{RATE_INTERVAL}]) + y{{b=~\".*\"}}")
        );
        let labels = vec![("operation".to_owned(), "append".to_owned())];
        assert_eq!(legend("p99 {{operation}}", &labels), "p99 append");
        assert_eq!(legend("{{saga}} {{operation}}", &labels), "append");
        assert_eq!(legend("", &labels), "{operation=\"append\"}");
    }

    #[test]
    fn values_read_like_grafana() {
        assert_eq!(format_value(0.0042, "s"), "4.2 ms");
        assert_eq!(format_value(0.000_025, "s"), "25 µs");
        assert_eq!(format_value(1234.0, "suffix: events/s"), "1.23 K events/s");
        assert_eq!(format_value(35_000.0, "Bps"), "35 kB/s");
        assert_eq!(format_value(2.5, "short"), "2.5");
        assert_eq!(nice_step(0.7, 3.0), 1.0);
        assert_eq!(nice_step(220.0, 900.0), 250.0);
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
