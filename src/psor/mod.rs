//! The PSOR: typed reads and atomic writes of a PAC's state in Redis.
//!
//! - [`keys`]: the key vocabulary (Rust and the scripts' prelude come from one table);
//! - [`scripts`]: every Lua script that changes state, with its typed call and reply;
//! - [`model`]: what is read (stores, regions, hosts, a [`Snapshot`]) and the protocol
//!   values written (modes, start types);
//! - `snapshot`: reads of a whole PAC in two pipelined round trips, and of the PACs in a
//!   PSOR; `region_ops`: a region's life (join, heartbeat, leave); `store_ops`: InitPac
//!   and SetMode; `removal`: detaching and incrementally deleting stores; `backup`:
//!   backup and restore; `scan`: SCAN-based walks that never block Redis;
//! - [`work`], [`control`], [`rollout`], [`series`]: jobs and transactions, the agent
//!   control protocol, the coordinator's lease and journal, rollout series.
//!
//! [`Pac::eval`] is the one path by which a script runs; its reply is decoded once, by
//! the call's own type.

mod backup;
pub mod control;
pub mod keys;
pub mod model;
mod region_ops;
mod removal;
pub mod rollout;
mod scan;
pub mod scripts;
pub mod series;
mod snapshot;
mod store_ops;
pub mod views;
pub mod work;

pub use backup::{Backup, BackupKey};
pub use model::*;
pub use region_ops::{JoinOutcome, JoinRequest};
pub use scripts::Heartbeat;
pub use snapshot::{list_pacs, pac_names};

use crate::conn::Psor;
use crate::error::{Error, Result};
use crate::names::PacName;
use keys::Keys;
use scripts::{Call, Raw};

/// One PAC in a PSOR: the typed face of the scripts in [`scripts`].
#[derive(Debug, Clone)]
pub struct Pac {
    psor: Psor,
    name: PacName,
    keys: Keys,
}

impl Pac {
    /// A handle on PAC `name` (nothing is read or written).
    pub fn new(psor: Psor, name: PacName) -> Self {
        let keys = Keys::new(&name);
        Pac { psor, name, keys }
    }

    /// PAC name.
    pub fn name(&self) -> &PacName {
        &self.name
    }

    /// Key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The connection.
    pub fn psor(&self) -> &Psor {
        &self.psor
    }

    pub(crate) fn conn(&self) -> redis::aio::ConnectionManager {
        self.psor.conn()
    }

    fn invocation<C: Call>(&self, call: &C) -> redis::ScriptInvocation<'static> {
        let mut inv = C::lua().script().key(self.keys.prefix());
        for k in call.keys(&self.keys) {
            inv.key(k);
        }
        for a in call.args() {
            inv.arg(a);
        }
        inv
    }

    /// Runs one script and decodes its reply (loading the script first if the server
    /// does not have it, e.g. after `SCRIPT FLUSH` or a failover).
    ///
    /// A critical script's write is made durable before this returns (`--durability`);
    /// when it cannot be confirmed the call fails with the retryable
    /// [`Error::NotDurable`].
    pub async fn eval<C: Call>(&self, call: &C) -> Result<C::Reply> {
        if C::lua().critical && self.psor.durability() != crate::conn::Durability::None {
            return self.eval_durable(call).await;
        }
        let v: Vec<String> = self
            .invocation(call)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        decode::<C>(v)
    }

    /// The script call and its durability confirmation in one round trip. A server
    /// without the script (`NOSCRIPT`: nothing ran) gets it loaded, and the call is sent
    /// again; loading only then keeps the script's text off every call.
    async fn eval_durable<C: Call>(&self, call: &C) -> Result<C::Reply> {
        let lua = C::lua();
        let mut evalsha = redis::cmd("EVALSHA");
        let keys = call.keys(&self.keys);
        evalsha
            .arg(lua.script().get_hash())
            .arg(1 + keys.len())
            .arg(self.keys.prefix())
            .arg(keys)
            .arg(call.args());
        let mut loaded = false;
        loop {
            let mut p = redis::pipe();
            p.ignore_errors();
            p.add_command(evalsha.clone());
            let reply = self.psor.durable_pipe(p).await?.pop();
            match reply {
                Some(redis::Value::ServerError(e))
                    if !loaded && e.kind() == Some(redis::ServerErrorKind::NoScript) =>
                {
                    lua.script()
                        .prepare_invoke()
                        .load_async(&mut self.conn())
                        .await
                        .map_err(|e| self.psor.err(e))?;
                    loaded = true;
                }
                Some(redis::Value::ServerError(e)) => return Err(self.psor.err(e.into())),
                Some(v) => return self.pipe_reply::<C>(v),
                None => {
                    return Err(Error::UnexpectedReply {
                        script: lua.name,
                        reply: "nothing".into(),
                    })
                }
            }
        }
    }

    /// Adds one script call to a pipeline, preceded by its `SCRIPT LOAD`: EVALSHA in a
    /// pipeline cannot fall back to EVAL, and loading in the same round trip keeps the
    /// pipeline working after a `SCRIPT FLUSH` or on a replica promoted without the
    /// script. Its reply is decoded with [`Pac::pipe_reply`].
    pub(crate) fn pipe_call<C: Call>(&self, p: &mut redis::Pipeline, call: &C) {
        p.load_script(C::lua().script()).ignore();
        p.invoke_script(&self.invocation(call));
    }

    /// Decodes the reply of a [`Pac::pipe_call`].
    pub(crate) fn pipe_reply<C: Call>(&self, v: redis::Value) -> Result<C::Reply> {
        // A server error keeps its code (READONLY, LOADING: an outage to ride out).
        if let redis::Value::ServerError(e) = v {
            return Err(self.psor.err(e.into()));
        }
        let v: Vec<String> = redis::from_redis_value(v).map_err(|e| self.psor.err(e.into()))?;
        decode::<C>(v)
    }

    /// The error for a script's `FENCED` reply.
    pub(crate) fn fenced(&self, ours: Option<u64>, current: u64) -> Error {
        Error::Fenced {
            ours: ours.unwrap_or(0),
            current,
        }
    }
}

fn decode<C: Call>(v: Vec<String>) -> Result<C::Reply> {
    let raw = Raw::from_values(v);
    let lua = C::lua();
    if !lua.codes.contains(&raw.code.as_str()) {
        return Err(Error::UnexpectedReply {
            script: lua.name,
            reply: format!("{} {}", raw.code, raw.fields.join(" "))
                .trim_end()
                .to_string(),
        });
    }
    let code = raw.code.clone();
    C::decode(raw).ok_or(Error::UnexpectedReply {
        script: lua.name,
        reply: code,
    })
}
