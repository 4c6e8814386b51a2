//! Scripts of a region's life: joining a store, heartbeats, its record, leaving.
//!
//! - `JOIN` (every region start): optimistic concurrency on the PAC record's `gen`
//!   counter. The caller decided the start from a snapshot taken at `gen`; if anything
//!   structural changed since (a store created, a mode changed, a reset), the script
//!   answers `CONFLICT` and the caller decides again. Two regions upgrade-starting at the
//!   same instant therefore create exactly one store; a cold start that raced a warm start
//!   sees the warm region alive and becomes a warm start itself.
//! - `HEARTBEAT`: extends the region's liveness only for the instance that owns it, and
//!   returns its store's current mode, which heals any lost mode notification.
//! - `REGION_FIELDS`, `LEAVE`: only the instance that owns the record writes it, so a
//!   stale process cannot overwrite a newer one.

use super::{flag, Call, Lua, Raw};
use crate::psor::{JoinRequest, Mode};

/// ARGV: 1 gen, 2 action (create|join), 3 store version, 4 mode (for create), 5 os,
/// 6 bitness, 7 region, 8 host, 9 instance token, 10 ttl ms, 11 start type, 12 actor,
/// 13 product version, 14 require no other live region (0/1), 15.. (kind, name, json)*.
/// Returns `{OK, version, mode}`, `{CONFLICT}`, `{NOPAC}`, `{RUNNING, host}`,
/// `{ALIVE, region}`, `{REMOVING, version}`.
pub static JOIN: Lua = Lua::critical(
    "JOIN",
    &["OK", "CONFLICT", "NOPAC", "RUNNING", "ALIVE", "REMOVING"],
    r#"
local gen = redis.call('HGET', K.meta(), 'gen')
if not gen then return {'NOPAC'} end
if gen ~= ARGV[1] then return {'CONFLICT'} end
local R = ARGV[7]
local cur = redis.call('GET', K.region_alive(R))
if cur and cur ~= ARGV[9] then
  return {'RUNNING', redis.call('HGET', K.region(R), 'host') or '?'}
end
if ARGV[14] == '1' then
  local o = alive_other(R)
  if o then return {'ALIVE', o} end
end
local V = ARGV[3]
local now = now_ms()
if ARGV[2] == 'create' then
  if redis.call('ZSCORE', K.stores(), V) then return {'CONFLICT'} end
  if redis.call('SISMEMBER', K.removing(), V) == 1 then return {'REMOVING', V} end
  local seq = redis.call('HINCRBY', K.meta(), 'store_seq', 1)
  redis.call('ZADD', K.stores(), seq, V)
  redis.call('HSET', K.store_meta(V), 'version', V, 'os', ARGV[5],
    'bitness', ARGV[6], 'mode', ARGV[4], 'created_at', now, 'created_by', R)
  for i = 15, #ARGV, 3 do
    redis.call('HSET', K.store_resources(V, ARGV[i]), ARGV[i + 1], ARGV[i + 2])
  end
  bump()
  redis.call('HDEL', K.meta(), 'resetting')
  event('store_created', 'store ' .. V .. ' created in mode ' .. ARGV[4], ARGV[12], R)
  notify('store')
elseif not redis.call('ZSCORE', K.stores(), V) then
  return {'CONFLICT'}
end
for _, v in ipairs(redis.call('ZRANGE', K.stores(), 0, -1)) do
  redis.call('SREM', K.store_members(v), R)
end
redis.call('SADD', K.store_members(V), R)
redis.call('SADD', K.regions(), R)
redis.call('HSET', K.region(R), 'host', ARGV[8], 'product_version', ARGV[13],
  'os', ARGV[5], 'bitness', ARGV[6], 'store', V, 'last_store', V, 'state', 'active',
  'start_type', ARGV[11], 'instance', ARGV[9], 'started_at', now, 'heartbeat_at', now,
  'listener', 'off', 'clients', '0')
redis.call('SET', K.region_alive(R), ARGV[9], 'PX', ARGV[10])
event('region_started', R .. ' (' .. ARGV[11] .. ') joined store ' .. V, ARGV[12], R)
return {'OK', V, store_mode(V)}
"#,
);

/// The commit of a region start decided from a snapshot.
#[derive(Debug, Clone)]
pub struct Join<'a> {
    /// What was decided.
    pub req: &'a JoinRequest,
    /// Who.
    pub actor: &'a str,
}

/// What [`Join`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinReply {
    /// Joined the store, now in `mode`.
    Ok {
        /// Store version.
        store: String,
        /// Its mode.
        mode: Option<Mode>,
    },
    /// The PAC changed since the snapshot.
    Conflict,
    /// The PAC does not exist.
    NoPac,
    /// Another instance of the region is alive, on `host`.
    Running {
        /// Its host.
        host: String,
    },
    /// Another region is alive (a cold start must become warm).
    Alive {
        /// The live region.
        region: String,
    },
    /// A store of this version is still being deleted.
    Removing {
        /// The version.
        version: String,
    },
}

