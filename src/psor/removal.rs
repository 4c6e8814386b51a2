//! Detaching stores and deleting their keys (RemOldPAC, and the rollback's removal of
//! the new store).
//!
//! A store is first detached atomically into `removing` (from then on it does not exist
//! for any reader), then its keys are deleted with SCAN + UNLINK in batches, each batch
//! one pipelined round trip, so Redis keeps answering other clients however large the
//! store. Re-running finishes an interrupted deletion.

use super::model::RemoveReport;
use super::scan::scan_cmd;
use super::scripts::{
    DetachOld, DetachOldReply, DetachStore, DetachStoreReply, FinishRemoval, UnlinkBatch,
    UnlinkReply,
};
use super::Pac;
use crate::error::{Error, Result};
use redis::AsyncCommands;

impl Pac {
    /// RemOldPAC: detaches every store older than the newest (refused while a live region
    /// is a member of one), then deletes their keys incrementally. Re-running finishes an
    /// interrupted deletion; with nothing old it does nothing.
    pub async fn remove_old(
        &self,
        force: bool,
        actor: &str,
        fence: Option<u64>,
    ) -> Result<RemoveReport> {
        let pac = &self.name;
        match self
            .eval(&DetachOld {
                fence,
                actor,
                force,
            })
            .await?
        {
            DetachOldReply::Ok { .. } | DetachOldReply::None => {}
            DetachOldReply::NoPac => return Err(Error::NoSuchPac(pac.to_string())),
            DetachOldReply::Live { members } => {
                return Err(Error::refused(format!(
                    "old stores of PAC {pac} still have live members: {}; stop them first",
                    members
                        .iter()
                        .map(|(r, v)| format!("{r} in store {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            DetachOldReply::NoRunning { newest, mode } => {
                return Err(Error::refused(format!(
                    "removing the old stores would leave PAC {pac} with no running store: the \
                     newest store {newest} is in mode {mode}"
                )))
            }
            DetachOldReply::Fenced { epoch } => return Err(self.fenced(fence, epoch)),
        }
        let mut stores_removed: Vec<String> = self
            .conn()
            .smembers(self.keys.removing())
            .await
            .map_err(|e| self.psor.err(e))?;
        stores_removed.sort();
        let keys_removed = self.gc_removing().await?;
        Ok(RemoveReport {
            stores_removed,
            keys_removed,
        })
    }

    /// Rollback: detaches one store and deletes its keys incrementally.
    pub async fn remove_store(&self, version: &str, actor: &str, fence: u64) -> Result<u64> {
        let call = DetachStore {
            fence,
            version,
            actor,
        };
        match self.eval(&call).await? {
            DetachStoreReply::Ok | DetachStoreReply::None => self.gc_removing().await,
            DetachStoreReply::Live { regions } => Err(Error::refused(format!(
                "store {version} of PAC {} still has live members: {}",
                self.name,
                regions.join(", ")
            ))),
            DetachStoreReply::Only => Err(Error::refused(format!(
                "store {version} is the only store of PAC {}; it cannot be removed",
                self.name
            ))),
            DetachStoreReply::Fenced { epoch } => Err(self.fenced(Some(fence), epoch)),
        }
    }

    /// Deletes the keys of every detached store. The SCAN for the next batch travels in
    /// the same pipeline as the UNLINK of the previous one, so each batch costs one round
    /// trip.
    pub async fn gc_removing(&self) -> Result<u64> {
        if self.psor.is_cluster() {
            return self.gc_removing_slot().await;
        }
        let mut c = self.conn();
        let versions: Vec<String> = c
            .smembers(self.keys.removing())
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut total = 0u64;
        for v in versions {
            let pattern = self.keys.store_pattern(&v);
            // A version that is a live store again (restored meanwhile) is left alone. The
            // check travels with the first SCAN; the script itself is loaded by the
            // pipelines below, so nothing here relies on it being cached.
            let (live, (mut cursor, mut batch)): (Option<f64>, (u64, Vec<String>)) = redis::pipe()
                .zscore(self.keys.stores(), &v)
                .add_command(scan_cmd(0, &pattern))
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
            if live.is_some() {
                continue;
            }
            loop {
                if batch.is_empty() && cursor == 0 {
                    break;
                }
                let mut p = redis::pipe();
                if !batch.is_empty() {
                    let call = UnlinkBatch {
                        version: &v,
                        keys: &batch,
                    };
                    self.pipe_call(&mut p, &call);
                }
                if cursor != 0 {
                    p.add_command(scan_cmd(cursor, &pattern));
                }
                let vals: Vec<redis::Value> =
                    p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
                let mut vals = vals.into_iter();
                let mut next = || vals.next().unwrap_or(redis::Value::Nil);
                if !batch.is_empty() {
                    match self.pipe_reply::<UnlinkBatch>(next())? {
                        UnlinkReply::Ok { unlinked } => total += unlinked,
                        UnlinkReply::Live => {
                            return Err(Error::refused(format!(
                                "store {v} of PAC {} is live again; its deletion was stopped",
                                self.name
                            )))
                        }
                    }
                }
                if cursor == 0 {
                    break;
                }
                (cursor, batch) =
                    redis::from_redis_value(next()).map_err(|e| self.psor.err(e.into()))?;
            }
            self.eval(&FinishRemoval { version: &v }).await?;
        }
        Ok(total)
    }
}
