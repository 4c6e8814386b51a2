//! A region's batch worker: claims jobs only while its store is running (the claim
//! script checks the mode atomically), runs them, records results once.

use super::RegionConfig;
use crate::psor::work::Claim;
use crate::psor::{Mode, Pac};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Runs until `taking` turns false (after finishing the job in hand) or the region is
/// lost (reported on `lost`).
pub(super) async fn work(
    pac: Pac,
    cfg: RegionConfig,
    token: String,
    store: String,
    mut mode: watch::Receiver<Mode>,
    mut taking: watch::Receiver<bool>,
    lost: mpsc::Sender<String>,
) {
    let region = cfg.region.to_string();
    let reclaim_ms = cfg.reclaim_idle.as_millis() as u64;
    loop {
        if !*taking.borrow() {
            return;
        }
        match pac.claim_job(&region, &token, reclaim_ms).await {
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
                // A lost PSOR connection must not lose the result: retry until recorded
                // (the stop timeout bounds this by aborting the task; the job is then
                // reclaimed and its result recorded once by whoever finishes it).
                loop {
                    match pac.complete_job(&region, &entry, &job, &store).await {
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
