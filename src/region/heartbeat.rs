//! A running region's liveness: heartbeats on an interval and on PAC notifications.
//! Each heartbeat also re-reads the store's mode, so a lost notification or a reconnect
//! heals within one interval; a mode change message is applied without a read.

use super::{Region, RegionEvent};
use crate::psor::notify::{self, Notice, Notices};
use crate::psor::{Heartbeat, Mode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
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
    /// Takes on its store's mode `m` (reported once, when it differs).
    fn set_mode(&self, m: Mode) {
        let old = self.mode.send_replace(m);
        if old != m {
            (self.observer)(
                self.cfg.region.as_str(),
                &RegionEvent::ModeChanged { from: old, to: m },
            );
        }
    }

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
                self.set_mode(m);
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

/// Heartbeats on an interval and on PAC notifications, until told to stop. A mode change
/// of the region's store is taken from the message itself; any other notification (or a
/// backlog this region fell behind on) is a re-read by heartbeat.
pub(super) async fn heartbeats(
    me: Arc<Region>,
    clients: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    lost: mpsc::Sender<String>,
) {
    // A region on its own subscribes itself; a host agent's regions share its one
    // subscription.
    let (mut notes, own) = match &me.cfg.notices {
        Some(n) => (n.subscribe(), None),
        None => {
            let n = Notices::default();
            let rx = n.subscribe();
            let task = tokio::spawn(notify::listen(me.pac.clone(), n, stop.clone()));
            (rx, Some(task))
        }
    };
    let mut tick = tokio::time::interval(me.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        tokio::select! {
            _ = crate::until_true(&mut stop) => break,
            _ = tick.tick() => {}
            n = notes.recv(), if open => match n {
                Ok(Notice::Mode { mode, stores }) => {
                    if stores.contains(&me.store) {
                        me.set_mode(mode);
                    }
                    continue;
                }
                Ok(Notice::Changed) | Err(RecvError::Lagged(_)) => {}
                // The process is going away; the interval carries on until stopped.
                Err(RecvError::Closed) => {
                    open = false;
                    continue;
                }
            },
        }
        if let Err(why) = me.beat(clients.load(Ordering::SeqCst)).await {
            let _ = lost.send(why).await;
            break;
        }
    }
    if let Some(task) = own {
        task.abort();
        let _ = task.await;
    }
}
