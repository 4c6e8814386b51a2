//! Deleting detached stores on a Redis Cluster: the PAC's keys all live in one slot, so
//! the store's keys are found by listing that slot on its master (`CLUSTER
//! COUNTKEYSINSLOT`/`GETKEYSINSLOT`) rather than by a SCAN of every node's keyspace, then
//! unlinked in batches, each batch one pipelined round trip of `UNLINK_BATCH` (which
//! re-checks that the store is still detached).

use super::scan::BATCH;
use super::scripts::{FinishRemoval, UnlinkBatch, UnlinkReply};
use super::Pac;
use crate::error::{Error, Result};
use redis::AsyncCommands;

impl Pac {
    /// [`Pac::gc_removing`] on a cluster.
    pub(super) async fn gc_removing_slot(&self) -> Result<u64> {
        let mut c = self.conn();
        let versions: Vec<String> = c
            .smembers(self.keys.removing())
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut total = 0u64;
        for v in versions {
            // A version that is a live store again (restored meanwhile) is left alone.
            let live: Option<f64> = c
                .zscore(self.keys.stores(), &v)
                .await
                .map_err(|e| self.psor.err(e))?;
            if live.is_some() {
                continue;
            }
            let pattern = self.keys.store_pattern(&v);
            // Listed again until none is left: a key written after a listing (there should
            // be none, the store is detached) is caught by the next one.
            loop {
                let keys = self.psor.slot_keys(self.keys.prefix(), &pattern).await?;
                if keys.is_empty() {
                    break;
                }
                let mut unlinked_now = 0;
                for batch in keys.chunks(BATCH) {
                    let mut p = redis::pipe();
                    self.pipe_call(
                        &mut p,
                        &UnlinkBatch {
                            version: &v,
                            keys: batch,
                        },
                    );
                    let vals: Vec<redis::Value> =
                        p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
                    let reply = vals.into_iter().next().unwrap_or(redis::Value::Nil);
                    match self.pipe_reply::<UnlinkBatch>(reply)? {
                        UnlinkReply::Ok { unlinked } => unlinked_now += unlinked,
                        UnlinkReply::Live => {
                            return Err(Error::refused(format!(
                                "store {v} of PAC {} is live again; its deletion was stopped",
                                self.name
                            )))
                        }
                    }
                }
                total += unlinked_now;
                if unlinked_now == 0 {
                    // Listed but already gone: another remover got there first.
                    break;
                }
            }
            self.eval(&FinishRemoval { version: &v }).await?;
        }
        Ok(total)
    }
}
