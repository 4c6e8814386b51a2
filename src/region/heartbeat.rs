//! A running region's liveness: heartbeats on an interval and on every PAC
//! notification. Each heartbeat also re-reads the store's mode, so a lost notification
//! or a reconnect heals within one interval.

use super::{Region, RegionEvent};
use crate::error::Error;
use crate::psor::{Heartbeat, Pac};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// When a region last heartbeated, and how many of its heartbeats came more than its TTL
/// after the one before: each such gap means its liveness key may have expired (it was
/// frozen or cut off), so another region may have taken over the job in its hands.
/// Monotonic time, which keeps running while the process is stopped.
pub(crate) struct Lapses {
    start: Instant,
    /// ms since `start` of the last recorded heartbeat.
    last_ok_ms: AtomicU64,
    count: AtomicU64,
}

impl Lapses {
    pub(super) fn new() -> Self {
        Lapses {
            start: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn beat_recorded(&self, ttl_ms: u64) {
        let now = self.now_ms();
        let prev = self.last_ok_ms.swap(now, Ordering::SeqCst);
        if now.saturating_sub(prev) > ttl_ms {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A mark to compare with later (taken when a job is claimed).
    pub(super) fn mark(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether the liveness may have lapsed since `mark`: a late heartbeat came since, or
    /// none for longer than the TTL now.
    pub(super) fn since(&self, mark: u64, ttl: Duration) -> bool {
        let silent = self
            .now_ms()
            .saturating_sub(self.last_ok_ms.load(Ordering::SeqCst));
        self.mark() != mark || silent > ttl.as_millis() as u64
    }
}

impl Region {
    /// One heartbeat; updates the mode. Err(reason) when ownership or the store is lost.
    pub(super) async fn beat(&self, clients: u64) -> std::result::Result<(), String> {
        let ttl = self.cfg.heartbeat_ttl.as_millis() as u64;
        match self
            .pac
            .heartbeat(self.cfg.region.as_str(), &self.token, ttl, Some(clients))
            .await
        {
            Ok(Heartbeat::Ok { mode: Some(m), .. }) => {
                self.lapses.beat_recorded(ttl);
                let old = *self.mode.borrow();
                if old != m {
                    self.mode.send_replace(m);
                    (self.observer)(self.cfg.region.as_str(), &RegionEvent::ModeChanged { from: old, to: m });
                }
                Ok(())
            }
            Ok(Heartbeat::Ok { mode: None, store }) => Err(format!(
                "store {} of PAC {} no longer exists",
                if store.is_empty() { &self.store } else { &store },
                self.pac.name()
            )),
            Ok(Heartbeat::Lost) => Err(format!(
                "region {} is no longer owned by this process (PAC reset or another instance started)",
                self.cfg.region
            )),
            Err(e) => {
                // Lost connection: keep trying; the record expires on its own if we stay cut off.
                tracing::warn!("heartbeat of {} failed: {e}", self.cfg.region);
                Ok(())
            }
        }
    }
}

/// Heartbeats on an interval and on every PAC notification, until told to stop.
pub(super) async fn heartbeats(
    me: Arc<Region>,
    clients: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    lost: mpsc::Sender<String>,
) {
    let (note_tx, mut note_rx) = mpsc::channel::<()>(8);
    let notes = tokio::spawn(notification_listener(me.pac.clone(), note_tx, stop.clone()));
    let mut tick = tokio::time::interval(me.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::until_true(&mut stop) => break,
            _ = tick.tick() => {}
            Some(()) = note_rx.recv() => {}
        }
        if let Err(why) = me.beat(clients.load(Ordering::SeqCst)).await {
            let _ = lost.send(why).await;
            break;
        }
    }
    notes.abort();
}

/// Forwards PAC notifications (mode changes, store changes) as wake-ups; reconnects with
/// a bounded backoff after losing Redis. Heartbeats cover any gap.
async fn notification_listener(
    pac: Pac,
    wake: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let channel = pac.keys().notify_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let sub = async {
            let mut ps = pac.psor().pubsub().await?;
            ps.subscribe(&channel)
                .await
                .map_err(|e| pac.psor().err(e))?;
            Ok::<_, Error>(ps)
        };
        let ps = tokio::select! {
            _ = crate::until_true(&mut shutdown) => return,
            r = sub => r,
        };
        match ps {
            Ok(mut ps) => {
                backoff = Duration::from_millis(100);
                // A (re)subscription may have missed a change: wake once to re-read.
                let _ = wake.try_send(());
                let mut stream = ps.on_message();
                loop {
                    tokio::select! {
                        _ = crate::until_true(&mut shutdown) => return,
                        m = stream.next() => match m {
                            Some(_) => { let _ = wake.try_send(()); }
                            None => break,
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("notification subscription failed: {e}"),
        }
        tokio::select! {
            _ = crate::until_true(&mut shutdown) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
