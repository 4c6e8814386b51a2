//! The coordinator's PSOR state: lease with fencing epoch, rollout journal, history and
//! events (docs/rollout.md, docs/reference.md#events).
//!
//! The lease (`lock`) is a key with a TTL holding `<holder> <epoch>`; taking it bumps the
//! PAC's fencing epoch. Every write a coordinator makes afterwards passes that epoch and
//! is refused inside the same script when it is no longer current, so a coordinator that
//! was paused past its lease and wakes up cannot change anything.

use super::{scripts, Pac};
use crate::error::{Error, Result};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::Duration;

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The value stored in the lock key (`<holder> <epoch>`).
    pub value: String,
    /// The fencing epoch.
    pub epoch: u64,
}

/// One stored event (the rollout event fields, plus the admin events' `by`).
pub type EventFields = Vec<(String, String)>;

impl Pac {
    /// Takes the coordinator lease; [`Error::LeaseHeld`] (exit 4) when another holds it.
    pub async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<Lease> {
        let v = self
            .run(
                &scripts::LEASE_ACQUIRE,
                &[holder.into(), ttl.as_millis().to_string()],
            )
            .await?;
        match v.first().map(String::as_str) {
            Some("OK") => {
                let epoch = v.get(1).and_then(|e| e.parse().ok()).unwrap_or(0);
                Ok(Lease {
                    value: format!("{holder} {epoch}"),
                    epoch,
                })
            }
            Some("HELD") => Err(Error::LeaseHeld {
                pac: self.name.to_string(),
                holder: v.get(1).cloned().unwrap_or_default(),
            }),
            _ => Err(Error::NoSuchPac(self.name.to_string())),
        }
    }

    /// Extends the lease; false when it was lost (expired and possibly taken).
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let n: i64 = scripts::LEASE_RENEW
            .key(self.keys.prefix())
            .arg(&lease.value)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(n == 1)
    }

    /// Releases the lease if still ours.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let _: i64 = scripts::LEASE_RELEASE
            .key(self.keys.prefix())
            .arg(&lease.value)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(())
    }

    /// Who holds the lease now, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>> {
        self.conn()
            .get(self.keys.lock())
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// Writes journal fields and/or an event (and optionally a history entry), atomically
    /// and fenced by `epoch`.
    pub async fn rollout_write(
        &self,
        epoch: u64,
        state: &[(&str, String)],
        event: &[(&str, String)],
        history: Option<&str>,
    ) -> Result<()> {
        let mut args = vec![
            epoch.to_string(),
            history.unwrap_or("").to_string(),
            state.len().to_string(),
        ];
        for (k, v) in state {
            args.extend([k.to_string(), v.clone()]);
        }
        for (k, v) in event {
            args.extend([k.to_string(), v.clone()]);
        }
        let v = self.run(&scripts::ROLLOUT_WRITE, &args).await?;
        if v.first().map(String::as_str) == Some("FENCED") {
            return Err(self.fenced(&v, Some(epoch)));
        }
        Ok(())
    }

    /// Sets operator request flags on the current rollout (pause/abort) without the lease:
    /// the coordinator reads them between steps. Plain HSET: it changes no PAC state.
    pub async fn rollout_request(&self, field: &str, value: &str) -> Result<()> {
        let _: () = self
            .conn()
            .hset(self.keys.rollout("current"), field, value)
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(())
    }

    /// The current (or last) rollout's journal.
    pub async fn rollout_current(&self) -> Result<HashMap<String, String>> {
        self.conn()
            .hgetall(self.keys.rollout("current"))
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// Past rollouts, newest first (JSON summaries).
    pub async fn rollout_history(&self) -> Result<Vec<String>> {
        self.conn()
            .lrange(self.keys.rollout("history"), 0, -1)
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// Events after stream id `after` ("0" for all), at most `count`, optionally blocking.
    pub async fn read_events(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(String, EventFields)>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(self.keys.events()).arg(after);
        let reply: redis::streams::StreamReadReply =
            cmd.query_async(conn).await.map_err(|e| self.psor.err(e))?;
        let mut out = Vec::new();
        for k in reply.keys {
            for e in k.ids {
                let mut fields: EventFields = e
                    .map
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            redis::from_redis_value_ref::<String>(v).unwrap_or_default(),
                        )
                    })
                    .collect();
                fields.sort();
                out.push((e.id, fields));
            }
        }
        Ok(out)
    }

    /// Rollback: a quiesced store becomes running again.
    pub async fn unquiesce(&self, version: &str, actor: &str, fence: u64) -> Result<()> {
        let v = self
            .run(
                &scripts::UNQUIESCE,
                &[fence.to_string(), version.into(), actor.into()],
            )
            .await?;
        match v.first().map(String::as_str) {
            Some("OK") => Ok(()),
            Some("FENCED") => Err(self.fenced(&v, Some(fence))),
            _ => Err(Error::refused(format!(
                "store {version} of PAC {} does not exist",
                self.name
            ))),
        }
    }

    /// Rollback: detaches one store and deletes its keys incrementally.
    pub async fn remove_store(&self, version: &str, actor: &str, fence: u64) -> Result<u64> {
        let v = self
            .run(
                &scripts::DETACH_STORE,
                &[fence.to_string(), version.into(), actor.into()],
            )
            .await?;
        match v.first().map(String::as_str) {
            Some("OK") | Some("NONE") => self.gc_removing().await,
            Some("LIVE") => Err(Error::refused(format!(
                "store {version} of PAC {} still has live members: {}",
                self.name,
                v[1..].join(", ")
            ))),
            Some("ONLY") => Err(Error::refused(format!(
                "store {version} is the only store of PAC {}; it cannot be removed",
                self.name
            ))),
            Some("FENCED") => Err(self.fenced(&v, Some(fence))),
            other => Err(Error::refused(format!(
                "unexpected reply {other:?} removing store {version}"
            ))),
        }
    }

    /// Records that every member of `store` now runs `version`.
    pub async fn set_running_version(&self, store: &str, version: &str, fence: u64) -> Result<()> {
        let v = self
            .run(
                &scripts::SET_RUNNING_VERSION,
                &[fence.to_string(), store.into(), version.into()],
            )
            .await?;
        match v.first().map(String::as_str) {
            Some("OK") => Ok(()),
            Some("FENCED") => Err(self.fenced(&v, Some(fence))),
            _ => Err(Error::refused(format!(
                "store {store} of PAC {} does not exist",
                self.name
            ))),
        }
    }
}
