//! Scripts that change a PAC's stores: reset, modes, detaching and deleting.
//!
//! - `RESET` (InitPac, and the first half of a cold start): refuses while any region of
//!   the PAC is alive unless forced; detaches every store into `removing` (its keys are
//!   then deleted incrementally, see `UNLINK_BATCH`), drops region, host, lease and event
//!   records, and recreates the PAC record. The fencing epoch and store sequence survive,
//!   so a stale coordinator stays fenced and store order stays monotonic. `ds:*` is kept.
//! - `SET_MODE`, `DETACH_OLD`: the documented refusals are checked inside
//!   the script, so the state they were checked against is the state they change.
//! - `UNLINK_BATCH`, `FINISH_REMOVAL`: delete one batch of a detached store's keys; they
//!   refuse to touch a version that is a live store again.

use super::{fence_arg, flag, Call, Lua, Raw};
use crate::psor::keys::Keys;
use crate::psor::Mode;

/// Returns `{OK, gen}`, `{ALIVE, region}`, `{FENCED, epoch}`.
pub static RESET: Lua = Lua::critical(
    "RESET",
    &["OK", "ALIVE", "FENCED"],
    r#"
local fence, force, actor, why, cold = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f = fenced(fence); if f then return {'FENCED', f} end
if force ~= '1' then
  local r = alive_other('')
  if r then return {'ALIVE', r} end
end
for _, v in ipairs(redis.call('ZRANGE', K.stores(), 0, -1)) do
  redis.call('SADD', K.removing(), v)
end
redis.call('UNLINK', K.stores())
for _, r in ipairs(redis.call('SMEMBERS', K.regions())) do
  redis.call('UNLINK', K.region(r), K.region_alive(r))
end
-- A cold start keeps the host agents' records: the agents are alive and one of them is
-- usually doing this very start; InitPac removes them (they republish within TTL/3).
if cold ~= '1' then
  for _, h in ipairs(redis.call('SMEMBERS', K.hosts())) do
    redis.call('UNLINK', K.host(h), K.host_alive(h), K.host_control(h), K.host_done(h))
  end
  redis.call('UNLINK', K.hosts())
end
redis.call('UNLINK', K.regions(), K.lock(), K.events(), K.rollout_current(), K.rollout_history())
local gen = tonumber(redis.call('HGET', K.meta(), 'gen') or '0') + 1
local epoch = redis.call('HGET', K.meta(), 'epoch') or '0'
local seq = redis.call('HGET', K.meta(), 'store_seq') or '0'
redis.call('UNLINK', K.meta())
redis.call('HSET', K.meta(), 'created_at', now_ms(), 'gen', gen, 'epoch', epoch,
  'store_seq', seq, 'initialized_by', actor)
if cold == '1' then
  -- A cold start follows with its store: warm starters wait for it instead of refusing.
  redis.call('HSET', K.meta(), 'resetting', now_ms())
end
event('init', why, actor, '')
notify('reset')
return {'OK', tostring(gen)}
"#,
);

/// InitPac, or the reset that opens a cold start.
#[derive(Debug, Clone)]
pub struct Reset<'a> {
    /// The coordinator's epoch, if one acts.
    pub fence: Option<u64>,
    /// Reset even while regions are alive.
    pub force: bool,
    /// Who, for the audit trail.
    pub actor: &'a str,
    /// Why, for the event.
    pub why: &'a str,
    /// A cold start follows (keeps host records, marks the PAC resetting).
    pub cold_start: bool,
}

/// What [`Reset`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReply {
    /// Reset; the PAC's new `gen`.
    Ok {
        /// The new generation.
        gen: u64,
    },
    /// Refused: this region is alive.
    Alive {
        /// A live region.
        region: String,
    },
    /// Refused: the fence is stale.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for Reset<'_> {
    type Reply = ResetReply;
    fn lua() -> &'static Lua {
        &RESET
    }
    fn args(&self) -> Vec<String> {
        vec![
            fence_arg(self.fence),
            flag(self.force),
            self.actor.into(),
            self.why.into(),
            flag(self.cold_start),
        ]
    }
    fn decode(r: Raw) -> Option<ResetReply> {
        Some(match r.code.as_str() {
            "OK" => ResetReply::Ok { gen: r.num(0) },
            "ALIVE" => ResetReply::Alive { region: r.text(0) },
            "FENCED" => ResetReply::Fenced { epoch: r.num(0) },
            _ => return None,
        })
    }
}

