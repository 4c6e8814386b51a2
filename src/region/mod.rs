//! The region runtime: how a region starts, stays alive and stops.
//!
//! Starting is a decision plus a commit: [`decide_start`] applies the documented start-type
//! rules to a [`Snapshot`] (pure, table-tested), and [`Pac::join`] commits it atomically
//! only if the PAC is unchanged since the snapshot; on a conflict the region re-reads and
//! decides again. A running region heartbeats (which also re-reads its store's mode, so a
//! lost notification heals within one interval), listens for mode notifications on the
//! PAC's channel to react at once, and on shutdown leaves its store and marks itself
//! stopped.

use crate::compat::{self, Matrix};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, RegionState};
use crate::names::{HostName, Product, RegionName};
use crate::psor::{Heartbeat, JoinOutcome, JoinRequest, Mode, Pac, Snapshot};
use crate::resources::Resources;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

mod listener;
mod worker;

/// How a region asks to start (`casstart /s:c|w|u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StartType {
    /// Wipe and initialise the PAC (becomes warm if another region is alive).
    Cold,
    /// Join the running PAC.
    Warm,
    /// Start a new store for an incompatible product version beside the old one.
    Upgrade,
}

impl StartType {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StartType::Cold => "cold",
            StartType::Warm => "warm",
            StartType::Upgrade => "upgrade",
        }
    }

    /// The vendor's one-letter form (`casstart /s:u`).
    pub fn letter(self) -> char {
        match self {
            StartType::Cold => 'c',
            StartType::Warm => 'w',
            StartType::Upgrade => 'u',
        }
    }
}

impl fmt::Display for StartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a start will do, decided from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartDecision {
    /// The start type actually performed.
    pub effective: StartType,
    /// Reset the PAC first (cold start with no other live region).
    pub reset_first: bool,
    /// Create the store (else join it).
    pub create: bool,
    /// Store version.
    pub store: String,
    /// Mode of a created store.
    pub mode: Mode,
    /// Warning to show (cold start turned warm).
    pub warning: Option<String>,
}

fn compat_with(
    product: &Product,
    s: &crate::psor::StoreInfo,
    matrix: Option<&Matrix>,
) -> Option<compat::Verdict> {
    s.product().map(|sp| compat::check(product, &sp, matrix))
}

