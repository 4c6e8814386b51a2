//! The rollout's steps: the list a plan expands to, and one small type per step.
//!
//! Every step first observes the real state (regions, stores, modes, hosts) and does only
//! what is still missing, so a step re-run after a coordinator crash neither repeats an
//! action nor skips one.

use super::plan::{ModeFlip, Plan};
use super::progress::{GateProgress, Progress};
use super::Ctx;
use crate::error::{Error, Result};
use crate::psor::{now_ms, Mode, Snapshot};
use crate::region::StartType;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// Step action names, as events carry them (docs/reference.md#events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Checks before anything changes.
    Preflight,
    /// Stop new client connections to a region.
    ListenerOff,
    /// Wait for a region's clients to leave.
    Drain,
    /// Stop a region gracefully.
    Stop,
    /// Install the target version on a host.
    ApplyUpdate,
    /// Confirm the target's compatibility verdict against the PSOR.
    CheckCompat,
    /// Start the first upgraded region in upgrade mode (creates the new store).
    StartUpgrade,
    /// Warm start a region.
    StartWarm,
    /// Wait until every started region of a wave is live and active long enough.
    HealthGate,
    /// The new store takes batch work.
    SetModeRunning,
    /// Let clients back in to a region.
    ListenerOn,
    /// Older running stores stop taking batch work.
    SetModeQuiesce,
    /// Check the end state.
    Verify,
    /// Delete the old store.
    RemoveOld,
    /// Rolling back (events only).
    Rollback,
    /// Paused (events only).
    Pause,
    /// Finished (events only).
    Done,
}

impl Action {
    /// The name in events and step lists.
    pub fn name(self) -> &'static str {
        match self {
            Action::Preflight => "preflight",
            Action::ListenerOff => "listener_off",
            Action::Drain => "drain",
            Action::Stop => "stop",
            Action::ApplyUpdate => "apply_update",
            Action::CheckCompat => "check_compat",
            Action::StartUpgrade => "start_upgrade",
            Action::StartWarm => "start_warm",
            Action::HealthGate => "health_gate",
            Action::SetModeRunning => "set_mode_running",
            Action::ListenerOn => "listener_on",
            Action::SetModeQuiesce => "set_mode_quiesce",
            Action::Verify => "verify",
            Action::RemoveOld => "remove_old",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Done => "done",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Position (0 = preflight).
    pub n: usize,
    /// What.
    pub action: Action,
    /// On which host, if any.
    pub host: Option<String>,
    /// On which region, if any.
    pub region: Option<String>,
    /// Wave index (health gates), if any.
    pub wave: Option<usize>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>3}. {}", self.n, self.action)?;
        if let Some(r) = &self.region {
            write!(f, " {r}")?;
        }
        if let Some(h) = &self.host {
            write!(f, " on {h}")?;
        }
        if let Some(w) = self.wave {
            write!(f, " (wave {})", w + 1)?;
        }
        Ok(())
    }
}

/// Which process the rollout follows (after `auto` is decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// Rolling restart into the same store.
    Compatible,
    /// New store beside the old one.
    Incompatible,
}

struct Builder(Vec<Step>);

impl Builder {
    fn push(
        &mut self,
        action: Action,
        host: Option<&str>,
        region: Option<&str>,
        wave: Option<usize>,
    ) {
        let n = self.0.len();
        self.0.push(Step {
            n,
            action,
            host: host.map(String::from),
            region: region.map(String::from),
            wave,
        });
    }
    fn each(&mut self, action: Action, regions: &[(String, String)]) {
        for (h, r) in regions {
            self.push(action, Some(h), Some(r), None);
        }
    }
    fn hosts(&mut self, action: Action, plan: &Plan, wave: usize) {
        for h in &plan.waves[wave] {
            self.push(action, Some(h.as_str()), None, None);
        }
    }
}

