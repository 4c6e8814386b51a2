//! Running one step: every step first observes the real state (only the keys it acts on,
//! read in one pipeline) and does only what is still missing, so a step re-run after a
//! coordinator crash neither repeats an action nor skips one.

use super::driver::Driver;
use super::observe::{after_failure, alive_now, host_seen, known_down, AfterFailure};
use super::plan::Plan;
use super::steps::{old_version, On, Process, Step, StepKind};
use crate::error::{Error, Result};
use crate::psor::{Mode, Pac, RegionInfo};
use crate::region::StartType;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which way the PAC is moving.
#[derive(Debug, Clone)]
pub enum Moving {
    /// To the plan's target.
    Forward,
    /// Back to the versions the hosts had.
    Back {
        /// The old store's version.
        from: String,
        /// Each host's version at the start.
        host_versions: BTreeMap<String, String>,
        /// Incident mode: no `min_healthy` wait.
        fast: bool,
    },
}

/// Everything a step needs.
pub struct Ctx<'a> {
    /// The PAC.
    pub pac: &'a Pac,
    /// The plan.
    pub plan: &'a Plan,
    /// The decided process.
    pub process: Process,
    /// Our fencing epoch.
    pub epoch: u64,
    /// How to act on regions.
    pub driver: &'a Driver,
    /// Forward or back.
    pub moving: &'a Moving,
    /// Who we are, for the PSOR's audit fields.
    pub actor: &'a str,
}

