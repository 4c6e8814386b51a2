//! The HTTP/1.1 server behind `--metrics-addr`: `GET /metrics` answers the Prometheus
//! text format; anything else a short 404 or 405.
//!
//! Binding ([`MetricsListener::bind`]) is separate from serving so a command binds first
//! and fails before doing any work when the address cannot be used. The server is a task
//! that stops on its shutdown signal and is joined ([`MetricsServer::join`]); open
//! connections are closed gracefully (an idle keep-alive connection at once, a scrape in
//! flight after its answer).

use super::Metrics;
use crate::error::{Error, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A scraper that connects but never sends its request is dropped after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, how long a scrape in flight may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The metrics address, bound and not yet served.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr`. An address that cannot be listened on (in use, not an address of
    /// this machine, not permitted) is [`Error::CannotListen`] with the OS's reason.
    pub async fn bind(addr: SocketAddr) -> Result<MetricsListener> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::CannotListen {
                what: "metrics".into(),
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(MetricsListener { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `metrics` until `shutdown` turns true (or its sender is dropped).
    pub fn serve(self, metrics: Metrics, shutdown: watch::Receiver<bool>) -> MetricsServer {
        tracing::info!("serving metrics at http://{}/metrics", self.addr);
        MetricsServer {
            task: tokio::spawn(accept_loop(self.listener, metrics, shutdown)),
        }
    }
}

/// The running server.
#[derive(Debug)]
pub struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Waits for the server to stop (after its shutdown signal) and its connections to close.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::warn!("metrics server ended abnormally: {e}");
        }
    }
}

async fn accept_loop(listener: TcpListener, metrics: Metrics, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::until_true(&mut shutdown) => break,
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    conns.spawn(connection(sock, metrics.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin on it.
                    tracing::warn!("metrics server: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // No new connections from here; the open ones see the same signal and close.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection(sock: TcpStream, metrics: Metrics, mut shutdown: watch::Receiver<bool>) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let m = metrics.clone();
        async move { Ok::<_, Infallible>(respond(req.method(), req.uri().path(), &m)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(sock), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("metrics connection ended: {e}");
            }
            return;
        }
        _ = crate::until_true(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// The answer to one request (pure, apart from reading the metrics).
fn respond(method: &Method, path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.encode(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served at /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new("agent");
        let r = respond(&Method::GET, "/metrics", &m);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            respond(&Method::POST, "/metrics", &m).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&Method::GET, "/", &m).status(),
            StatusCode::NOT_FOUND
        );
    }
}
