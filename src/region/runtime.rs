//! A started region at work: its client listener, batch worker and heartbeats, and how
//! it stops (gracefully, forced past a bound, or abruptly as in a crash).

use super::heartbeat::heartbeats;
use super::{listener, worker, ListenerStart, Observer, RegionConfig, RegionControl, RegionEvent};
use crate::error::{Error, Result};
use crate::metrics::RegionState;
use crate::psor::{Mode, Pac};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A started region: owns its PSOR record until stopped.
pub struct Region {
    pub(super) pac: Pac,
    pub(super) cfg: RegionConfig,
    pub(super) token: String,
    pub(super) store: String,
    pub(super) mode: watch::Sender<Mode>,
    pub(super) observer: Observer,
    /// Its heartbeats' record of lapses (the worker fences its jobs with it).
    pub(super) lapses: super::heartbeat::Lapses,
}

/// A region running in its own task.
pub struct RegionHandle {
    /// Control requests.
    pub control: mpsc::Sender<RegionControl>,
    /// The task; ends when the region stopped, crashed or was lost.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

impl Region {
    /// The store this region joined.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The region's configuration.
    pub fn config(&self) -> &RegionConfig {
        &self.cfg
    }

    /// Runs the region in its own task.
    pub fn spawn(self) -> RegionHandle {
        let (tx, rx) = mpsc::channel(8);
        RegionHandle {
            control: tx,
            task: tokio::spawn(self.run(rx)),
        }
    }

    /// Runs until stopped through `control` (or the sender is dropped: a graceful stop
    /// with default bounds), crashed, or lost (returns [`Error::Refused`] with the reason).
    pub async fn run(self, mut control: mpsc::Receiver<RegionControl>) -> Result<()> {
        let me = Arc::new(self);
        let clients = Arc::new(AtomicU64::new(0));
        let mut listener = listener::ClientListener::new(
            me.cfg.listen,
            me.pac.clone(),
            me.cfg.region.to_string(),
            me.cfg.product.version.to_string(),
            clients.clone(),
            me.cfg.metrics.clone(),
        );
        me.report(RegionState::Active);
        if me.cfg.listen.ip().is_unspecified() && me.cfg.advertise_host.is_none() {
            tracing::warn!(
                "region {} listens on {} without --advertise-host: its published endpoint is not \
                 reachable from other hosts",
                me.cfg.region,
                me.cfg.listen
            );
        }
        let start_on = match me.cfg.listener_start {
            ListenerStart::On => true,
            ListenerStart::Off => false,
            ListenerStart::Auto => *me.mode.borrow() == Mode::Running,
        };
        if start_on {
            if let Err(e) = me.listener(&mut listener, true).await {
                tracing::warn!("listener of {} did not start: {e}", me.cfg.region);
            }
        }
        let (stop_beats, beats_stopped) = watch::channel(false);
        let (lost_tx, mut lost_rx) = mpsc::channel::<String>(1);
        let beats = tokio::spawn(heartbeats(
            me.clone(),
            clients.clone(),
            beats_stopped.clone(),
            lost_tx.clone(),
        ));
        let (taking_tx, taking_rx) = watch::channel(true);
        let mut worker = tokio::spawn(worker::work(
            me.clone(),
            me.mode.subscribe(),
            taking_rx,
            lost_tx,
        ));
        let end = loop {
            tokio::select! {
                msg = control.recv() => match msg {
                    Some(RegionControl::Listener { on, reply }) => {
                        let _ = reply.send(me.listener(&mut listener, on).await);
                    }
                    Some(RegionControl::Stop { drain, timeout, force, reply }) => {
                        let r = me.graceful_stop(&mut listener, &clients, &taking_tx, &mut worker, drain, timeout, force).await;
                        let _ = stop_beats.send(true);
                        let _ = beats.await;
                        let r = match r {
                            Ok(forced) => me.leave(forced).await.map(|_| {
                                if forced { "stopped (forced)".to_string() } else { "stopped".to_string() }
                            }),
                            Err(e) => Err(e),
                        };
                        let ok = r.is_ok();
                        me.report(RegionState::Stopped);
                        let _ = reply.send(r);
                        break if ok { Ok(()) } else { Err(Error::refused("stop failed")) };
                    }
                    Some(RegionControl::Crash) => {
                        worker.abort();
                        beats.abort();
                        listener.off();
                        listener.cut_all();
                        me.report(RegionState::Crashed);
                        break Ok(());
                    }
                    None => {
                        let forced = me
                            .graceful_stop(&mut listener, &clients, &taking_tx, &mut worker,
                                Duration::from_secs(30), Duration::from_secs(60), false)
                            .await
                            .unwrap_or(true);
                        let _ = stop_beats.send(true);
                        let _ = beats.await;
                        let r = me.leave(forced).await;
                        me.report(RegionState::Stopped);
                        break r;
                    }
                },
                Some(why) = lost_rx.recv() => {
                    worker.abort();
                    beats.abort();
                    listener.off();
                    listener.cut_all();
                    me.report(RegionState::Lost);
                    (me.observer)(me.cfg.region.as_str(), &RegionEvent::Lost(why.clone()));
                    break Err(Error::Refused(why));
                }
            }
        };
        end
    }