impl Call for Join<'_> {
    type Reply = JoinReply;
    fn lua() -> &'static Lua {
        &JOIN
    }
    fn args(&self) -> Vec<String> {
        let req = self.req;
        let mut args = vec![
            req.gen.to_string(),
            if req.create { "create" } else { "join" }.to_string(),
            req.store.clone(),
            req.mode.as_str().to_string(),
            req.product.os.clone(),
            req.product.bitness.to_string(),
            req.region.clone(),
            req.host.clone(),
            req.token.clone(),
            req.ttl_ms.to_string(),
            req.start_type.as_str().into(),
            self.actor.to_string(),
            req.product.version.to_string(),
            flag(req.require_no_other_alive),
        ];
        for (kind, name, json) in &req.resources {
            args.extend([kind.clone(), name.clone(), json.clone()]);
        }
        args
    }
    fn decode(r: Raw) -> Option<JoinReply> {
        Some(match r.code.as_str() {
            "OK" => JoinReply::Ok {
                store: r.text(0),
                mode: Mode::parse(&r.text(1)),
            },
            "CONFLICT" => JoinReply::Conflict,
            "NOPAC" => JoinReply::NoPac,
            "RUNNING" => JoinReply::Running { host: r.text(0) },
            "ALIVE" => JoinReply::Alive { region: r.text(0) },
            "REMOVING" => JoinReply::Removing { version: r.text(0) },
            _ => return None,
        })
    }
}

/// ARGV: region, token, ttl ms, clients (optional). Returns `{OK, store, mode}` (empty
/// mode: the store is gone) or `{LOST, owner}` when another instance owns the region or
/// the PAC was reset.
pub static HEARTBEAT: Lua = Lua::new(
    "HEARTBEAT",
    &["OK", "LOST"],
    r#"
local R, token, ttl, clients = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local inst = redis.call('HGET', K.region(R), 'instance')
if inst ~= token then return {'LOST', inst or ''} end
local cur = redis.call('GET', K.region_alive(R))
if cur and cur ~= token then return {'LOST', cur} end
redis.call('SET', K.region_alive(R), token, 'PX', ttl)
redis.call('HSET', K.region(R), 'heartbeat_at', now_ms())
if clients and clients ~= '' then redis.call('HSET', K.region(R), 'clients', clients) end
local V = redis.call('HGET', K.region(R), 'store') or ''
local mode = ''
if V ~= '' then mode = store_mode(V) or '' end
return {'OK', V, mode}
"#,
);

/// One heartbeat of a region.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    /// The region.
    pub region: &'a str,
    /// The instance that owns it.
    pub token: &'a str,
    /// Liveness TTL.
    pub ttl_ms: u64,
    /// Open client connections, when known.
    pub clients: Option<u64>,
}

/// Outcome of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still owned; the store and its mode (`None` when the store is gone).
    Ok {
        /// Store version ("" when not a member).
        store: String,
        /// Its mode, if the store still exists.
        mode: Option<Mode>,
    },
    /// Another instance owns the region, or the PAC was reset.
    Lost,
}

impl Call for Beat<'_> {
    type Reply = Heartbeat;
    fn lua() -> &'static Lua {
        &HEARTBEAT
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.region.into(),
            self.token.into(),
            self.ttl_ms.to_string(),
            self.clients.map(|c| c.to_string()).unwrap_or_default(),
        ]
    }
    fn decode(r: Raw) -> Option<Heartbeat> {
        Some(match r.code.as_str() {
            "OK" => Heartbeat::Ok {
                store: r.text(0),
                mode: Mode::parse(&r.text(1)),
            },
            "LOST" => Heartbeat::Lost,
            _ => return None,
        })
    }
}

/// The reply of the scripts that write a region's record only for its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// Written.
    Ok,
    /// Not this instance's any more; nothing written.
    Lost,
}

fn owned(r: Raw) -> Option<Owned> {
    Some(match r.code.as_str() {
        "OK" => Owned::Ok,
        "LOST" => Owned::Lost,
        _ => return None,
    })
}

/// ARGV: region, token, final state, actor. Leaves the store, marks the region, drops
/// its liveness. Returns `{OK}` or `{LOST}`.
pub static LEAVE: Lua = Lua::critical(
    "LEAVE",
    &["OK", "LOST"],
    r#"
local R, token, state, actor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', K.region(R), 'instance') ~= token then return {'LOST'} end
local V = redis.call('HGET', K.region(R), 'store') or ''
if V ~= '' then redis.call('SREM', K.store_members(V), R) end
redis.call('HSET', K.region(R), 'state', state, 'store', '', 'stopped_at', now_ms(),
  'clients', '0', 'listener', 'off')
redis.call('DEL', K.region_alive(R))
event('region_stopped', R .. ' left store ' .. V .. ' (' .. state .. ')', actor, R)
return {'OK'}
"#,
);

