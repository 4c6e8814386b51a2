//! A region's batch worker: claims jobs only while its store is running (the claim
//! script checks the mode atomically), runs them, records results once. A region fences
//! its own work: it records a job only while the job is still its claim (checked in the
//! completion script), so a region that was frozen or cut off past the reclaim time drops
//! a job another region took over instead of completing it a second time.

use super::Region;
use crate::psor::work::{Claim, Completion};
use crate::psor::Mode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Runs until `taking` turns false (after finishing the job in hand) or the region is
/// lost (reported on `lost`).
pub(super) async fn work(
    me: Arc<Region>,
    mut mode: watch::Receiver<Mode>,
    mut taking: watch::Receiver<bool>,
    lost: mpsc::Sender<String>,
) {
    let (pac, cfg, token, store) = (&me.pac, &me.cfg, &me.token, &me.store);
    let region = cfg.region.to_string();
    let reclaim_ms = cfg.reclaim_idle.as_millis() as u64;
    loop {
        if !*taking.borrow() {
            return;
        }
        let mark = me.lapses.mark();
        match pac.claim_job(&region, token, reclaim_ms).await {
            Ok(Claim::Job {
                entry,
                job,
                reclaimed,
            }) => {
                cfg.metrics.job_taken(&region);
                if reclaimed {
                    tracing::info!(
                        "{region} reclaimed job {job} from a region that stopped answering"
                    );
                }
                // The job in hand is finished even if a stop is requested meanwhile.
                tokio::time::sleep(cfg.job_time).await;
                // Frozen or cut off past the TTL while running it: another region may have
                // taken the job over; then this run is dropped rather than counted twice.
                let check = me.lapses.since(mark, cfg.heartbeat_ttl);
                // A lost PSOR connection must not lose the result: retry until recorded
                // (the stop timeout bounds this by aborting the task; the job is then
                // reclaimed and its result recorded once by whoever finishes it).
                loop {
                    match pac.complete_job(&region, &entry, &job, store, check).await {
                        Ok(Completion::Reclaimed) => {
                            tracing::warn!(
                                "{region}: dropping job {job}: another region took it over \
                                 while this one was not heartbeating"
                            );
                            break;
                        }
                        Ok(_) => {
                            cfg.metrics.job_completed(&region);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("{region}: recording job {job} failed: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            Ok(Claim::None) => {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.idle_poll) => {}
                    _ = taking.changed() => {}
                }
            }
            Ok(Claim::NotRunning(m)) => {
                tracing::debug!("{region}: store in mode {m:?}; taking no jobs");
                // Woken by the mode watch (notification/heartbeat); the timer is a backstop.
                tokio::select! {
                    _ = mode.changed() => {}
                    _ = taking.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Ok(Claim::Lapsed) => {
                tracing::debug!("{region}: liveness lapsed; taking no job until it heartbeats");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = taking.changed() => {}
                }
            }
            Ok(Claim::Lost) => {
                let _ = lost
                    .send(format!(
                        "region {region} is no longer owned by this process"
                    ))
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!("{region}: claiming a job failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = taking.changed() => {}
                }
            }
        }
    }
}