/// Applies the start-type rules (docs/PSOR.md section 4) to a snapshot.
pub fn decide_start(
    snap: &Snapshot,
    pac: &str,
    region: &str,
    product: &Product,
    requested: StartType,
    matrix: Option<&Matrix>,
) -> Result<StartDecision> {
    let version = product.version.to_string();
    match requested {
        StartType::Cold => {
            if snap.live_regions_except(region).next().is_some() {
                let mut d = decide_start(snap, pac, region, product, StartType::Warm, matrix)?;
                d.warning = Some(format!(
                    "Region {region} initializing in Warm startup mode because PAC {pac} is already active"
                ));
                return Ok(d);
            }
            Ok(StartDecision {
                effective: StartType::Cold,
                reset_first: true,
                create: true,
                store: version,
                mode: Mode::Running,
                warning: None,
            })
        }
        StartType::Warm => {
            if !snap.exists || snap.stores.is_empty() {
                return Err(Error::refused(format!(
                    "PAC {pac} has no store to join; cold start a region first (--start-type cold)"
                )));
            }
            // The upgrade-mode store first, then running stores newest first: during a
            // rollback both stores run and an old-version region rejoins the old one.
            let candidates = snap
                .upgrade_store()
                .into_iter()
                .chain(snap.stores.iter().rev().filter(|s| s.mode == Mode::Running));
            let mut tried = Vec::new();
            for s in candidates {
                if let Some(v) = compat_with(product, s, matrix) {
                    if v.compatible {
                        return Ok(StartDecision {
                            effective: StartType::Warm,
                            reset_first: false,
                            create: false,
                            store: s.version.clone(),
                            mode: s.mode,
                            warning: None,
                        });
                    }
                    tried.push(format!("{} ({})", s.version, s.mode));
                }
            }
            let newer = snap
                .newest()
                .and_then(|s| semver::Version::parse(&s.version).ok())
                .is_none_or(|n| product.version > n);
            let hint = if newer {
                format!(
                    "start it with --start-type upgrade to create a store for {}",
                    product.version
                )
            } else {
                "install a version compatible with the running store".to_string()
            };
            Err(Error::refused(format!(
                "region {region} at {product} is not compatible with store {} of PAC {pac}; {hint}",
                if tried.is_empty() {
                    "(none running)".to_string()
                } else {
                    tried.join(" or ")
                },
            )))
        }
        StartType::Upgrade => {
            if !snap.exists || snap.stores.is_empty() {
                return Err(Error::refused(format!(
                    "PAC {pac} has no store to upgrade from; cold start a region first (--start-type cold)"
                )));
            }
            let Some(running) = snap.newest_running() else {
                return Err(Error::refused(format!(
                    "PAC {pac} has no running store to upgrade from"
                )));
            };
            if compat_with(product, running, matrix).is_some_and(|v| v.compatible) {
                return Err(Error::refused(format!(
                    "region {region} at {product} is compatible with running store {} of PAC {pac}; \
                     use --start-type warm (an upgrade start is for incompatible versions)",
                    running.version
                )));
            }
            if let Some(u) = snap.upgrade_store() {
                if u.version == version {
                    return Ok(StartDecision {
                        effective: StartType::Upgrade,
                        reset_first: false,
                        create: false,
                        store: u.version.clone(),
                        mode: Mode::Upgrade,
                        warning: None,
                    });
                }
                return Err(Error::refused(format!(
                    "PAC {pac} already has store {} in upgrade mode; a region at {version} cannot \
                     start another upgrade beside it",
                    u.version
                )));
            }
            if let Some(s) = snap.store(&version) {
                return Err(Error::refused(format!(
                    "PAC {pac} already has a store for {version} in mode {}; use --start-type warm",
                    s.mode
                )));
            }
            if let Some(newest) = snap
                .newest()
                .and_then(|s| semver::Version::parse(&s.version).ok())
            {
                if product.version <= newest {
                    return Err(Error::refused(format!(
                        "an upgrade start needs a version newer than the newest store {newest} of PAC \
                         {pac}; {version} is not (to go back, use `pacup rollout rollback`)"
                    )));
                }
            }
            Ok(StartDecision {
                effective: StartType::Upgrade,
                reset_first: false,
                create: true,
                store: version,
                mode: Mode::Upgrade,
                warning: None,
            })
        }
    }
}

/// When a region's client listener comes up at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ListenerStart {
    /// On if the joined store is running, off in upgrade mode (the documented process
    /// keeps clients away from an upgrade-mode region until the new PAC runs).
    Auto,
    /// Always on.
    On,
    /// Always off (turned on later by `region listener on`).
    Off,
}

/// Everything a region needs to start and run.
#[derive(Debug, Clone)]
pub struct RegionConfig {
    /// Region name.
    pub region: RegionName,
    /// Host it runs on.
    pub host: HostName,
    /// Installed product.
    pub product: Product,
    /// Requested start type.
    pub start_type: StartType,
    /// Resource definitions to load into a store it creates.
    pub resources: Resources,
    /// Optional compatibility matrix.
    pub matrix: Option<Matrix>,
    /// Heartbeat interval (default 1 s).
    pub heartbeat_interval: Duration,
    /// Heartbeat TTL (default 3 s): past it without a heartbeat the region is dead.
    pub heartbeat_ttl: Duration,
    /// Client listener address (default an ephemeral port on 127.0.0.1).
    pub listen: SocketAddr,
    /// Listener state at start.
    pub listener_start: ListenerStart,
    /// Host name clients reach the listener by, when it binds a wildcard address (in
    /// containers): the endpoint published is `<advertise_host>:<port>`.
    pub advertise_host: Option<String>,
    /// Simulated duration of one batch job.
    pub job_time: Duration,
    /// A job held this long by an unresponsive region is taken over (default 2 x TTL).
    pub reclaim_idle: Duration,
    /// Pause between claims when no job is waiting.
    pub idle_poll: Duration,
    /// Where the region reports its state, jobs and client requests (disabled by default).
    pub metrics: Metrics,
}