    async fn listener(&self, l: &mut listener::ClientListener, on: bool) -> Result<String> {
        let bound = if on {
            Some(l.on().await?)
        } else {
            l.off();
            l.endpoint()
        };
        let endpoint = match (bound, &self.cfg.advertise_host) {
            (Some(a), Some(h)) => format!("{h}:{}", a.port()),
            (Some(a), None) => a.to_string(),
            (None, _) => String::new(),
        };
        let state = if on { "on" } else { "off" };
        self.pac
            .set_region_fields(
                self.cfg.region.as_str(),
                &self.token,
                &[("listener", state.into()), ("endpoint", endpoint.clone())],
            )
            .await?;
        (self.observer)(
            self.cfg.region.as_str(),
            &RegionEvent::Listener {
                on,
                endpoint: endpoint.clone(),
            },
        );
        Ok(format!("listener {state} at {endpoint}"))
    }

    /// Returns whether the stop had to be forced.
    #[allow(clippy::too_many_arguments)]
    async fn graceful_stop(
        &self,
        l: &mut listener::ClientListener,
        clients: &AtomicU64,
        taking: &watch::Sender<bool>,
        worker: &mut tokio::task::JoinHandle<()>,
        drain: Duration,
        timeout: Duration,
        force: bool,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.report(RegionState::Stopping);
        let _ = self
            .pac
            .set_region_fields(
                self.cfg.region.as_str(),
                &self.token,
                &[("state", "stopping".into())],
            )
            .await;
        // A PSOR hiccup must not leave the worker running: the stop goes on regardless.
        if let Err(e) = self.listener(l, false).await {
            tracing::warn!("{}: recording listener off failed: {e}", self.cfg.region);
            l.off();
        }
        let mut forced = force;
        if !force {
            // Existing clients finish; bounded by the drain timeout and the stop timeout.
            let drain_end = (tokio::time::Instant::now() + drain).min(deadline);
            while clients.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < drain_end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        l.cut_all();
        let _ = taking.send(false);
        if force {
            worker.abort();
        } else if tokio::time::timeout_at(deadline, &mut *worker)
            .await
            .is_err()
        {
            worker.abort();
            forced = true;
        }
        Ok(forced)
    }

    fn report(&self, state: RegionState) {
        self.cfg
            .metrics
            .region_state(self.cfg.region.as_str(), state, &self.store);
    }

    async fn leave(&self, forced: bool) -> Result<()> {
        let actor = format!("region {} on {}", self.cfg.region, self.cfg.host);
        if self
            .pac
            .leave(self.cfg.region.as_str(), &self.token, "stopped", &actor)
            .await?
        {
            (self.observer)(self.cfg.region.as_str(), &RegionEvent::Stopped { forced });
        }
        Ok(())
    }
}
