//! `rollout status`: what a rollout is doing and why it waits, read from the journal
//! and the PSOR. This module decides what counts as blocking; the CLI only renders.

use super::plan::Plan;
use super::progress::{self, CommandProgress, CurrentStep, GateProgress};
use super::steps::Step;
use crate::error::{ExitCode, Result};
use crate::psor::{now_ms, Pac};
use serde::Serialize;

/// A rollout's lifecycle state as journaled. `Failed` is never written by this version
/// but appears in journals of rollouts that failed outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A coordinator runs it (or ran it and crashed: see `blocking`).
    Running,
    /// Waiting for an operator.
    Paused,
    /// Held before finalisation.
    Held,
    /// Rolling back.
    RollingBack,
    /// Finished.
    Done,
    /// Aborted.
    Aborted,
    /// Failed.
    Failed,
    /// Rolled back.
    RolledBack,
}

impl State {
    /// Parses a journaled state.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "running" => State::Running,
            "paused" => State::Paused,
            "held" => State::Held,
            "rolling_back" => State::RollingBack,
            "done" => State::Done,
            "aborted" => State::Aborted,
            "failed" => State::Failed,
            "rolled_back" => State::RolledBack,
            _ => return None,
        })
    }

    /// The name used in the journal and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Held => "held",
            State::RollingBack => "rolling_back",
            State::Done => "done",
            State::Aborted => "aborted",
            State::Failed => "failed",
            State::RolledBack => "rolled_back",
        }
    }

    /// Whether the rollout can change no more (resume refuses it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Done | State::Aborted | State::Failed | State::RolledBack
        )
    }

    /// What `rollout status --watch` exits with when it stops in this state; `None` while
    /// a coordinator is (or should be) working on it.
    pub fn exit_code(self) -> Option<ExitCode> {
        match self {
            State::Running | State::RollingBack => None,
            State::Done => Some(ExitCode::Ok),
            State::Aborted | State::Failed => Some(ExitCode::Refused),
            State::Paused => Some(ExitCode::Paused),
            State::Held => Some(ExitCode::Held),
            State::RolledBack => Some(ExitCode::RolledBack),
        }
    }
}

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
    /// Step number.
    pub n: usize,
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
    let cur = pac.rollout_current().await?;
    let snap = pac.snapshot().await?;
    let holder = pac.lease_holder().await?;
    let now = now_ms();
    let get = |k: &str| cur.get(k).filter(|v| !v.is_empty()).cloned();
    let steps: Vec<Step> = cur
        .get("steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let next: usize = get("next_step").and_then(|s| s.parse().ok()).unwrap_or(0);
    let plan: Option<Plan> = cur.get("plan").and_then(|s| serde_json::from_str(s).ok());
    let state = cur.get("state").and_then(|s| State::parse(s));
    let working = matches!(state, Some(State::Running | State::RollingBack));
    let regions: Vec<RegionView> = plan
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
        .then(|| progress::read::<CurrentStep>(&cur, progress::field::CURRENT))
        .flatten()
        .map(|c| StepView {
            elapsed_ms: now.saturating_sub(c.started_ms),
            n: c.n,
            action: c.action,
            host: c.host,
            region: c.region,
            rollback: c.rollback,
            bound_ms: c.bound_ms,
        });
    let gate = working
        .then(|| progress::read::<GateProgress>(&cur, progress::field::GATE))
        .flatten()
        .map(|g| GateView {
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
        .then(|| progress::read::<CommandProgress>(&cur, progress::field::COMMAND))
        .flatten()
        .map(|c| CommandView {
            elapsed_ms: now.saturating_sub(c.started_ms),
            command: c.command,
            pid: c.pid,
            timeout_ms: c.timeout_ms,
        });
    let pending = if !working {
        None
    } else if get("abort_requested").is_some() {
        Some("abort".to_string())
    } else if get("pause_requested").is_some() {
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
        Some(State::Paused | State::Held) => get("error"),
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
        rollout: get("id"),
        state,
        process: get("process"),
        from_version: get("from_version"),
        target: get("target"),
        next_step: next,
        steps_total: steps.len(),
        current: steps.get(next).map(|s| s.to_string().trim().to_string()),
        step,
        gate,
        command,
        pending,
        blocking,
        lease_holder: holder,
        reason: get("reason"),
        by: get("by"),
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

    #[test]
    fn states_round_trip_and_map_to_exit_codes() {
        for s in [
            State::Running,
            State::Paused,
            State::Held,
            State::RollingBack,
            State::Done,
            State::Aborted,
            State::Failed,
            State::RolledBack,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(
                s.is_final(),
                s.exit_code().is_some() && !matches!(s, State::Paused | State::Held)
            );
        }
        assert_eq!(State::Held.exit_code(), Some(ExitCode::Held));
        assert_eq!(State::RolledBack.exit_code(), Some(ExitCode::RolledBack));
        assert_eq!(State::Running.exit_code(), None);
        assert_eq!(State::parse("bogus"), None);
    }
}
