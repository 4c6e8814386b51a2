//! Durability of acknowledged writes: after a write whose loss would corrupt a rollout's
//! outcome, the PSOR's master is asked to confirm that a replica (`WAIT`) or the AOF
//! (`WAITAOF`) has it before the write is reported done. Redis replicates
//! asynchronously, so without this a Sentinel failover can discard writes every client
//! already saw acknowledged (a job counted completed twice, a journal back at `running`).
//!
//! The confirmation rides in the same pipeline as the write ([`Psor::durable_pipe`]), so it
//! costs no extra round trip. A confirmation that comes back short is asked again (the
//! replica may only be lagging) and then surfaced as [`Error::NotDurable`], which is
//! retryable: every critical write is idempotent, so its caller repeats it, on the new
//! master if the old one was cut off.

use super::Psor;
use crate::error::{Error, Result};
use redis::aio::ConnectionLike;
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

/// What "acknowledged" means for a critical write (`--durability`, env `PACUP_DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged once the master applied it (a PSOR without replicas).
    None,
    /// Acknowledged once one replica has it (`WAIT 1 <bound>`).
    Replica,
    /// Acknowledged once the master's AOF has it fsynced, and one replica's when the
    /// PSOR has replicas (`WAITAOF 1 <0|1> <bound>`; Redis 7.2 or later, `appendonly yes`).
    Aof,
}

