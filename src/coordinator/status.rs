//! `rollout status`: what a rollout is doing and why it waits, read from the journal
//! and the PSOR. This module decides what counts as blocking; the CLI only renders.

use super::journal::Journal;
pub use super::journal::RolloutState;
use crate::error::Result;
use crate::psor::{now_ms, Pac};
use serde::Serialize;

/// A rollout's lifecycle state (the typed state of [`super::journal`]).
pub type State = RolloutState;

/// One region of the plan as the PSOR shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionView {
    /// Host of the plan.
    pub host: String,
    /// Region.
    pub region: String,
    /// Effective state (`dead` for an expired heartbeat), `unknown` without a record.
    pub state: String,
    /// Product version it runs.
    pub version: Option<String>,
    /// Store it is in.
    pub store: Option<String>,
    /// Listener `on`/`off`.
    pub listener: Option<String>,
}

/// The step in hand, with how long it has run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepView {
    /// Step number (of a parallel group in hand: its first step).
    pub n: usize,
    /// The last step of the parallel group in hand (null for a single step).
    pub last: Option<usize>,
    /// Action name.
    pub action: String,
    /// Host, if any.
    pub host: Option<String>,
    /// Region, if any.
    pub region: Option<String>,
    /// Whether it is a rollback step.
    pub rollback: bool,
    /// How long it has run, in ms.
    pub elapsed_ms: u64,
    /// Its bound (the progress deadline), in ms.
    pub bound_ms: u64,
}

/// One region of a health gate in hand.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateRegion {
    /// Region.
    pub region: String,
    /// Healthy without interruption for this long (ms); `None` while unhealthy.
    pub healthy_for_ms: Option<u64>,
    /// Its heartbeat expired: it died during the gate.
    pub dead: bool,
}

/// A health gate in hand.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateView {
    /// Per region.
    pub regions: Vec<GateRegion>,
    /// What each must reach, in ms.
    pub min_healthy_ms: u64,
    /// Time left before the gate fails, in ms.
    pub deadline_in_ms: u64,
    /// Why it has not passed yet, if a region is unhealthy.
    pub problem: Option<String>,
}

/// A command template in hand.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CommandView {
    /// The command, credentials redacted.
    pub command: String,
    /// Its pid.
    pub pid: u32,
    /// How long it has run, in ms.
    pub elapsed_ms: u64,
    /// Its bound, in ms.
    pub timeout_ms: u64,
}

/// Everything `rollout status` shows (its `--json` document; docs/reference.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RolloutStatus {
    /// PAC.
    pub pac: String,
    /// Rollout id (`None`: the PAC never had a rollout).
    pub rollout: Option<String>,
    /// State.
    pub state: Option<State>,
    /// `compatible` or `incompatible`.
    pub process: Option<String>,
    /// Version moved from.
    pub from_version: Option<String>,
    /// Version moved to.
    pub target: Option<String>,
    /// Next forward step.
    pub next_step: usize,
    /// Forward steps in the plan.
    pub steps_total: usize,
    /// The next forward step, as `rollout plan` lists it.
    pub current: Option<String>,
    /// The step in hand while a coordinator works (forward or rollback).
    pub step: Option<StepView>,
    /// The health gate in hand.
    pub gate: Option<GateView>,
    /// The command template in hand.
    pub command: Option<CommandView>,
    /// An operator request the coordinator will act on after the step in hand:
    /// `pause` or `abort`.
    pub pending: Option<String>,
    /// Why the rollout is not moving, when it is not.
    pub blocking: Option<String>,
    /// Who holds the coordinator lease.
    pub lease_holder: Option<String>,
    /// Why the rollout was started.
    pub reason: Option<String>,
    /// Who started it.
    pub by: Option<String>,
    /// The plan's regions.
    pub regions: Vec<RegionView>,
    /// Stores: version, mode, live members.
    pub stores: Vec<serde_json::Value>,
}

