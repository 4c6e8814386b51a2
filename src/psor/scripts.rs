//! The Lua scripts that change a PAC's state.
//!
//! Each script runs atomically in Redis, so concurrent regions, agents and operators can
//! never observe or produce half a change. All take `KEYS[1]` = `pac:{P}:` (the PAC's
//! key prefix, see [`super::keys`]) and build the same key names `keys.rs` documents;
//! every key they touch carries the PAC's hash tag, so they also work on Redis Cluster.
//!
//! Guarantees, by script:
//! - `RESET` (InitPac, and the first half of a cold start): refuses while any region of
//!   the PAC is alive unless forced; detaches every store into `removing` (its keys are
//!   then deleted incrementally, see `UNLINK_BATCH`), drops region, host, lease and event
//!   records, and recreates the PAC record. The fencing epoch and store sequence survive,
//!   so a stale coordinator stays fenced and store order stays monotonic. `ds:*` is kept.
//! - `JOIN` (every region start): optimistic concurrency on the PAC record's `gen`
//!   counter. The caller decided the start from a snapshot taken at `gen`; if anything
//!   structural changed since (a store created, a mode changed, a reset), the script
//!   answers `CONFLICT` and the caller decides again. Two regions upgrade-starting at the
//!   same instant therefore create exactly one store; a cold start that raced a warm start
//!   sees the warm region alive and becomes a warm start itself.
//! - `HEARTBEAT`: extends the region's liveness only for the instance that owns it, and
//!   returns its store's current mode, which heals any lost mode notification.
//! - `SET_MODE`, `DETACH_OLD`: the SPEC's refusals are checked inside the script, so the
//!   state they were checked against is the state they change.
//! - `UNLINK_BATCH`, `FINISH_REMOVAL`: delete one batch of a detached store's keys; they
//!   refuse to touch a version that is a live store again.
//!
//! Writes that a coordinator makes pass its fencing epoch (`fence`); when it is not the
//! PAC's current epoch the script answers `FENCED` and writes nothing. An empty fence
//! means an operator's direct action.

use redis::Script;
use std::sync::LazyLock;

/// Helpers shared by every script (prepended to each).
const PRELUDE: &str = r#"
local P = KEYS[1]
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function fenced(fence)
  if fence == nil or fence == '' then return false end
  local cur = redis.call('HGET', P .. 'meta', 'epoch') or '0'
  if cur ~= fence then return cur end
  return false
end
local function event(action, detail, actor, region)
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', '10000', '*',
    'ts_ms', now_ms(), 'action', action, 'status', 'done', 'detail', detail,
    'by', actor or '', 'region', region or '')
end
local function alive(r)
  return redis.call('EXISTS', P .. 'region:' .. r .. ':alive') == 1
end
local function alive_other(except)
  for _, r in ipairs(redis.call('SMEMBERS', P .. 'regions')) do
    if r ~= except and alive(r) then return r end
  end
  return false
end
local function store_mode(v)
  return redis.call('HGET', P .. 'store:' .. v .. ':meta', 'mode')
end
local function bump()
  return redis.call('HINCRBY', P .. 'meta', 'gen', 1)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// ARGV: fence, force (0/1), actor, why. Returns `{OK, gen}`, `{ALIVE, region}`, `{FENCED, epoch}`.
pub static RESET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
if ARGV[2] ~= '1' then
  local r = alive_other('')
  if r then return {'ALIVE', r} end
end
for _, v in ipairs(redis.call('ZRANGE', P .. 'stores', 0, -1)) do
  redis.call('SADD', P .. 'removing', v)
end
redis.call('UNLINK', P .. 'stores')
for _, r in ipairs(redis.call('SMEMBERS', P .. 'regions')) do
  redis.call('UNLINK', P .. 'region:' .. r, P .. 'region:' .. r .. ':alive')
end
for _, h in ipairs(redis.call('SMEMBERS', P .. 'hosts')) do
  redis.call('UNLINK', P .. 'host:' .. h, P .. 'host:' .. h .. ':alive')
end
redis.call('UNLINK', P .. 'regions', P .. 'hosts', P .. 'lock', P .. 'events')
local gen = tonumber(redis.call('HGET', P .. 'meta', 'gen') or '0') + 1
local epoch = redis.call('HGET', P .. 'meta', 'epoch') or '0'
local seq = redis.call('HGET', P .. 'meta', 'store_seq') or '0'
redis.call('UNLINK', P .. 'meta')
redis.call('HSET', P .. 'meta', 'created_at', now_ms(), 'gen', gen, 'epoch', epoch,
  'store_seq', seq, 'initialized_by', ARGV[3])
