//! Scripts of a rollback: the old store runs again, the new store is detached (then
//! deleted like any detached store). Both are fenced: only the coordinator holding the
//! lease rolls back.

use super::store::{store_reply, StoreReply};
use super::{Call, Lua, Raw};

/// Puts a quiesced store back to running (rollback). Returns `{OK}`, `{NOSTORE}` or
/// `{FENCED, epoch}`.
pub static UNQUIESCE: Lua = Lua::critical(
    "UNQUIESCE",
    &["OK", "NOSTORE", "FENCED"],
    r#"
local fence, V, actor = ARGV[1], ARGV[2], ARGV[3]
local f = fenced(fence); if f then return {'FENCED', f} end
local m = store_mode(V)
if not m then return {'NOSTORE'} end
if m ~= 'running' then
  redis.call('HSET', K.store_meta(V), 'mode', 'running')
  bump()
  event('rollback', 'store ' .. V .. ' running again', actor, '')
  notify('mode')
end
return {'OK'}
"#,
);

/// A rollback's "the old store runs again".
#[derive(Debug, Clone)]
pub struct Unquiesce<'a> {
    /// The coordinator's epoch.
    pub fence: u64,
    /// The store.
    pub version: &'a str,
    /// Who.
    pub actor: &'a str,
}

impl Call for Unquiesce<'_> {
    type Reply = StoreReply;
    fn lua() -> &'static Lua {
        &UNQUIESCE
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.fence.to_string(),
            self.version.into(),
            self.actor.into(),
        ]
    }
    fn decode(r: Raw) -> Option<StoreReply> {
        store_reply(r)
    }
}

/// Detaches one store (rollback deletes the new store); refused while a live region is a
/// member or when it is the only store. Returns `{OK}`, `{NONE}`, `{LIVE, region...}`,
/// `{ONLY}` or `{FENCED, epoch}`.
pub static DETACH_STORE: Lua = Lua::critical(
    "DETACH_STORE",
    &["OK", "NONE", "LIVE", "ONLY", "FENCED"],
    r#"
local fence, V, actor = ARGV[1], ARGV[2], ARGV[3]
local f = fenced(fence); if f then return {'FENCED', f} end
if not redis.call('ZSCORE', K.stores(), V) then return {'NONE'} end
if redis.call('ZCARD', K.stores()) <= 1 then return {'ONLY'} end
local live = {}
for _, r in ipairs(redis.call('SMEMBERS', K.store_members(V))) do
  if alive(r) then table.insert(live, r) end
end
if #live > 0 then return {'LIVE', unpack(live)} end
redis.call('SADD', K.removing(), V)
redis.call('ZREM', K.stores(), V)
bump()
event('rollback', 'detached store ' .. V, actor, '')
notify('store')
return {'OK'}
"#,
);

/// A rollback's detach of the new store.
#[derive(Debug, Clone)]
pub struct DetachStore<'a> {
    /// The coordinator's epoch.
    pub fence: u64,
    /// The store.
    pub version: &'a str,
    /// Who.
    pub actor: &'a str,
}

/// What [`DetachStore`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachStoreReply {
    /// Detached.
    Ok,
    /// No such store (detached before).
    None,
    /// Refused: these members are alive.
    Live {
        /// Regions.
        regions: Vec<String>,
    },
    /// Refused: it is the only store.
    Only,
    /// The fence is stale.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for DetachStore<'_> {
    type Reply = DetachStoreReply;
    fn lua() -> &'static Lua {
        &DETACH_STORE
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.fence.to_string(),
            self.version.into(),
            self.actor.into(),
        ]
    }
    fn decode(r: Raw) -> Option<DetachStoreReply> {
        Some(match r.code.as_str() {
            "OK" => DetachStoreReply::Ok,
            "NONE" => DetachStoreReply::None,
            "LIVE" => DetachStoreReply::Live { regions: r.fields },
            "ONLY" => DetachStoreReply::Only,
            "FENCED" => DetachStoreReply::Fenced { epoch: r.num(0) },
            _ => return None,
        })
    }
}
