//! The coordinator's PSOR state: lease with fencing epoch, rollout journal, history and
//! events (docs/rollout.md, docs/reference.md#events).
//!
//! The lease (`lock`) is a key with a TTL holding `<holder> <epoch>` (the holder being
//! `<by> pid=<pid> since_ms=<ms>`, see [`LeaseHolder`]); taking it bumps the PAC's fencing
//! epoch. Every write a coordinator makes afterwards passes that epoch and
//! is refused inside the same script when it is no longer current, so a coordinator that
//! was paused past its lease and wakes up cannot change anything.
//!
//! All of it lives in the coordinator's state Redis (see [`super::keys::Home`]: the PSOR
//! unless `--state` names another), whose PAC record then holds the epoch and nothing
//! else.

use super::scripts::{AcquireLease, AcquireReply, Fenced, ReleaseLease, RenewLease, RolloutWrite};
use super::{keys, Pac};
use crate::error::{Error, Result};
use redis::AsyncCommands;
use serde::Serialize;
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

/// Who holds a coordinator lease, as written into the lock when it was taken, so that a
/// refused coordinator can say who is in the way, in which process and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseHolder {
    /// Who (`user@host`, or what `--by` said).
    pub by: String,
    /// The holder's process id (absent in a lock written by an older version).
    pub pid: Option<u32>,
    /// When the lease was taken, ms since the Unix epoch by the holder's clock.
    pub since_ms: Option<u64>,
}

impl LeaseHolder {
    /// This process, taking the lease now on behalf of `by`.
    pub fn this_process(by: &str) -> LeaseHolder {
        LeaseHolder {
            by: by.to_string(),
            pid: Some(std::process::id()),
            since_ms: Some(super::now_ms()),
        }
    }

    /// The holder part of the lock value.
    pub fn encode(&self) -> String {
        let mut s = self.by.clone();
        if let Some(p) = self.pid {
            s.push_str(&format!(" pid={p}"));
        }
        if let Some(t) = self.since_ms {
            s.push_str(&format!(" since_ms={t}"));
        }
        s
    }

    /// Reads a whole lock value (`<holder> <epoch>`). Anything that does not have the
    /// current form is kept whole as `by`, so an older lock still names its holder.
    pub fn from_lock_value(value: &str) -> LeaseHolder {
        let holder = match value.rsplit_once(' ') {
            Some((h, epoch)) if epoch.parse::<u64>().is_ok() => h,
            _ => value,
        };
        let mut rest = holder;
        let mut take = |key: &str| -> Option<u64> {
            let (head, v) = rest.rsplit_once(key)?;
            let n = v.parse().ok()?;
            rest = head;
            Some(n)
        };
        let since_ms = take(" since_ms=");
        let pid = take(" pid=").and_then(|p| u32::try_from(p).ok());
        LeaseHolder {
            by: rest.to_string(),
            pid,
            since_ms,
        }
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.by)?;
        if let Some(p) = self.pid {
            write!(f, ", pid {p}")?;
        }
        if let Some(t) = self.since_ms {
            write!(f, ", since {}", super::rfc3339(t))?;
        }
        Ok(())
    }
}

/// One stored event (the rollout event fields, plus the admin events' `by`).
pub type EventFields = Vec<(String, String)>;

