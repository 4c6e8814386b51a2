//! The host agent: hosts several regions in one process and obeys control commands sent
//! through the PSOR (see [`crate::psor::control`]).
//!
//! On start it cleans what a previous incarnation may have left (its regions' stale
//! memberships and liveness), publishes its host record (installed product, regions) with
//! a liveness TTL, and reads only commands sent after it started. Each command runs in
//! its own task, so a long graceful stop of one region does not delay a listener change
//! of another; a command id is taken at most once, even if delivered twice.

use crate::error::{Error, Result};
use crate::metrics::RegionState;
use crate::names::{HostName, PacName, Product, RegionName};
use crate::psor::control::{ControlAction, ControlCommand, ControlReply};
use crate::psor::{now_ms, Pac};
use crate::region::{Observer, Region, RegionConfig, RegionControl, RegionHandle, StartType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Mutex};

/// How a host agent is configured.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// PAC.
    pub pac: PacName,
    /// This host.
    pub host: HostName,
    /// Installed product (changed by apply-update).
    pub product: Product,
    /// Regions hosted, each with an optional fixed listener address.
    pub regions: Vec<(RegionName, Option<SocketAddr>)>,
    /// Start every region at agent start with this start type.
    pub autostart: Option<StartType>,
    /// Template for each region's runtime settings (heartbeat, jobs, listener start).
    pub region_defaults: RegionConfig,
    /// Host record liveness TTL (the heartbeat interval is a third of it).
    pub host_ttl: Duration,
}

struct State {
    product: Product,
    running: HashMap<String, RegionHandle>,
}

/// A running agent.
pub struct Agent {
    pac: Pac,
    cfg: AgentConfig,
    state: Mutex<State>,
    observer: Observer,
}

fn reply(id: &str, r: Result<String>) -> ControlReply {
    match r {
        Ok(message) => ControlReply {
            id: id.into(),
            ok: true,
            code: 0,
            message,
        },
        Err(e) => ControlReply {
            id: id.into(),
            ok: false,
            code: e.exit_code().code(),
            message: e.to_string(),
        },
    }
}

impl Agent {
    /// Prepares an agent: cleans stale records of its regions. Refused when one of its
    /// regions is alive on another host.
    pub async fn new(pac: Pac, cfg: AgentConfig, observer: Observer) -> Result<Arc<Agent>> {
        let actor = format!("agent {}", cfg.host);
        for (r, _) in &cfg.regions {
            cfg.region_defaults
                .metrics
                .region_state(r.as_str(), RegionState::Stopped, "");
            if pac
                .clean_region(r.as_str(), cfg.host.as_str(), &actor)
                .await?
            {
                tracing::info!(
                    "cleaned stale record of region {r} left by a previous agent on {}",
                    cfg.host
                );
            }
        }
        Ok(Arc::new(Agent {
            state: Mutex::new(State {
                product: cfg.product.clone(),
                running: HashMap::new(),
            }),
            pac,
            cfg,
            observer,
        }))
    }

    fn region_names(&self) -> Vec<String> {
        self.cfg
            .regions
            .iter()
            .map(|(r, _)| r.to_string())
            .collect()
    }

    async fn publish(&self) -> Result<()> {
        let product = self.state.lock().await.product.clone();
        self.pac
            .host_heartbeat(
                self.cfg.host.as_str(),
                &product,
                &self.region_names(),
                self.cfg.host_ttl,
            )
            .await
    }