/// Returns `{OK, version...}`, `{NOPAC}`, `{NOSTORE}`, `{NOTHING}`,
/// `{NORUNNING, newest, mode}`, `{FENCED, epoch}`.
pub static SET_MODE: Lua = Lua::critical(
    "SET_MODE",
    &["OK", "NOPAC", "NOSTORE", "NOTHING", "NORUNNING", "FENCED"],
    r#"
local fence, target, actor = ARGV[1], ARGV[2], ARGV[3]
local f = fenced(fence); if f then return {'FENCED', f} end
if redis.call('EXISTS', K.meta()) == 0 then return {'NOPAC'} end
local stores = redis.call('ZRANGE', K.stores(), 0, -1)
if #stores == 0 then return {'NOSTORE'} end
local changed = {}
if target == 'running' then
  for _, v in ipairs(stores) do
    if store_mode(v) == 'upgrade' then table.insert(changed, v) end
  end
  if #changed == 0 then return {'NOTHING'} end
else
  local newest = stores[#stores]
  for i = 1, #stores - 1 do
    if store_mode(stores[i]) == 'running' then table.insert(changed, stores[i]) end
  end
  if #changed == 0 then return {'NOTHING'} end
  local nm = store_mode(newest)
  if nm ~= 'running' then return {'NORUNNING', newest, nm or ''} end
end
for _, v in ipairs(changed) do
  redis.call('HSET', K.store_meta(v), 'mode', target)
end
bump()
event('set_mode_' .. target, 'stores ' .. table.concat(changed, ', ') .. ' now ' .. target, actor, '')
notify('mode')
return {'OK', unpack(changed)}
"#,
);

/// SetMode: `running` flips the upgrade-mode store; `quiesce` quiesces every running store
/// older than the newest.
#[derive(Debug, Clone)]
pub struct SetMode<'a> {
    /// The coordinator's epoch, if one acts.
    pub fence: Option<u64>,
    /// `running` or `quiesce`.
    pub mode: Mode,
    /// Who.
    pub actor: &'a str,
}

/// What [`SetMode`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetModeReply {
    /// These stores changed.
    Ok {
        /// Versions.
        changed: Vec<String>,
    },
    /// The PAC does not exist.
    NoPac,
    /// The PAC has no store.
    NoStore,
    /// Nothing to change.
    Nothing,
    /// Quiescing would leave no running store: the newest is in `mode`.
    NoRunning {
        /// Newest store.
        newest: String,
        /// Its mode.
        mode: String,
    },
    /// The fence is stale.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for SetMode<'_> {
    type Reply = SetModeReply;
    fn lua() -> &'static Lua {
        &SET_MODE
    }
    fn args(&self) -> Vec<String> {
        vec![
            fence_arg(self.fence),
            self.mode.as_str().into(),
            self.actor.into(),
        ]
    }
    fn decode(r: Raw) -> Option<SetModeReply> {
        Some(match r.code.as_str() {
            "OK" => SetModeReply::Ok { changed: r.fields },
            "NOPAC" => SetModeReply::NoPac,
            "NOSTORE" => SetModeReply::NoStore,
            "NOTHING" => SetModeReply::Nothing,
            "NORUNNING" => SetModeReply::NoRunning {
                newest: r.text(0),
                mode: r.text(1),
            },
            "FENCED" => SetModeReply::Fenced { epoch: r.num(0) },
            _ => return None,
        })
    }
}

