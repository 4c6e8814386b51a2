//! The health gate that ends every wave (and the rollback's): every region of the wave
//! live, active, at its version and in an existing store for `health.min_healthy`; a
//! wave's regions are read in one pipeline per poll, whatever the size of the PAC.

use super::actions::{unseen, Ctx, StepOutcome, POLL};
use super::progress::{GateProgress, Progress};
use super::steps::GateScope;
use crate::error::{Error, Result};
use crate::psor::{now_ms, RegionInfo};
use std::time::Instant;

/// Why region `ri` is not healthy at `version`, if it is not.
pub(super) fn region_problem(ri: &RegionInfo, version: &str, stores: &[String]) -> Option<String> {
    let r = &ri.name;
    if ri.state.is_empty() && !ri.alive {
        return Some(format!("{r} has no record"));
    }
    if !ri.alive {
        return Some(format!("{r} is not alive"));
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
    let (deadline, min_healthy) = (ctx.plan.health.deadline, ctx.min_healthy());
    let end = Instant::now() + deadline;
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
    loop {
        let (infos, stores) = ctx.pac.gate_view(&names).await?;
        let now = now_ms();
        let mut first = None;
        for (ri, v) in infos.iter().zip(&versions) {
            let p = region_problem(ri, v, &stores);
            let slot = view.healthy_since.get_mut(&ri.name).expect("gate region");
            match &p {
                None => {
                    slot.get_or_insert(now);
                }
                Some(_) => *slot = None,
            }
            if first.is_none() {
                first = p;
            }
        }
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
                if t.elapsed() >= min_healthy {
                    return Ok(StepOutcome::Done(format!(
                        "{} healthy for {}",
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