event('init', ARGV[4], ARGV[3], '')
redis.call('PUBLISH', P .. 'notify', 'reset')
return {'OK', tostring(gen)}
"#,
    )
});

/// ARGV: 1 gen, 2 action (create|join), 3 store version, 4 mode (for create), 5 os,
/// 6 bitness, 7 region, 8 host, 9 instance token, 10 ttl ms, 11 start type, 12 actor,
/// 13 product version, 14 require no other live region (0/1), 15.. (kind, name, json)*.
/// Returns `{OK, version, mode}`, `{CONFLICT}`, `{NOPAC}`, `{RUNNING, host}`,
/// `{ALIVE, region}`, `{REMOVING, version}`.
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local gen = redis.call('HGET', P .. 'meta', 'gen')
if not gen then return {'NOPAC'} end
if gen ~= ARGV[1] then return {'CONFLICT'} end
local R = ARGV[7]
local cur = redis.call('GET', P .. 'region:' .. R .. ':alive')
if cur and cur ~= ARGV[9] then
  return {'RUNNING', redis.call('HGET', P .. 'region:' .. R, 'host') or '?'}
end
if ARGV[14] == '1' then
  local o = alive_other(R)
  if o then return {'ALIVE', o} end
end
local V = ARGV[3]
local now = now_ms()
if ARGV[2] == 'create' then
  if redis.call('ZSCORE', P .. 'stores', V) then return {'CONFLICT'} end
  if redis.call('SISMEMBER', P .. 'removing', V) == 1 then return {'REMOVING', V} end
  local seq = redis.call('HINCRBY', P .. 'meta', 'store_seq', 1)
  redis.call('ZADD', P .. 'stores', seq, V)
  redis.call('HSET', P .. 'store:' .. V .. ':meta', 'version', V, 'os', ARGV[5],
    'bitness', ARGV[6], 'mode', ARGV[4], 'created_at', now, 'created_by', R)
  for i = 15, #ARGV, 3 do
    redis.call('HSET', P .. 'store:' .. V .. ':res:' .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
  bump()
  event('store_created', 'store ' .. V .. ' created in mode ' .. ARGV[4], ARGV[12], R)
  redis.call('PUBLISH', P .. 'notify', 'store')
elseif not redis.call('ZSCORE', P .. 'stores', V) then
  return {'CONFLICT'}
end
for _, v in ipairs(redis.call('ZRANGE', P .. 'stores', 0, -1)) do
  redis.call('SREM', P .. 'store:' .. v .. ':members', R)
end
redis.call('SADD', P .. 'store:' .. V .. ':members', R)
redis.call('SADD', P .. 'regions', R)
redis.call('HSET', P .. 'region:' .. R, 'host', ARGV[8], 'product_version', ARGV[13],
  'os', ARGV[5], 'bitness', ARGV[6], 'store', V, 'last_store', V, 'state', 'active',
  'start_type', ARGV[11], 'instance', ARGV[9], 'started_at', now, 'heartbeat_at', now,
  'listener', 'off', 'clients', '0')
redis.call('SET', P .. 'region:' .. R .. ':alive', ARGV[9], 'PX', ARGV[10])
event('region_started', R .. ' (' .. ARGV[11] .. ') joined store ' .. V, ARGV[12], R)
return {'OK', V, store_mode(V)}
"#,
    )
});

/// ARGV: region, token, ttl ms. Returns `{OK, store, mode}` (empty mode: the store is
/// gone) or `{LOST, owner}` when another instance owns the region or the PAC was reset.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local R = ARGV[1]
local inst = redis.call('HGET', P .. 'region:' .. R, 'instance')
if inst ~= ARGV[2] then return {'LOST', inst or ''} end
local cur = redis.call('GET', P .. 'region:' .. R .. ':alive')
if cur and cur ~= ARGV[2] then return {'LOST', cur} end
redis.call('SET', P .. 'region:' .. R .. ':alive', ARGV[2], 'PX', ARGV[3])
redis.call('HSET', P .. 'region:' .. R, 'heartbeat_at', now_ms())
local V = redis.call('HGET', P .. 'region:' .. R, 'store') or ''
local mode = ''
if V ~= '' then mode = store_mode(V) or '' end
return {'OK', V, mode}
"#,
    )
});