/// Detaches every store older than the newest into `removing`. Returns
/// `{OK, version...}`, `{NONE}`, `{NOPAC}`, `{LIVE, region@version...}`,
/// `{NORUNNING, newest, mode}`, `{FENCED, epoch}`.
pub static DETACH_OLD: Lua = Lua::critical(
    "DETACH_OLD",
    &["OK", "NONE", "NOPAC", "LIVE", "NORUNNING", "FENCED"],
    r#"
local fence, actor, force = ARGV[1], ARGV[2], ARGV[3]
local f = fenced(fence); if f then return {'FENCED', f} end
if redis.call('EXISTS', K.meta()) == 0 then return {'NOPAC'} end
local stores = redis.call('ZRANGE', K.stores(), 0, -1)
if #stores <= 1 then return {'NONE'} end
local newest = stores[#stores]
local live = {}
for i = 1, #stores - 1 do
  local v = stores[i]
  for _, r in ipairs(redis.call('SMEMBERS', K.store_members(v))) do
    if alive(r) then table.insert(live, r .. '@' .. v) end
  end
end
if #live > 0 and force ~= '1' then return {'LIVE', unpack(live)} end
local nm = store_mode(newest)
if nm ~= 'running' then
  for i = 1, #stores - 1 do
    if store_mode(stores[i]) == 'running' then return {'NORUNNING', newest, nm or ''} end
  end
end
local old = {}
for i = 1, #stores - 1 do
  redis.call('SADD', K.removing(), stores[i])
  redis.call('ZREM', K.stores(), stores[i])
  table.insert(old, stores[i])
end
bump()
event('remove_old', 'detached stores ' .. table.concat(old, ', '), actor, '')
notify('store')
return {'OK', unpack(old)}
"#,
);

/// The detach half of RemOldPAC.
#[derive(Debug, Clone)]
pub struct DetachOld<'a> {
    /// The coordinator's epoch, if one acts.
    pub fence: Option<u64>,
    /// Who.
    pub actor: &'a str,
    /// Skip the live-member check.
    pub force: bool,
}

/// What [`DetachOld`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachOldReply {
    /// These stores were detached.
    Ok {
        /// Versions.
        detached: Vec<String>,
    },
    /// No old store.
    None,
    /// The PAC does not exist.
    NoPac,
    /// Refused: live members of old stores, as (region, version).
    Live {
        /// (region, store version).
        members: Vec<(String, String)>,
    },
    /// Refused: the newest store is not running while an old one is.
    NoRunning {
        /// Newest store.
        newest: String,
        /// Its mode.
        mode: String,
    },
    /// The fence is stale.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for DetachOld<'_> {
    type Reply = DetachOldReply;
    fn lua() -> &'static Lua {
        &DETACH_OLD
    }
    fn args(&self) -> Vec<String> {
        vec![fence_arg(self.fence), self.actor.into(), flag(self.force)]
    }
    fn decode(r: Raw) -> Option<DetachOldReply> {
        Some(match r.code.as_str() {
            "OK" => DetachOldReply::Ok { detached: r.fields },
            "NONE" => DetachOldReply::None,
            "NOPAC" => DetachOldReply::NoPac,
            "LIVE" => DetachOldReply::Live {
                members: r
                    .fields
                    .iter()
                    .map(|m| match m.split_once('@') {
                        Some((r, v)) => (r.to_string(), v.to_string()),
                        None => (m.clone(), String::new()),
                    })
                    .collect(),
            },
            "NORUNNING" => DetachOldReply::NoRunning {
                newest: r.text(0),
                mode: r.text(1),
            },
            "FENCED" => DetachOldReply::Fenced { epoch: r.num(0) },
            _ => return None,
        })
    }
}

/// Unlinks a batch of a detached store's keys (KEYS[2..], found by SCAN); keys outside
/// the store are left alone. Returns `{OK, count}` or `{LIVE}` when the version is a live
/// store again (nothing deleted).
pub static UNLINK_BATCH: Lua = Lua::new(
    "UNLINK_BATCH",
    &["OK", "LIVE"],
    r#"
local V = ARGV[1]
if redis.call('ZSCORE', K.stores(), V) then return {'LIVE'} end
local pre = K.store_key_prefix(V)
local n = 0
for i = 2, #KEYS do
  if string.sub(KEYS[i], 1, #pre) == pre then n = n + redis.call('UNLINK', KEYS[i]) end
end
return {'OK', tostring(n)}
"#,
);

/// One batch of a store's deletion.
#[derive(Debug, Clone)]
pub struct UnlinkBatch<'a> {
    /// The detached store.
    pub version: &'a str,
    /// Its keys to delete now.
    pub keys: &'a [String],
}

