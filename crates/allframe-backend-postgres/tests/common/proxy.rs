//! A TCP proxy in front of the test server that can turn the LISTEN connections passing
//! through it half-open: they stay open but nothing gets through in either direction, as
//! when a peer or a middlebox vanishes without a FIN or RST.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One proxied connection's shared state.
#[derive(Default)]
struct Link {
    /// Set once the client sent `LISTEN`.
    listens: AtomicBool,
    /// Nothing is forwarded any more (bytes are read and dropped).
    frozen: AtomicBool,
}

/// The running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    /// The local port to connect to instead of the server's.
    pub port: u16,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    listens_seen: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `host:port` on a free local port.
    pub async fn start(host: &str, port: u16) -> Proxy {
        let server = format!("{host}:{port}");
        let accept = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let local_port = accept.local_addr().expect("proxy address").port();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let (seen_tx, listens_seen) = watch::channel(0usize);
        let seen_tx = Arc::new(seen_tx);
        let task = {
            let links = Arc::clone(&links);
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = accept.accept().await {
                    let Ok(upstream) = TcpStream::connect(&server).await else { continue };
                    let link = Arc::new(Link::default());
                    links.lock().unwrap().push(Arc::clone(&link));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = upstream.into_split();
                    connections.spawn(pump(client_read, server_write, Arc::clone(&link), Some(Arc::clone(&seen_tx))));
                    connections.spawn(pump(server_read, client_write, link, None));
                }
            })
        };
        Proxy { port: local_port, links, listens_seen, task }
    }

    /// Waits until at least `count` connections have sent `LISTEN` through the proxy.
    pub async fn wait_for_listens(&self, count: usize) {
        let mut seen = self.listens_seen.clone();
        seen.wait_for(|n| *n >= count).await.expect("proxy running");
    }

    /// Makes every connection that has sent `LISTEN` half-open; returns how many.
    pub fn freeze_listen_connections(&self) -> usize {
        let links = self.links.lock().unwrap();
        let mut frozen = 0;
        for link in links.iter().filter(|link| link.listens.load(Ordering::SeqCst)) {
            link.frozen.store(true, Ordering::SeqCst);
            frozen += 1;
        }
        frozen
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every pump and closes
        // every socket.
        self.task.abort();
    }
}

/// Copies `from` to `to` until either side closes; drops the bytes once the link is frozen.
/// The client-to-server pump marks the link when it sees `LISTEN`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    listens_seen: Option<Arc<watch::Sender<usize>>>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if link.frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        if let Some(seen) = &listens_seen
            && !link.listens.load(Ordering::SeqCst)
            && buffer[..n].windows(8).any(|w| w == b"LISTEN \"")
        {
            link.listens.store(true, Ordering::SeqCst);
            seen.send_modify(|n| *n += 1);
        }
    }
}
