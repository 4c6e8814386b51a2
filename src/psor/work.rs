//! The shared datastore's workload: batch jobs and client transactions (docs/regions.md
//! section 3).
//!
//! Jobs are entries of one stream read through one consumer group, each region its own
//! consumer. A region claims a job only through [`super::scripts::CLAIM`], which checks in the
//! same atomic step that the region still owns its record and that its store is
//! `running`; so a mode change is obeyed by the very next claim, with no window. A result
//! is recorded once per job id ([`super::scripts::COMPLETE`]); a job re-run after its region
//! died (reclaimed once idle past the reclaim time) counts a duplicate instead.

use super::scripts::{ClaimJob, CompleteJob, Completion, RecordTx, Submit, SubmitReply};
use super::Pac;
use crate::error::{Error, Result};

pub use super::scripts::Claim;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

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
        self.submit_jobs_once(count, "").await
    }

    /// [`Pac::submit_jobs`] under a submission id (unique per submission): repeated with
    /// the same id (its reply was lost), it answers the same ids and submits nothing, so
    /// a retry neither loses nor doubles jobs.
    pub async fn submit_jobs_once(&self, count: u64, id: &str) -> Result<(u64, u64)> {
        match self.eval(&Submit { count, id }).await? {
            SubmitReply::Ok { first, last } => Ok((first, last)),
            SubmitReply::NoPac => Err(Error::NoSuchPac(self.name().to_string())),
        }
    }

    /// Claims one job for `region` (see [`Claim`]).
    pub async fn claim_job(
        &self,
        region: &str,
        token: &str,
        reclaim_idle_ms: u64,
    ) -> Result<Claim> {
        self.eval(&ClaimJob {
            region,
            token,
            reclaim_idle_ms,
        })
        .await
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
        let call = CompleteJob {
            region,
            entry,
            job,
            store,
        };
        Ok(self.eval(&call).await? != Completion::Duplicate)
    }

    /// Records a client transaction served by `region`. Returns true the first time.
    pub async fn record_transaction(&self, tx: &str, region: &str) -> Result<bool> {
        self.eval(&RecordTx { tx, region }).await
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
}