/// What [`UnlinkBatch`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlinkReply {
    /// This many keys were deleted.
    Ok {
        /// Count.
        unlinked: u64,
    },
    /// The version is a live store again; nothing deleted.
    Live,
}

impl Call for UnlinkBatch<'_> {
    type Reply = UnlinkReply;
    fn lua() -> &'static Lua {
        &UNLINK_BATCH
    }
    fn args(&self) -> Vec<String> {
        vec![self.version.into()]
    }
    fn keys(&self, _: &Keys) -> Vec<String> {
        self.keys.to_vec()
    }
    fn decode(r: Raw) -> Option<UnlinkReply> {
        Some(match r.code.as_str() {
            "OK" => UnlinkReply::Ok { unlinked: r.num(0) },
            "LIVE" => UnlinkReply::Live,
            _ => return None,
        })
    }
}

/// Marks a detached store's deletion finished. Returns `{OK}`, or `{LIVE}` when the
/// version is a live store again.
pub static FINISH_REMOVAL: Lua = Lua::critical(
    "FINISH_REMOVAL",
    &["OK", "LIVE"],
    r#"
if redis.call('ZSCORE', K.stores(), ARGV[1]) then return {'LIVE'} end
redis.call('SREM', K.removing(), ARGV[1])
return {'OK'}
"#,
);

/// The end of a store's deletion.
#[derive(Debug, Clone)]
pub struct FinishRemoval<'a> {
    /// The detached store.
    pub version: &'a str,
}

/// What [`FinishRemoval`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReply {
    /// No longer listed as being deleted.
    Ok,
    /// The version is a live store again.
    Live,
}

impl Call for FinishRemoval<'_> {
    type Reply = FinishReply;
    fn lua() -> &'static Lua {
        &FINISH_REMOVAL
    }
    fn args(&self) -> Vec<String> {
        vec![self.version.into()]
    }
    fn decode(r: Raw) -> Option<FinishReply> {
        Some(match r.code.as_str() {
            "OK" => FinishReply::Ok,
            "LIVE" => FinishReply::Live,
            _ => return None,
        })
    }
}

/// The reply of the scripts that change one store: done, no such store, or fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    /// Done.
    Ok,
    /// No such store.
    NoStore,
    /// The fence is stale.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

pub(super) fn store_reply(r: Raw) -> Option<StoreReply> {
    Some(match r.code.as_str() {
        "OK" => StoreReply::Ok,
        "NOSTORE" => StoreReply::NoStore,
        "FENCED" => StoreReply::Fenced { epoch: r.num(0) },
        _ => return None,
    })
}

/// Records that every member of a store now runs another version (a compatible
/// upgrade's finalisation). Returns `{OK}`, `{NOSTORE}` or `{FENCED, epoch}`.
pub static SET_RUNNING_VERSION: Lua = Lua::critical(
    "SET_RUNNING_VERSION",
    &["OK", "NOSTORE", "FENCED"],
    r#"
local fence, V, running = ARGV[1], ARGV[2], ARGV[3]
local f = fenced(fence); if f then return {'FENCED', f} end
if not store_mode(V) then return {'NOSTORE'} end
redis.call('HSET', K.store_meta(V), 'running_version', running)
bump()
return {'OK'}
"#,
);

/// A compatible upgrade's finalisation.
#[derive(Debug, Clone)]
pub struct SetRunningVersion<'a> {
    /// The coordinator's epoch.
    pub fence: u64,
    /// The store.
    pub store: &'a str,
    /// The version its members run now.
    pub version: &'a str,
}

impl Call for SetRunningVersion<'_> {
    type Reply = StoreReply;
    fn lua() -> &'static Lua {
        &SET_RUNNING_VERSION
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.fence.to_string(),
            self.store.into(),
            self.version.into(),
        ]
    }
    fn decode(r: Raw) -> Option<StoreReply> {
        store_reply(r)
    }
}
