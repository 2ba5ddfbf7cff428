//! `allframe stats` as a process: the figures and health of a store as JSON and as a screen,
//! its usage errors, and `--serve` answering Prometheus' scrape and a health probe.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use allframe::allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe::{EventStoreBackend, ExpectedVersion, NewEvent};

fn allframe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allframe")).args(args).output().expect("run allframe")
}

/// An AllSource store at `dir` with 250 events in 3 streams, closed again.
async fn store_with_250_events(dir: &std::path::Path) {
    let backend = AllSourceBackend::with_config(AllSourceConfig::durable(dir).sync(SyncMode::NoSync)).unwrap();
    for n in 0..25u64 {
        let batch = (0..10).map(|i| NewEvent::new("Counted", format!(r#"{{"n":{}}}"#, n * 10 + i))).collect();
        backend.append(&format!("stream-{}", n % 3), ExpectedVersion::Any, batch).await.unwrap();
    }
    backend.flush().await.unwrap();
}

/// `GET path` on `port`: the status code and the body, or `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

#[tokio::test]
async fn stats_prints_the_figures_and_health_as_json_and_as_a_screen() {
    let dir = tempfile::tempdir().unwrap();
    store_with_250_events(dir.path()).await;
    let address = format!("allsource:{}", dir.path().display());

    let out = allframe(&["stats", &address, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["backend"], "allsource");
    assert_eq!(json["events"], 250);
    assert_eq!(json["streams"], 3);
    assert_eq!(json["health"]["status"], "ok", "{json}");

    let out = allframe(&["stats", &address]);
    assert_eq!(out.status.code(), Some(0));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("health      ok"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("events") && l.trim_end().ends_with("250")), "{screen}");

    // Usage errors: exit 2, nothing opened.
    assert_eq!(allframe(&["stats", &address, "--watch", "0"]).status.code(), Some(2));
    assert_eq!(allframe(&["stats", &address, "--json", "--watch"]).status.code(), Some(2));
    assert_eq!(allframe(&["stats", "allsource:/no/such/store"]).status.code(), Some(3));
}

#[tokio::test]
async fn stats_serve_answers_prometheus_and_health_probes() {
    let dir = tempfile::tempdir().unwrap();
    store_with_250_events(dir.path()).await;
    let address = format!("allsource:{}", dir.path().display());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_allframe"))
        .args(["stats", &address, "--serve", &listen, "--every", "0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the store's figures have been read once and scraped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        if let Some((200, body)) = get(port, "/metrics")
            && body.contains("allframe_store_events{backend=\"allsource\"} 250")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "no scrape with the store's figures within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let health = get(port, "/health");
    child.kill().unwrap();
    child.wait().unwrap();
    for line in [
        "allframe_store_streams{backend=\"allsource\"} 3",
        "allframe_store_operations_total{backend=\"allsource\",operation=\"stats\"}",
        "allframe_health_status 0",
        "# HELP allframe_store_operation_duration_seconds",
    ] {
        assert!(scrape.contains(line), "missing `{line}` in:\n{scrape}");
    }
    let (status, body) = health.expect("a health answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\": \"ok\""), "{body}");
}
