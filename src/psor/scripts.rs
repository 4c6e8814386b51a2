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
//! - `SET_MODE`, `DETACH_OLD`: the documented refusals are checked inside the script, so the
//!   state they were checked against is the state they change.
//! - `UNLINK_BATCH`, `FINISH_REMOVAL`: delete one batch of a detached store's keys; they
//!   refuse to touch a version that is a live store again.
//!
//! Writes that a coordinator makes pass its fencing epoch (`fence`); when it is not the
//! PAC's current epoch the script answers `FENCED` and writes nothing. An empty fence
//! means an operator's direct action.
//!
//! `pacup rollout report` reconstructs the stores' modes over time from the details of
//! the `store_created`, `set_mode_*`, `remove_old` and `rollback` events written here
//! (`src/report/stores.rs` parses them, with a test per wording): change them together.

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

/// The rollout series helper (see [`super::keys::Keys::series`]), for the scripts that
/// record one: counted only while the rollout runs, so a series is bounded by its
/// rollout's running time; its TTL is renewed on each write.
const SERIES: &str = r#"
local function series_add(name, field, n)
  local ro = redis.call('HMGET', P .. 'rollout:current', 'id', 'state')
  if not ro[1] or (ro[2] ~= 'running' and ro[2] ~= 'rolling_back') then return 0 end
  local k = P .. 'series:' .. name .. ':' .. ro[1]
  redis.call('HINCRBY', k, field, n)
  redis.call('EXPIRE', k, SERIES_TTL_SECS)
  return 1
end
"#;

fn series_script(body: &str) -> Script {
    let helper = SERIES.replace("SERIES_TTL_SECS", &super::keys::SERIES_TTL_SECS.to_string());
    script(&format!("{helper}\n{body}"))
}

/// ARGV: fence, force (0/1), actor, why, cold start follows (0/1). Returns `{OK, gen}`, `{ALIVE, region}`, `{FENCED, epoch}`.
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
-- A cold start keeps the host agents' records: the agents are alive and one of them is
-- usually doing this very start; InitPac removes them (they republish within TTL/3).
if ARGV[5] ~= '1' then
  for _, h in ipairs(redis.call('SMEMBERS', P .. 'hosts')) do
    redis.call('UNLINK', P .. 'host:' .. h, P .. 'host:' .. h .. ':alive',
      P .. 'host:' .. h .. ':ctl', P .. 'host:' .. h .. ':done')
  end
  redis.call('UNLINK', P .. 'hosts')
end
redis.call('UNLINK', P .. 'regions', P .. 'lock', P .. 'events',
  P .. 'rollout:current', P .. 'rollout:history')
local gen = tonumber(redis.call('HGET', P .. 'meta', 'gen') or '0') + 1
local epoch = redis.call('HGET', P .. 'meta', 'epoch') or '0'
local seq = redis.call('HGET', P .. 'meta', 'store_seq') or '0'
redis.call('UNLINK', P .. 'meta')
redis.call('HSET', P .. 'meta', 'created_at', now_ms(), 'gen', gen, 'epoch', epoch,
  'store_seq', seq, 'initialized_by', ARGV[3])
if ARGV[5] == '1' then
  -- A cold start follows with its store: warm starters wait for it instead of refusing.
  redis.call('HSET', P .. 'meta', 'resetting', now_ms())
end
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
  redis.call('HDEL', P .. 'meta', 'resetting')
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

/// ARGV: region, token, ttl ms, clients (optional). Returns `{OK, store, mode}` (empty mode: the store is
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
if ARGV[4] and ARGV[4] ~= '' then redis.call('HSET', P .. 'region:' .. R, 'clients', ARGV[4]) end
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
if redis.call('EXISTS', P .. 'meta') == 0 then return {'NOPAC'} end
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
if redis.call('EXISTS', P .. 'meta') == 0 then return {'NOPAC'} end
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

/// ARGV: count. Appends `count` jobs to the job stream (creating the consumer group),
/// counts them submitted, and starts the waiting clock if nothing was pending.
/// Returns `{first id, last id}`, or `{0, 0}` with nothing written when the PAC does not
/// exist.
pub static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', P .. 'meta') == 0 then return {0, 0} end
local jobs = P .. 'ds:jobs'
local st = P .. 'ds:stats'
local n = tonumber(ARGV[1])
redis.pcall('XGROUP', 'CREATE', jobs, 'regions', '0', 'MKSTREAM')
local now = now_ms()
local sub = tonumber(redis.call('HGET', st, 'submitted') or '0')
local comp = tonumber(redis.call('HGET', st, 'completed') or '0')
if sub - comp <= 0 then redis.call('HSET', st, 'waiting_since', now) end
local first = 0
local last = 0
for i = 1, n do
  last = redis.call('HINCRBY', st, 'job_seq', 1)
  if first == 0 then first = last end
  redis.call('XADD', jobs, '*', 'job', last, 'submitted_at', now)
