//! The health gate that ends every wave (and the rollback's): every region of the wave
//! heartbeating, active, at its version and in an existing store for
//! `health.min_healthy`; a wave's regions are read in one pipeline per poll, whatever the
//! size of the PAC.
//!
//! "Heartbeating" is never the liveness key alone, which outlives a dead region by up to
//! its TTL: a region counts only while its last heartbeat is fresh (see
//! [`RegionInfo::fresh`]) and once the gate has seen its heartbeat counter advance, and
//! `min_healthy` is at least the regions' heartbeat TTL, so a region that died just
//! before or during the gate cannot pass it.

use super::actions::{unseen, Ctx, StepOutcome, POLL};
use super::progress::{GateProgress, Progress};
use super::steps::GateScope;
use crate::error::{Error, Result};
use crate::psor::{now_ms, RegionInfo, FRESH_SLACK_MS};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Why region `ri` is not healthy at `version`, if it is not.
pub(super) fn region_problem(ri: &RegionInfo, version: &str, stores: &[String]) -> Option<String> {
    let r = &ri.name;
    if ri.state.is_empty() && !ri.alive {
        return Some(format!("{r} has no record"));
    }
    if !ri.alive {
        return Some(format!("{r} is not alive"));
    }
    if !ri.fresh() {
        return Some(format!(
            "{r} is not alive (last heartbeat {} ago, heartbeat interval {})",
            crate::names::format_duration(Duration::from_millis(ri.heartbeat_age_ms.unwrap_or(0))),
            crate::names::format_duration(Duration::from_millis(ri.liveness.interval_ms))
        ));
    }
    if ri.state != "active" {
        return Some(format!("{r} is {}", ri.state));
    }
    if ri.product_version != version {
        return Some(format!(
            "{r} runs {} instead of {version}",
            ri.product_version
        ));
    }
    if !stores.contains(&ri.store) {
        return Some(format!("{r} is in no store"));
    }
    None
}

