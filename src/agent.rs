//! The host agent: hosts several regions in one process and obeys control commands sent
//! through the PSOR (see [`crate::psor::control`]).
//!
//! On start it cleans what a previous incarnation may have left (its regions' stale
//! memberships and liveness), takes the installed product from its host record over a
//! stale `--product-version` (agent_host.rs), publishes the record (installed product, regions)
//! with a liveness TTL, and reads only commands sent after it started. It autostarts its
//! regions unless a rollout is acting on its host right then (the coordinator starts
//! them), and warm rather than cold while a rollout is active. A command id is taken at most once, even if delivered twice.
//!
//! Each region has its own slot (`Idle`, `Starting`, `Running`; agent_regions.rs): a start
//! holds its region's slot, not the host, so a start that waits (for another region's cold start,
//! say) does not delay a listener change or a stop of another region. Commands run in
//! their own tasks, kept in a `JoinSet`: on shutdown the agent stops taking commands,
//! lets the ones in hand finish (a start that lands now stops its region again), aborts
//! what outlives a bound, then stops every region gracefully.

use crate::error::{Error, Result};
use crate::metrics::RegionState;
use crate::names::{HostName, PacName, Product, RegionName};
use crate::psor::control::{ControlAction, ControlCommand, ControlReply};
use crate::psor::notify::{self, Notices};
use crate::psor::{now_ms, Pac};
use crate::region::{Observer, RegionConfig, RegionControl, RegionHandle, StartType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;

#[path = "agent_host.rs"]
mod host;
#[path = "agent_regions.rs"]
mod regions;

use regions::stop_region;

/// How long a shutdown waits for the commands in hand before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

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
    /// Paths whose free space the host record reports (`--check-path`), for the plan's
    /// `host_checks`.
    pub check_paths: Vec<std::path::PathBuf>,
}

/// Where one hosted region is.
enum Slot {
    /// Not running.
    Idle,
    /// A start is in progress; only that start changes the slot.
    Starting,
    /// Running.
    Running(RegionHandle),
}

impl Slot {
    /// Running, not merely recorded as such (its task ends when it is lost or crashes).
    fn is_running(&self) -> bool {
        matches!(self, Slot::Running(h) if !h.task.is_finished())
    }
}

struct State {
    product: Product,
    slots: HashMap<String, Slot>,
    /// Shutdown began: no new start, and a start that lands stops its region again.
    closing: bool,
}

