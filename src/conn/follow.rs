//! Following the master behind Sentinel.
//!
//! The connection manager reconnects to the address it was given, and the old master
//! keeps accepting writes until Sentinel demotes it (seconds after the failover), all of
//! which the new master never sees. So a handle moves as soon as it learns the master
//! moved: on Sentinel's `+switch-master` for its master (each sentinel is subscribed to),
//! and on a lost connection or a `READONLY` answer. Either way it asks the sentinels for
//! the master again and, when it moved, swaps in a connection to the new one; every clone
//! of the handle sees the swap.
//!
//! Dedicated connections (pub/sub, blocking reads) cannot be swapped under their owners:
//! a swap bumps [`Psor::generation`], and their owners reopen them when it changes
//! ([`Psor::moved`]).

use super::{durability, open_client, open_manager, Live, Psor, PsorTarget};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sentinel's channel announcing a new master: `<name> <old ip> <old port> <new ip> <new port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// Error-triggered re-asks of the sentinels happen at most this often (a burst of failed
/// commands must not turn into a burst of sentinel queries).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Shared by every clone of a handle: the swap's serialisation, the generation counter
/// and the `+switch-master` subscriber (stopped when the last clone is dropped).
pub(super) struct Follow {
    /// One swap at a time.
    swap: tokio::sync::Mutex<()>,
    /// When the last error-triggered refresh started.
    last_refresh: Mutex<Option<Instant>>,
    /// Bumped on each swap.
    generation: watch::Sender<u64>,
    /// The subscriber task, if any.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Follow {
    pub(super) fn new() -> Arc<Follow> {
        Arc::new(Follow {
            swap: tokio::sync::Mutex::new(()),
            last_refresh: Mutex::new(None),
            generation: watch::channel(0).0,
            task: Mutex::new(None),
        })
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// What the subscriber keeps of a handle: nothing that keeps the handle alive.
struct WeakPsor {
    live: Weak<RwLock<Live>>,
    follow: Weak<Follow>,
    psor: PsorParts,
}

#[derive(Clone)]
struct PsorParts {
    sentinel: bool,
    target: String,
    opts: super::PsorOptions,
    metrics: crate::metrics::Metrics,
}

impl WeakPsor {
    fn upgrade(&self) -> Option<Psor> {
        Some(Psor {
            live: self.live.upgrade()?,
            follow: self.follow.upgrade()?,
            sentinel: self.psor.sentinel,
            target: self.psor.target.clone(),
            opts: self.psor.opts.clone(),
            metrics: self.psor.metrics.clone(),
        })
    }
}

impl Psor {
    /// How many times this handle moved to another master (0 at first).
    pub fn generation(&self) -> u64 {
        *self.follow.generation.borrow()
    }

    /// Changes whenever the handle moves to another master: owners of dedicated
    /// connections select on it and reopen them.
    pub fn moved(&self) -> watch::Receiver<u64> {
        self.follow.generation.subscribe()
    }

    /// Asks the sentinels for the master and, when it moved, swaps the connection (and
    /// re-chooses an automatic durability for the new master). Returns whether it moved.
    pub(crate) async fn follow_master(&self) -> crate::Result<bool> {
        let _one = self.follow.swap.lock().await;
        let client = open_client(&self.opts).await?;
        let moved =
            client.get_connection_info().addr() != self.client().get_connection_info().addr();
        if !moved {
            return Ok(false);
        }
        let mut conn = open_manager(&client, &self.opts, &self.target).await?;
        let durable = match self.resolved() {
            d if d.auto => durability::resolve(&mut conn, None, &self.target).await?,
            d => d,
        };
        tracing::warn!(
            "the PSOR master moved to {}; reconnected (durability {})",
            client.get_connection_info().addr(),
            durable.mode
        );
        *self.live.write().expect("connection lock") = Live {
            conn,
            client,
            durable,
        };
        self.follow.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// After a lost connection or `READONLY`: follows the master in the background, at
    /// most once per [`REFRESH_EVERY`].
    pub(super) fn refresh_master(&self) {
        if !self.sentinel {
            return;
        }
        {
            let mut last = self
                .follow
                .last_refresh
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.follow_master().await {
                tracing::debug!("asking the sentinels for the master failed: {e}");
            }
        });
    }

    /// Behind Sentinel: subscribes to `+switch-master` on every sentinel, for as long as
    /// a clone of this handle lives.
    pub(super) fn start_following(&self) {
        let PsorTarget::Sentinel {
            sentinels,
            master,
            tls,
            ..
        } = (match PsorTarget::parse(&self.opts.url) {
            Ok(t) => t,
            Err(_) => return,
        })
        else {
            return;
        };
        let weak = WeakPsor {
            live: Arc::downgrade(&self.live),
            follow: Arc::downgrade(&self.follow),
            psor: PsorParts {
                sentinel: self.sentinel,
                target: self.target.clone(),
                opts: self.opts.clone(),
                metrics: self.metrics.clone(),
            },
        };
        let opts = self.opts.clone();
        let task = tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(8);
            let mut subs = tokio::task::JoinSet::new();
            for (host, port) in sentinels {
                let scheme = if tls { "rediss" } else { "redis" };
                let url = format!("{scheme}://{host}:{port}");
                subs.spawn(watch_sentinel(
                    url,
                    opts.clone(),
                    master.clone(),
                    tx.clone(),
                ));
            }
            drop(tx);
            while rx.recv().await.is_some() {
                let Some(psor) = weak.upgrade() else { break };
                match psor.follow_master().await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!("following the new PSOR master failed: {e}"),
                }
            }
            subs.shutdown().await;
        });
        *self.follow.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }
}

/// One sentinel's `+switch-master` messages for `master`, forwarded on `tx`; resubscribes
/// with a bounded backoff when the sentinel goes away. Ends when `tx`'s receiver does.
async fn watch_sentinel(
    url: String,
    opts: super::PsorOptions,
    master: String,
    tx: tokio::sync::mpsc::Sender<()>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe(&url, &opts).await {
            Ok(mut ps) => {
                backoff = Duration::from_millis(200);
                let mut stream = ps.on_message();
                while let Some(msg) = stream.next().await {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    if payload.split(' ').next() == Some(master.as_str())
                        && tx.send(()).await.is_err()
                    {
                        return;
                    }
                }
                tracing::debug!(
                    "lost the sentinel subscription at {}",
                    super::redact_url(&url)
                );
            }
            Err(e) => tracing::debug!("subscribing to the sentinel failed: {e}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe(url: &str, opts: &super::PsorOptions) -> crate::Result<redis::aio::PubSub> {
    let client = if url.starts_with("rediss://") {
        super::install_crypto_provider();
        redis::Client::build_with_tls(url, super::tls_certificates(opts)?)
    } else {
        redis::Client::open(url)
    }
    .map_err(|e| super::classify(url, e))?;
    let mut ps = tokio::time::timeout(opts.connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| crate::Error::Unreachable {
            target: url.to_string(),
            reason: "timed out subscribing to the sentinel".into(),
        })?
        .map_err(|e| super::classify(url, e))?;
    ps.subscribe(SWITCH_MASTER)
        .await
        .map_err(|e| super::classify(url, e))?;
    Ok(ps)
}
