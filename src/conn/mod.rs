//! Reaching the PSOR: URL parsing, credentials, TLS, Sentinel and timeouts.
//!
//! Accepted URLs (`--psor`, docs/reference.md#global-options):
//! - `redis://[user[:password]@]host[:port][/db]`
//! - `rediss://...` (TLS; a private CA and a client certificate come from [`PsorOptions`])
//! - `redis+sentinel://[user[:password]@]h1:p1[,h2:p2...]/<master>` (and `rediss+sentinel://`
//!   for TLS to both the sentinels and the master)
//! - `unix:///path/to/redis.sock` (handy for local test rigs)
//!
//! Passwords never appear in output: [`PsorTarget::redacted`] is what every message shows.

use crate::error::{is_unreachable, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

mod durability;
mod follow;
mod url;
pub use durability::{Durability, WAIT_ATTEMPTS, WAIT_BOUND};
use url::bad_url;
pub use url::{redact_url, PsorTarget};

/// How to connect, as given on the command line or in the environment.
#[derive(Debug, Clone)]
pub struct PsorOptions {
    /// The URL (may contain a password; never printed).
    pub url: String,
    /// Password from `PACUP_PSOR_PASSWORD` or a password file; used when the URL has none.
    pub password: Option<String>,
    /// PEM CA bundle to trust for `rediss://` instead of the system roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one command's answer.
    pub command_timeout: Duration,
    /// What acknowledging a critical write waits for; `None`: chosen from what the PSOR
    /// reports (`replica` when it has connected replicas, else `none`).
    pub durability: Option<Durability>,
}

impl PsorOptions {
    /// Options for a URL with default timeouts and no TLS material.
    pub fn new(url: impl Into<String>) -> Self {
        PsorOptions {
            url: url.into(),
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            durability: None,
        }
    }
}

fn read_pem(what: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::BadFile {
        what: what.into(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn tls_certificates(opts: &PsorOptions) -> Result<redis::TlsCertificates> {
    let client_tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem("TLS client certificate", c)?,
            client_key: read_pem("TLS client key", k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::invalid(
                "--tls-cert/--tls-key",
                "only one given",
                "both a client certificate and its key, or neither",
            ))
        }
    };
    let root_cert = match &opts.tls_ca {
        Some(p) => Some(read_pem("TLS CA certificate", p)?),
        None => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// rustls needs one process-wide crypto provider; installing twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connected PSOR: a reconnecting multiplexed connection plus the client, for the
/// dedicated pub/sub and blocking connections.
///
/// Behind Sentinel, the master can move: the handle follows it (`follow.rs`: on
/// `+switch-master`, a lost connection or `READONLY`), and every clone sees the swap.
#[derive(Clone)]
pub struct Psor {
    live: Arc<RwLock<Live>>,
    follow: Arc<follow::Follow>,
    sentinel: bool,
    target: String,
    opts: PsorOptions,
    metrics: crate::metrics::Metrics,
}

/// The connection in use.
struct Live {
    conn: ConnectionManager,
    client: Client,
    /// The durability critical writes get on this master.
    durable: durability::Resolved,
}

impl std::fmt::Debug for Psor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Psor")
            .field("target", &self.target)
            .finish()
    }
}

/// Builds the client for the options: the URL's server, or the master the sentinels name.
async fn open_client(opts: &PsorOptions) -> Result<Client> {
    let target = PsorTarget::parse(&opts.url)?;
    let shown = redact_url(&opts.url);
    let needs_tls = matches!(
        target,
        PsorTarget::Direct { tls: true, .. } | PsorTarget::Sentinel { tls: true, .. }
    );
    let certs = if needs_tls {
        install_crypto_provider();
        Some(tls_certificates(opts)?)
    } else {
        None
    };
    match &target {
        PsorTarget::Direct { url, .. } => {
            let mut info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| bad_url(url, &e.to_string()))?;
            if info.redis_settings().password().is_none() {
                if let Some(p) = &opts.password {
                    let rs = info.redis_settings().clone().set_password(p);
                    info = info.set_redis_settings(rs);
                }
            }
            match certs {
                Some(c) => Client::build_with_tls(info, c),
                None => Client::open(info),
            }
            .map_err(|e| bad_url(url, &e.to_string()))
        }
        PsorTarget::Sentinel {
            sentinels,
            master,
            username,
            password,
            tls,
        } => {
            let addrs = sentinels.iter().map(|(h, p)| {
                if *tls {
                    redis::ConnectionAddr::TcpTls {
                        host: h.clone(),
                        port: *p,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    redis::ConnectionAddr::Tcp(h.clone(), *p)
                }
            });
            let mut b = redis::sentinel::SentinelClientBuilder::new(
                addrs,
                master,
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(|e| bad_url(&opts.url, &e.to_string()))?;
            if let Some(u) = username {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = password.as_ref().or(opts.password.as_ref()) {
                b = b.set_client_to_redis_password(p);
            }
            if *tls {
                b = b
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                if let Some(c) = certs {
                    b = b
                        .set_client_to_redis_certificates(c.clone())
                        .set_client_to_sentinel_certificates(c);
                }
            }
            let mut sc = b.build().map_err(|e| bad_url(&opts.url, &e.to_string()))?;
            tokio::time::timeout(opts.connect_timeout, sc.async_get_client())
                .await
                .map_err(|_| Error::Unreachable {
                    target: shown.clone(),
                    reason: "timed out asking the sentinels for the master".into(),
                })?
                .map_err(|e| classify(&shown, e))
        }
    }
}

/// Connection problems are exit 5, with the redacted target named.
fn classify(shown: &str, e: redis::RedisError) -> Error {
    // The first reply (PING, or the handshake) did not parse: whatever listens there is
    // not a Redis server, and the parser's byte offsets would only confuse.
    if e.kind() == redis::ErrorKind::Parse {
        return Error::NotRedis {
            target: shown.to_string(),
        };
    }
    match Error::from(e) {
        Error::AuthFailed { reason, .. } => Error::AuthFailed {
            target: shown.to_string(),
            reason,
        },
        Error::Redis(e) => Error::Unreachable {
            target: shown.to_string(),
            reason: e.to_string(),
        },
        other => other,
    }
}

/// A reconnecting connection to `client`, proven with one PING (reachability and
/// authentication fail here, with exit 5, before a caller decides anything).
async fn open_manager(
    client: &Client,
    opts: &PsorOptions,
    shown: &str,
) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.command_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let mut conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| classify(shown, e))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| classify(shown, e))?;
    Ok(conn)
}

impl Psor {
    /// Validates the options, resolves Sentinel, connects and authenticates.
    ///
    /// Unreachable servers and refused credentials become [`Error::Unreachable`] and
    /// [`Error::AuthFailed`] (exit code 5); a bad URL is [`Error::InvalidInput`] (exit 2)
    /// and nothing is attempted.
    pub async fn connect(opts: &PsorOptions) -> Result<Psor> {
        let sentinel = matches!(PsorTarget::parse(&opts.url)?, PsorTarget::Sentinel { .. });
        let shown = redact_url(&opts.url);
        let client = open_client(opts).await?;
        let mut conn = open_manager(&client, opts, &shown).await?;
        let durable = durability::resolve(&mut conn, opts.durability, &shown).await?;
        let psor = Psor {
            live: Arc::new(RwLock::new(Live {
                conn,
                client,
                durable,
            })),
            follow: follow::Follow::new(),
            sentinel,
            target: shown,
            opts: opts.clone(),
            metrics: crate::metrics::Metrics::disabled(),
        };
        if sentinel {
            psor.start_following();
        }
        Ok(psor)
    }

    /// This handle (and its clones) counts failed commands in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Psor {
        self.metrics = metrics;
        self
    }

    /// The reconnecting connection shared by every command of this process (cheap clone).
    pub fn conn(&self) -> ConnectionManager {
        self.live.read().expect("connection lock").conn.clone()
    }

    fn client(&self) -> Client {
        self.live.read().expect("connection lock").client.clone()
    }

    fn resolved(&self) -> durability::Resolved {
        self.live.read().expect("connection lock").durable
    }

    fn conn_and_durability(&self) -> (ConnectionManager, durability::Resolved) {
        let live = self.live.read().expect("connection lock");
        (live.conn.clone(), live.durable)
    }

    /// The address with any password removed, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The options this handle was made from (for processes that spawn helpers).
    pub fn options(&self) -> &PsorOptions {
        &self.opts
    }

    /// A dedicated pub/sub connection (subscriptions cannot share the multiplexed one).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        tokio::time::timeout(self.opts.connect_timeout, self.client().get_async_pubsub())
            .await
            .map_err(|_| Error::Unreachable {
                target: self.target.clone(),
                reason: "timed out opening a pub/sub connection".into(),
            })?
            .map_err(|e| {
                if is_unreachable(&e) {
                    Error::Unreachable {
                        target: self.target.clone(),
                        reason: e.to_string(),
                    }
                } else {
                    Error::from(e)
                }
            })
    }

    /// A dedicated connection for blocking commands (BLPOP, XREAD BLOCK), which would
    /// stall every other command sharing the multiplexed one. No response timeout: the
    /// caller bounds the block itself.
    pub async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.opts.connect_timeout))
            .set_response_timeout(None);
        tokio::time::timeout(
            self.opts.connect_timeout,
            self.client()
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        .map_err(|_| Error::Unreachable {
            target: self.target.clone(),
            reason: "timed out opening a connection".into(),
        })?
        .map_err(|e| self.err(e))
    }

    /// Maps a command error to the library error, naming the target when it is a lost
    /// connection (exit 5) rather than a command failure.
    pub fn err(&self, e: redis::RedisError) -> Error {
        self.metrics.psor_error(&e);
        if is_unreachable(&e) || e.code() == Some("READONLY") {
            self.refresh_master();
        }
        if is_unreachable(&e) {
            Error::Unreachable {
                target: self.target.clone(),
                reason: e.to_string(),
            }
        } else {
            Error::from(e)
        }
    }
}
