//! Detaching stores and deleting their keys (RemOldPAC, and the rollback's removal of
//! the new store).
//!
//! A store is first detached atomically into `removing` (from then on it does not exist
//! for any reader), then its keys are deleted in batches, each batch one pipelined round
//! trip, so Redis keeps answering other clients however large the store: the keys named
//! by the store's key index (kept by every script that creates a store key), or, for a
//! store written by an older pacup without one, the keys SCAN MATCH finds. Re-running
//! finishes an interrupted deletion.

use super::model::RemoveReport;
use super::scan::scan_cmd;
use super::scripts::{
    DetachOld, DetachOldReply, DetachStore, DetachStoreReply, FinishRemoval, FinishReply,
    UnlinkBatch, UnlinkReply,
};
use super::Pac;
use crate::error::{Error, Result};
use futures_util::StreamExt;
use redis::AsyncCommands;

/// How many names of a store's key index one LRANGE reads: the keys one round trip
/// deletes, under a millisecond of Redis time. Redis may run one batch of every walker
/// before it answers another client, so this times [`INDEX_WALKERS`] bounds that wait.
const INDEXED_PAGE: usize = 1000;
/// Keys per UNLINK: each command is short, and Redis reads a long pipeline in pieces.
const UNLINK_ARGS: usize = 500;
/// How many ranges of a key index are walked at once.
const INDEX_WALKERS: usize = 4;

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

    /// Deletes the keys of every detached store: by its key index when its record has
    /// one (the cost follows the store's own keys), else by SCAN over the keyspace (a
    /// store written by an older pacup). Its record and index go last, with the version's
    /// entry in `removing`, so a re-run after a crash finds out again how to go on.
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
            // A version that is a live store again (restored meanwhile) is left alone.
            let (live, indexed, len): (Option<f64>, Option<String>, u64) = redis::pipe()
                .zscore(self.keys.stores(), &v)
                .hget(self.keys.store_meta(&v), "key_index")
                .llen(self.keys.store_index(&v))
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
            if live.is_some() {
                continue;
            }
            total += if indexed.as_deref() == Some("1") {
                self.unlink_indexed(&v, len).await?
            } else {
                self.unlink_scanned(&v).await?
            };
            match self.eval(&FinishRemoval { version: &v }).await? {
                FinishReply::Ok { unlinked } => total += unlinked,
                FinishReply::Live => return Err(self.live_again(&v)),
            }
        }
        Ok(total)
    }

    fn live_again(&self, v: &str) -> Error {
        Error::refused(format!(
            "store {v} of PAC {} is live again; its deletion was stopped",
            self.name
        ))
    }

    /// Deletes the keys named by store `v`'s index of `len` names, in [`INDEX_WALKERS`]
    /// disjoint ranges at once (each on its own connection): while Redis deletes one
    /// walker's batch, the others' are on their way, so Redis does not wait for a round
    /// trip. The names are in creation order, so keys go in the order they were made.
    async fn unlink_indexed(&self, v: &str, len: u64) -> Result<u64> {
        let per = len.div_ceil(INDEX_WALKERS as u64).max(1);
        let walks = futures_util::stream::iter((0..len).step_by(per as usize))
            .map(|from| self.unlink_range(v, from, (from + per).min(len)))
            .buffer_unordered(INDEX_WALKERS);
        let counts: Vec<Result<u64>> = walks.collect().await;
        counts.into_iter().sum()
    }

    /// Deletes the keys named at positions `from..to` of store `v`'s index. Each round
    /// trip carries the `UNLINK`s of the page of names in hand (in `MULTI`/`EXEC`, under
    /// a `WATCH` of `stores` armed when `v` was last seen detached: a store that became
    /// live again meanwhile aborts the batch, and the next check stops the deletion) and
    /// the `LRANGE` of the next page. Plain `UNLINK`s of names known in advance cost Redis
    /// what deleting by name costs; the index itself is left for [`FinishRemoval`], so a
    /// re-run walks it again.
    async fn unlink_range(&self, v: &str, from: u64, to: u64) -> Result<u64> {
        // WATCH belongs to a connection: this one carries nothing else.
        let mut c = self.psor.dedicated().await?;
        let (stores, index, prefix) = (
            self.keys.stores(),
            self.keys.store_index(v),
            self.keys.store_prefix(v),
        );
        let page = |at: u64| {
            let end = (at + INDEXED_PAGE as u64).min(to);
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(&index).arg(at).arg(end - 1);
            (cmd, end)
        };
        let (first, mut next) = page(from);
        let mut p = redis::pipe();
        p.cmd("WATCH").arg(&stores).ignore();
        p.zscore(&stores, v).add_command(first);
        let (live, mut pending): (Option<f64>, Vec<String>) =
            p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
        if live.is_some() {
            return Err(self.live_again(v));
        }
        let mut total = 0u64;
        loop {
            // Names outside the store (none is ever written there) are never deleted.
            pending.retain(|k| k.starts_with(&prefix) && *k != index);
            if pending.is_empty() && next >= to {
                return Ok(total);
            }
            let mut p = redis::pipe();
            if !pending.is_empty() {
                p.cmd("MULTI").ignore();
                for chunk in pending.chunks(UNLINK_ARGS) {
                    p.cmd("UNLINK").arg(chunk).ignore();
                }
                p.cmd("EXEC");
            }
            p.cmd("WATCH").arg(&stores).ignore();
            p.zscore(&stores, v);
            let fetch = (next < to).then(|| page(next));
            if let Some((cmd, _)) = &fetch {
                p.add_command(cmd.clone());
            }
            let vals: Vec<redis::Value> =
                p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
            let mut vals = vals.into_iter();
            let mut val = || vals.next().unwrap_or(redis::Value::Nil);
            let done: Option<Vec<u64>> = if pending.is_empty() {
                Some(Vec::new())
            } else {
                redis::from_redis_value(val()).map_err(|e| self.psor.err(e.into()))?
            };
            let live: Option<f64> =
                redis::from_redis_value(val()).map_err(|e| self.psor.err(e.into()))?;
            let names: Vec<String> = match &fetch {
                Some(_) => redis::from_redis_value(val()).map_err(|e| self.psor.err(e.into()))?,
                None => Vec::new(),
            };
            if let Some((_, end)) = fetch {
                next = end;
            }
            match done {
                // Deleted: the next page is the work in hand.
                Some(n) => {
                    total += n.iter().sum::<u64>();
                    pending = names;
                }
                // `stores` changed since the check (another store, or this one live
                // again): nothing was deleted; retried after the new check.
                None => pending.extend(names),
            }
            if live.is_some() {
                return Err(self.live_again(v));
            }
        }
    }

    /// Deletes store `v`'s keys found by SCAN MATCH. The SCAN for the next batch travels
    /// in the same pipeline as the UNLINK of the previous one, so each batch costs one
    /// round trip.
    async fn unlink_scanned(&self, v: &str) -> Result<u64> {
        let mut c = self.conn();
        let pattern = self.keys.store_pattern(v);
        let mut total = 0u64;
        let (mut cursor, mut batch): (u64, Vec<String>) = scan_cmd(0, &pattern)
            .query_async(&mut c)
            .await
            .map_err(|e| self.psor.err(e))?;
        loop {
            if batch.is_empty() && cursor == 0 {
                return Ok(total);
            }
            let mut p = redis::pipe();
            if !batch.is_empty() {
                let call = UnlinkBatch {
                    version: v,
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
                    UnlinkReply::Live => return Err(self.live_again(v)),
                }
            }
            if cursor == 0 {
                return Ok(total);
            }
            (cursor, batch) =
                redis::from_redis_value(next()).map_err(|e| self.psor.err(e.into()))?;
        }
    }
}
