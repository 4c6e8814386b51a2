//! Starting a region: decide from a snapshot, commit atomically, decide again when
//! another writer changed the PAC in between.

use super::decide::{decide_start, StartDecision};
use super::{Observer, Region, RegionConfig, RegionEvent};
use crate::error::{Error, Result};
use crate::psor::{now_ms, JoinOutcome, JoinRequest, Mode, Pac, Snapshot, StartType};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many times a start decides again after another writer got in between (a
/// conflicting commit, a region coming alive) before it gives up with
/// [`Error::Conflict`].
const MAX_ATTEMPTS: u32 = 100;

/// How long a start that finds another region's cold start between its reset and its
/// store (deleting the old keys in between takes time for a big store) waits for that
/// store instead of refusing.
const RESET_WAIT: Duration = Duration::from_secs(30);

/// What one attempt came to.
enum Attempt {
    /// Joined a store.
    Joined {
        store: String,
        mode: Mode,
        decision: StartDecision,
    },
    /// Decide again after a pause: another writer changed the PAC.
    Again(&'static str),
    /// Decide again after a pause: a cold start elsewhere has not created its store yet
    /// (bounded by [`RESET_WAIT`], not by [`MAX_ATTEMPTS`]).
    AwaitStore,
}

/// One start in progress.
struct Starter<'a> {
    pac: &'a Pac,
    cfg: &'a RegionConfig,
    token: &'a str,
    actor: String,
    await_store_until: Instant,
}

impl Region {
    /// Starts a region: decides from a snapshot, commits atomically, decides again when
    /// the PAC changed in between. A start the rules refuse is [`Error::Refused`] or
    /// [`Error::RefusedWith`] (exit 1) with the reason.
    pub async fn start(pac: Pac, cfg: RegionConfig, observer: Observer) -> Result<Region> {
        let token = instance_token(cfg.host.as_str());
        let starter = Starter {
            pac: &pac,
            cfg: &cfg,
            token: &token,
            actor: format!("region {} on {}", cfg.region, cfg.host),
            await_store_until: Instant::now() + RESET_WAIT,
        };
        let mut attempt = 0;
        let (store, mode, decision) = loop {
            match starter.attempt().await? {
                Attempt::Joined {
                    store,
                    mode,
                    decision,
                } => break (store, mode, decision),
                Attempt::Again(why) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(Error::Conflict);
                    }
                    tracing::debug!(attempt, "start of {}: {why}; deciding again", cfg.region);
                    tokio::time::sleep(jitter(attempt)).await;
                }
                Attempt::AwaitStore => {
                    tokio::time::sleep(jitter(attempt) + Duration::from_millis(50)).await
                }
            }
        };
        observer(
            cfg.region.as_str(),
            &RegionEvent::Started {
                start_type: decision.effective,
                store: store.clone(),
                mode,
                warning: decision.warning,
            },
        );
        let (mode, _) = watch::channel(mode);
        Ok(Region {
            pac,
            cfg,
            token,
            store,
            mode,
            observer,
            lapses: super::heartbeat::Lapses::new(),
        })
    }
}

impl Starter<'_> {
    async fn attempt(&self) -> Result<Attempt> {
        let (pac, cfg) = (self.pac, self.cfg);
        // Only a cold start asks whether other regions are alive: every other start reads
        // just the stores and its own record (its cost does not grow with the PAC).
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
        let decision = match decide_start(
            &snap,
            pac.name().as_str(),
            cfg.region.as_str(),
            &cfg.product,
            cfg.start_type,
            cfg.matrix.as_ref(),
        ) {
            Ok(d) => d,
            Err(_) if self.store_coming(&snap) => return Ok(Attempt::AwaitStore),
            // The snapshot is pipelined, not atomic: a reset in the middle of it shows its
            // empty store list beside the PAC record from before. Refuse only what an
            // unchanged PAC refuses.
            Err(_) if pac.snapshot().await?.gen != snap.gen => {
                return Ok(Attempt::Again(
                    "the PAC changed while the start was decided",
                ))
            }
            Err(e) => return Err(e),
        };
        let gen = if decision.reset_first {
            let why = format!("cold start of {}", cfg.region);
            match pac.reset(false, &self.actor, &why, true, None).await {
                Ok(g) => {
                    pac.gc_removing().await?;
                    g
                }
                // A region came alive since the snapshot: decide again (it becomes warm).
                Err(Error::RegionAlive { .. }) => return Ok(Attempt::Again("a region came alive")),
                Err(e) => return Err(e),
            }
        } else {
            snap.gen
        };
        let req = JoinRequest {
            gen,
            create: decision.create,
            store: decision.store.clone(),
            mode: decision.mode,
            region: cfg.region.to_string(),
            host: cfg.host.to_string(),
            product: cfg.product.clone(),
            token: self.token.to_string(),
            ttl_ms: cfg.heartbeat_ttl.as_millis() as u64,
            interval_ms: cfg.heartbeat_interval.as_millis() as u64,
            start_type: decision.effective,
            require_no_other_alive: decision.effective == StartType::Cold,
            resources: if decision.create {
                cfg.resources.0.clone()
            } else {
                Vec::new()
            },
        };
        Ok(match pac.join(&req, &self.actor).await? {
            JoinOutcome::Joined { store, mode } => Attempt::Joined {
                store,
                mode,
                decision,
            },
            JoinOutcome::Conflict => Attempt::Again("the PAC changed since the snapshot"),
            JoinOutcome::OtherAlive(_) => Attempt::Again("another region came alive"),
        })
    }

    /// Whether another region's cold start has reset the PAC recently and its store is
    /// still to come (and this start has not waited for it too long already).
    fn store_coming(&self, snap: &Snapshot) -> bool {
        let fresh = snap
            .resetting_since_ms
            .is_some_and(|t| now_ms().saturating_sub(t) < RESET_WAIT.as_millis() as u64);
        fresh && Instant::now() < self.await_store_until
    }
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