/// Expands a plan into its steps.
pub fn steps(plan: &Plan, process: Process) -> Vec<Step> {
    let mut b = Builder(Vec::new());
    b.push(Action::Preflight, None, None, None);
    let last = plan.waves.len() - 1;
    for w in 0..plan.waves.len() {
        let regions = plan.wave_regions(w);
        b.each(Action::ListenerOff, &regions);
        b.each(Action::Drain, &regions);
        b.each(Action::Stop, &regions);
        b.hosts(Action::ApplyUpdate, plan, w);
        match process {
            Process::Compatible => {
                b.each(Action::StartWarm, &regions);
                b.push(Action::HealthGate, None, None, Some(w));
                b.each(Action::ListenerOn, &regions);
            }
            Process::Incompatible => {
                if w == 0 {
                    b.push(Action::CheckCompat, None, None, None);
                }
                for (i, (h, r)) in regions.iter().enumerate() {
                    let a = if w == 0 && i == 0 {
                        Action::StartUpgrade
                    } else {
                        Action::StartWarm
                    };
                    b.push(a, Some(h), Some(r), None);
                }
                b.push(Action::HealthGate, None, None, Some(w));
                match plan.mode_flip {
                    ModeFlip::AfterFirstWave if w == 0 => {
                        b.push(Action::SetModeRunning, None, None, None);
                        b.each(Action::ListenerOn, &regions);
                        b.push(Action::SetModeQuiesce, None, None, None);
                    }
                    ModeFlip::AfterFirstWave => b.each(Action::ListenerOn, &regions),
                    ModeFlip::AfterAllWaves if w == last => {
                        b.push(Action::SetModeRunning, None, None, None);
                        b.each(Action::ListenerOn, &plan.all_regions());
                        b.push(Action::SetModeQuiesce, None, None, None);
                    }
                    ModeFlip::AfterAllWaves => {}
                }
            }
        }
    }
    b.push(Action::Verify, None, None, None);
    if process == Process::Incompatible {
        b.push(Action::RemoveOld, None, None, None);
    }
    b.0
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Did something.
    Done(String),
    /// Observed it was already done.
    Skipped(String),
}

fn need<'a>(s: &'a Step, what: &str) -> Result<&'a str> {
    match what {
        "host" => s.host.as_deref(),
        _ => s.region.as_deref(),
    }
    .ok_or_else(|| Error::refused(format!("step {} has no {what}", s.n)))
}

/// Runs one step.
pub async fn run(ctx: &Ctx<'_>, step: &Step) -> Result<StepOutcome> {
    match step.action {
        Action::Preflight => Ok(StepOutcome::Skipped(
            "done before the journal was written".into(),
        )),
        Action::ListenerOff => Listener { on: false }.run(ctx, step).await,
        Action::ListenerOn => Listener { on: true }.run(ctx, step).await,
        Action::Drain => Drain.run(ctx, step).await,
        Action::Stop => StopRegion.run(ctx, step).await,
        Action::ApplyUpdate => ApplyUpdate.run(ctx, step).await,
        Action::CheckCompat => CheckCompat.run(ctx).await,
        Action::StartUpgrade => StartRegion(StartType::Upgrade).run(ctx, step).await,
        Action::StartWarm => StartRegion(StartType::Warm).run(ctx, step).await,
        Action::HealthGate => HealthGate.run(ctx, step).await,
        Action::SetModeRunning => SetMode(Mode::Running).run(ctx).await,
        Action::SetModeQuiesce => SetMode(Mode::Quiesce).run(ctx).await,
        Action::Verify => Verify.run(ctx).await,
        Action::RemoveOld => RemoveOld.run(ctx).await,
        Action::Rollback | Action::Pause | Action::Done => Ok(StepOutcome::Skipped(String::new())),
    }
}

/// `listener_off` / `listener_on`.
pub struct Listener {
    /// Direction.
    pub on: bool,
}