/// A region leaving its store.
#[derive(Debug, Clone)]
pub struct Leave<'a> {
    /// The region.
    pub region: &'a str,
    /// The instance that owns it.
    pub token: &'a str,
    /// State to record (`stopped`).
    pub state: &'a str,
    /// Who.
    pub actor: &'a str,
}

impl Call for Leave<'_> {
    type Reply = Owned;
    fn lua() -> &'static Lua {
        &LEAVE
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.region.into(),
            self.token.into(),
            self.state.into(),
            self.actor.into(),
        ]
    }
    fn decode(r: Raw) -> Option<Owned> {
        owned(r)
    }
}

/// ARGV: region, token, field, value, ... Sets fields of a region record only for the
/// instance that owns it. Returns `{OK}` or `{LOST}`.
pub static REGION_FIELDS: Lua = Lua::new(
    "REGION_FIELDS",
    &["OK", "LOST"],
    r#"
if redis.call('HGET', K.region(ARGV[1]), 'instance') ~= ARGV[2] then return {'LOST'} end
for i = 3, #ARGV, 2 do
  redis.call('HSET', K.region(ARGV[1]), ARGV[i], ARGV[i + 1])
end
return {'OK'}
"#,
);

/// Fields of a region's record (listener, endpoint, state).
#[derive(Debug, Clone)]
pub struct RegionFields<'a> {
    /// The region.
    pub region: &'a str,
    /// The instance that owns it.
    pub token: &'a str,
    /// (field, value) pairs.
    pub fields: &'a [(&'a str, String)],
}

impl Call for RegionFields<'_> {
    type Reply = Owned;
    fn lua() -> &'static Lua {
        &REGION_FIELDS
    }
    fn args(&self) -> Vec<String> {
        let mut args = vec![self.region.to_string(), self.token.to_string()];
        for (k, v) in self.fields {
            args.extend([k.to_string(), v.clone()]);
        }
        args
    }
    fn decode(r: Raw) -> Option<Owned> {
        owned(r)
    }
}

/// ARGV: region, host, actor. Cleans a region a restarted host agent finds recorded on
/// its host: leaves every store, marks it stopped, drops its liveness. Refused with
/// `{OTHER, host}` when the region now lives on another host. Returns `{CLEANED}` or
/// `{CLEAN}` (nothing to do).
pub static CLEAN_REGION: Lua = Lua::new(
    "CLEAN_REGION",
    &["CLEANED", "CLEAN", "OTHER"],
    r#"
local R, host, actor = ARGV[1], ARGV[2], ARGV[3]
local key = K.region(R)
if redis.call('EXISTS', key) == 0 then return {'CLEAN'} end
local h = redis.call('HGET', key, 'host')
if h ~= host and alive(R) then return {'OTHER', h} end
for _, v in ipairs(redis.call('ZRANGE', K.stores(), 0, -1)) do
  redis.call('SREM', K.store_members(v), R)
end
local was = redis.call('HGET', key, 'state') or ''
redis.call('HSET', key, 'state', 'stopped', 'store', '', 'listener', 'off', 'clients', '0')
redis.call('DEL', K.region_alive(R))
if was ~= 'stopped' then
  event('region_cleaned', R .. ' found ' .. was .. ' after a restart of host ' .. host, actor, R)
  return {'CLEANED'}
end
return {'CLEAN'}
"#,
);

/// A restarted agent's clean-up of one of its regions.
#[derive(Debug, Clone)]
pub struct CleanRegion<'a> {
    /// The region.
    pub region: &'a str,
    /// The agent's host.
    pub host: &'a str,
    /// Who.
    pub actor: &'a str,
}

/// What [`CleanRegion`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanReply {
    /// A stale record was cleaned.
    Cleaned,
    /// Nothing to clean.
    Clean,
    /// The region is alive on another host.
    Other {
        /// That host.
        host: String,
    },
}

impl Call for CleanRegion<'_> {
    type Reply = CleanReply;
    fn lua() -> &'static Lua {
        &CLEAN_REGION
    }
    fn args(&self) -> Vec<String> {
        vec![self.region.into(), self.host.into(), self.actor.into()]
    }
    fn decode(r: Raw) -> Option<CleanReply> {
        Some(match r.code.as_str() {
            "CLEANED" => CleanReply::Cleaned,
            "CLEAN" => CleanReply::Clean,
            "OTHER" => CleanReply::Other { host: r.text(0) },
            _ => return None,
        })
    }
}
