//! `rollout run --preflight-wait`: for pipelines that start the agents and the rollout at
//! once, the preflight is retried until it passes or the wait is over (the rollout's own
//! preflight then decides, and refuses with the problems that remain).

use super::plan::Plan;
use super::preflight::{preview, Allow};
use crate::error::{Error, Result};
use crate::psor::Pac;
use std::time::Duration;
use tokio::time::Instant;

/// How often the preflight is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Waits up to `wait` for the preflight of `plan` to find no problem; returns the
/// problems still found when the wait ended (empty once it passes). A PAC that does not
/// exist yet counts as a problem (the agents that create it may still be starting).
pub async fn wait_preflight(
    pac: &Pac,
    plan: &Plan,
    allow: Allow,
    wait: Duration,
) -> Result<Vec<String>> {
    let end = Instant::now() + wait;
    loop {
        let problems = match preview(pac, plan, allow).await {
            Ok(pv) => pv.problems,
            Err(e @ Error::NoSuchPac(_)) => vec![e.to_string()],
            Err(e) => return Err(e),
        };
        if problems.is_empty() || Instant::now() >= end {
            return Ok(problems);
        }
        tracing::info!("preflight not yet passing: {}", problems.join("; "));
        tokio::time::sleep(RETRY).await;
    }
}
