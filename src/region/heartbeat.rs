//! A running region's liveness: heartbeats on an interval and on every PAC
//! notification. Each heartbeat also re-reads the store's mode, so a lost notification
//! or a reconnect heals within one interval.

use super::{Region, RegionEvent};
use crate::error::Error;
use crate::psor::{Heartbeat, Pac};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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
    // The subscription moves with the master: one on the old master hears nothing.
    let mut moved = pac.psor().moved();
    loop {
        moved.borrow_and_update();
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
                        _ = moved.changed() => break,
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
