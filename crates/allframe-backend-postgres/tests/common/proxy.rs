//! A TCP proxy in front of the test server that can turn the LISTEN connections passing
//! through it half-open (they stay open but nothing gets through in either direction, as
//! when a peer or a middlebox vanishes without a FIN or RST), and can lose the server's
//! reply to one request (the request reaches the server, then the connection closes).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
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
    /// The request that loses its reply was forwarded: the connection closes instead of
    /// forwarding the server's next bytes.
    cut: AtomicBool,
}

/// The marker of the one request whose reply is lost, until a request carries it.
type CutMarker = Arc<Mutex<Option<Vec<u8>>>>;

/// The running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    /// The local port to connect to instead of the server's.
    pub port: u16,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    listens_seen: watch::Receiver<usize>,
    cut_marker: CutMarker,
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
        let cut_marker: CutMarker = Arc::default();
        let task = {
            let links = Arc::clone(&links);
            let cut_marker = Arc::clone(&cut_marker);
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = accept.accept().await {
                    let Ok(upstream) = TcpStream::connect(&server).await else { continue };
                    let link = Arc::new(Link::default());
                    links.lock().unwrap().push(Arc::clone(&link));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = upstream.into_split();
                    let to_server =
                        Upstream { listens_seen: Arc::clone(&seen_tx), cut_marker: Arc::clone(&cut_marker) };
                    connections.spawn(pump(client_read, server_write, Arc::clone(&link), Some(to_server)));
                    connections.spawn(pump(server_read, client_write, link, None));
                }
            })
        };
        Proxy { port: local_port, links, listens_seen, cut_marker, task }
    }

    /// The next request (client bytes read in one piece) containing `marker` reaches the
    /// server, but its reply does not reach the client: the proxy closes the connection when
    /// the server answers, so the server has finished the request (an autocommit statement
    /// has committed) when the client sees its connection lost.
    pub fn lose_reply_to(&self, marker: &[u8]) {
        *self.cut_marker.lock().unwrap() = Some(marker.to_vec());
    }

    /// Whether the request given to [`lose_reply_to`](Self::lose_reply_to) has been seen.
    pub fn reply_lost(&self) -> bool {
        self.cut_marker.lock().unwrap().is_none()
    }

    /// A proxy in front of the server of `url` (a PostgreSQL URL).
    pub async fn in_front_of(url: &str) -> Proxy {
        let server = PgConnectOptions::from_str(url).expect("PostgreSQL URL");
        Proxy::start(server.get_host(), server.get_port()).await
    }

    /// `url` pointed at the proxy, with TLS off (the proxy reads the plain protocol).
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        let separator = if tail.contains('?') { '&' } else { '?' };
        format!("{scheme}://{user}127.0.0.1:{}{tail}{separator}sslmode=disable", self.port)
    }

    /// Waits until at least `count` connections have sent `LISTEN` through the proxy.
    pub async fn wait_for_listens(&self, count: usize) {
        let mut seen = self.listens_seen.clone();
        seen.wait_for(|n| *n >= count).await.expect("proxy running");
    }

    /// Makes every connection open now half-open (later ones pass); returns how many.
    pub fn freeze_all_connections(&self) -> usize {
        let links = self.links.lock().unwrap();
        for link in links.iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
        links.len()
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

/// What the client-to-server pump reports to and reads from the proxy.
struct Upstream {
    listens_seen: Arc<watch::Sender<usize>>,
    cut_marker: CutMarker,
}

/// Copies `from` to `to` until either side closes; drops the bytes once the link is frozen,
/// and stops (closing the connection) at the server's first bytes once it is cut. The
/// client-to-server pump marks the link when it sees `LISTEN` or the cut marker.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    upstream: Option<Upstream>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream.is_none() && link.cut.load(Ordering::SeqCst) {
            return;
        }
        if link.frozen.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(upstream) = &upstream {
            let mut marker = upstream.cut_marker.lock().unwrap();
            if marker.as_ref().is_some_and(|m| buffer[..n].windows(m.len()).any(|w| w == m.as_slice())) {
                // Marked before forwarding, so the reply cannot slip through first.
                link.cut.store(true, Ordering::SeqCst);
                *marker = None;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        if let Some(upstream) = &upstream
            && !link.listens.load(Ordering::SeqCst)
            && buffer[..n].windows(8).any(|w| w == b"LISTEN \"")
        {
            link.listens.store(true, Ordering::SeqCst);
            upstream.listens_seen.send_modify(|n| *n += 1);
        }
    }
}