    /// Runs until `shutdown`; then stops every region gracefully and withdraws the host.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        self.publish().await?;
        let mut tail = self.pac.control_tail(self.cfg.host.as_str()).await?;
        if let Some(t) = self.cfg.autostart {
            for (r, _) in &self.cfg.regions {
                if let Err(e) = self.start_region(r.as_str(), t, None).await {
                    tracing::error!("autostart of {r} failed: {e}");
                }
            }
        }
        let me = self.clone();
        let mut beat_stop = shutdown.clone();
        let beats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.cfg.host_ttl / 3);
            loop {
                tokio::select! {
                    _ = crate::until_true(&mut beat_stop) => return,
                    _ = tick.tick() => {
                        if let Err(e) = me.publish().await {
                            tracing::warn!("host heartbeat failed: {e}");
                        }
                    }
                }
            }
        });
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if conn.is_none() {
                match self.pac.psor().dedicated().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!("control connection failed: {e}");
                        tokio::select! {
                            _ = crate::until_true(&mut shutdown) => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        }
                    }
                }
            }
            let c = conn.as_mut().expect("set above");
            let read = self.pac.read_control(
                c,
                self.cfg.host.as_str(),
                &tail,
                Duration::from_millis(1000),
            );
            let batch = tokio::select! {
                _ = crate::until_true(&mut shutdown) => break,
                r = read => r,
            };
            match batch {
                Ok(entries) => {
                    for (sid, cmd) in entries {
                        tail = sid;
                        match cmd {
                            Ok(cmd) => {
                                let me = self.clone();
                                tokio::spawn(async move { me.handle(cmd).await });
                            }
                            Err(why) => {
                                tracing::warn!("ignoring malformed control entry {tail}: {why}")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("reading control commands failed: {e}");
                    conn = None;
                }
            }
        }
        beats.abort();
        self.stop_all().await;
        let _ = self.pac.host_gone(self.cfg.host.as_str()).await;
        Ok(())
    }

    async fn stop_all(&self) {
        let handles: Vec<(String, RegionHandle)> =
            self.state.lock().await.running.drain().collect();
        for (name, h) in handles {
            let (tx, rx) = oneshot::channel();
            let _ = h
                .control
                .send(RegionControl::Stop {
                    drain: Duration::from_secs(10),
                    timeout: Duration::from_secs(30),
                    force: false,
                    reply: tx,
                })
                .await;
            if let Ok(Err(e)) = rx.await {
                tracing::warn!("stopping {name}: {e}");
            }
            let _ = h.task.await;
        }
    }

    async fn handle(self: Arc<Self>, cmd: ControlCommand) {
        let host = self.cfg.host.as_str();
        match self.pac.take_control(host, &cmd).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    "control command {} already taken; not running it again",
                    cmd.id
                );
                return;
            }
            Err(e @ Error::Fenced { .. }) => {
                tracing::warn!(
                    "refusing control command {} from a fenced coordinator: {e}",
                    cmd.id
                );
                let _ = self.pac.reply_control(&reply(&cmd.id, Err(e))).await;
                return;
            }
            Err(e) => {
                tracing::warn!("cannot take control command {}: {e}", cmd.id);
                return;
            }
        }
        let outcome = if now_ms() > cmd.deadline_ms {
            Err(Error::refused(format!(
                "command {} arrived after its deadline; not run",
                cmd.id
            )))
        } else {
            tracing::info!("control {}: {:?} (by {})", cmd.id, cmd.action, cmd.by);
            self.execute(cmd.action.clone()).await
        };
        if let Err(e) = self.pac.reply_control(&reply(&cmd.id, outcome)).await {
            tracing::warn!("cannot reply to {}: {e}", cmd.id);
        }
    }

    fn hosts_region(&self, r: &str) -> Result<()> {
        if self.cfg.regions.iter().any(|(n, _)| n.as_str() == r) {
            Ok(())
        } else {
            Err(Error::refused(format!(
                "host {} does not host region {r} (it hosts {})",
                self.cfg.host,
                self.region_names().join(", ")
            )))
        }
    }

    /// Runs one control action.
    pub async fn execute(&self, action: ControlAction) -> Result<String> {
        match action {
            ControlAction::Start {
                region,
                start_type,
                listener,
            } => self.start_region(&region, start_type, listener).await,
            ControlAction::Stop {
                region,
                drain_timeout_ms,
                stop_timeout_ms,
                force,
            } => {
                self.hosts_region(&region)?;
                let h = self.take_running(&region).await?;
                let (tx, rx) = oneshot::channel();
                h.control
                    .send(RegionControl::Stop {
                        drain: Duration::from_millis(drain_timeout_ms),
                        timeout: Duration::from_millis(stop_timeout_ms),
                        force,
                        reply: tx,
                    })
                    .await
                    .map_err(|_| Error::refused(format!("region {region} is not running")))?;
                let r = rx.await.map_err(|_| {
                    Error::refused(format!("region {region} ended during its stop"))
                })?;
                let _ = h.task.await;
                r.map(|m| format!("region {region} {m}"))
            }
            ControlAction::Listener { region, on } => {
                self.hosts_region(&region)?;
                let tx = {
                    let mut st = self.state.lock().await;
                    st.running.retain(|_, h| !h.task.is_finished());
                    st.running
                        .get(&region)
                        .map(|h| h.control.clone())
                        .ok_or_else(|| {
                            Error::refused(format!(
                                "region {region} is not running on {}",
                                self.cfg.host
                            ))
                        })?
                };
                let (rtx, rrx) = oneshot::channel();
                tx.send(RegionControl::Listener { on, reply: rtx })
                    .await
                    .map_err(|_| Error::refused(format!("region {region} is not running")))?;
                rrx.await
                    .map_err(|_| Error::refused(format!("region {region} ended")))?
                    .map(|m| format!("region {region}: {m}"))
            }
            ControlAction::ApplyUpdate { version } => {
                let v = crate::names::parse_version("version", &version)?;
                let mut st = self.state.lock().await;
                st.running.retain(|_, h| !h.task.is_finished());
                if !st.running.is_empty() {
                    let mut names: Vec<_> = st.running.keys().cloned().collect();
                    names.sort();
                    return Err(Error::refused(format!(
                        "cannot update host {} while regions run: {}; stop them first",
                        self.cfg.host,
                        names.join(", ")
                    )));
                }
                let old = st.product.version.clone();
                st.product.version = v.clone();
                drop(st);
                self.publish().await?;
                Ok(format!("host {} updated from {old} to {v}", self.cfg.host))
            }
            ControlAction::Crash { region } => {
                self.hosts_region(&region)?;
                let h = self.take_running(&region).await?;
                let _ = h.control.send(RegionControl::Crash).await;
                let _ = h.task.await;
                Ok(format!("region {region} crashed"))
            }
        }
    }

    async fn take_running(&self, region: &str) -> Result<RegionHandle> {
        let mut st = self.state.lock().await;
        st.running.retain(|_, h| !h.task.is_finished());
        st.running.remove(region).ok_or_else(|| {
            Error::refused(format!(
                "region {region} is not running on host {}",
                self.cfg.host
            ))
        })
    }

    async fn start_region(
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
        // Hold the lock across the start so two start commands for one region cannot race.
        let mut st = self.state.lock().await;
        st.running.retain(|_, h| !h.task.is_finished());
        if st.running.contains_key(region) {
            return Err(Error::refused(format!(
                "region {region} is already running on {}",
                self.cfg.host
            )));
        }
        let mut cfg = self.cfg.region_defaults.clone();
        cfg.region = name;
        cfg.host = self.cfg.host.clone();
        cfg.product = st.product.clone();
        cfg.start_type = start_type;
        match listener {
            Some(true) => cfg.listener_start = crate::region::ListenerStart::On,
            Some(false) => cfg.listener_start = crate::region::ListenerStart::Off,
            None => {}
        }
        if let Some(a) = addr {
            cfg.listen = a;
        }
        let region_obs = self.observer.clone();
        let r = Region::start(self.pac.clone(), cfg, region_obs).await?;
        let msg = format!("region {region} started in store {}", r.store());
        st.running.insert(region.to_string(), r.spawn());
        Ok(msg)
    }
}