end
redis.call('HINCRBY', st, 'submitted', n)
return {first, last}
"#,
    )
});

/// ARGV: region, token, reclaim idle ms. Takes one job for the region, only while it owns
/// its record and its store is `running`: first a job idle longer than the reclaim time
/// (held by a region that died), else a new one. Returns `{JOB, stream id, job id,
/// new|reclaimed}`, `{NONE}`, `{MODE, mode}` or `{LOST}`.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local R = ARGV[1]
if redis.call('HGET', P .. 'region:' .. R, 'instance') ~= ARGV[2] then return {'LOST'} end
local V = redis.call('HGET', P .. 'region:' .. R, 'store') or ''
if V == '' then return {'MODE', ''} end
local mode = store_mode(V) or ''
if mode ~= 'running' then return {'MODE', mode} end
local jobs = P .. 'ds:jobs'
if redis.call('EXISTS', jobs) == 0 then return {'NONE'} end
redis.pcall('XGROUP', 'CREATE', jobs, 'regions', '0', 'MKSTREAM')
local function job_of(e)
  local f = e[2]
  for i = 1, #f, 2 do if f[i] == 'job' then return f[i + 1] end end
  return ''
end
local c = redis.call('XAUTOCLAIM', jobs, 'regions', R, ARGV[3], '0-0', 'COUNT', 1)
if c[2] and c[2][1] and c[2][1] ~= false then
  return {'JOB', c[2][1][1], job_of(c[2][1]), 'reclaimed'}
end
local r = redis.call('XREADGROUP', 'GROUP', 'regions', R, 'COUNT', 1, 'STREAMS', jobs, '>')
if r and r[1] and r[1][2] and r[1][2][1] then
  local e = r[1][2][1]
  return {'JOB', e[1], job_of(e), 'new'}
end
return {'NONE'}
"#,
    )
});

/// ARGV: region, stream id, job id, store. Records the job's result once (a re-run counts
/// a duplicate instead), acknowledges and deletes the stream entry, and keeps the
/// completion-gap statistics. Returns 1 for a first completion, 0 for a duplicate run,
/// 2 for the same completion delivered again (a retry after a lost reply: not counted).
/// While a rollout runs, a first completion also counts in its `jobs` series (per second
/// and store).
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    series_script(
        r#"
local R = ARGV[1]
local jobs = P .. 'ds:jobs'
local st = P .. 'ds:stats'
local now = tonumber(now_ms())
local prev = redis.call('HGET', P .. 'ds:results', ARGV[3])
if prev then
  -- The same completion delivered again (a retry after a lost reply) is not a new run.
  local mine = string.sub(prev, 1, #R + 1) == R .. ' '
    and string.sub(prev, -(#ARGV[2] + 1)) == ' ' .. ARGV[2]
  if mine then return 2 end
  redis.call('HINCRBY', st, 'duplicates', 1)
  redis.call('XACK', jobs, 'regions', ARGV[2])
  redis.call('XDEL', jobs, ARGV[2])
  redis.call('HINCRBY', P .. 'region:' .. R, 'jobs_done', 1)
  return 0
end
redis.call('HSET', P .. 'ds:results', ARGV[3],
  R .. ' ' .. ARGV[4] .. ' ' .. string.format('%.0f', now) .. ' ' .. ARGV[2])
local comp = redis.call('HINCRBY', st, 'completed', 1)
redis.call('HINCRBY', P .. 'ds:by_region', R, 1)
series_add('jobs', string.format('%.0f', math.floor(now / 1000)) .. ':' .. ARGV[4], 1)
local last = tonumber(redis.call('HGET', st, 'last_completion') or '0')
local ws = tonumber(redis.call('HGET', st, 'waiting_since') or '0')
local since = math.max(last, ws)
if since > 0 then
  local gap = now - since
  if gap > tonumber(redis.call('HGET', st, 'max_gap_ms') or '0') then
    redis.call('HSET', st, 'max_gap_ms', string.format('%.0f', gap))
  end
end
redis.call('HSET', st, 'last_completion', string.format('%.0f', now))
local sub = tonumber(redis.call('HGET', st, 'submitted') or '0')
if sub - comp <= 0 then redis.call('HSET', st, 'waiting_since', '0') end
redis.call('XACK', jobs, 'regions', ARGV[2])
redis.call('XDEL', jobs, ARGV[2])
redis.call('HINCRBY', P .. 'region:' .. R, 'jobs_done', 1)
return 1
"#,
    )
});

/// ARGV: transaction id, region. Records a client transaction once. Returns 1 for the
/// first record, 0 for a repeat.
pub static RECORD_TX: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local first = redis.call('HSETNX', P .. 'ds:tx', ARGV[1], ARGV[2])
if first == 1 then
  redis.call('HINCRBY', P .. 'ds:stats', 'tx_ok', 1)
else
  redis.call('HINCRBY', P .. 'ds:stats', 'tx_duplicates', 1)
end
return first
"#,
    )
});