impl Listener {
    /// Skipped when the region is not alive (off) or the listener is already as wanted.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let (h, r) = (need(s, "host")?, need(s, "region")?);
        settle(ctx, r).await?;
        let snap = ctx.pac.snapshot().await?;
        let want = if self.on { "on" } else { "off" };
        match snap.region(r) {
            Some(ri) if ri.alive && ri.listener == want => {
                return Ok(StepOutcome::Skipped(format!("listener already {want}")))
            }
            Some(ri) if unseen(ri) => return Err(unseen_error(ri)),
            Some(ri) if !ri.alive && !self.on => {
                return Ok(StepOutcome::Skipped("region not running".into()))
            }
            _ => {}
        }
        let m = ctx
            .driver
            .listener(ctx.pac, h, r, self.on, ctx.epoch, &ctx.actor)
            .await?;
        Ok(StepOutcome::Done(m))
    }
}

/// A region whose heartbeat expired without it ever leaving its store: its host may be
/// cut off (and the region still running behind the cut) or it crashed. Either way the
/// coordinator must not treat it as stopped: only its host agent coming back (which
/// either revives or cleans it) settles which.
fn unseen(ri: &crate::psor::RegionInfo) -> bool {
    !ri.alive && !ri.state.is_empty() && ri.state != "stopped"
}

fn unseen_error(ri: &crate::psor::RegionInfo) -> Error {
    Error::refused(format!(
        "region {} on {} stopped heartbeating without leaving its store (host cut off, or \
         crashed); the coordinator does not act on a host it cannot see: bring the host \
         back or restart its agent (which cleans the region up), then resume",
        ri.name, ri.host
    ))
}

/// How long a step waits for an unseen region to be seen again (its host reconnecting)
/// before it fails: a few heartbeat intervals of any sane configuration.
const UNSEEN_GRACE: Duration = Duration::from_secs(20);