/// One journal write of a batch: journal fields, event fields, history entry.
pub type JournalWrite<'a> = (
    Vec<(&'a str, String)>,
    Vec<(&'a str, String)>,
    Option<String>,
);

impl Pac {
    /// Takes the coordinator lease; [`Error::LeaseHeld`] (exit 4) when another holds it.
    pub async fn acquire_lease(&self, holder: &LeaseHolder, ttl: Duration) -> Result<Lease> {
        // With the state apart the PSOR is not asked whether the PAC exists: the
        // coordinator reads nothing of it (preflight's `store_state` answered for it).
        let holder = holder.encode();
        let call = AcquireLease {
            holder: &holder,
            ttl_ms: ttl.as_millis() as u64,
            pac_here: !self.state_apart(),
        };
        match self.eval(&call).await? {
            AcquireReply::Ok { epoch } => Ok(Lease {
                value: format!("{holder} {epoch}"),
                epoch,
            }),
            AcquireReply::Held {
                lock,
                rollout,
                state,
            } => Err(Error::LeaseHeld {
                pac: self.name.to_string(),
                rollout: (!rollout.is_empty() && is_active_state(&state))
                    .then_some((rollout, state)),
                holder: LeaseHolder::from_lock_value(&lock),
            }),
            AcquireReply::NoPac => Err(Error::NoSuchPac(self.name.to_string())),
        }
    }

    /// Extends the lease; false when it was lost (expired and possibly taken).
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        self.eval(&RenewLease {
            value: &lease.value,
            ttl_ms: ttl.as_millis() as u64,
        })
        .await
    }

    /// Releases the lease if still ours.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.eval(&ReleaseLease {
            value: &lease.value,
        })
        .await?;
        Ok(())
    }

    /// Who holds the lease now, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>> {
        let st = self.holding(&keys::LOCK);
        st.conn().get(self.keys.lock()).await.map_err(|e| st.err(e))
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
        let call = RolloutWrite {
            fence: epoch,
            state,
            event,
            history,
        };
        match self.eval(&call).await? {
            Fenced::Ok(_) => Ok(()),
            Fenced::Stale { epoch: current } => Err(self.fenced(Some(epoch), current)),
        }
    }

    /// Several [`Pac::rollout_write`]s in one pipelined round trip, applied in order; one
    /// result per write (a write refused as fenced does not stop the others from being
    /// tried: each is fenced on its own). The steps of a parallel group journal through
    /// this, so their cost does not add up one round trip at a time.
    pub async fn rollout_write_batch(
        &self,
        epoch: u64,
        writes: &[JournalWrite<'_>],
    ) -> Result<Vec<Result<()>>> {
        let calls: Vec<RolloutWrite<'_>> = writes
            .iter()
            .map(|(state, event, history)| RolloutWrite {
                fence: epoch,
                state,
                event,
                history: history.as_deref(),
            })
            .collect();
        let mut p = redis::pipe();
        // One write refused as fenced must not hide the others' results.
        p.ignore_errors();
        for call in &calls {
            self.pipe_call(&mut p, call);
        }
        // Journal writes are critical: the batch is confirmed durable as a whole.
        let values = self
            .pipe_home::<RolloutWrite<'_>>()?
            .durable_pipe(p)
            .await?;
        Ok(values
            .into_iter()
            .map(|v| match self.pipe_reply::<RolloutWrite<'_>>(v)? {
                Fenced::Ok(_) => Ok(()),
                Fenced::Stale { epoch: current } => Err(self.fenced(Some(epoch), current)),
            })
            .collect())
    }

    /// Sets operator request flags on the current rollout (pause/abort) without the lease:
    /// the coordinator reads them between steps. Plain HSET: it changes no PAC state.
    pub async fn rollout_request(&self, field: &str, value: &str) -> Result<()> {
        let st = self.holding(&keys::ROLLOUT_CURRENT);
        let _: () = st
            .conn()
            .hset(self.keys.rollout_current(), field, value)
            .await
            .map_err(|e| st.err(e))?;
        Ok(())
    }

    /// The current (or last) rollout's journal.
    pub async fn rollout_current(&self) -> Result<HashMap<String, String>> {
        let st = self.holding(&keys::ROLLOUT_CURRENT);
        st.conn()
            .hgetall(self.keys.rollout_current())
            .await
            .map_err(|e| st.err(e))
    }

    /// Past rollouts, newest first (JSON summaries).
    pub async fn rollout_history(&self) -> Result<Vec<String>> {
        let st = self.holding(&keys::ROLLOUT_HISTORY);
        st.conn()
            .lrange(self.keys.rollout_history(), 0, -1)
            .await
            .map_err(|e| st.err(e))
    }

    /// Events after stream id `after` ("0" for all), at most `count`, optionally blocking,
    /// on `conn`, a connection to the Redis [`Pac::holding`] the events.
    pub async fn read_events(
        &self,
        conn: &mut crate::conn::PsorConn,
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
        let reply: redis::streams::StreamReadReply = cmd
            .query_async(conn)
            .await
            .map_err(|e| self.holding(&keys::EVENTS).err(e))?;
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
}

/// States in which a rollout is still going (a coordinator may be driving it).
fn is_active_state(s: &str) -> bool {
    matches!(s, "running" | "paused" | "held" | "rolling_back")
}

#[cfg(test)]
mod tests {
    use super::LeaseHolder;

    #[test]
    fn lock_values_name_their_holder() {
        let h = LeaseHolder {
            by: "alice@host1 (caspac)".into(),
            pid: Some(42),
            since_ms: Some(1_700_000_000_000),
        };
        let value = format!("{} 7", h.encode());
        assert_eq!(LeaseHolder::from_lock_value(&value), h);
        assert_eq!(
            h.to_string(),
            "alice@host1 (caspac), pid 42, since 2023-11-14T22:13:20Z"
        );
        // A lock written by an older version keeps its whole holder text.
        let old = LeaseHolder::from_lock_value("operator_(pacup_0.1.0)@29674 5");
        assert_eq!(old.by, "operator_(pacup_0.1.0)@29674");
        assert_eq!((old.pid, old.since_ms), (None, None));
    }
}
