//! The control protocol between operators (or the coordinator) and host agents.
//!
//! A command is an entry on the host's control stream with a unique id and a deadline.
//! The agent takes a command only if it can record the id in its `done` hash first
//! (HSETNX), so a command delivered twice runs at most once; a command read after its
//! deadline is answered `expired` and not run. The reply is pushed to a per-command list
//! that the sender waits on with BLPOP on a dedicated connection.

use super::scripts::{Fenced, SendControl, TakeControl, TakeReply};
use super::{now_ms, Pac, StartType};
use crate::error::{Advice, Error, ExitCode, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a host agent can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Start a region with a start type.
    Start {
        /// Region.
        region: String,
        /// Start type.
        start_type: StartType,
        /// Listener at start: `Some(false)` keeps it off whatever the store's mode (the
        /// coordinator turns it on after the wave's health gate); `None`: the agent's
        /// configured behaviour.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listener: Option<bool>,
    },
    /// Stop a region: listener off, drain clients, finish the job in hand, leave.
    Stop {
        /// Region.
        region: String,
        /// How long to wait for clients to leave.
        drain_timeout_ms: u64,
        /// Past this the stop is forced (job in hand abandoned, reclaimed later).
        stop_timeout_ms: u64,
        /// Force at once.
        force: bool,
    },
    /// Turn a region's client listener on or off.
    Listener {
        /// Region.
        region: String,
        /// On or off.
        on: bool,
    },
    /// Install another product version on the host (refused while a region runs).
    ApplyUpdate {
        /// New version.
        version: String,
    },
    /// Kill a region abruptly, as a crash would (fault tests).
    Crash {
        /// Region.
        region: String,
    },
}

/// A command as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlCommand {
    /// Unique id.
    pub id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: ControlAction,
    /// Not to be run after this (ms since the epoch).
    pub deadline_ms: u64,
    /// Who sent it.
    pub by: String,
    /// Fencing epoch of the coordinator that sent it (none for an operator's command).
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// An agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Command id.
    pub id: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Exit code for the outcome (0 ok, 1 refused, 2 bad input).
    pub code: i32,
    /// What happened.
    pub message: String,
    /// For a refusal with a known next step: what would work (the sender's command line
    /// phrases it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
}

impl ControlReply {
    /// The reply to command `id` for an outcome.
    pub fn of(id: &str, r: &Result<String>) -> ControlReply {
        match r {
            Ok(message) => ControlReply {
                id: id.into(),
                ok: true,
                code: 0,
                message: message.clone(),
                advice: None,
            },
            Err(e) => ControlReply {
                id: id.into(),
                ok: false,
                code: e.exit_code().code(),
                message: e.to_string(),
                advice: e.advice().cloned(),
            },
        }
    }
}

fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:x}-{:x}", now_ms(), h.finish())
}

impl Pac {
    /// Sends a command to `host`'s agent; returns its id. `ttl` bounds when it may run;
    /// with a `fence` the command is queued (and later run) only under that epoch.
    pub async fn send_control(
        &self,
        host: &str,
        action: ControlAction,
        ttl: Duration,
        by: &str,
        fence: Option<u64>,
    ) -> Result<String> {
        let cmd = ControlCommand {
            id: new_id(),
            action,
            deadline_ms: now_ms() + ttl.as_millis() as u64,
            by: by.into(),
            epoch: fence,
        };
        let body = serde_json::to_string(&cmd).expect("serialisable");
        match self
            .eval(&SendControl {
                fence,
                host,
                body: &body,
            })
            .await?
        {
            Fenced::Ok(()) => Ok(cmd.id),
            Fenced::Stale { epoch } => Err(self.fenced(fence, epoch)),
        }
    }

    /// Waits up to `timeout` for the reply to command `id`. With a `host`, gives up early
    /// once that host's agent has stopped heartbeating (nobody is left to answer), or was
    /// replaced by another incarnation (an agent restarted by its supervisor reads only
    /// commands sent after it started: this one will never be answered).
    pub async fn wait_reply(
        &self,
        id: &str,
        timeout: Duration,
        host: Option<&str>,
    ) -> Result<ControlReply> {
        let mut c = self.psor.dedicated().await?;
        let mut generation = self.psor.generation();
        let end = tokio::time::Instant::now() + timeout;
        let mut missing = 0;
        // The host's liveness key holds its agent's pid: who was there when we sent. A key
        // missing then (lapsed while the PSOR failed over: the old master's last writes are
        // lost) names nobody, so the first pid seen afterwards is taken as the one.
        let mut sent_to: Option<String> = match host {
            Some(h) => redis::cmd("GET")
                .arg(self.keys.host_alive(h))
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?,
            None => None,
        };
        loop {
            // Each block is at most a second, so a moved master is followed within one.
            if self.psor.generation() != generation {
                generation = self.psor.generation();
                c = self.psor.dedicated().await?;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let chunk = left.min(Duration::from_secs(1)).as_secs_f64().max(0.01);
            let r: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(self.keys.control_reply(id))
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
            if let Some((_, body)) = r {
                return serde_json::from_str(&body)
                    .map_err(|e| Error::refused(format!("malformed reply to command {id}: {e}")));
            }
            if tokio::time::Instant::now() >= end {
                return Err(Error::refused(format!(
                    "no reply to command {id} within {}",
                    crate::names::format_duration(timeout)
                )));
            }
            if let Some(h) = host {
                let now: Option<String> = redis::cmd("GET")
                    .arg(self.keys.host_alive(h))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.psor.err(e))?;
                if sent_to.is_none() {
                    sent_to.clone_from(&now);
                }
                if now.is_some() && now != sent_to {
                    return Err(Error::refused(format!(
                        "the host agent of {h} restarted (pid {} when sent, now {}); command \
                         {id} got no reply (it may or may not have run)",
                        sent_to.as_deref().unwrap_or_default(),
                        now.as_deref().unwrap_or_default()
                    )));
                }
                let alive = now.is_some();
                missing = if alive { 0 } else { missing + 1 };
                // Twice in a row, so a heartbeat racing its own expiry is not mistaken.
                if missing >= 2 {
                    return Err(Error::refused(format!(
                        "the host agent of {h} stopped heartbeating; command {id} got no reply \
                         (it may or may not have run)"
                    )));
                }
            }
        }
    }