impl Durability {
    /// The names `--durability` accepts.
    pub const NAMES: [&'static str; 3] = ["none", "replica", "aof"];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Replica => "replica",
            Durability::Aof => "aof",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Durability> {
        match s {
            "none" => Ok(Durability::None),
            "replica" => Ok(Durability::Replica),
            "aof" => Ok(Durability::Aof),
            _ => Err(Error::invalid("--durability", s, "none, replica or aof")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bound of one `WAIT`/`WAITAOF`. A healthy replica on the same network answers in well
/// under a millisecond; half a second covers a replica busy with a large write.
pub const WAIT_BOUND: Duration = Duration::from_millis(500);

/// How many times a short confirmation is asked for in all (each up to [`WAIT_BOUND`])
/// before the write is reported not durable. The whole wait stays well below the time
/// after which another region takes over a job whose region stopped answering (twice the
/// heartbeat TTL), so a region that loses its replica mid-completion records the job on
/// the new master before anyone else reruns it.
pub const WAIT_ATTEMPTS: u32 = 3;

/// The durability in force on one connection: the mode and, for `aof`, how many
/// replicas' fsyncs to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) mode: Durability,
    /// Whether the mode was chosen from what the PSOR reported (and is chosen again when
    /// the master moves) rather than given.
    pub(crate) auto: bool,
    /// Replicas an `aof` wait asks for (0 or 1).
    pub(crate) aof_replicas: u64,
}

impl Resolved {
    /// The confirmation command, or none when writes are acknowledged as applied.
    fn wait_cmd(&self) -> Option<redis::Cmd> {
        let ms = WAIT_BOUND.as_millis() as u64;
        match self.mode {
            Durability::None => None,
            Durability::Replica => {
                let mut c = redis::cmd("WAIT");
                c.arg(1).arg(ms);
                Some(c)
            }
            Durability::Aof => {
                let mut c = redis::cmd("WAITAOF");
                c.arg(1).arg(self.aof_replicas).arg(ms);
                Some(c)
            }
        }
    }

    /// What the confirmation's reply says: `Ok` when enough acknowledged, else how many
    /// did of how many asked.
    fn check(&self, v: &Value) -> std::result::Result<(), (u64, u64)> {
        let int = |v: &Value| match v {
            Value::Int(n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        match self.mode {
            Durability::None => Ok(()),
            Durability::Replica => {
                let n = int(v);
                if n >= 1 {
                    Ok(())
                } else {
                    Err((n, 1))
                }
            }
            Durability::Aof => {
                let (local, reps) = match v {
                    Value::Array(a) if a.len() == 2 => (int(&a[0]), int(&a[1])),
                    _ => (0, 0),
                };
                if local >= 1 && reps >= self.aof_replicas {
                    Ok(())
                } else {
                    Err((
                        local.min(1) + reps.min(self.aof_replicas),
                        1 + self.aof_replicas,
                    ))
                }
            }
        }
    }
}

fn info_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Whether Redis version `v` ("7.0.15") has `WAITAOF` (7.2 or later).
fn has_waitaof(v: &str) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (7, 2)
}

/// Chooses the durability for a freshly connected master: the one asked for, checked
/// against what the server can do, or (none asked) `replica` when the master reports
/// connected replicas, else `none`. `aof` on a server without `WAITAOF` or without an AOF
/// is refused ([`Error::InvalidInput`], exit 2) before anything is written.
pub(crate) async fn resolve<C: ConnectionLike + Send>(
    conn: &mut C,
    asked: Option<Durability>,
    shown: &str,
) -> Result<Resolved> {
    let (repl, server, persistence): (String, String, String) = redis::pipe()
        .cmd("INFO")
        .arg("replication")
        .cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("persistence")
        .query_async(conn)
        .await
        .map_err(|e| super::classify(shown, e))?;
    let repl = info_map(&repl);
    let replicas: u64 = repl
        .get("connected_slaves")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mode = match asked {
        Some(m) => m,
        None if replicas > 0 => Durability::Replica,
        None => Durability::None,
    };
    if mode == Durability::Aof {
        let server = info_map(&server);
        let version = server.get("redis_version").cloned().unwrap_or_default();
        if !has_waitaof(&version) {
            return Err(Error::invalid(
                "--durability",
                "aof",
                format!(
                    "none or replica: the PSOR at {shown} runs Redis {version}, and WAITAOF \
                     needs Redis 7.2 or later"
                ),
            ));
        }
        if info_map(&persistence)
            .get("aof_enabled")
            .map(String::as_str)
            != Some("1")
        {
            return Err(Error::invalid(
                "--durability",
                "aof",
                format!("none or replica: the PSOR at {shown} has no AOF (appendonly no)"),
            ));
        }
    }
    if mode == Durability::Replica && replicas == 0 {
        tracing::warn!(
            "--durability replica, but the PSOR at {shown} reports no connected replica: \
             critical writes will fail until one connects"
        );
    }
    Ok(Resolved {
        mode,
        auto: asked.is_none(),
        aof_replicas: u64::from(replicas > 0),
    })
}

impl Psor {
    /// The durability critical writes get on this handle's current master.
    pub fn durability(&self) -> Durability {
        self.resolved().mode
    }

    /// Runs pipeline `p` (whose commands are a critical write) with the durability
    /// confirmation appended, and returns the write's replies (each command's, errors as
    /// `Value::ServerError` when `p` ignores errors). A short confirmation is asked again,
    /// then reported as [`Error::NotDurable`].
    pub(crate) async fn durable_pipe(&self, mut p: redis::Pipeline) -> Result<Vec<Value>> {
        // The connection and its master's durability, as one pair (a swap replaces both).
        let (mut conn, d) = self.conn_and_durability();
        let generation = self.generation();
        let Some(wait) = d.wait_cmd() else {
            return p.query_async(&mut conn).await.map_err(|e| self.err(e));
        };
        p.add_command(wait.clone());
        let mut values: Vec<Value> = p.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut confirmation = values.pop().unwrap_or(Value::Nil);
        // A write the server refused (READONLY on a demoted master, LOADING) wrote
        // nothing, and its error says more than the wait's: the caller gets it.
        if values.iter().any(|v| matches!(v, Value::ServerError(_))) {
            return Ok(values);
        }
        let mut attempt = 1;
        loop {
            let check = d.check(&confirmation);
            if check.is_err() {
                // A master that lost its replica may be the old side of a failover.
                self.refresh_master();
            }
            match check {
                Ok(()) => return Ok(values),
                // Asking a master that is no longer ours again is no use: the caller
                // repeats the (idempotent) write on the new one.
                Err((acked, wanted))
                    if attempt >= WAIT_ATTEMPTS || self.generation() != generation =>
                {
                    return Err(Error::NotDurable {
                        target: self.target.clone(),
                        durability: d.mode.as_str(),
                        acked,
                        wanted,
                    });
                }
                Err((acked, wanted)) => {
                    tracing::debug!(
                        "a write was confirmed by {acked} of {wanted} within {WAIT_BOUND:?}; asking again"
                    );
                }
            }
            attempt += 1;
            // WAIT on the same connection covers every write sent on it before, ours
            // included. A wait the server refuses (a master demoted meanwhile) counts as
            // unconfirmed.
            confirmation = match wait.query_async(&mut conn).await {
                Ok(v) => v,
                Err(e) if e.code().is_some() => Value::Nil,
                Err(e) => return Err(self.err(e)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for n in Durability::NAMES {
            assert_eq!(n.parse::<Durability>().unwrap().as_str(), n);
        }
        let e = "always".parse::<Durability>().unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::InvalidInput);
    }

    #[test]
    fn not_durable_is_an_outage_to_retry_with_exit_5() {
        let e = Error::NotDurable {
            target: "redis://127.0.0.1:1".into(),
            durability: "replica",
            acked: 0,
            wanted: 1,
        };
        assert!(e.is_retryable());
        assert!(e.is_outage());
        assert_eq!(e.exit_code(), crate::ExitCode::Unreachable);
    }

    #[test]
    fn waitaof_needs_7_2() {
        assert!(!has_waitaof("7.0.15"));
        assert!(!has_waitaof("6.2.1"));
        assert!(has_waitaof("7.2.0"));
        assert!(has_waitaof("7.4.1"));
        assert!(has_waitaof("8.0.0"));
    }

    #[test]
    fn short_confirmations_are_not_success() {
        let r = Resolved {
            mode: Durability::Replica,
            auto: false,
            aof_replicas: 0,
        };
        assert_eq!(r.check(&Value::Int(1)), Ok(()));
        assert_eq!(r.check(&Value::Int(0)), Err((0, 1)));
        assert_eq!(r.check(&Value::Nil), Err((0, 1)));
        let a = Resolved {
            mode: Durability::Aof,
            auto: false,
            aof_replicas: 1,
        };
        assert_eq!(
            a.check(&Value::Array(vec![Value::Int(1), Value::Int(1)])),
            Ok(())
        );
        assert_eq!(
            a.check(&Value::Array(vec![Value::Int(1), Value::Int(0)])),
            Err((1, 2))
        );
    }
}
