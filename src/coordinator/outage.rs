//! Riding out a PSOR outage: while the PSOR is out of reach (down, restarting, cut off,
//! not confirming writes durable), the coordinator pauses the step it is on, not the
//! process. Journal writes, the reads between steps and the step itself are retried with
//! a bounded backoff; when the PSOR is back within the plan's `progress_deadline` the
//! rollout goes on by itself. Past it, the coordinator gives up with exit 5, naming the
//! step it was on (`rollout resume` continues from there).
//!
//! Retrying is safe because every step observes before it acts and every journal write
//! is fenced and idempotent (an event already written is not written again).

use super::Coordinator;
use crate::error::{Error, Result};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First and longest pause between two attempts while the PSOR is out of reach.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The coordinator's view of an outage.
pub(super) struct Outages {
    /// How long an outage may last (the plan's progress deadline, once known).
    bound: Mutex<Duration>,
    /// What the coordinator is on ("step 4 (stop REGION1)"), for the message.
    on: Mutex<String>,
    /// Since when the PSOR has been out of reach, while it is.
    since: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outages {
    pub(super) fn new() -> Outages {
        Outages {
            // The plan's default progress deadline until a plan is in hand.
            bound: Mutex::new(Duration::from_secs(600)),
            on: Mutex::new("the rollout's start".into()),
            since: Mutex::new(None),
        }
    }

    /// Outages may last up to `d` (the plan's progress deadline).
    pub(super) fn set_bound(&self, d: Duration) {
        *lock(&self.bound) = d;
    }

    /// The coordinator is now on `what`.
    pub(super) fn on(&self, what: String) {
        *lock(&self.on) = what;
    }

    /// Whether the PSOR is out of reach right now (as last seen).
    pub(super) fn ongoing(&self) -> bool {
        lock(&self.since).is_some()
    }

    /// The exit-5 error once the outage outlasted the bound.
    pub(super) fn gave_up(&self, e: Error) -> Error {
        let on = lock(&self.on).clone();
        let bound = crate::names::format_duration(*lock(&self.bound));
        let (target, reason) = match e {
            Error::Unreachable { target, reason } => (target, reason),
            Error::NotDurable { ref target, .. } => (target.clone(), e.to_string()),
            other => ("the PSOR".to_string(), other.to_string()),
        };
        Error::Unreachable {
            target,
            reason: format!(
                "{reason}; gave up on {on} after waiting the progress deadline ({bound}) for \
                 the PSOR (`pacup rollout resume` continues from there)"
            ),
        }
    }
}

impl Coordinator {
    /// Runs `f` until it succeeds or fails for a reason other than a PSOR outage; an
    /// outage is waited out with backoff, up to the progress deadline from its start (then
    /// [`Outages::gave_up`]). A second Ctrl-C stops the waiting.
    pub(super) async fn ride_out<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match f().await {
                Err(e) if e.is_outage() => {
                    let since = *lock(&self.outages.since).get_or_insert_with(|| {
                        tracing::warn!(
                            "the PSOR is out of reach ({e}); {} waits for it ({what})",
                            lock(&self.outages.on)
                        );
                        Instant::now()
                    });
                    let bound = *lock(&self.outages.bound);
                    let left = bound.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(self.outages.gave_up(e));
                    }
                    if self.opts.interrupt.count() >= 2 {
                        return Err(e);
                    }
                    tracing::debug!("{what}: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.min(left)) => {}
                        () = self.opts.interrupt.at_least(2) => return Err(e),
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                r => {
                    if r.is_ok() && lock(&self.outages.since).take().is_some() {
                        tracing::warn!("the PSOR is back; {} goes on", lock(&self.outages.on));
                    }
                    return r;
                }
            }
        }
    }
}
