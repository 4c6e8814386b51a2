//! The PSOR: typed reads and atomic writes of a PAC's state in Redis.
//!
//! - [`keys`]: the key vocabulary (Rust and the scripts' prelude come from one table);
//! - [`scripts`]: every Lua script that changes state, with its typed call and reply;
//! - [`model`]: what is read (stores, regions, hosts, a [`Snapshot`]) and the protocol
//!   values written (modes, start types);
//! - [`notify`]: the messages of the PAC's notification channel and one subscription
//!   shared by a process's regions;
//! - `snapshot`: reads of a whole PAC in two pipelined round trips, and of the PACs in a
//!   PSOR; `region_ops`: a region's life (join, heartbeat, leave); `store_ops`: InitPac
//!   and SetMode; `removal`: detaching and incrementally deleting stores (on a cluster
//!   `removal_slot`: by listing the PAC's slot); `backup`: backup and restore; `scan`:
//!   batched walks over a PAC's keys that never block Redis;
//! - [`work`], [`control`], [`rollout`], [`series`]: jobs and transactions, the agent
//!   control protocol, the coordinator's lease and journal, rollout series.
//!
//! [`Pac::eval`] is the one path by which a script runs; its reply is decoded once, by
//! the call's own type.

mod backup;
pub mod control;
pub mod keys;
pub mod model;
pub mod notify;
mod region_ops;
mod removal;
mod removal_slot;
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
///
/// The coordinator's own keys ([`keys::Home::State`]) may live in a Redis of their own
/// ([`Pac::with_state`]); [`Pac::on`] is the one place that picks the connection of a
/// key family or script.
#[derive(Debug, Clone)]
pub struct Pac {
    psor: Psor,
    /// The coordinator's state Redis when it is not the PSOR.
    state: Option<Psor>,
    name: PacName,
    keys: Keys,
}

impl Pac {
    /// A handle on PAC `name` (nothing is read or written).
    pub fn new(psor: Psor, name: PacName) -> Self {
        let keys = Keys::new(&name);
        Pac {
            psor,
            state: None,
            name,
            keys,
        }
    }

    /// The same PAC with the coordinator's lease, journal, history and rollout events in
    /// `state` rather than in the PSOR. Such a handle writes nothing to the PSOR: every
    /// script of the PSOR is refused (the templates change the PAC), and the fencing
    /// epoch is the state Redis's.
    pub fn with_state(mut self, state: Psor) -> Self {
        self.state = Some(state);
        self
    }

    /// Whether the coordinator's state is kept in a Redis other than the PSOR.
    pub fn state_apart(&self) -> bool {
        self.state.is_some()
    }

    /// The connection that holds keys of `home`.
    pub fn on(&self, home: keys::Home) -> &Psor {
        match (home, &self.state) {
            (keys::Home::State, Some(s)) => s,
            _ => &self.psor,
        }
    }

    /// The connection that holds the keys of `family`.
    pub fn holding(&self, family: &keys::Shape) -> &Psor {
        self.on(family.home)
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

    pub(crate) fn conn(&self) -> crate::conn::PsorConn {
        self.psor.conn()
    }

    fn invocation<C: Call>(&self, call: &C) -> redis::ScriptInvocation<'static> {
        let mut inv = C::lua()
            .script_for(self.on(C::lua().home).is_cluster())
            .key(self.keys.prefix());
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
        let psor = self.runs::<C>()?;
        if C::lua().critical && psor.durability() != crate::conn::Durability::None {
            return self.eval_durable(call).await;
        }
        let v: Vec<String> = self
            .invocation(call)
            .invoke_async(&mut psor.conn())
            .await
            .map_err(|e| psor.err(e))?;
        decode::<C>(v)
    }

    /// Where script `C` runs; a handle whose state is kept apart runs no PSOR script.
    fn runs<C: Call>(&self) -> Result<&Psor> {
        let lua = C::lua();
        if lua.home == keys::Home::Psor && self.state_apart() {
            return Err(Error::StateApart {
                pac: self.name.to_string(),
                script: lua.name,
            });
        }
        Ok(self.on(lua.home))
    }

    /// The script call and its durability confirmation in one round trip. A server
    /// without the script (`NOSCRIPT`: nothing ran) gets it loaded, and the call is sent
    /// again; loading only then keeps the script's text off every call.
    async fn eval_durable<C: Call>(&self, call: &C) -> Result<C::Reply> {
        let lua = C::lua();
        let psor = self.runs::<C>()?;
        let script = lua.script_for(psor.is_cluster());
        let mut evalsha = redis::cmd("EVALSHA");
        let keys = call.keys(&self.keys);
        evalsha
            .arg(script.get_hash())
            .arg(1 + keys.len())
            .arg(self.keys.prefix())
            .arg(keys)
            .arg(call.args());
        let mut loaded = false;
        loop {
            let mut p = redis::pipe();
            p.ignore_errors();
            p.add_command(evalsha.clone());
            let reply = psor.durable_pipe(p).await?.pop();
            match reply {
                Some(redis::Value::ServerError(e))
                    if !loaded && e.kind() == Some(redis::ServerErrorKind::NoScript) =>
                {
                    script
                        .prepare_invoke()
                        .load_async(&mut psor.conn())
                        .await
                        .map_err(|e| psor.err(e))?;
                    loaded = true;
                }
                Some(redis::Value::ServerError(e)) => return Err(psor.err(e.into())),
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
    /// script. Its reply is decoded with [`Pac::pipe_reply`]; the pipeline goes to the
    /// script's home, [`Pac::pipe_home`].
    pub(crate) fn pipe_call<C: Call>(&self, p: &mut redis::Pipeline, call: &C) {
        p.load_script(C::lua().script_for(self.on(C::lua().home).is_cluster()))
            .ignore();
        p.invoke_script(&self.invocation(call));
    }

    /// The connection a pipeline of [`Pac::pipe_call`]s of `C` goes to.
    pub(crate) fn pipe_home<C: Call>(&self) -> Result<&Psor> {
        self.runs::<C>()
    }

    /// Decodes the reply of a [`Pac::pipe_call`].
    pub(crate) fn pipe_reply<C: Call>(&self, v: redis::Value) -> Result<C::Reply> {
        let psor = self.on(C::lua().home);
        // A server error keeps its code (READONLY, LOADING: an outage to ride out).
        if let redis::Value::ServerError(e) = v {
            return Err(psor.err(e.into()));
        }
        let v: Vec<String> = redis::from_redis_value(v).map_err(|e| psor.err(e.into()))?;
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
