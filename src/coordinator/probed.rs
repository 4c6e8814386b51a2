//! The command driver's steps: real regions write nothing pacup can read, so every step
//! observes a region through the plan's `region_state` template (and the stores through
//! `store_state`, when given) instead of pacup's region and host records, polled with
//! backoff within the step's bound. As with the agent driver, a step observes before it
//! acts and does only what is missing, and a template's exit 0 is not proof: the probe
//! must confirm the stop or start.

use super::actions::{Ctx, StepOutcome};
use super::probe::{Listener, Observed, RegionState, StoreMode};
use super::progress::{GateProgress, Progress};
use super::steps::{GateScope, On, Process};
use crate::error::{Error, Result};
use crate::names::format_duration;
use crate::psor::{now_ms, Mode};
use std::time::{Duration, Instant};

/// Polling with backoff: 100 ms doubling up to 1 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    /// Sleeps the next interval, never past `end`.
    async fn wait(&mut self, end: Instant) {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(self.0.min(left)).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
    }
}

/// How long a step waits for a region whose probe fails or answers `unknown` (its host
/// unreachable or cut off) before it fails naming it: as long as the agent driver waits
/// for an unseen region, and at most half the progress deadline.
fn grace(ctx: &Ctx<'_>) -> Duration {
    Duration::from_secs(20).min(ctx.plan.progress_deadline / 2)
}