impl Ctx<'_> {
    /// The plan's target version.
    pub fn target(&self) -> String {
        self.plan.target.version.to_string()
    }

    /// The version host `h` is being moved to.
    pub fn version_of(&self, h: &str) -> String {
        match self.moving {
            Moving::Forward => self.target(),
            Moving::Back {
                from,
                host_versions,
                ..
            } => old_version(host_versions, from, h),
        }
    }

    pub(super) fn min_healthy(&self) -> Duration {
        match self.moving {
            Moving::Back { fast: true, .. } => Duration::ZERO,
            _ => self.plan.health.min_healthy,
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Did something.
    Done(String),
    /// Observed it was already done.
    Skipped(String),
}

/// Runs one step.
pub async fn run(ctx: &Ctx<'_>, step: &Step) -> Result<StepOutcome> {
    if ctx.driver.probes() {
        if let Some(r) = run_probed(ctx, step).await {
            return r;
        }
    }
    match &step.kind {
        StepKind::Preflight => Ok(StepOutcome::Skipped(
            "done before the journal was written".into(),
        )),
        StepKind::ListenerOff(o) => listener(ctx, o, false).await,
        StepKind::ListenerOn(o) => listener(ctx, o, true).await,
        StepKind::Drain(o) => drain(ctx, o).await,
        StepKind::Stop(o) => stop(ctx, o).await,
        StepKind::ApplyUpdate { host } => apply_update(ctx, host).await,
        StepKind::CheckCompat => super::store_steps::check_compat(ctx).await,
        StepKind::StartUpgrade(o) => start(ctx, o, StartType::Upgrade).await,
        StepKind::StartWarm(o) => start(ctx, o, StartType::Warm).await,
        StepKind::HealthGate(scope) => super::gate::gate(ctx, *scope).await,
        StepKind::SetModeRunning => super::store_steps::set_mode(ctx, Mode::Running).await,
        StepKind::SetModeQuiesce => super::store_steps::set_mode(ctx, Mode::Quiesce).await,
        StepKind::Unquiesce { store } => super::store_steps::unquiesce(ctx, store).await,
        StepKind::Verify => verify(ctx).await,
        StepKind::RemoveOld => super::store_steps::remove_old(ctx).await,
        StepKind::RemoveStore { store } => super::store_steps::remove_store(ctx, store).await,
        StepKind::Backup(phase) => super::safety::backup(ctx, *phase).await,
        StepKind::HostCheck(wave) => super::safety::host_check(ctx, *wave).await,
    }
}

/// The command driver's steps that observe through its templates rather than pacup's
/// records (`None`: the step is the same for both drivers).
async fn run_probed(ctx: &Ctx<'_>, step: &Step) -> Option<Result<StepOutcome>> {
    use super::probed as p;
    Some(match &step.kind {
        StepKind::ListenerOff(o) => p::listener(ctx, o, false).await,
        StepKind::ListenerOn(o) => p::listener(ctx, o, true).await,
        StepKind::Drain(o) => p::drain(ctx, o).await,
        StepKind::Stop(o) => p::stop(ctx, o).await,
        StepKind::ApplyUpdate { host } => p::apply_update(ctx, host).await,
        StepKind::StartUpgrade(o) => p::start(ctx, o, StartType::Upgrade).await,
        StepKind::StartWarm(o) => p::start(ctx, o, StartType::Warm).await,
        StepKind::HealthGate(scope) => p::gate(ctx, *scope).await,
        StepKind::Verify => p::verify(ctx).await,
        StepKind::SetModeRunning if ctx.driver.has("set_mode_running") => {
            p::set_mode(ctx, Mode::Running).await
        }
        StepKind::SetModeQuiesce if ctx.driver.has("set_mode_quiesce") => {
            p::set_mode(ctx, Mode::Quiesce).await
        }
        StepKind::RemoveOld if ctx.driver.has("remove_old") => p::remove_old(ctx).await,
        _ => return None,
    })
}

/// A region whose heartbeat expired without it ever leaving its store: its host may be
/// cut off (and the region still running behind the cut) or it crashed. Either way the
/// coordinator must not treat it as stopped: only its host agent coming back (which
/// either revives or cleans it) settles which.
pub(super) fn unseen(ri: &RegionInfo) -> bool {
    !ri.alive && !ri.state.is_empty() && ri.state != "stopped"
}

fn unseen_error(ri: &RegionInfo, host: &str) -> Error {
    Error::refused(format!(
        "region {} on {host} stopped heartbeating without leaving its store (host cut off, or \
         crashed); the coordinator does not act on a host it cannot see: bring the host \
         back or restart its agent (which cleans the region up), then resume",
        ri.name
    ))
}

/// How long a step waits for an unseen region to be seen again (its host reconnecting)
/// before it fails: a few heartbeat intervals of any sane configuration.
pub(super) const UNSEEN_GRACE: Duration = Duration::from_secs(20);

/// How often a waiting step re-reads what it waits for.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// The region's record once it is not unseen (waiting up to [`UNSEEN_GRACE`], and at
/// most half the progress deadline, so the failure names the region rather than the
/// deadline); fails naming it if it stays so. A region that stopped heartbeating on a
/// host whose agent is seen died there: that is settled (not running) at once.
async fn settle(ctx: &Ctx<'_>, o: &On) -> Result<RegionInfo> {
    let end = Instant::now() + UNSEEN_GRACE.min(ctx.plan.progress_deadline / 2);
    loop {
        let ri = ctx.pac.region(&o.region).await?;
        if !unseen(&ri) || (ctx.driver.observes_hosts() && known_down(ctx, &o.host, &ri).await?) {
            return Ok(ri);
        }
        if Instant::now() >= end {
            return Err(unseen_error(&ri, &o.host));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `listener_off` / `listener_on`: skipped when the region is not alive (off) or the
/// listener is already as wanted.
async fn listener(ctx: &Ctx<'_>, o: &On, on: bool) -> Result<StepOutcome> {
    let ri = settle(ctx, o).await?;
    let want = if on { "on" } else { "off" };
    if ri.alive && ri.listener == want {
        return Ok(StepOutcome::Skipped(format!("listener already {want}")));
    }
    if !ri.alive && !on {
        return Ok(StepOutcome::Skipped("region not running".into()));
    }
    match ctx
        .driver
        .listener(ctx.pac, &o.host, &o.region, on, ctx.epoch, ctx.actor)
        .await
    {
        Ok(m) => Ok(StepOutcome::Done(m)),
        // A region that died within its TTL refuses the command: with its listener gone
        // with it, there is nothing to switch off.
        Err(e)
            if !on
                && !matches!(e, Error::Fenced { .. })
                && after_failure(ctx, &o.host, &o.region).await? == AfterFailure::Down =>
        {
            Ok(StepOutcome::Skipped(format!("region not running ({e})")))
        }
        Err(e) => Err(e),
    }
}

/// `drain`: waits until the region's clients are gone (bounded by the drain timeout).
/// Never fails: clients still connected at the timeout are cut by the stop.
async fn drain(ctx: &Ctx<'_>, o: &On) -> Result<StepOutcome> {
    settle(ctx, o).await?;
    let end = Instant::now() + ctx.plan.drain_timeout;
    loop {
        let ri = ctx.pac.region(&o.region).await?;
        if unseen(&ri) && !known_down(ctx, &o.host, &ri).await? {
            return Err(unseen_error(&ri, &o.host));
        }
        if !ri.alive {
            return Ok(StepOutcome::Skipped("region not running".into()));
        }
        if ri.clients == 0 {
            return Ok(StepOutcome::Done("no client connected".into()));
        }
        if Instant::now() >= end {
            return Ok(StepOutcome::Done(format!(
                "{} clients still connected after the drain timeout; the stop cuts them",
                ri.clients
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `ok` holds for the region's record, or `bound` passes.
async fn wait_region(
    ctx: &Ctx<'_>,
    region: &str,
    bound: Duration,
    ok: impl Fn(&RegionInfo) -> bool,
) -> Result<()> {
    let end = Instant::now() + bound;
    loop {
        if ok(&ctx.pac.region(region).await?) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(Error::refused(format!(
                "region {region} did not reach the expected state"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `stop`: graceful stop (forced past the stop timeout); skipped when not alive. A stop
/// that fails or goes unanswered counts as done only when the region is seen down (see
/// [`after_failure`]): a region on a silent (frozen, cut off) host is waited for and
/// stopped once its host is seen again, or the step fails; it is never assumed stopped.
async fn stop(ctx: &Ctx<'_>, o: &On) -> Result<StepOutcome> {
    match stop_once(ctx, o).await? {
        Ok(done) => Ok(done),
        // Settling waits for the silent host; the stop is then sent again.
        Err(_) => match stop_once(ctx, o).await? {
            Ok(done) => Ok(done),
            Err(ri) => Err(unseen_error(&ri, &o.host)),
        },
    }
}

/// One attempt of [`stop`]: `Err(record)` when the region and its host went silent.
async fn stop_once(ctx: &Ctx<'_>, o: &On) -> Result<std::result::Result<StepOutcome, RegionInfo>> {
    let ri = settle(ctx, o).await?;
    let bound = ctx.plan.stop_timeout + Duration::from_secs(5);
    if ri.alive && ri.state == "stopping" {
        // A stop sent before a coordinator crash is still running: wait for it.
        if wait_region(ctx, &o.region, bound, |ri| !ri.alive)
            .await
            .is_ok()
        {
            return Ok(Ok(StepOutcome::Done("an earlier stop finished".into())));
        }
    } else if !ri.alive {
        return Ok(Ok(StepOutcome::Skipped("region not running".into())));
    }
    let p = ctx.plan;
    match ctx
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
        .await
    {
        // A template's exit 0 is not proof: the region must be down in the PSOR.
        Ok(m) => {
            wait_region(ctx, &o.region, bound, |ri| !ri.alive)
                .await
                .map_err(|_| {
                    Error::refused(format!("{m}; but region {} is still alive", o.region))
                })?;
            Ok(Ok(StepOutcome::Done(m)))
        }
        Err(e @ Error::Fenced { .. }) => Err(e),
        // The stop may have completed through another path (an earlier command), or the
        // region died: what counts is that it is seen down now.
        Err(e) => match after_failure(ctx, &o.host, &o.region).await? {
            AfterFailure::Down => Ok(Ok(StepOutcome::Done(format!("region down ({e})")))),
            AfterFailure::Running => Err(e),
            AfterFailure::Unseen => Ok(Err(ctx.pac.region(&o.region).await?)),
        },
    }
}

/// `apply_update`: installs the version on a host (the target, or the old one in a
/// rollback); skipped when the host's record already shows it.
async fn apply_update(ctx: &Ctx<'_>, host: &str) -> Result<StepOutcome> {
    let version = ctx.version_of(host);
    let regions: Vec<On> = ctx
        .plan
        .host(host)
        .map(|hp| {
            hp.regions
                .iter()
                .map(|r| On {
                    host: host.to_string(),
                    region: r.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = regions.iter().map(|o| o.region.as_str()).collect();
    let infos = ctx.pac.regions(&names).await?;
    // A region that crashed on a host whose agent is alive is not running there (the
    // agent refuses the update if it were); a rollback recovers from exactly that.
    let agent_alive =
        ctx.driver.observes_hosts() && ctx.pac.hosts(&[host]).await?.iter().any(|h| h.alive);
    let back = matches!(ctx.moving, Moving::Back { .. });
    // A region of this host that came back to life since its stop step (its host was cut
    // off and reconnected) must stop first: an update is refused while it runs.
    for (o, ri) in regions.iter().zip(infos) {
        let ri = if unseen(&ri) && !agent_alive && !back {
            settle(ctx, o).await?
        } else {
            ri
        };
        if ri.alive && ri.product_version != version {
            listener(ctx, o, false).await?;
            stop(ctx, o).await?;
        }
    }
    apply(ctx, host, &version).await
}

async fn apply(ctx: &Ctx<'_>, host: &str, version: &str) -> Result<StepOutcome> {
    let hi = ctx.pac.hosts(&[host]).await?;
    if hi.iter().any(|h| h.product_version == version) {
        return Ok(StepOutcome::Skipped(format!("host already at {version}")));
    }
    let m = match ctx
        .driver
        .apply_update(ctx.pac, host, version, ctx.epoch, ctx.actor)
        .await
    {
        Err(e) if !matches!(e, Error::Fenced { .. }) && host_seen(ctx, host).await? => {
            // Sent again once the agent is seen (it may have restarted): skipped if the
            // first one did land.
            if ctx
                .pac
                .hosts(&[host])
                .await?
                .iter()
                .any(|h| h.product_version == version)
            {
                format!("host at {version} ({e})")
            } else {
                ctx.driver
                    .apply_update(ctx.pac, host, version, ctx.epoch, ctx.actor)
                    .await?
            }
        }
        r => r?,
    };
    Ok(StepOutcome::Done(m))
}

/// The store a started region must be in, when the process decides it: the target's in
/// an incompatible rollout, the old one in its rollback.
fn wanted_store(ctx: &Ctx<'_>) -> Option<String> {
    match (ctx.moving, ctx.process) {
        (Moving::Forward, Process::Incompatible) => Some(ctx.target()),
        (Moving::Back { from, .. }, Process::Incompatible) => Some(from.clone()),
        _ => None,
    }
}

/// `start_upgrade` / `start_warm`: skipped when the region already runs at the wanted
/// version (in the wanted store). The region starts with its listener off;
/// `listener_on` follows the gate. A region found up at another version or in another
/// store (its agent restarted and autostarted it from a stale installation, say) is
/// repaired: listener off, stopped, its host updated, started again.
async fn start(ctx: &Ctx<'_>, o: &On, st: StartType) -> Result<StepOutcome> {
    let version = ctx.version_of(&o.host);
    // A key that outlives a dead region is not a running region: start it.
    let ri = alive_now(ctx, &o.region).await?;
    let mut repaired = String::new();
    if ri.alive {
        let store_ok = wanted_store(ctx).is_none_or(|s| s == ri.store);
        if ri.product_version == version && store_ok {
            return Ok(StepOutcome::Skipped(format!(
                "already running {} in store {}",
                ri.product_version, ri.store
            )));
        }
        listener(ctx, o, false).await?;
        stop(ctx, o).await?;
        repaired = format!(
            " (it was up at {} in store {}: stopped and started again)",
            ri.product_version, ri.store
        );
    }
    let up = |ri: &RegionInfo| ri.alive && ri.product_version == version && !ri.store.is_empty();
    let mut sent = 0;
    let m = loop {
        // A host whose agent restarted (or was reinstalled) since apply_update may be back
        // at the old version: install the wanted one first (skipped when it is).
        if ctx.driver.observes_hosts() {
            apply(ctx, &o.host, &version).await?;
        }
        let r = ctx
            .driver
            .start(
                ctx.pac, &o.host, &o.region, &version, st, ctx.epoch, ctx.actor,
            )
            .await;
        sent += 1;
        match r {
            // An agent that died (and was restarted) before answering: send it again.
            Err(e)
                if sent == 1
                    && !matches!(e, Error::Fenced { .. })
                    && !up(&ctx.pac.region(&o.region).await?)
                    && host_seen(ctx, &o.host).await? =>
            {
                tracing::info!(
                    "start of {} not confirmed ({e}); sending it again",
                    o.region
                );
                if up(&ctx.pac.region(&o.region).await?) {
                    break Ok(format!("region up ({e})"));
                }
                continue;
            }
            r => break r,
        }
    };
    let m = match m {
        // A template's exit 0 is not proof: the region must have joined a store.
        Ok(m) => {
            wait_region(ctx, &o.region, ctx.plan.health.deadline, up)
                .await
                .map_err(|_| {
                    Error::refused(format!(
                        "{m}; but region {} did not come up at {version}",
                        o.region
                    ))
                })?;
            m
        }
        Err(e) if !matches!(e, Error::Fenced { .. }) && up(&ctx.pac.region(&o.region).await?) => {
            format!("region up ({e})")
        }
        Err(e) => return Err(e),
    };
    let m = format!("{m}{repaired}");
    // A region started by other means (a template, an agent of an earlier version) may
    // have turned its listener on itself: clients must not reach it before its gate.
    if ctx.pac.region(&o.region).await?.listener == "on" {
        ctx.driver
            .listener(ctx.pac, &o.host, &o.region, false, ctx.epoch, ctx.actor)
            .await?;
    }
    Ok(StepOutcome::Done(m))
}

/// `verify`: the end state before the old store goes (reads the whole PAC once).
async fn verify(ctx: &Ctx<'_>) -> Result<StepOutcome> {
    let target = ctx.target();
    let mut snap = ctx.pac.snapshot().await?;
    // A region whose host is cut off (or just reconnecting) is not judged on an expired
    // heartbeat: wait for it to be seen again first, as every step does.
    let unseen_regions: Vec<On> = ctx
        .plan
        .all_regions()
        .into_iter()
        .filter(|(_, r)| snap.region(r).is_some_and(unseen))
        .map(|(host, region)| On { host, region })
        .collect();
    if !unseen_regions.is_empty() {
        for o in &unseen_regions {
            settle(ctx, o).await?;
        }
        snap = ctx.pac.snapshot().await?;
    }
    let stores: Vec<String> = snap.stores.iter().map(|s| s.version.clone()).collect();
    for (_, r) in ctx.plan.all_regions() {
        let p = match snap.region(&r) {
            None => Some(format!("{r} has no record")),
            Some(ri) => super::gate::region_problem(ri, &target, &stores),
        };
        if let Some(p) = p {
            return Err(Error::refused(format!("verify: {p}")));
        }
    }
    // Every plan region heartbeating now, at the target: one that died after its gate
    // (its liveness key not yet expired) fails verify, so the rollout does not end done.
    let all = ctx.plan.all_regions();
    let versions = vec![target.clone(); all.len()];
    super::gate::heartbeating(ctx, &all, &versions)
        .await
        .map_err(|p| Error::refused(format!("verify: {p}")))?;
    match ctx.process {
        Process::Incompatible => {
            let newest = snap.newest().map(|s| s.version.clone()).unwrap_or_default();
            if newest != target {
                return Err(Error::refused(format!(
                    "verify: newest store is {newest}, not {target}"
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
                "every region runs {target} in store {newest}"
            )))
        }
        Process::Compatible => {
            let store = snap
                .newest_running()
                .map(|s| s.version.clone())
                .ok_or_else(|| Error::refused("verify: no running store"))?;
            ctx.pac
                .set_running_version(&store, &target, ctx.epoch)
                .await?;
            Ok(StepOutcome::Done(format!(
                "every region runs {target}; store {store} now records version {target}"
            )))
        }
    }
}