/// Waits while `region` is unseen (up to [`UNSEEN_GRACE`], and at most half the progress
/// deadline, so the failure names the region rather than the deadline); fails naming it
/// if it stays so.
async fn settle(ctx: &Ctx<'_>, region: &str) -> Result<()> {
    let end = Instant::now() + UNSEEN_GRACE.min(ctx.plan.progress_deadline / 2);
    loop {
        let snap = ctx.pac.snapshot().await?;
        match snap.region(region) {
            Some(ri) if unseen(ri) => {
                if Instant::now() >= end {
                    return Err(unseen_error(ri));
                }
            }
            _ => return Ok(()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `drain`: wait until the region's clients are gone (bounded by the drain timeout).
pub struct Drain;

impl Drain {
    /// Never fails: clients still connected at the timeout are cut by the stop.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let r = need(s, "region")?;
        settle(ctx, r).await?;
        let end = Instant::now() + ctx.plan.drain_timeout;
        loop {
            let snap = ctx.pac.snapshot().await?;
            if let Some(ri) = snap.region(r).filter(|ri| unseen(ri)) {
                return Err(unseen_error(ri));
            }
            let Some(ri) = snap.region(r).filter(|ri| ri.alive) else {
                return Ok(StepOutcome::Skipped("region not running".into()));
            };
            if ri.clients == 0 {
                return Ok(StepOutcome::Done("no client connected".into()));
            }
            if Instant::now() >= end {
                return Ok(StepOutcome::Done(format!(
                    "{} clients still connected after the drain timeout; the stop cuts them",
                    ri.clients
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `stop`: graceful stop (forced past the stop timeout).
pub struct StopRegion;

impl StopRegion {
    /// Skipped when the region is not alive.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let (h, r) = (need(s, "host")?, need(s, "region")?);
        settle(ctx, r).await?;
        let snap = ctx.pac.snapshot().await?;
        match snap.region(r) {
            Some(ri) if ri.alive && ri.state == "stopping" => {
                // A stop sent before a coordinator crash is still running: wait for it.
                let end = Instant::now() + ctx.plan.stop_timeout + Duration::from_secs(5);
                while Instant::now() < end {
                    if !ctx
                        .pac
                        .snapshot()
                        .await?
                        .region(r)
                        .is_some_and(|ri| ri.alive)
                    {
                        return Ok(StepOutcome::Done("an earlier stop finished".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Some(ri) if ri.alive => {}
            Some(ri) if unseen(ri) => return Err(unseen_error(ri)),
            _ => return Ok(StepOutcome::Skipped("region not running".into())),
        }
        match ctx
            .driver
            .stop(
                ctx.pac,
                h,
                r,
                ctx.plan.drain_timeout,
                ctx.plan.stop_timeout,
                ctx.epoch,
                &ctx.actor,
            )
            .await
        {
            // A template's exit 0 is not proof: the region must be down in the PSOR.
            Ok(m) => {
                let bound = ctx.plan.stop_timeout + Duration::from_secs(5);
                wait_region(ctx, r, bound, |ri| ri.is_none_or(|ri| !ri.alive))
                    .await
                    .map_err(|_| Error::refused(format!("{m}; but region {r} is still alive")))?;
                Ok(StepOutcome::Done(m))
            }
            // The stop may have completed through another path (an earlier command):
            // what counts is that the region is down now.
            Err(e)
                if !matches!(e, Error::Fenced { .. })
                    && !ctx
                        .pac
                        .snapshot()
                        .await?
                        .region(r)
                        .is_some_and(|ri| ri.alive) =>
            {
                Ok(StepOutcome::Done(format!("region down ({e})")))
            }
            Err(e) => Err(e),
        }
    }
}

/// Waits until `ok` holds for the region's record, or `bound` passes.
async fn wait_region(
    ctx: &Ctx<'_>,
    region: &str,
    bound: Duration,
    ok: impl Fn(Option<&crate::psor::RegionInfo>) -> bool,
) -> Result<()> {
    let end = Instant::now() + bound;
    loop {
        if ok(ctx.pac.snapshot().await?.region(region)) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(Error::refused(format!(
                "region {region} did not reach the expected state"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `apply_update`: install a version on a host (target, or the old one in a rollback).
pub struct ApplyUpdate;

impl ApplyUpdate {
    /// Skipped when the host already runs the version.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let h = need(s, "host")?;
        // A region of this host that came back to life since its stop step (its host was
        // cut off and reconnected) must stop first: an update is refused while it runs.
        for r in ctx
            .plan
            .host(h)
            .map(|hp| hp.regions.clone())
            .unwrap_or_default()
        {
            settle(ctx, r.as_str()).await?;
        }
        let snap = ctx.pac.snapshot().await?;
        for r in ctx
            .plan
            .host(h)
            .map(|hp| hp.regions.clone())
            .unwrap_or_default()
        {
            let Some(ri) = snap.region(r.as_str()) else {
                continue;
            };
            if unseen(ri) {
                return Err(unseen_error(ri));
            }
            if ri.alive && ri.product_version != ctx.version {
                let step = Step {
                    n: s.n,
                    action: Action::Stop,
                    host: Some(h.to_string()),
                    region: Some(r.to_string()),
                    wave: None,
                };
                Listener { on: false }.run(ctx, &step).await?;
                StopRegion.run(ctx, &step).await?;
            }
        }
        apply(ctx, h, &ctx.version).await
    }
}

pub(super) async fn apply(ctx: &Ctx<'_>, host: &str, version: &str) -> Result<StepOutcome> {
    let snap = ctx.pac.snapshot().await?;
    if snap
        .hosts
        .iter()
        .any(|hi| hi.name == host && hi.product_version == version)
    {
        return Ok(StepOutcome::Skipped(format!("host already at {version}")));
    }
    let m = ctx
        .driver
        .apply_update(ctx.pac, host, version, ctx.epoch, &ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// `check_compat`: the target must still be incompatible with the running store.
pub struct CheckCompat;

impl CheckCompat {
    /// Fails if the running store is now compatible (someone changed the PAC).
    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<StepOutcome> {
        let snap = ctx.pac.snapshot().await?;
        if snap.store(&ctx.version).is_some() {
            return Ok(StepOutcome::Skipped(format!(
                "store {} exists already",
                ctx.version
            )));
        }
        if let Some(r) = ctx
            .driver
            .check_compat(ctx.pac, &ctx.version, ctx.epoch)
            .await
        {
            let (code, detail) = r?;
            return match code {
                3 => Ok(StepOutcome::Done(format!("incompatible: {detail}"))),
                0 => Err(Error::refused(format!(
                    "target {} is compatible with the running store; the incompatible process does not apply ({detail})",
                    ctx.version
                ))),
                _ => Err(Error::refused(format!("check_compat failed: {detail}"))),
            };
        }
        let v = super::verdict(&snap, &ctx.target_product(&snap))?;
        if v.compatible {
            return Err(Error::refused(format!(
                "target {} is compatible with the running store; the incompatible process does not apply",
                ctx.version
            )));
        }
        Ok(StepOutcome::Done(v.reasons.join("; ")))
    }
}

/// `start_upgrade` / `start_warm`.
pub struct StartRegion(pub StartType);

impl StartRegion {
    /// Skipped when the region already runs at the wanted version.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let (h, r) = (need(s, "host")?, need(s, "region")?);
        let snap = ctx.pac.snapshot().await?;
        if let Some(ri) = snap.region(r).filter(|ri| ri.alive) {
            if ri.product_version == ctx.version {
                return Ok(StepOutcome::Skipped(format!(
                    "already running {} in store {}",
                    ri.product_version, ri.store
                )));
            }
            return Err(Error::refused(format!(
                "region {r} is running {} but should run {}; it was not stopped",
                ri.product_version, ctx.version
            )));
        }
        // A host whose agent restarted (or was reinstalled) since apply_update may be
        // back at the old version: install the wanted one first (skipped when it is).
        if ctx.driver.observes_hosts() {
            apply(ctx, h, &ctx.version).await?;
        }
        match ctx
            .driver
            .start(ctx.pac, h, r, &ctx.version, self.0, ctx.epoch, &ctx.actor)
            .await
        {
            // A template's exit 0 is not proof: the region must have joined a store.
            Ok(m) => {
                let v = ctx.version.clone();
                wait_region(ctx, r, ctx.plan.health.deadline, |ri| {
                    ri.is_some_and(|ri| ri.alive && ri.product_version == v && !ri.store.is_empty())
                })
                .await
                .map_err(|_| {
                    Error::refused(format!(
                        "{m}; but region {r} did not come up at {}",
                        ctx.version
                    ))
                })?;
                Ok(StepOutcome::Done(m))
            }
            Err(e)
                if !matches!(e, Error::Fenced { .. })
                    && ctx
                        .pac
                        .snapshot()
                        .await?
                        .region(r)
                        .is_some_and(|ri| ri.alive && ri.product_version == ctx.version) =>
            {
                Ok(StepOutcome::Done(format!("region up ({e})")))
            }
            Err(e) => Err(e),
        }
    }
}

/// `health_gate`: every region of the wave live, active, at the wanted version, for
/// `health.min_healthy` without interruption, within `health.deadline`.
pub struct HealthGate;

/// Why region `r` is not healthy at `version`, if it is not.
fn region_problem(snap: &Snapshot, r: &str, version: &str) -> Option<String> {
    match snap.region(r) {
        None => Some(format!("{r} has no record")),
        Some(ri) if !ri.alive => Some(format!("{r} is not alive")),
        Some(ri) if ri.state != "active" => Some(format!("{r} is {}", ri.state)),
        Some(ri) if ri.product_version != version => Some(format!(
            "{r} runs {} instead of {version}",
            ri.product_version
        )),
        Some(ri) if snap.store(&ri.store).is_none() => Some(format!("{r} is in no store")),
        _ => None,
    }
}

fn unhealthy(snap: &Snapshot, regions: &[(String, String)], version: &str) -> Option<String> {
    regions
        .iter()
        .find_map(|(_, r)| region_problem(snap, r, version))
}

impl HealthGate {
    /// Fails at the deadline naming the unhealthy region.
    pub async fn run(&self, ctx: &Ctx<'_>, s: &Step) -> Result<StepOutcome> {
        let wave = s.wave.unwrap_or(0);
        let regions = ctx.gate_regions(wave);
        gate(ctx, &regions, &ctx.version).await
    }
}

pub(super) async fn gate(
    ctx: &Ctx<'_>,
    regions: &[(String, String)],
    version: &str,
) -> Result<StepOutcome> {
    let h = ctx.plan.health;
    let end = Instant::now() + h.deadline;
    let mut since: Option<Instant> = None;
    let mut last_problem = String::from("not checked");
    // What `rollout status` shows: per region since when it has been healthy. Journaled
    // only when it changes.
    let prog = Progress::new(ctx.pac, ctx.epoch);
    let mut view = GateProgress {
        started_ms: now_ms(),
        deadline_ms: h.deadline.as_millis() as u64,
        min_healthy_ms: h.min_healthy.as_millis() as u64,
        healthy_since: regions.iter().map(|(_, r)| (r.clone(), None)).collect(),
        problem: Some("not checked yet".into()),
    };
    let mut shown: Option<GateProgress> = None;
    loop {
        let snap = ctx.pac.snapshot().await?;
        let now = now_ms();
        for (r, since) in view.healthy_since.iter_mut() {
            match region_problem(&snap, r, version) {
                None => {
                    since.get_or_insert(now);
                }
                Some(_) => *since = None,
            }
        }
        view.problem = unhealthy(&snap, regions, version);
        if shown.as_ref() != Some(&view) {
            prog.gate(&view).await;
            shown = Some(view.clone());
        }
        match view.problem.clone() {
            None => {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() >= h.min_healthy {
                    return Ok(StepOutcome::Done(format!(
                        "{} healthy for {}",
                        regions
                            .iter()
                            .map(|(_, r)| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        crate::names::format_duration(h.min_healthy)
                    )));
                }
            }
            Some(p) => {
                since = None;
                last_problem = p;
            }
        }
        if Instant::now() >= end {
            return Err(Error::refused(format!(
                "health gate timed out after {}: {last_problem}",
                crate::names::format_duration(h.deadline)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `set_mode_running` / `set_mode_quiesce`.
pub struct SetMode(pub Mode);

impl SetMode {
    /// Skipped when there is nothing to change.
    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<StepOutcome> {
        let snap = ctx.pac.snapshot().await?;
        let nothing = match self.0 {
            Mode::Running => snap
                .store(&ctx.version)
                .is_some_and(|s| s.mode == Mode::Running),
            _ => {
                let n = snap.stores.len();
                n < 2 || snap.stores[..n - 1].iter().all(|s| s.mode != Mode::Running)
            }
        };
        if nothing {
            return Ok(StepOutcome::Skipped(format!("nothing to set {}", self.0)));
        }
        let m = ctx
            .driver
            .set_mode(ctx.pac, self.0, &ctx.version, ctx.epoch, &ctx.actor)
            .await?;
        Ok(StepOutcome::Done(m))
    }
}

/// `verify`: the end state before the old store goes.
pub struct Verify;

impl Verify {
    /// Fails naming what is not as it should be.
    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<StepOutcome> {
        let snap = ctx.pac.snapshot().await?;
        let all = ctx.plan.all_regions();
        if let Some(p) = unhealthy(&snap, &all, &ctx.version) {
            return Err(Error::refused(format!("verify: {p}")));
        }
        match ctx.process {
            Process::Incompatible => {
                let newest = snap.newest().map(|s| s.version.clone()).unwrap_or_default();
                if newest != ctx.version {
                    return Err(Error::refused(format!(
                        "verify: newest store is {newest}, not {}",
                        ctx.version
                    )));
                }
                let old_live: Vec<String> = snap
                    .stores
                    .iter()
                    .filter(|s| s.version != newest)
                    .flat_map(|s| {
                        s.live_members
                            .iter()
                            .map(move |m| format!("{m} in {}", s.version))
                    })
                    .collect();
                if !old_live.is_empty() {
                    return Err(Error::refused(format!(
                        "verify: live regions remain in old stores: {}",
                        old_live.join(", ")
                    )));
                }
                Ok(StepOutcome::Done(format!(
                    "every region runs {} in store {newest}",
                    ctx.version
                )))
            }
            Process::Compatible => {
                let store = snap
                    .newest_running()
                    .map(|s| s.version.clone())
                    .ok_or_else(|| Error::refused("verify: no running store"))?;
                ctx.pac
                    .set_running_version(&store, &ctx.version, ctx.epoch)
                    .await?;
                Ok(StepOutcome::Done(format!(
                    "every region runs {}; store {store} now records version {}",
                    ctx.version, ctx.version
                )))
            }
        }
    }
}

/// `remove_old`: delete the old store (incremental, idempotent).
pub struct RemoveOld;

impl RemoveOld {
    /// Skipped when no old store is left.
    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<StepOutcome> {
        let snap = ctx.pac.snapshot().await?;
        if snap.stores.len() < 2 && snap.removing.is_empty() {
            return Ok(StepOutcome::Skipped("no old store left".into()));
        }
        let m = ctx
            .driver
            .remove_old(ctx.pac, ctx.epoch, &ctx.actor)
            .await?;
        Ok(StepOutcome::Done(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(&format!(
            r#"{{"pac": "MyPAC", "target": {{"version": "2.0.0"}},
               "hosts": [{{"name": "host1", "regions": ["REGION1", "REGION1B"]}},
                         {{"name": "host2", "regions": ["REGION2"]}}]{extra}}}"#
        ))
        .unwrap()
    }

    fn names(s: &[Step]) -> Vec<String> {
        s.iter()
            .map(|s| {
                format!(
                    "{}{}",
                    s.action,
                    s.region
                        .as_ref()
                        .map(|r| format!(":{r}"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn incompatible_after_first_wave_follows_the_documented_process_with_an_early_flip() {
        let s = steps(&plan(""), Process::Incompatible);
        assert_eq!(
            names(&s),
            [
                "preflight",
                "listener_off:REGION1",
                "listener_off:REGION1B",
                "drain:REGION1",
                "drain:REGION1B",
                "stop:REGION1",
                "stop:REGION1B",
                "apply_update",
                "check_compat",
                "start_upgrade:REGION1",
                "start_warm:REGION1B",
                "health_gate",
                "set_mode_running",
                "listener_on:REGION1",
                "listener_on:REGION1B",
                "set_mode_quiesce",
                "listener_off:REGION2",
                "drain:REGION2",
                "stop:REGION2",
                "apply_update",
                "start_warm:REGION2",
                "health_gate",
                "listener_on:REGION2",
                "verify",
                "remove_old",
            ]
        );
        assert!(s.iter().enumerate().all(|(i, st)| st.n == i));
    }

    #[test]
    fn after_all_waves_flips_at_the_end() {
        let s = names(&steps(
            &plan(r#", "mode_flip": "after_all_waves""#),
            Process::Incompatible,
        ));
        let flip = s.iter().position(|a| a == "set_mode_running").unwrap();
        let last_start = s.iter().rposition(|a| a.starts_with("start_warm")).unwrap();
        assert!(flip > last_start);
        assert_eq!(s.iter().filter(|a| a.starts_with("listener_on")).count(), 3);
    }

    #[test]
    fn compatible_is_a_rolling_restart() {
        let s = names(&steps(&plan(""), Process::Compatible));
        assert!(!s.iter().any(|a| a.starts_with("start_upgrade")
            || a == "remove_old"
            || a.starts_with("set_mode")));
        assert_eq!(s.last().unwrap(), "verify");
        assert_eq!(s.iter().filter(|a| *a == "health_gate").count(), 2);
    }
}