/// ARGV: ok, failed. Adds client requests that ended (answered, resp. given up) to the
/// running rollout's `clients` series at the PSOR's current second; nothing when no
/// rollout runs. Returns 1 when recorded, else 0.
pub static RECORD_CLIENTS: LazyLock<Script> = LazyLock::new(|| {
    series_script(
        r#"
local sec = redis.call('TIME')[1]
local r = 0
if tonumber(ARGV[1]) > 0 then r = series_add('clients', sec .. ':ok', ARGV[1]) end
if tonumber(ARGV[2]) > 0 then r = series_add('clients', sec .. ':failed', ARGV[2]) end
return r
"#,
    )
});

/// ARGV: region, token, field, value, ... Sets fields of a region record only for the
/// instance that owns it (a stale process cannot overwrite a newer one). Returns 1 or 0.
pub static REGION_FIELDS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', P .. 'region:' .. ARGV[1], 'instance') ~= ARGV[2] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HSET', P .. 'region:' .. ARGV[1], ARGV[i], ARGV[i + 1])
end
return 1
"#,
    )
});

/// ARGV: region, host, actor. Cleans a region a restarted host agent finds recorded on
/// its host: leaves every store, marks it stopped, drops its liveness. Refused with
/// `{OTHER, host}` when the region now lives on another host. Returns `{OK, cleaned}`.
pub static CLEAN_REGION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local R = ARGV[1]
local key = P .. 'region:' .. R
if redis.call('EXISTS', key) == 0 then return {'OK', '0'} end
local h = redis.call('HGET', key, 'host')
if h ~= ARGV[2] and alive(R) then return {'OTHER', h} end
for _, v in ipairs(redis.call('ZRANGE', P .. 'stores', 0, -1)) do
  redis.call('SREM', P .. 'store:' .. v .. ':members', R)
end
local was = redis.call('HGET', key, 'state') or ''
redis.call('HSET', key, 'state', 'stopped', 'store', '', 'listener', 'off', 'clients', '0')
redis.call('DEL', P .. 'region:' .. R .. ':alive')
if was ~= 'stopped' then
  event('region_cleaned', R .. ' found ' .. was .. ' after a restart of host ' .. ARGV[2], ARGV[3], R)
  return {'OK', '1'}
end
return {'OK', '0'}
"#,
    )
});

/// ARGV: holder, ttl ms. Takes the coordinator lease if free and bumps the fencing
/// epoch. Returns `{OK, epoch}`, `{HELD, holder epoch, rollout id, rollout state}` or
/// `{NOPAC}`.
pub static LEASE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', P .. 'meta') == 0 then return {'NOPAC'} end
local cur = redis.call('GET', P .. 'lock')
if cur then
  local r = redis.call('HMGET', P .. 'rollout:current', 'id', 'state')
  return {'HELD', cur, r[1] or '', r[2] or ''}
end
local epoch = redis.call('HINCRBY', P .. 'meta', 'epoch', 1)
redis.call('SET', P .. 'lock', ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return {'OK', tostring(epoch)}
"#,
    )
});

/// ARGV: lease value, ttl ms. Extends the lease only for its holder. Returns 1 or 0.
pub static LEASE_RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', P .. 'lock') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', P .. 'lock', ARGV[2])
return 1
"#,
    )
});

/// ARGV: lease value. Releases the lease only for its holder. Returns 1 or 0.
pub static LEASE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', P .. 'lock') ~= ARGV[1] then return 0 end
redis.call('DEL', P .. 'lock')
return 1
"#,
    )
});

