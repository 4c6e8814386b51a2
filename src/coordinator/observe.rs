//! What a step concludes from the PSOR when a region's liveness key and its heartbeats
//! disagree, or when a command to it failed: the key outlives a dead region by up to its
//! TTL, and an unanswered command says nothing about the region. A step decides from
//! the region's heartbeats and its host's, never from the command's error alone.

use super::actions::{unseen, Ctx, POLL};
use crate::error::Result;
use crate::psor::RegionInfo;
use std::time::{Duration, Instant};

/// The region's record once it shows whether the region heartbeats now. A live key, even
/// with a fresh last heartbeat, may belong to a region that died a moment ago (its key
/// and last heartbeat outlive it by up to its TTL): only its heartbeat counter advancing
/// proves it runs (a restart resets it: any change counts). Waits (about its TTL at most) until the counter advances or the key
/// expires, and returns the last record read. A record of an earlier version (no
/// heartbeat interval, no counter) is judged on its key alone.
pub(super) async fn alive_now(ctx: &Ctx<'_>, region: &str) -> Result<RegionInfo> {
    let ri = ctx.pac.region(region).await?;
    if !ri.alive || ri.liveness.interval_ms == 0 {
        return Ok(ri);
    }
    let base = ri.liveness.beats;
    let ttl = Duration::from_millis(ri.liveness.ttl_ms.max(1000));
    let end = Instant::now() + ttl + Duration::from_secs(1);
    loop {
        tokio::time::sleep(POLL).await;
        let ri = ctx.pac.region(region).await?;
        // (A counter that changed either way heartbeats: a restart, which rejoins at 0, too.)
        if !ri.alive || ri.liveness.beats != base || Instant::now() >= end {
            return Ok(ri);
        }
    }
}

/// Whether region `ri` on `host` is known not to run: it left its store, or it stopped
/// heartbeating on a host whose agent is seen (the agent would run it if it did). A
/// region that went silent together with its host may still run behind a cut: that is
/// not known down.
pub(super) async fn known_down(ctx: &Ctx<'_>, host: &str, ri: &RegionInfo) -> Result<bool> {
    if ri.alive {
        return Ok(false);
    }
    if !unseen(ri) {
        return Ok(true);
    }
    Ok(!ctx.driver.observes_hosts() || ctx.pac.host_is_alive(host).await?)
}

/// What a failed command to a region leaves behind, judged from the PSOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// The region does not run (see [`known_down`]).
    Down,
    /// It heartbeats: the command's failure stands.
    Running,
    /// Region and host are both silent: nothing is known until the host is seen again.
    Unseen,
}

/// Reads the region once its heartbeats show whether it runs (see [`alive_now`]).
pub(super) async fn after_failure(ctx: &Ctx<'_>, host: &str, region: &str) -> Result<AfterFailure> {
    let ri = alive_now(ctx, region).await?;
    if ri.alive {
        return Ok(AfterFailure::Running);
    }
    if known_down(ctx, host, &ri).await? {
        return Ok(AfterFailure::Down);
    }
    Ok(AfterFailure::Unseen)
}

/// After a command to `host`'s agent failed (not fenced): waits, within the grace a step
/// gives a silent host, until the host's agent is seen; true when it is, so the caller
/// sends its (idempotent, observe-first) command once more. An agent killed and restarted
/// by its supervisor meanwhile never answered the first one.
pub(super) async fn host_seen(ctx: &Ctx<'_>, host: &str) -> Result<bool> {
    if !ctx.driver.observes_hosts() {
        return Ok(false);
    }
    let end = Instant::now() + super::actions::UNSEEN_GRACE.min(ctx.plan.progress_deadline / 2);
    loop {
        if ctx.pac.host_is_alive(host).await? {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}
