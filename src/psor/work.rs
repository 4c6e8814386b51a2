//! The shared datastore's workload: batch jobs and client transactions (docs/regions.md
//! section 3).
//!
//! Jobs are entries of one stream read through one consumer group, each region its own
//! consumer. A region claims a job only through [`scripts::CLAIM`], which checks in the
//! same atomic step that the region still owns its record and that its store is
//! `running`; so a mode change is obeyed by the very next claim, with no window. A result
//! is recorded once per job id ([`scripts::COMPLETE`]); a job re-run after its region
//! died (reclaimed once idle past the reclaim time) counts a duplicate instead.

use super::{scripts, Pac};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A job to run.
    Job {
        /// Stream entry id (for the acknowledgement).
        entry: String,
        /// Job id (what results are keyed by).
        job: String,
        /// Taken over from a region that stopped answering.
        reclaimed: bool,
    },
    /// No job waiting.
    None,
    /// The region's store is not running (its mode, or "" when it has no store).
    NotRunning(String),
    /// The region is no longer owned by this instance.
    Lost,
}

/// `jobs stats` (stable JSON, documented in docs/regions.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WorkStats {
    /// Jobs submitted.
    pub submitted: u64,
    /// Jobs completed (first completion of each job).
    pub completed: u64,
    /// Jobs submitted and not yet completed.
    pub pending: u64,
    /// Extra runs of already-completed jobs.
    pub duplicates: u64,
    /// Completed jobs per region.
    pub by_region: BTreeMap<String, u64>,
    /// Longest time with jobs waiting and none completing (including one still going on).
    pub max_completion_gap_ms: u64,
    /// Client transactions recorded.
    pub transactions: u64,
    /// Client transactions recorded again (a retried request that had already landed).
    pub transaction_duplicates: u64,
}

fn n(h: &HashMap<String, String>, k: &str) -> u64 {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Pac {
    /// Submits `count` jobs in one atomic step. Returns the first and last job ids;
    /// [`Error::NoSuchPac`] (nothing written) when the PAC does not exist.
    pub async fn submit_jobs(&self, count: u64) -> Result<(u64, u64)> {
        let v: (u64, u64) = scripts::SUBMIT
            .key(self.keys.prefix())
            .arg(count)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        if count > 0 && v.0 == 0 {
            return Err(Error::NoSuchPac(self.name().to_string()));
        }
        Ok(v)
    }

    /// Claims one job for `region` (see [`Claim`]).
    pub async fn claim_job(
        &self,
        region: &str,
        token: &str,
        reclaim_idle_ms: u64,
    ) -> Result<Claim> {
        let v = self
            .run(
                &scripts::CLAIM,
                &[region.into(), token.into(), reclaim_idle_ms.to_string()],
            )
            .await?;
        Ok(match v.first().map(String::as_str) {
            Some("JOB") => Claim::Job {
                entry: v.get(1).cloned().unwrap_or_default(),
                job: v.get(2).cloned().unwrap_or_default(),
                reclaimed: v.get(3).map(String::as_str) == Some("reclaimed"),
            },
            Some("MODE") => Claim::NotRunning(v.get(1).cloned().unwrap_or_default()),
            Some("LOST") => Claim::Lost,
            _ => Claim::None,
        })
    }

    /// Records a job's completion (idempotent for the same region and entry). Returns
    /// false only for a duplicate run.
    pub async fn complete_job(
        &self,
        region: &str,
        entry: &str,
        job: &str,
        store: &str,
    ) -> Result<bool> {
        let first: i64 = scripts::COMPLETE
            .key(self.keys.prefix())
            .arg(region)
            .arg(entry)
            .arg(job)
            .arg(store)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(first != 0)
    }

    /// Records a client transaction served by `region`. Returns true the first time.
    pub async fn record_transaction(&self, tx: &str, region: &str) -> Result<bool> {
        let first: i64 = scripts::RECORD_TX
            .key(self.keys.prefix())
            .arg(tx)
            .arg(region)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(first == 1)
    }

    /// Workload statistics in one pipelined round trip.
    pub async fn work_stats(&self) -> Result<WorkStats> {
        let mut c = self.conn();
        let (st, by, now): (HashMap<String, String>, HashMap<String, u64>, Vec<String>) =
            redis::pipe()
                .hgetall(self.keys.work_stats())
                .hgetall(self.keys.jobs_by_region())
                .cmd("TIME")
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
        let now_ms = now.first().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 1000
            + now.get(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) / 1000;
        let submitted = n(&st, "submitted");
        let completed = n(&st, "completed");
        let pending = submitted.saturating_sub(completed);
        let mut gap = n(&st, "max_gap_ms");
        if pending > 0 {
            let since = n(&st, "last_completion").max(n(&st, "waiting_since"));
            if since > 0 {
                gap = gap.max(now_ms.saturating_sub(since));
            }
        }
        Ok(WorkStats {
            submitted,
            completed,
            pending,
            duplicates: n(&st, "duplicates"),
            by_region: by.into_iter().collect(),
            max_completion_gap_ms: gap,
            transactions: n(&st, "tx_ok"),
            transaction_duplicates: n(&st, "tx_duplicates"),
        })
    }

    /// Cleans a region recorded on `host` after that host's agent restarted. Returns
    /// whether anything was cleaned; refused when the region is alive on another host.
    pub async fn clean_region(&self, region: &str, host: &str, actor: &str) -> Result<bool> {
        let v = self
            .run(
                &scripts::CLEAN_REGION,
                &[region.into(), host.into(), actor.into()],
            )
            .await?;
        match v.first().map(String::as_str) {
            Some("OK") => Ok(v.get(1).map(String::as_str) == Some("1")),
            _ => Err(crate::Error::refused(format!(
                "region {region} is alive on host {}; a region can run on one host only",
                v.get(1).map(String::as_str).unwrap_or("?")
            ))),
        }
    }
}