impl RegionConfig {
    /// Defaults: 1 s heartbeat, 3 s TTL, built-in resources, no matrix, listener on an
    /// ephemeral 127.0.0.1 port (auto), 20 ms jobs, reclaim after 6 s.
    pub fn new(
        region: RegionName,
        host: HostName,
        product: Product,
        start_type: StartType,
    ) -> Self {
        RegionConfig {
            region,
            host,
            product,
            start_type,
            resources: Resources::default_set(),
            matrix: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener_start: ListenerStart::Auto,
            advertise_host: None,
            job_time: Duration::from_millis(20),
            reclaim_idle: Duration::from_secs(6),
            idle_poll: Duration::from_millis(25),
            metrics: Metrics::disabled(),
        }
    }
}

/// Something a running region reports (printed by `region run`, logged by agents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionEvent {
    /// The region joined a store.
    Started {
        /// Effective start type.
        start_type: StartType,
        /// Store joined.
        store: String,
        /// Its mode.
        mode: Mode,
        /// Cold-to-warm warning, if any.
        warning: Option<String>,
    },
    /// Its store's mode changed.
    ModeChanged {
        /// Previous mode.
        from: Mode,
        /// New mode.
        to: Mode,
    },
    /// The client listener changed.
    Listener {
        /// On or off.
        on: bool,
        /// Endpoint.
        endpoint: String,
    },
    /// The region lost ownership (PAC reset, another instance) or its store is gone.
    Lost(String),
    /// The region left its store.
    Stopped {
        /// Whether the stop had to be forced.
        forced: bool,
    },
}

/// Observer of region events.
pub type Observer = Arc<dyn Fn(&str, &RegionEvent) + Send + Sync>;

/// Requests to a running region (from its host agent or its signal handler).
#[derive(Debug)]
pub enum RegionControl {
    /// Turn the client listener on or off.
    Listener {
        /// On or off.
        on: bool,
        /// Outcome.
        reply: oneshot::Sender<Result<String>>,
    },
    /// Stop: listener off, wait up to `drain` for clients to leave, finish the job in
    /// hand, leave the store. Past `timeout` (or at once with `force`) the stop is forced:
    /// clients are cut and the job in hand is abandoned, to be reclaimed by another region.
    Stop {
        /// Client drain bound.
        drain: Duration,
        /// Whole-stop bound.
        timeout: Duration,
        /// Force at once.
        force: bool,
        /// Outcome.
        reply: oneshot::Sender<Result<String>>,
    },
    /// Die abruptly (no leave, no listener shutdown courtesy): a crash, for fault tests.
    Crash,
}

/// A started region: owns its PSOR record until stopped.
pub struct Region {
    pac: Pac,
    cfg: RegionConfig,
    token: String,
    store: String,
    mode: watch::Sender<Mode>,
    observer: Observer,
}

/// A region running in its own task.
pub struct RegionHandle {
    /// Control requests.
    pub control: mpsc::Sender<RegionControl>,
    /// The task; ends when the region stopped, crashed or was lost.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

fn instance_token(host: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos:x}", std::process::id())
}

/// A little jitter for retries after a conflict, so racing starters spread out.
fn jitter(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    Duration::from_millis(5 + h.finish() % (20 * u64::from(attempt.min(10) + 1)))
}

