//! A region's client listener: a small line protocol over TCP.
//!
//! `TX <id>` records transaction `<id>` once in the datastore and answers
//! `OK <region> <version> <id>`; `PING` answers `PONG <region>`; `QUIT` closes. Off means
//! the listening socket is closed, so new connections are refused while open ones
//! finish; on binds the same address again (the first bind fixes an ephemeral port).

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::psor::Pac;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Backoff between failed accepts: first, and at most.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(super) struct ClientListener {
    addr: SocketAddr,
    bound: Option<SocketAddr>,
    accept: Option<tokio::task::JoinHandle<()>>,
    cut: watch::Sender<u64>,
    pac: Pac,
    region: Arc<str>,
    version: Arc<str>,
    clients: Arc<AtomicU64>,
    metrics: Metrics,
}

/// Decrements the client count however a connection ends.
struct ClientGuard(Arc<AtomicU64>);
impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ClientListener {
    pub(super) fn new(
        addr: SocketAddr,
        pac: Pac,
        region: String,
        version: String,
        clients: Arc<AtomicU64>,
        metrics: Metrics,
    ) -> Self {
        ClientListener {
            addr,
            bound: None,
            accept: None,
            cut: watch::channel(0).0,
            pac,
            region: region.into(),
            version: version.into(),
            clients,
            metrics,
        }
    }

    pub(super) fn endpoint(&self) -> Option<SocketAddr> {
        self.bound
    }

    pub(super) async fn on(&mut self) -> Result<SocketAddr> {
        if let (Some(a), Some(t)) = (self.bound, &self.accept) {
            if !t.is_finished() {
                return Ok(a);
            }
        }
        let addr = self.bound.unwrap_or(self.addr);
        let l = TcpListener::bind(addr).await.map_err(|e| Error::Io {
            context: format!("cannot listen on {addr} for region {}", self.region),
            source: e,
        })?;
        let local = l.local_addr().map_err(|e| Error::Io {
            context: "listener address".into(),
            source: e,
        })?;
        self.bound = Some(local);
        let (pac, region, version, clients, metrics) = (
            self.pac.clone(),
            self.region.clone(),
            self.version.clone(),
            self.clients.clone(),
            self.metrics.clone(),
        );
        let cut = self.cut.subscribe();
        self.accept = Some(tokio::spawn(async move {
            let mut backoff = ACCEPT_BACKOFF_MIN;
            loop {
                let sock = match l.accept().await {
                    Ok((sock, _)) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        sock
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: retrying at once would
                        // spin; waiting lets open connections finish and free some.
                        tracing::warn!("region {region}: accepting a client failed: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                clients.fetch_add(1, Ordering::SeqCst);
                let guard = ClientGuard(clients.clone());
                let (pac, region, version, mut cut, metrics) = (
                    pac.clone(),
                    region.clone(),
                    version.clone(),
                    cut.clone(),
                    metrics.clone(),
                );
                tokio::spawn(async move {
                    let _guard = guard;
                    tokio::select! {
                        _ = cut.changed() => {}
                        _ = serve(sock, pac, region, version, metrics) => {}
                    }
                });
            }
        }));
        Ok(local)
    }

    /// Closes the listening socket: new connections are refused, open ones go on.
    pub(super) fn off(&mut self) {
        if let Some(t) = self.accept.take() {
            t.abort();
        }
    }

    /// Cuts every open connection.
    pub(super) fn cut_all(&mut self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for ClientListener {
    fn drop(&mut self) {
        self.off();
        self.cut_all();
    }
}

async fn serve(sock: TcpStream, pac: Pac, region: Arc<str>, version: Arc<str>, metrics: Metrics) {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.split_whitespace();
        let reply = match (parts.next(), parts.next()) {
            (Some("TX"), Some(id)) if id.len() <= 128 => {
                let r = pac.record_transaction(id, &region).await;
                metrics.client_request(&region, r.is_ok());
                match r {
                    Ok(_) => format!("OK {region} {version} {id}\n"),
                    Err(e) => format!("ERR {e}\n"),
                }
            }
            (Some("PING"), _) => format!("PONG {region}\n"),
            (Some("QUIT"), _) => return,
            _ => "ERR unknown command; accepted: TX <id>, PING, QUIT\n".to_string(),
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