    /// Sends a command and waits for its reply; a refused or failed outcome is an error
    /// carrying the agent's message.
    pub async fn control(
        &self,
        host: &str,
        action: ControlAction,
        timeout: Duration,
        by: &str,
        fence: Option<u64>,
    ) -> Result<ControlReply> {
        let id = self.send_control(host, action, timeout, by, fence).await?;
        let reply = self.wait_reply(&id, timeout, Some(host)).await?;
        if reply.ok {
            Ok(reply)
        } else if reply.code == ExitCode::InvalidInput.code() {
            Err(Error::invalid("control command", &id, reply.message))
        } else if let Some(advice) = reply.advice {
            Err(Error::refused_with(reply.message, advice))
        } else {
            Err(Error::refused(reply.message))
        }
    }

    /// Agent side: marks command `id` taken. `Ok(false)` when it was taken before (a
    /// duplicate delivery), in which case it must not run again; [`Error::Fenced`] when it
    /// was sent under an epoch that is no longer current.
    pub async fn take_control(&self, host: &str, cmd: &ControlCommand) -> Result<bool> {
        let call = TakeControl {
            host,
            id: &cmd.id,
            fence: cmd.epoch,
        };
        match self.eval(&call).await? {
            TakeReply::Ok => Ok(true),
            TakeReply::Taken => Ok(false),
            TakeReply::Fenced { epoch } => Err(self.fenced(cmd.epoch, epoch)),
        }
    }

    /// Agent side: publishes the reply (kept an hour for late readers).
    pub async fn reply_control(&self, reply: &ControlReply) -> Result<()> {
        let key = self.keys.control_reply(&reply.id);
        let body = serde_json::to_string(reply).expect("serialisable");
        let _: () = redis::pipe()
            .atomic()
            .rpush(&key, body)
            .ignore()
            .expire(&key, 3600)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(())
    }

    /// Agent side: reads control commands after stream id `after` (blocking up to
    /// `block`) on a dedicated connection. Returns (stream id, command) pairs; entries that
    /// do not parse are returned as `Err` text so the agent can log them.
    pub async fn read_control(
        &self,
        conn: &mut crate::conn::PsorConn,
        host: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, std::result::Result<ControlCommand, String>)>> {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(16)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.keys.host_control(host))
            .arg(after)
            .query_async(conn)
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut out = Vec::new();
        for k in reply.keys {
            for e in k.ids {
                let body: Option<String> = e.get("cmd");
                let cmd = body
                    .ok_or_else(|| "entry without cmd field".to_string())
                    .and_then(|b| serde_json::from_str(&b).map_err(|e| e.to_string()));
                out.push((e.id.clone(), cmd));
            }
        }
        Ok(out)
    }

    /// The id of the newest control entry for `host` ("0-0" if none): where a fresh
    /// agent starts reading, so it never runs commands sent to a previous incarnation.
    pub async fn control_tail(&self, host: &str) -> Result<String> {
        let v: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.keys.host_control(host))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(v.ids
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Agent side: publishes the host record and its liveness, atomically.
    pub async fn host_heartbeat(
        &self,
        host: &str,
        product: &crate::names::Product,
        started_with: &str,
        regions: &[String],
        checks: &crate::hostcheck::Measured,
        ttl: Duration,
    ) -> Result<()> {
        let key = self.keys.host(host);
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("product_version", product.version.to_string()),
                    ("started_with", started_with.to_string()),
                    ("os", product.os.clone()),
                    ("bitness", product.bitness.to_string()),
                    ("regions", regions.join(",")),
                    ("heartbeat_at", now_ms().to_string()),
                    (
                        "checks",
                        serde_json::to_string(checks).expect("checks serialise"),
                    ),
                ],
            )
            .ignore()
            .cmd("SET")
            .arg(self.keys.host_alive(host))
            .arg(std::process::id())
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .sadd(self.keys.hosts(), host)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(())
    }

    /// What host `host`'s record says is installed there: `(product_version,
    /// started_with)`, the latter the `--product-version` of the agent that wrote the
    /// record; `None` without a record (a new host, or the PAC was reset).
    pub async fn host_installed(&self, host: &str) -> Result<Option<(String, String)>> {
        let (v, with): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.host(host))
            .arg("product_version")
            .arg("started_with")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(v.map(|v| (v, with.unwrap_or_default())))
    }

    /// Agent side: drops the host's liveness on a clean exit.
    pub async fn host_gone(&self, host: &str) -> Result<()> {
        let _: () = redis::cmd("DEL")
            .arg(self.keys.host_alive(host))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(())
    }
}