impl Region {
    /// Starts a region: decides from a snapshot, commits atomically, retries on conflict.
    /// A refused start is [`Error::Refused`] (exit 1) with the reason.
    pub async fn start(pac: Pac, cfg: RegionConfig, observer: Observer) -> Result<Region> {
        let token = instance_token(cfg.host.as_str());
        let actor = format!("region {} on {}", cfg.region, cfg.host);
        // A cold start elsewhere resets the PAC and then creates its store (deleting the
        // old keys in between, which takes time for a big store): a start that finds the
        // PAC in that window waits for the store instead of refusing.
        let wait_reset_until = std::time::Instant::now() + Duration::from_secs(30);
        for attempt in 0..u32::MAX {
            // Only a cold start asks whether other regions are alive: every other start
            // reads just the stores and its own record (its cost does not grow with the PAC).
            let snap = if cfg.start_type == StartType::Cold {
                pac.snapshot().await?
            } else {
                pac.start_view(cfg.region.as_str()).await?
            };
            if !snap.exists && cfg.start_type != StartType::Cold {
                return Err(Error::NoSuchPac(pac.name().to_string()));
            }
            if let Some(ri) = snap.region(cfg.region.as_str()).filter(|r| r.alive) {
                return Err(Error::refused(format!(
                    "region {} is already running (on host {}); stop it first, or wait for its \
                     heartbeat to expire if it died",
                    cfg.region, ri.host
                )));
            }
            let d = match decide_start(
                &snap,
                pac.name().as_str(),
                cfg.region.as_str(),
                &cfg.product,
                cfg.start_type,
                cfg.matrix.as_ref(),
            ) {
                Ok(d) => d,
                Err(e) => {
                    let fresh = snap
                        .resetting_since_ms
                        .is_some_and(|t| crate::psor::now_ms().saturating_sub(t) < 30_000);
                    if fresh && std::time::Instant::now() < wait_reset_until {
                        tokio::time::sleep(jitter(attempt) + Duration::from_millis(50)).await;
                        continue;
                    }
                    return Err(e);
                }
            };
            if attempt >= 50 && !d.reset_first {
                return Err(Error::Conflict);
            }
            let gen = if d.reset_first {
                match pac
                    .reset(
                        false,
                        &actor,
                        &format!("cold start of {}", cfg.region),
                        true,
                        None,
                    )
                    .await
                {
                    Ok(g) => {
                        pac.gc_removing().await?;
                        g
                    }
                    // A region came alive since the snapshot: decide again (it becomes warm).
                    Err(Error::Refused(_)) => {
                        tokio::time::sleep(jitter(attempt)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                snap.gen
            };
            let req = JoinRequest {
                gen,
                create: d.create,
                store: d.store.clone(),
                mode: d.mode,
                region: cfg.region.to_string(),
                host: cfg.host.to_string(),
                product: cfg.product.clone(),
                token: token.clone(),
                ttl_ms: cfg.heartbeat_ttl.as_millis() as u64,
                start_type: d.effective.as_str().into(),
                require_no_other_alive: d.effective == StartType::Cold,
                resources: if d.create {
                    cfg.resources.0.clone()
                } else {
                    Vec::new()
                },
            };
            match pac.join(&req, &actor).await? {
                JoinOutcome::Joined { store, mode } => {
                    observer(
                        cfg.region.as_str(),
                        &RegionEvent::Started {
                            start_type: d.effective,
                            store: store.clone(),
                            mode,
                            warning: d.warning,
                        },
                    );
                    let (tx, _) = watch::channel(mode);
                    return Ok(Region {
                        pac,
                        cfg,
                        token,
                        store,
                        mode: tx,
                        observer,
                    });
                }
                JoinOutcome::Conflict | JoinOutcome::OtherAlive(_) => {
                    tracing::debug!(
                        attempt,
                        "start of {} conflicted; deciding again",
                        cfg.region
                    );
                    tokio::time::sleep(jitter(attempt)).await;
                }
            }
            if attempt >= 100 {
                break;
            }
        }
        Err(Error::Conflict)
    }

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
            me.pac.clone(),
            me.cfg.clone(),
            me.token.clone(),
            me.store.clone(),
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

    /// One heartbeat; updates the mode. Err(reason) when ownership or the store is lost.
    async fn beat(&self, clients: u64) -> std::result::Result<(), String> {
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
async fn heartbeats(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psor::StoreInfo;

    fn product(v: &str) -> Product {
        Product {
            version: semver::Version::parse(v).unwrap(),
            os: "linux-6".into(),
            bitness: 64,
        }
    }

    fn store(v: &str, mode: Mode) -> StoreInfo {
        StoreInfo {
            version: v.into(),
            running_version: String::new(),
            os: "linux-6".into(),
            bitness: 64,
            mode,
            created_at_ms: 0,
            created_by: "R".into(),
            members: vec![],
            live_members: vec![],
        }
    }

    fn snap(stores: Vec<StoreInfo>, alive: &[&str]) -> Snapshot {
        Snapshot {
            pac: "MyPAC".into(),
            exists: true,
            gen: 7,
            epoch: 0,
            created_at_ms: 0,
            resetting_since_ms: None,
            stores,
            regions: alive
                .iter()
                .map(|n| crate::psor::RegionInfo {
                    name: n.to_string(),
                    host: "h".into(),
                    product_version: "1.0.0".into(),
                    os: "linux-6".into(),
                    bitness: 64,
                    store: "1.0.0".into(),
                    state: "active".into(),
                    start_type: "cold".into(),
                    listener: "off".into(),
                    endpoint: String::new(),
                    clients: 0,
                    jobs_done: 0,
                    alive: true,
                    heartbeat_age_ms: Some(0),
                })
                .collect(),
            hosts: vec![],
            removing: vec![],
        }
    }

    fn decide(s: &Snapshot, v: &str, t: StartType) -> Result<StartDecision> {
        decide_start(s, "MyPAC", "R9", &product(v), t, None)
    }

    #[test]
    fn cold_alone_resets_and_creates_running() {
        let d = decide(
            &snap(vec![store("1.0.0", Mode::Running)], &[]),
            "1.0.0",
            StartType::Cold,
        )
        .unwrap();
        assert!(d.reset_first && d.create);
        assert_eq!((d.effective, d.mode), (StartType::Cold, Mode::Running));
    }

    #[test]
    fn cold_with_live_region_becomes_warm_with_warning() {
        let d = decide(
            &snap(vec![store("1.0.0", Mode::Running)], &["R1"]),
            "1.0.1",
            StartType::Cold,
        )
        .unwrap();
        assert_eq!(d.effective, StartType::Warm);
        assert!(!d.reset_first);
        assert_eq!(
            d.warning.as_deref(),
            Some("Region R9 initializing in Warm startup mode because PAC MyPAC is already active")
        );
    }

    #[test]
    fn warm_prefers_compatible_upgrade_store_then_running() {
        let s = snap(
            vec![store("1.0.0", Mode::Running), store("2.0.0", Mode::Upgrade)],
            &[],
        );
        assert_eq!(decide(&s, "2.0.1", StartType::Warm).unwrap().store, "2.0.0");
        assert_eq!(decide(&s, "1.0.3", StartType::Warm).unwrap().store, "1.0.0");
        let e = decide(&s, "3.0.0", StartType::Warm).unwrap_err();
        assert!(e.to_string().contains("--start-type upgrade"), "{e}");
        assert_eq!(e.exit_code().code(), 1);
    }

    #[test]
    fn warm_without_store_is_refused() {
        assert!(decide(&snap(vec![], &[]), "1.0.0", StartType::Warm).is_err());
    }

    #[test]
    fn upgrade_rules() {
        let running = snap(vec![store("1.0.0", Mode::Running)], &["R1"]);
        let e = decide(&running, "0.9.0", StartType::Upgrade).unwrap_err();
        assert!(e.to_string().contains("newer than the newest store"), "{e}");
        let e = decide(&running, "1.0.2", StartType::Upgrade).unwrap_err();
        assert!(e.to_string().contains("use --start-type warm"), "{e}");
        let d = decide(&running, "2.0.0", StartType::Upgrade).unwrap();
        assert!(d.create && !d.reset_first);
        assert_eq!((d.store.as_str(), d.mode), ("2.0.0", Mode::Upgrade));

        let with_upgrade = snap(
            vec![store("1.0.0", Mode::Running), store("2.0.0", Mode::Upgrade)],
            &[],
        );
        let d = decide(&with_upgrade, "2.0.0", StartType::Upgrade).unwrap();
        assert!(!d.create);
        assert!(decide(&with_upgrade, "3.0.0", StartType::Upgrade).is_err());
    }
}