/// A running agent.
pub struct Agent {
    pac: Pac,
    cfg: AgentConfig,
    /// Never held across an await: every wait happens outside it.
    state: Mutex<State>,
    /// A slot left `Starting`.
    settled: Notify,
    observer: Observer,
    /// The PAC's notifications from the agent's one subscription, fanned out to its
    /// regions: a host of 20 regions holds one pub/sub connection, not 20.
    notices: Notices,
    /// `--product-version` as given (kept in the host record as `started_with`).
    started_with: String,
    /// The control stream's last id when the agent was made: commands after it are the
    /// agent's to run. Read before the agent says it is ready (and before its host
    /// record appears), so a command sent once it is ready is never skipped.
    start_tail: String,
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
        let slots = cfg
            .regions
            .iter()
            .map(|(r, _)| (r.to_string(), Slot::Idle))
            .collect();
        let product = host::installed(&pac, cfg.host.as_str(), &cfg.product).await?;
        let start_tail = pac.control_tail(cfg.host.as_str()).await?;
        Ok(Arc::new(Agent {
            started_with: cfg.product.version.to_string(),
            start_tail,
            state: Mutex::new(State {
                product,
                slots,
                closing: false,
            }),
            settled: Notify::new(),
            notices: Notices::default(),
            pac,
            cfg,
            observer,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; the slots stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn region_names(&self) -> Vec<String> {
        self.cfg
            .regions
            .iter()
            .map(|(r, _)| r.to_string())
            .collect()
    }

    /// Runs until `shutdown`; then finishes the commands in hand, stops every region
    /// gracefully and withdraws the host.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut tail = self.start_tail.clone();
        self.publish().await?;
        let (notes_stop, notes_stopped) = watch::channel(false);
        let notes = tokio::spawn(notify::listen(
            self.pac.clone(),
            self.notices.clone(),
            notes_stopped,
        ));
        let autostart = match self.cfg.autostart {
            Some(t) => host::autostart(&self.pac, &self.cfg.host, &self.region_names(), t).await?,
            None => None,
        };
        if let Some(t) = autostart {
            for (r, _) in &self.cfg.regions {
                if let Err(e) = self.start_region(r.as_str(), t, None).await {
                    tracing::error!("autostart of {r} failed: {e}");
                }
            }
        }
        let beats = tokio::spawn(self.clone().host_beats(shutdown.clone()));
        let mut tasks = JoinSet::new();
        let mut conn: Option<crate::conn::PsorConn> = None;
        // The blocking reader's connection moves with the master, not only once it fails.
        let mut moved = self.pac.psor().moved();
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!("a control command's task failed: {e}");
                }
            }
            if *shutdown.borrow() {
                break;
            }
            if moved.has_changed().unwrap_or(false) {
                moved.borrow_and_update();
                conn = None;
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
                _ = moved.changed() => continue,
                r = read => r,
            };
            match batch {
                Ok(entries) => {
                    for (sid, cmd) in entries {
                        tail = sid;
                        match cmd {
                            Ok(cmd) => {
                                tasks.spawn(self.clone().handle(cmd));
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
        self.lock().closing = true;
        tracing::info!(
            "host agent {} shutting down: finishing {} command(s) in hand",
            self.cfg.host,
            tasks.len()
        );
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "control commands still running {}s after shutdown began; aborting them",
                SHUTDOWN_GRACE.as_secs()
            );
            tasks.shutdown().await;
        }
        beats.abort();
        self.stop_all().await;
        let _ = notes_stop.send(true);
        let _ = notes.await;
        let _ = self.pac.host_gone(self.cfg.host.as_str()).await;
        Ok(())
    }

    async fn stop_all(&self) {
        let handles: Vec<(String, RegionHandle)> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            for (name, slot) in st.slots.iter_mut() {
                if let Slot::Running(h) = std::mem::replace(slot, Slot::Idle) {
                    out.push((name.clone(), h));
                }
            }
            out
        };
        for (name, h) in handles {
            let stop = stop_region(
                &name,
                h,
                Duration::from_secs(10),
                Duration::from_secs(30),
                false,
            );
            if let Err(e) = stop.await {
                tracing::warn!("stopping {name}: {e}");
            }
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
                let _ = self
                    .pac
                    .reply_control(&ControlReply::of(&cmd.id, &Err(e)))
                    .await;
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
        if let Err(e) = self
            .pac
            .reply_control(&ControlReply::of(&cmd.id, &outcome))
            .await
        {
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
                let h = self.take_running(&region).await?;
                let drain = Duration::from_millis(drain_timeout_ms);
                let timeout = Duration::from_millis(stop_timeout_ms);
                let m = stop_region(&region, h, drain, timeout, force).await?;
                Ok(format!("region {region} {m}"))
            }
            ControlAction::Listener { region, on } => {
                self.hosts_region(&region)?;
                self.settle(&region).await;
                let tx = match self.lock().slots.get(&region) {
                    Some(s @ Slot::Running(h)) if s.is_running() => Some(h.control.clone()),
                    _ => None,
                };
                let tx = tx.ok_or_else(|| self.not_running(&region, "on"))?;
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
                if self.lock().product.version == v {
                    // Already installed (the asker read a record that a lost write or a
                    // failover left stale): nothing to change, whatever runs; the record
                    // is published again so the next reader sees it.
                    self.publish().await?;
                    return Ok(format!("host {} has {v} installed already", self.cfg.host));
                }
                let old = {
                    let mut st = self.lock();
                    let mut busy: Vec<&String> = st
                        .slots
                        .iter()
                        .filter(|(_, s)| matches!(s, Slot::Starting) || s.is_running())
                        .map(|(n, _)| n)
                        .collect();
                    if !busy.is_empty() {
                        busy.sort();
                        return Err(Error::refused(format!(
                            "cannot update host {} while regions run: {}; stop them first",
                            self.cfg.host,
                            busy.iter()
                                .map(|n| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    std::mem::replace(&mut st.product.version, v.clone())
                };
                self.publish().await?;
                Ok(format!("host {} updated from {old} to {v}", self.cfg.host))
            }
            ControlAction::Crash { region } => {
                let h = self.take_running(&region).await?;
                let _ = h.control.send(RegionControl::Crash).await;
                let _ = h.task.await;
                Ok(format!("region {region} crashed"))
            }
        }
    }
}
