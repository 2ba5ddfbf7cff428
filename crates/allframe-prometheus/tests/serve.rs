//! The server as Prometheus and a load balancer see it: a scrape after some appends shows the
//! store's operation metrics with their documented names and labels; `/health` answers with
//! the status code the health answer calls for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, Health, Metered, NewEvent};
use allframe_prometheus::Exporter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test]
async fn scrape_shows_operations_and_health_sets_the_status_code() {
    let exporter = Exporter::install().unwrap();
    assert!(matches!(Exporter::install(), Err(allframe_prometheus::ExporterError::AlreadyInstalled(_))));
    let backend = Metered::new(InMemoryBackend::new());
    backend
        .append("order-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", &b"{\"n\":1}"[..])])
        .await
        .unwrap();
    let conflict =
        backend.append("order-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", &b"{}"[..])]).await;
    assert!(conflict.is_err());
    backend.read_stream("order-1", 0, 10).await.unwrap();

    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let server = exporter
        .serve("127.0.0.1:0".parse().unwrap(), move || {
            let failed = flag.load(Ordering::SeqCst);
            async move { if failed { Health::failed("test", "switched off") } else { Health::ok() } }
        })
        .await
        .unwrap();

    let (status, text) = get(server.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "allframe_store_operations_total{backend=\"memory\",operation=\"append\"} 2",
        "allframe_store_operations_total{backend=\"memory\",operation=\"read_stream\"} 1",
        "allframe_store_errors_total{backend=\"memory\",operation=\"append\",kind=\"conflict\"} 1",
        "allframe_append_events_total{backend=\"memory\"} 1",
        "allframe_append_bytes_total{backend=\"memory\"} 7",
        "allframe_append_conflicts_total{backend=\"memory\"} 1",
        "# HELP allframe_store_operations_total",
        "allframe_store_operation_duration_seconds_bucket{backend=\"memory\",operation=\"append\",le=\"10\"} 2",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }

    let (status, body) = get(server.local_addr(), "/health").await;
    assert_eq!((status, body.contains("\"status\": \"ok\"")), (200, true), "{body}");
    failing.store(true, Ordering::SeqCst);
    let (status, body) = get(server.local_addr(), "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("switched off"), "{body}");
    assert_eq!(get(server.local_addr(), "/nowhere").await.0, 404);
}