/// The region's state once its probe answers with a known state, within [`grace`].
async fn settle(ctx: &Ctx<'_>, o: &On) -> Result<Observed> {
    let end = Instant::now() + grace(ctx);
    let mut b = Backoff::new();
    loop {
        let r = ctx.driver.region_state(ctx.pac, &o.host, &o.region).await;
        let why = match r {
            Ok(obs) if obs.state != RegionState::Unknown => return Ok(obs),
            Ok(_) => format!(
                "region_state of {} on {} says unknown; the coordinator does not act on a \
                 region it cannot see: bring the host back, then resume",
                o.region, o.host
            ),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= end {
            return Err(Error::refused(why));
        }
        b.wait(end).await;
    }
}

/// Polls the region until `ok` holds or `bound` passes; `Err` carries the last answer.
async fn wait_for(
    ctx: &Ctx<'_>,
    o: &On,
    bound: Duration,
    ok: impl Fn(&Observed) -> bool,
) -> std::result::Result<Observed, String> {
    let end = Instant::now() + bound;
    let mut b = Backoff::new();
    loop {
        let last = match ctx.driver.region_state(ctx.pac, &o.host, &o.region).await {
            Ok(obs) if ok(&obs) => return Ok(obs),
            Ok(obs) => format!("region_state says {}", obs.state),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= end {
            return Err(last);
        }
        b.wait(end).await;
    }
}

fn is(state: RegionState) -> impl Fn(&Observed) -> bool {
    move |o| o.state == state
}

/// `listener_off` / `listener_on`: skipped when the region is stopped (off) or its probe
/// shows the listener already as wanted.
pub(super) async fn listener(ctx: &Ctx<'_>, o: &On, on: bool) -> Result<StepOutcome> {
    let obs = settle(ctx, o).await?;
    let want = if on { Listener::On } else { Listener::Off };
    if obs.state == RegionState::Running && obs.listener == Some(want) {
        return Ok(StepOutcome::Skipped(format!(
            "listener already {}",
            if on { "on" } else { "off" }
        )));
    }
    if !on && obs.state == RegionState::Stopped {
        return Ok(StepOutcome::Skipped("region not running".into()));
    }
    let m = ctx
        .driver
        .listener(ctx.pac, &o.host, &o.region, on, ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// `drain`: waits until the probe counts no client, within the drain timeout; a probe
/// that gives no client count waits the whole drain timeout. Never fails: clients still
/// connected at the timeout are cut by the stop.
pub(super) async fn drain(ctx: &Ctx<'_>, o: &On) -> Result<StepOutcome> {
    let obs = settle(ctx, o).await?;
    if obs.state == RegionState::Stopped {
        return Ok(StepOutcome::Skipped("region not running".into()));
    }
    let bound = ctx.plan.drain_timeout;
    if obs.clients.is_none() {
        tokio::time::sleep(bound).await;
        return Ok(StepOutcome::Done(format!(
            "region_state gives no client count: waited the drain timeout {}",
            format_duration(bound)
        )));
    }
    match wait_for(ctx, o, bound, |x| {
        x.clients == Some(0) || x.state == RegionState::Stopped
    })
    .await
    {
        Ok(_) => Ok(StepOutcome::Done("no client connected".into())),
        Err(last) => Ok(StepOutcome::Done(format!(
            "clients still connected after the drain timeout ({last}); the stop cuts them"
        ))),
    }
}

/// `stop`: skipped when stopped; an earlier stop still running is waited for; after the
/// template the probe must say `stopped` within `stop_timeout` (+5 s).
pub(super) async fn stop(ctx: &Ctx<'_>, o: &On) -> Result<StepOutcome> {
    let obs = settle(ctx, o).await?;
    let bound = ctx.plan.stop_timeout + Duration::from_secs(5);
    if obs.state == RegionState::Stopped {
        return Ok(StepOutcome::Skipped("region not running".into()));
    }
    // A stop sent before a coordinator crash may still be running: wait for it first.
    if obs.state == RegionState::Stopping
        && wait_for(ctx, o, bound, is(RegionState::Stopped))
            .await
            .is_ok()
    {
        return Ok(StepOutcome::Done("an earlier stop finished".into()));
    }
    let p = ctx.plan;
    let r = ctx
        .driver
        .stop(
            ctx.pac,
            &o.host,
            &o.region,
            p.drain_timeout,
            p.stop_timeout,
            ctx.epoch,
            ctx.actor,
        )
        .await;
    match r {
        Ok(m) => {
            wait_for(ctx, o, bound, is(RegionState::Stopped))
                .await
                .map_err(|last| {
                    Error::refused(format!(
                        "{m}; but region {} is not stopped: {last}",
                        o.region
                    ))
                })?;
            Ok(StepOutcome::Done(m))
        }
        Err(e) if matches!(e, Error::Fenced { .. }) => Err(e),
        // The stop may have completed through another path: what counts is the probe.
        Err(e) => match ctx.driver.region_state(ctx.pac, &o.host, &o.region).await {
            Ok(x) if x.state == RegionState::Stopped => {
                Ok(StepOutcome::Done(format!("region down ({e})")))
            }
            _ => Err(e),
        },
    }
}

/// `apply_update`: every region of the host must be stopped first (one that came back
/// since its stop step is stopped again); the template must be safe to run twice, as
/// nothing pacup can read says what a real host has installed.
pub(super) async fn apply_update(ctx: &Ctx<'_>, host: &str) -> Result<StepOutcome> {
    let version = ctx.version_of(host);
    if let Some(hp) = ctx.plan.host(host) {
        for r in &hp.regions {
            let o = On {
                host: host.to_string(),
                region: r.to_string(),
            };
            if settle(ctx, &o).await?.state != RegionState::Stopped {
                listener(ctx, &o, false).await?;
                stop(ctx, &o).await?;
            }
        }
    }
    let m = ctx
        .driver
        .apply_update(ctx.pac, host, &version, ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// `start_upgrade` / `start_warm`: skipped when the probe says running; after the
/// template the probe must say `running` within `health.deadline`. A region whose probe
/// shows its listener on is turned off again: clients wait for the gate.
pub(super) async fn start(
    ctx: &Ctx<'_>,
    o: &On,
    st: crate::region::StartType,
) -> Result<StepOutcome> {
    let version = ctx.version_of(&o.host);
    let obs = settle(ctx, o).await?;
    let bound = ctx.plan.health.deadline;
    let running = is(RegionState::Running);
    let m = match obs.state {
        RegionState::Running => {
            return Ok(StepOutcome::Skipped(
                "region_state says running already".into(),
            ))
        }
        RegionState::Starting => match wait_for(ctx, o, bound, &running).await {
            Ok(_) => "an earlier start finished".to_string(),
            Err(_) => start_now(ctx, o, &version, st).await?,
        },
        _ => start_now(ctx, o, &version, st).await?,
    };
    let up = wait_for(ctx, o, bound, &running).await.map_err(|last| {
        Error::refused(format!(
            "{m}; but region {} did not come up at {version}: {last}",
            o.region
        ))
    })?;
    if up.listener == Some(Listener::On) {
        ctx.driver
            .listener(ctx.pac, &o.host, &o.region, false, ctx.epoch, ctx.actor)
            .await?;
    }
    Ok(StepOutcome::Done(m))
}

async fn start_now(
    ctx: &Ctx<'_>,
    o: &On,
    version: &str,
    st: crate::region::StartType,
) -> Result<String> {
    match ctx
        .driver
        .start(
            ctx.pac, &o.host, &o.region, version, st, ctx.epoch, ctx.actor,
        )
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if matches!(e, Error::Fenced { .. }) => Err(e),
        Err(e) => match ctx.driver.region_state(ctx.pac, &o.host, &o.region).await {
            Ok(x) if x.state == RegionState::Running => Ok(format!("region up ({e})")),
            _ => Err(e),
        },
    }
}

/// `health_gate`: every region of the scope `running` by its probe for `min_healthy`
/// without interruption, within `health.deadline`; a region seen running in this gate
/// that then reads `stopped` fails it at once. The probes of one poll run concurrently.
pub(super) async fn gate(ctx: &Ctx<'_>, scope: GateScope) -> Result<StepOutcome> {
    let regions: Vec<On> = match scope {
        GateScope::Wave(w) => ctx.plan.wave_regions(w),
        GateScope::All => ctx.plan.all_regions(),
    }
    .into_iter()
    .map(|(host, region)| On { host, region })
    .collect();
    let (deadline, min_healthy) = (ctx.plan.health.deadline, ctx.min_healthy());
    let end = Instant::now() + deadline;
    let prog = Progress::new(ctx.pac, ctx.epoch);
    let mut view = GateProgress {
        started_ms: now_ms(),
        deadline_ms: deadline.as_millis() as u64,
        min_healthy_ms: min_healthy.as_millis() as u64,
        healthy_since: regions.iter().map(|o| (o.region.clone(), None)).collect(),
        problem: Some("not checked yet".into()),
    };
    let mut shown: Option<GateProgress> = None;
    let mut since: Option<Instant> = None;
    let mut b = Backoff::new();
    loop {
        let answers = futures_util::future::join_all(
            regions
                .iter()
                .map(|o| ctx.driver.region_state(ctx.pac, &o.host, &o.region)),
        )
        .await;
        let now = now_ms();
        let mut first = None;
        for (o, a) in regions.iter().zip(&answers) {
            let slot = view.healthy_since.get_mut(&o.region).expect("gate region");
            let problem = match a {
                Ok(x) if x.state == RegionState::Running => None,
                Ok(x) if x.state == RegionState::Stopped && slot.is_some() => {
                    return Err(Error::refused(format!(
                        "health gate failed: {} stopped during the gate (region_state says \
                         stopped after running)",
                        o.region
                    )));
                }
                Ok(x) => Some(format!("{} is {} (region_state)", o.region, x.state)),
                Err(e) => Some(e.to_string()),
            };
            match problem {
                None => {
                    slot.get_or_insert(now);
                }
                Some(_) => *slot = None,
            }
            if first.is_none() {
                first = problem;
            }
        }
        view.problem = first.clone();
        if shown.as_ref() != Some(&view) {
            prog.gate(&view).await;
            shown = Some(view.clone());
        }
        let why = match first {
            None => {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() >= min_healthy {
                    let names: Vec<&str> = regions.iter().map(|o| o.region.as_str()).collect();
                    return Ok(StepOutcome::Done(format!(
                        "{} running for {} (region_state)",
                        names.join(", "),
                        format_duration(min_healthy)
                    )));
                }
                format!(
                    "every region running, but for less than {}",
                    format_duration(min_healthy)
                )
            }
            Some(p) => {
                since = None;
                p
            }
        };
        if Instant::now() >= end {
            return Err(Error::refused(format!(
                "health gate timed out after {}: {why}",
                format_duration(deadline)
            )));
        }
        b.wait(end).await;
    }
}

/// `verify`: every region `running` by its probe, and, with a `store_state` template,
/// the target's store running and (incompatible process) no other store running.
pub(super) async fn verify(ctx: &Ctx<'_>) -> Result<StepOutcome> {
    let target = ctx.target();
    for (host, region) in ctx.plan.all_regions() {
        let o = On { host, region };
        let obs = settle(ctx, &o).await?;
        if obs.state != RegionState::Running {
            return Err(Error::refused(format!(
                "verify: {} is {} (region_state)",
                o.region, obs.state
            )));
        }
    }
    let Some(stores) = ctx.driver.store_state(ctx.pac, &target).await else {
        return Ok(StepOutcome::Done(
            "every region running (region_state); no store_state template: stores not checked"
                .into(),
        ));
    };
    let stores = stores.map_err(|e| Error::refused(format!("verify: {e}")))?;
    let running: Vec<&str> = stores
        .iter()
        .filter(|s| s.mode == StoreMode::Running)
        .map(|s| s.version.as_str())
        .collect();
    match ctx.process {
        Process::Incompatible if running != [target.as_str()] => Err(Error::refused(format!(
            "verify: store_state shows running stores [{}]; expected only {target}",
            running.join(", ")
        ))),
        Process::Compatible if running.len() != 1 => Err(Error::refused(format!(
            "verify: store_state shows running stores [{}]; expected exactly one",
            running.join(", ")
        ))),
        _ => Ok(StepOutcome::Done(format!(
            "every region running (region_state); store {} running (store_state)",
            running.join(", ")
        ))),
    }
}

/// `set_mode_*` by template: skipped when `store_state` shows nothing to change, else
/// the template's exit code decides.
pub(super) async fn set_mode(ctx: &Ctx<'_>, mode: Mode) -> Result<StepOutcome> {
    let target = ctx.target();
    if let Some(stores) = ctx.driver.store_state(ctx.pac, &target).await {
        let stores = stores?;
        let nothing = match mode {
            Mode::Running => stores
                .iter()
                .any(|s| s.version == target && s.mode == StoreMode::Running),
            _ => !stores
                .iter()
                .any(|s| s.version != target && s.mode == StoreMode::Running),
        };
        if nothing {
            return Ok(StepOutcome::Skipped(format!(
                "nothing to set {mode} (store_state)"
            )));
        }
    }
    let m = ctx
        .driver
        .set_mode(ctx.pac, mode, &target, ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// `remove_old` by template: skipped when `store_state` shows only the target's store.
pub(super) async fn remove_old(ctx: &Ctx<'_>) -> Result<StepOutcome> {
    let target = ctx.target();
    if let Some(stores) = ctx.driver.store_state(ctx.pac, &target).await {
        if stores?.iter().all(|s| s.version == target) {
            return Ok(StepOutcome::Skipped(
                "no old store left (store_state)".into(),
            ));
        }
    }
    let m = ctx
        .driver
        .remove_old(ctx.pac, &target, ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// Preflight of a command-driver plan: every read-only template runs once before any
/// region stops, so a wrong credential, an unreachable host or a broken probe surfaces
/// now: `region_state` of every region (each must be running) and `host_check` of every
/// host, all at once; the problems, in plan order. (`store_state` ran before, when
/// preflight read the stores through it.)
pub(super) async fn preflight_problems(
    pac: &crate::psor::Pac,
    plan: &super::plan::Plan,
    driver: &super::driver::Driver,
) -> Vec<String> {
    use futures_util::future::join_all;
    let regions = plan.all_regions();
    let probes = join_all(regions.iter().map(|(h, r)| driver.region_state(pac, h, r)));
    let hosts = join_all(
        plan.hosts
            .iter()
            .map(|h| driver.check(pac, "host_check", h.name.as_str())),
    );
    let (probes, hosts) = tokio::join!(probes, hosts);
    let mut out = Vec::new();
    for ((h, r), p) in regions.iter().zip(probes) {
        match p {
            Ok(o) if o.state == RegionState::Running => {}
            Ok(o) => out.push(format!(
                "region {r} on {h}: region_state says {}, not running",
                o.state
            )),
            Err(e) => out.push(format!("region {r} on {h}: {e}")),
        }
    }
    for (hp, c) in plan.hosts.iter().zip(hosts) {
        if let Some(Err(e)) = c {
            out.push(format!("host {}: host_check failed: {e}", hp.name));
        }
    }
    out
}
