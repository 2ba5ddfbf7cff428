//! The smallest HTTP/1.1 server that Prometheus and a load balancer need: one `GET` per
//! connection, answered and closed. Anything else gets 404 or 405; a request that does not
//! arrive within [`REQUEST_TIMEOUT`] or is longer than [`MAX_REQUEST`] is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Exporter;

/// The longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// A running `/metrics` and `/health` server; stops when stopped or dropped.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl Server {
    pub(crate) fn start<F, Fut>(listener: TcpListener, exporter: Exporter, health: F, upkeep: JoinHandle<()>) -> Server
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        let local_addr = listener.local_addr().expect("a bound listener has an address");
        let exporter = Arc::new(exporter);
        let health = Arc::new(health);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let (exporter, health) = (exporter.clone(), health.clone());
                tokio::spawn(async move {
                    if let Err(error) = answer(socket, &exporter, &*health).await {
                        tracing::debug!(%error, "allframe-prometheus: a request failed");
                    }
                });
            }
        });
        Server { local_addr, accept, upkeep }
    }

    /// Where it listens (useful when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening.
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.upkeep.abort();
    }
}

/// Reads one request head and answers it.
async fn answer<F, Fut>(mut socket: TcpStream, exporter: &Exporter, health: &F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Health>,
{
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut socket)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4; charset=utf-8", exporter.render()),
        ("GET", "/health") => {
            let health = health().await;
            let body = serde_json::to_string_pretty(&health).unwrap_or_else(|_| "{}".into());
            (health.status.http_status(), "application/json", body + "\n")
        }
        ("GET", _) => (404, "text/plain; charset=utf-8", "not found: try /metrics or /health\n".to_string()),
        _ => (405, "text/plain; charset=utf-8", "only GET is served\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

/// The request up to its blank line (the body, if any, is ignored).
async fn read_head(socket: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