/// ARGV: fence, history entry ('' for none), n (number of state field pairs), state
/// pairs..., event pairs... Writes the rollout journal and its event in one atomic,
/// fenced step; a finished rollout's summary goes to the history list (last 100).
/// Returns `{OK, event id}` or `{FENCED, epoch}`.
pub static ROLLOUT_WRITE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local n = tonumber(ARGV[3])
local i = 4
if n > 0 then
  local st = {}
  for j = 0, n - 1 do
    table.insert(st, ARGV[i + 2 * j]); table.insert(st, ARGV[i + 2 * j + 1])
  end
  redis.call('HSET', P .. 'rollout:current', unpack(st))
end
i = i + 2 * n
local id = ''
if i <= #ARGV then
  local ev = {}
  for j = i, #ARGV do table.insert(ev, ARGV[j]) end
  id = redis.call('XADD', P .. 'events', 'MAXLEN', '~', '10000', '*', 'ts_ms', now_ms(), unpack(ev))
end
if ARGV[2] ~= '' then
  redis.call('LPUSH', P .. 'rollout:history', ARGV[2])
  redis.call('LTRIM', P .. 'rollout:history', 0, 99)
end
return {'OK', id}
"#,
    )
});

/// ARGV: fence, host, command JSON. Queues a control command for a host agent, only for
/// the current epoch (a fenced coordinator cannot drive agents). Returns `{OK}` or
/// `{FENCED, epoch}`.
pub static SEND_CONTROL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
redis.call('XADD', P .. 'host:' .. ARGV[2] .. ':ctl', 'MAXLEN', '~', '1000', '*', 'cmd', ARGV[3])
return {'OK'}
"#,
    )
});

/// ARGV: host, command id, fence. Takes a command at most once; a command sent under an
/// epoch that is no longer current is refused. Returns `{OK}`, `{TAKEN}` or `{FENCED, epoch}`.
pub static TAKE_CONTROL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HSETNX', P .. 'host:' .. ARGV[1] .. ':done', ARGV[2], now_ms()) == 0 then
  return {'TAKEN'}
end
local f = fenced(ARGV[3]); if f then return {'FENCED', f} end
return {'OK'}
"#,
    )
});

/// ARGV: fence, version, actor. Puts a quiesced store back to running (rollback).
/// Returns `{OK}`, `{NOSTORE}` or `{FENCED, epoch}`.
pub static UNQUIESCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local m = store_mode(ARGV[2])
if not m then return {'NOSTORE'} end
if m ~= 'running' then
  redis.call('HSET', P .. 'store:' .. ARGV[2] .. ':meta', 'mode', 'running')
  bump()
  event('rollback', 'store ' .. ARGV[2] .. ' running again', ARGV[3], '')
  redis.call('PUBLISH', P .. 'notify', 'mode')
end
return {'OK'}
"#,
    )
});

/// ARGV: fence, version, actor. Detaches one store (rollback deletes the new store);
/// refused while a live region is a member or when it is the only store. Returns `{OK}`,
/// `{NONE}`, `{LIVE, region...}`, `{ONLY}` or `{FENCED, epoch}`.
pub static DETACH_STORE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local V = ARGV[2]
if not redis.call('ZSCORE', P .. 'stores', V) then return {'NONE'} end
if redis.call('ZCARD', P .. 'stores') <= 1 then return {'ONLY'} end
local live = {}
for _, r in ipairs(redis.call('SMEMBERS', P .. 'store:' .. V .. ':members')) do
  if alive(r) then table.insert(live, r) end
end
if #live > 0 then return {'LIVE', unpack(live)} end
redis.call('SADD', P .. 'removing', V)
redis.call('ZREM', P .. 'stores', V)
bump()
event('rollback', 'detached store ' .. V, ARGV[3], '')
redis.call('PUBLISH', P .. 'notify', 'store')
return {'OK'}
"#,
    )
});

/// ARGV: fence, store version, running version. Records that every member of a store
/// now runs `running version` (a compatible upgrade's finalisation). Returns `{OK}`,
/// `{NOSTORE}` or `{FENCED, epoch}`.
pub static SET_RUNNING_VERSION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
if not store_mode(ARGV[2]) then return {'NOSTORE'} end
redis.call('HSET', P .. 'store:' .. ARGV[2] .. ':meta', 'running_version', ARGV[3])
bump()
return {'OK'}
"#,
    )
});
