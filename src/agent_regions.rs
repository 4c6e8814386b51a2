//! A region's slot on its host agent: starting a region into its slot, waiting for a
//! start to settle, taking a running region out for a stop or a crash, and the stop
//! itself. A slot is the unit of locking: a start holds its own region's slot, never the
//! whole host.

use super::{Agent, Slot};
use crate::error::{Error, Result};
use crate::region::{Region, RegionControl, RegionHandle, StartType};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a command for a region that is starting waits for the start to end.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// Turns a `Starting` slot back to `Idle` unless the start committed it, however the
/// start ends (refused, failed, or its task aborted).
struct StartGuard<'a> {
    agent: &'a Agent,
    region: &'a str,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.agent.lock();
        if let Some(s @ Slot::Starting) = st.slots.get_mut(self.region) {
            *s = Slot::Idle;
        }
        drop(st);
        self.agent.settled.notify_waiters();
    }
}

impl Agent {
    /// `on` is how the message names the host (`on host h1` for stops, as documented).
    pub(super) fn not_running(&self, region: &str, on: &str) -> Error {
        let starting = matches!(self.lock().slots.get(region), Some(Slot::Starting));
        let host = &self.cfg.host;
        Error::refused(if starting {
            format!("region {region} is still starting {on} {host}")
        } else {
            format!("region {region} is not running {on} {host}")
        })
    }

    /// Waits (bounded) until `region`'s slot is not `Starting`.
    pub(super) async fn settle(&self, region: &str) {
        let end = Instant::now() + SETTLE_WAIT;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a start ending in between is not missed.
            notified.as_mut().enable();
            if !matches!(self.lock().slots.get(region), Some(Slot::Starting)) {
                return;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return;
            }
        }
    }

    /// Takes a running region out of its slot (for a stop or a crash).
    pub(super) async fn take_running(&self, region: &str) -> Result<RegionHandle> {
        self.hosts_region(region)?;
        self.settle(region).await;
        let mut st = self.lock();
        let slot = st.slots.get_mut(region).expect("hosted regions have slots");
        if !slot.is_running() {
            if matches!(slot, Slot::Running(_)) {
                *slot = Slot::Idle;
            }
            drop(st);
            return Err(self.not_running(region, "on host"));
        }
        match std::mem::replace(slot, Slot::Idle) {
            Slot::Running(h) => Ok(h),
            _ => unreachable!("checked running above"),
        }
    }

    pub(super) async fn start_region(
        &self,
        region: &str,
        start_type: StartType,
        listener: Option<bool>,
    ) -> Result<String> {
        self.hosts_region(region)?;
        let (name, addr) = self
            .cfg
            .regions
            .iter()
            .find(|(n, _)| n.as_str() == region)
            .cloned()
            .expect("checked above");
        let product = {
            let mut st = self.lock();
            if st.closing {
                return Err(self.closing_error(region));
            }
            let slot = st.slots.get_mut(region).expect("hosted regions have slots");
            match slot {
                Slot::Starting => {
                    return Err(Error::refused(format!(
                        "region {region} is already starting on {}",
                        self.cfg.host
                    )))
                }
                s if s.is_running() => {
                    return Err(Error::refused(format!(
                        "region {region} is already running on {}",
                        self.cfg.host
                    )))
                }
                s => *s = Slot::Starting,
            }
            st.product.clone()
        };
        let _guard = StartGuard {
            agent: self,
            region,
        };
        let mut cfg = self.cfg.region_defaults.clone();
        cfg.region = name;
        cfg.host = self.cfg.host.clone();
        cfg.product = product;
        cfg.start_type = start_type;
        cfg.notices = Some(self.notices.clone());
        match listener {
            Some(true) => cfg.listener_start = crate::region::ListenerStart::On,
            Some(false) => cfg.listener_start = crate::region::ListenerStart::Off,
            None => {}
        }
        if let Some(a) = addr {
            cfg.listen = a;
        }
        let r = Region::start(self.pac.clone(), cfg, self.observer.clone()).await?;
        let msg = format!("region {region} started in store {}", r.store());
        let handle = r.spawn();
        let landed_late = {
            let mut st = self.lock();
            if st.closing {
                Some(handle)
            } else {
                st.slots.insert(region.to_string(), Slot::Running(handle));
                None
            }
        };
        if let Some(h) = landed_late {
            // Shutdown began while this region started: it leaves its store again, so no
            // region outlives the agent in a store.
            let stop = stop_region(
                region,
                h,
                Duration::from_secs(10),
                Duration::from_secs(30),
                false,
            );
            if let Err(e) = stop.await {
                tracing::warn!("stopping {region}, started during shutdown: {e}");
            }
            return Err(Error::refused(format!(
                "the host agent of {} is shutting down; region {region} was stopped again",
                self.cfg.host
            )));
        }
        Ok(msg)
    }

    pub(super) fn closing_error(&self, region: &str) -> Error {
        Error::refused(format!(
            "the host agent of {} is shutting down; region {region} was not started",
            self.cfg.host
        ))
    }
}

/// Stops a running region (listener off, drain, finish the job in hand, leave) and
/// waits for its task.
pub(super) async fn stop_region(
    region: &str,
    h: RegionHandle,
    drain: Duration,
    timeout: Duration,
    force: bool,
) -> Result<String> {
    let (tx, rx) = oneshot::channel();
    h.control
        .send(RegionControl::Stop {
            drain,
            timeout,
            force,
            reply: tx,
        })
        .await
        .map_err(|_| Error::refused(format!("region {region} is not running")))?;
    let r = rx
        .await
        .map_err(|_| Error::refused(format!("region {region} ended during its stop")))?;
    let _ = h.task.await;
    r
}
