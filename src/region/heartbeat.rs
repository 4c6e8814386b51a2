//! A running region's liveness: heartbeats on an interval and on PAC notifications.
//! Each heartbeat also re-reads the store's mode, so a lost notification or a reconnect
//! heals within one interval; a mode change message is applied without a read.

use super::{Region, RegionEvent};
use crate::psor::notify::{self, Notice, Notices};
use crate::psor::{Heartbeat, Mode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};

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