/// `health_gate`: every region of the wave live, active, at its version and in an
/// existing store, for `health.min_healthy` without interruption (no wait in a fast
/// rollback), within `health.deadline`. A region that dies during the gate (its
/// heartbeat expires without a stop) fails it at once.
pub(super) async fn gate(ctx: &Ctx<'_>, scope: GateScope) -> Result<StepOutcome> {
    let regions = match scope {
        GateScope::Wave(w) => ctx.plan.wave_regions(w),
        GateScope::All => ctx.plan.all_regions(),
    };
    let versions: Vec<String> = regions.iter().map(|(h, _)| ctx.version_of(h)).collect();
    let names: Vec<&str> = regions.iter().map(|(_, r)| r.as_str()).collect();
    let (deadline, asked) = (ctx.plan.health.deadline, ctx.min_healthy());
    let end = Instant::now() + deadline;
    let mut min_healthy = asked;
    let mut since: Option<Instant> = None;
    let mut last_problem = String::from("not checked");
    // What `rollout status` shows: per region since when it has been healthy. Journaled
    // only when it changes.
    let prog = Progress::new(ctx.pac, ctx.epoch);
    let mut view = GateProgress {
        started_ms: now_ms(),
        deadline_ms: deadline.as_millis() as u64,
        min_healthy_ms: min_healthy.as_millis() as u64,
        healthy_since: names.iter().map(|r| (r.to_string(), None)).collect(),
        problem: Some("not checked yet".into()),
    };
    let mut shown: Option<GateProgress> = None;
    // Each region's heartbeat count when its healthy run began: it must advance before
    // the run counts.
    let mut base: HashMap<String, u64> = HashMap::new();
    loop {
        let (infos, stores) = ctx.pac.gate_view(&names).await?;
        let now = now_ms();
        let longer = lengthened(asked, &infos);
        if longer > min_healthy {
            tracing::warn!(
                "health.min_healthy {} is shorter than the regions' heartbeat TTL; the gate \
                 waits {} instead",
                crate::names::format_duration(asked),
                crate::names::format_duration(longer)
            );
            min_healthy = longer;
        }
        let mut first = None;
        for (ri, v) in infos.iter().zip(&versions) {
            let p = region_problem(ri, v, &stores);
            let slot = view.healthy_since.get_mut(&ri.name).expect("gate region");
            match &p {
                None => {
                    slot.get_or_insert(now);
                    base.entry(ri.name.clone()).or_insert(ri.liveness.beats);
                }
                Some(_) => {
                    *slot = None;
                    base.remove(&ri.name);
                }
            }
            if first.is_none() {
                first = p;
            }
        }
        // (A record without an interval was written by an earlier version, which counts
        // no beats: judged on freshness alone.)
        let beating = infos.iter().all(|ri| {
            ri.liveness.interval_ms == 0
                || base.get(&ri.name).is_some_and(|b| ri.liveness.beats > *b)
        });
        view.problem = first;
        if shown.as_ref() != Some(&view) {
            prog.gate(&view).await;
            shown = Some(view.clone());
        }
        // A region that stopped heartbeating fails the gate at once when its host is seen
        // (it died there). A host that is silent too may be cut off with the region still
        // running: the gate keeps waiting for it, within its deadline.
        for ((host, _), ri) in regions.iter().zip(&infos) {
            if !unseen(ri) {
                continue;
            }
            if !ctx.driver.observes_hosts() || ctx.pac.host_is_alive(host).await? {
                return Err(Error::refused(format!(
                    "health gate failed: {} is not alive: it died during the gate (its \
                     heartbeat expired without a stop)",
                    ri.name
                )));
            }
        }
        match view.problem.clone() {
            None => {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() >= min_healthy && beating {
                    let longer = if min_healthy > asked {
                        format!(
                            " (min_healthy {} lengthened to the heartbeat TTL)",
                            crate::names::format_duration(asked)
                        )
                    } else {
                        String::new()
                    };
                    return Ok(StepOutcome::Done(format!(
                        "{} healthy for {}{longer}",
                        names.join(", "),
                        crate::names::format_duration(min_healthy)
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
                crate::names::format_duration(deadline)
            )));
        }
        // Healthy and waiting out min_healthy: wake when it is over, not at the next poll
        // past it (a wave's gate would otherwise cost up to one poll more than it must).
        let wait = match since {
            Some(t) => POLL.min(min_healthy.saturating_sub(t.elapsed())),
            None => POLL,
        };
        tokio::time::sleep(wait).await;
    }
}

/// `min_healthy`, lengthened to the longest heartbeat TTL of the gate's regions: a region
/// that died right before the gate keeps its liveness key for up to a TTL, so a shorter
/// gate could pass it. No wait (a fast rollback) stays no wait.
fn lengthened(asked: Duration, infos: &[RegionInfo]) -> Duration {
    let ttl = infos.iter().map(|ri| ri.liveness.ttl_ms).max().unwrap_or(0);
    let ttl = Duration::from_millis(ttl);
    if asked.is_zero() || asked >= ttl {
        return asked;
    }
    ttl
}

/// Every region in `regions` heartbeats now: each is healthy at its version (see
/// [`region_problem`]) and its heartbeat counter advances within its heartbeat TTL (at
/// least two intervals: one late heartbeat is not a death). `verify` uses it, so a region that died after its gate (its liveness key
/// not yet expired) fails instead of being reported done.
pub(super) async fn heartbeating(
    ctx: &Ctx<'_>,
    regions: &[(String, String)],
    versions: &[String],
) -> std::result::Result<(), String> {
    let names: Vec<&str> = regions.iter().map(|(_, r)| r.as_str()).collect();
    let (infos, stores) = ctx.pac.gate_view(&names).await.map_err(|e| e.to_string())?;
    for (ri, v) in infos.iter().zip(versions) {
        if let Some(p) = region_problem(ri, v, &stores) {
            return Err(p);
        }
    }
    // Regions recorded by an earlier version count no beats: judged on freshness alone.
    let base: Vec<Option<u64>> = infos
        .iter()
        .map(|ri| (ri.liveness.interval_ms > 0).then_some(ri.liveness.beats))
        .collect();
    let interval = infos
        .iter()
        .map(|ri| ri.liveness.interval_ms)
        .max()
        .unwrap_or(0);
    // A record without an interval (an earlier version) is judged on its key alone.
    if interval == 0 {
        return Ok(());
    }
    let ttl = infos.iter().map(|ri| ri.liveness.ttl_ms).max().unwrap_or(0);
    let window = ttl.max(2 * interval + FRESH_SLACK_MS);
    let end = Instant::now() + Duration::from_millis(window);
    loop {
        let (infos, stores) = ctx.pac.gate_view(&names).await.map_err(|e| e.to_string())?;
        let mut waiting = None;
        for ((ri, v), b) in infos.iter().zip(versions).zip(&base) {
            if let Some(p) = region_problem(ri, v, &stores) {
                return Err(p);
            }
            if b.is_some_and(|b| ri.liveness.beats <= b) && waiting.is_none() {
                waiting = Some(ri.name.clone());
            }
        }
        let Some(r) = waiting else { return Ok(()) };
        if Instant::now() >= end {
            return Err(format!("{r} is not alive (its heartbeat stopped)"));
        }
        tokio::time::sleep(POLL).await;
    }
}