/// ARGV: region, token, final state, actor. Leaves the store, marks the region, drops
/// its liveness. Returns `{OK}` or `{LOST}`.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local R = ARGV[1]
if redis.call('HGET', P .. 'region:' .. R, 'instance') ~= ARGV[2] then return {'LOST'} end
local V = redis.call('HGET', P .. 'region:' .. R, 'store') or ''
if V ~= '' then redis.call('SREM', P .. 'store:' .. V .. ':members', R) end
redis.call('HSET', P .. 'region:' .. R, 'state', ARGV[3], 'store', '', 'stopped_at', now_ms(),
  'clients', '0', 'listener', 'off')
redis.call('DEL', P .. 'region:' .. R .. ':alive')
event('region_stopped', R .. ' left store ' .. V .. ' (' .. ARGV[3] .. ')', ARGV[4], R)
return {'OK'}
"#,
    )
});

/// ARGV: fence, target mode (running|quiesce), actor. Returns `{OK, version...}`,
/// `{NOSTORE}`, `{NOTHING}`, `{NORUNNING, newest, mode}`, `{FENCED, epoch}`.
pub static SET_MODE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local stores = redis.call('ZRANGE', P .. 'stores', 0, -1)
if #stores == 0 then return {'NOSTORE'} end
local changed = {}
if ARGV[2] == 'running' then
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
  redis.call('HSET', P .. 'store:' .. v .. ':meta', 'mode', ARGV[2])
end
bump()
event('set_mode_' .. ARGV[2], 'stores ' .. table.concat(changed, ', ') .. ' now ' .. ARGV[2], ARGV[3], '')
redis.call('PUBLISH', P .. 'notify', 'mode')
return {'OK', unpack(changed)}
"#,
    )
});

/// ARGV: fence, actor, force (0/1: skip the live-member check). Detaches every store older than the newest into `removing`.
/// Returns `{OK, version...}`, `{NONE}`, `{LIVE, region@version...}`,
/// `{NORUNNING, newest, mode}`, `{FENCED, epoch}`.
pub static DETACH_OLD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local stores = redis.call('ZRANGE', P .. 'stores', 0, -1)
if #stores <= 1 then return {'NONE'} end
local newest = stores[#stores]
local live = {}
for i = 1, #stores - 1 do
  local v = stores[i]
  for _, r in ipairs(redis.call('SMEMBERS', P .. 'store:' .. v .. ':members')) do
    if alive(r) then table.insert(live, r .. '@' .. v) end
  end
end
if #live > 0 and ARGV[3] ~= '1' then return {'LIVE', unpack(live)} end
local nm = store_mode(newest)
if nm ~= 'running' then
  for i = 1, #stores - 1 do
    if store_mode(stores[i]) == 'running' then return {'NORUNNING', newest, nm or ''} end
  end
end
local old = {}
for i = 1, #stores - 1 do
  redis.call('SADD', P .. 'removing', stores[i])
  redis.call('ZREM', P .. 'stores', stores[i])
  table.insert(old, stores[i])
end
bump()
event('remove_old', 'detached stores ' .. table.concat(old, ', '), ARGV[2], '')
redis.call('PUBLISH', P .. 'notify', 'store')
return {'OK', unpack(old)}
"#,
    )
});

/// ARGV: version, key... Unlinks the given keys of a detached store. Returns the count,
/// or -1 when the version is a live store again (nothing deleted).
pub static UNLINK_BATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local V = ARGV[1]
if redis.call('ZSCORE', P .. 'stores', V) then return -1 end
local pre = P .. 'store:' .. V .. ':'
local n = 0
for i = 2, #ARGV do
  if string.sub(ARGV[i], 1, #pre) == pre then n = n + redis.call('UNLINK', ARGV[i]) end
end
return n
"#,
    )
});

/// ARGV: version. Marks a detached store's deletion finished. Returns 1, or 0 when the
/// version is a live store again.
pub static FINISH_REMOVAL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('ZSCORE', P .. 'stores', ARGV[1]) then return 0 end
redis.call('SREM', P .. 'removing', ARGV[1])
return 1
"#,
    )
});