/// Reads the status of `pac`'s current (or last) rollout.
pub async fn status(pac: &Pac) -> Result<RolloutStatus> {
    let j = Journal::decode(&pac.rollout_current().await?)?;
    let snap = pac.snapshot().await?;
    let holder = pac.lease_holder().await?;
    let now = now_ms();
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let state = j.state;
    let working = matches!(state, Some(State::Running | State::RollingBack));
    let regions: Vec<RegionView> = j
        .plan
        .as_ref()
        .map(|pl| {
            pl.all_regions()
                .into_iter()
                .map(|(host, region)| {
                    let ri = snap.region(&region);
                    RegionView {
                        state: ri
                            .map(|x| x.effective_state().to_string())
                            .unwrap_or_else(|| "unknown".into()),
                        version: ri.map(|x| x.product_version.clone()),
                        store: ri.map(|x| x.store.clone()),
                        listener: ri.map(|x| x.listener.clone()),
                        host,
                        region,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let step = working
        .then(|| j.current.clone())
        .flatten()
        .map(|c| StepView {
            elapsed_ms: now.saturating_sub(c.started_ms),
            n: c.n,
            last: c.last,
            action: c.action,
            host: c.host,
            region: c.region,
            rollback: c.rollback,
            bound_ms: c.bound_ms,
        });
    let gate = working.then(|| j.gate.clone()).flatten().map(|g| GateView {
        regions: g
            .healthy_since
            .iter()
            .map(|(r, since)| GateRegion {
                region: r.clone(),
                healthy_for_ms: since.map(|t| now.saturating_sub(t)),
                dead: snap.region(r).is_some_and(|ri| !ri.alive),
            })
            .collect(),
        min_healthy_ms: g.min_healthy_ms,
        deadline_in_ms: (g.started_ms + g.deadline_ms).saturating_sub(now),
        problem: g.problem,
    });
    let command = working
        .then(|| j.command.clone())
        .flatten()
        .map(|c| CommandView {
            elapsed_ms: now.saturating_sub(c.started_ms),
            command: c.command,
            pid: c.pid,
            timeout_ms: c.timeout_ms,
        });
    let pending = if !working {
        None
    } else if j.abort_requested {
        Some("abort".to_string())
    } else if j.pause_requested {
        Some("pause".to_string())
    } else {
        None
    };
    let dead: Vec<&str> = gate
        .iter()
        .flat_map(|g| &g.regions)
        .filter(|r| r.dead)
        .map(|r| r.region.as_str())
        .collect();
    let blocking = match state {
        Some(State::Paused | State::Held) => some(&j.error),
        // A rollback that stopped (failed, paused, interrupted) says why.
        Some(State::RollingBack) if holder.is_none() && j.error.starts_with("rollback ") => {
            some(&j.error)
        }
        Some(State::Running | State::RollingBack) if holder.is_none() => Some(format!(
            "no coordinator holds the lease (it crashed or was killed); `pacup rollout resume {}` continues",
            pac.name()
        )),
        Some(State::Running | State::RollingBack) if !dead.is_empty() => Some(format!(
            "region {} died during the health gate",
            dead.join(", ")
        )),
        _ => None,
    };
    Ok(RolloutStatus {
        pac: pac.name().to_string(),
        rollout: some(&j.id),
        state,
        process: j.process.map(|p| p.as_str().to_string()),
        from_version: some(&j.from_version),
        target: some(&j.target),
        next_step: j.next_step,
        steps_total: j.all_steps().last().map_or(0, |s| s.n + 1),
        current: j.step(j.next_step).map(|s| s.to_string().trim().to_string()),
        step,
        gate,
        command,
        pending,
        blocking,
        lease_holder: holder,
        reason: some(&j.reason),
        by: some(&j.by),
        regions,
        stores: snap
            .stores
            .iter()
            .map(|s| serde_json::json!({"version": s.version, "mode": s.mode, "live_members": s.live_members}))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    #[test]
    fn states_round_trip_and_map_to_exit_codes() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(
                s.is_final(),
                matches!(s, State::Done | State::Aborted | State::RolledBack),
                "{s}"
            );
        }
        assert_eq!(State::Held.exit_code(), Some(ExitCode::Held));
        assert_eq!(State::RolledBack.exit_code(), Some(ExitCode::RolledBack));
        assert_eq!(State::Running.exit_code(), None);
        assert_eq!(State::parse("bogus"), None);
        // Never written by any version: not a state.
        assert_eq!(State::parse("failed"), None);
    }
}
