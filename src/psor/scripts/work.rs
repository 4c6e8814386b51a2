//! Scripts of the shared datastore's workload: jobs and client transactions.
//!
//! A region claims a job only through `CLAIM`, which checks in the same atomic step that
//! the region still owns its record and that its store is `running`. A result is
//! recorded once per job id (`COMPLETE`); a job re-run after its region died counts a
//! duplicate instead.

use super::{Call, Lua, Raw};

/// ARGV: count, submission id (may be empty). Appends `count` jobs to the job stream
/// (creating the consumer group), counts them submitted, and starts the waiting clock if
/// nothing was pending; a submission id seen before answers its first ids and submits
/// nothing. Returns `{OK, first id, last id}`, or `{NOPAC}` with nothing written.
pub static SUBMIT: Lua = Lua::critical(
    "SUBMIT",
    &["OK", "NOPAC"],
    r#"
if redis.call('EXISTS', K.meta()) == 0 then return {'NOPAC'} end
local jobs = K.jobs()
local st = K.work_stats()
local n = tonumber(ARGV[1])
local sub_key = nil
if ARGV[2] and ARGV[2] ~= '' then
  sub_key = K.submission(ARGV[2])
  local prev = redis.call('GET', sub_key)
  if prev then
    -- Submitted before (a retry after a lost reply): the same ids. The touch is a write,
    -- so the retry's durability wait also covers the first submission.
    redis.call('EXPIRE', sub_key, SUBMISSION_TTL_SECS)
    local a, b = string.match(prev, '^(%d+) (%d+)$')
    return {'OK', a, b}
  end
end
redis.pcall('XGROUP', 'CREATE', jobs, JOB_GROUP, '0', 'MKSTREAM')
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
if sub_key then
  redis.call('SET', sub_key, tostring(first) .. ' ' .. tostring(last), 'EX', SUBMISSION_TTL_SECS)
end
return {'OK', tostring(first), tostring(last)}
"#,
);

/// Jobs submitted in one atomic step.
#[derive(Debug, Clone, Copy)]
pub struct Submit<'a> {
    /// How many.
    pub count: u64,
    /// The submission's id ("" for none): repeating a submission with its id answers
    /// the ids it got the first time and submits nothing.
    pub id: &'a str,
}

/// What [`Submit`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitReply {
    /// Job ids `first..=last` (both 0 for a count of 0).
    Ok {
        /// First id.
        first: u64,
        /// Last id.
        last: u64,
    },
    /// The PAC does not exist; nothing written.
    NoPac,
}

impl Call for Submit<'_> {
    type Reply = SubmitReply;
    fn lua() -> &'static Lua {
        &SUBMIT
    }
    fn args(&self) -> Vec<String> {
        vec![self.count.to_string(), self.id.to_string()]
    }
    fn decode(r: Raw) -> Option<SubmitReply> {
        Some(match r.code.as_str() {
            "OK" => SubmitReply::Ok {
                first: r.num(0),
                last: r.num(1),
            },
            "NOPAC" => SubmitReply::NoPac,
            _ => return None,
        })
    }
}

/// ARGV: region, token, reclaim idle ms. Takes one job for the region, only while it owns
/// its record and its store is `running`: first a job idle longer than the reclaim time
/// (held by a region that died), else a new one. Returns `{JOB, stream id, job id,
/// new|reclaimed}`, `{NONE}`, `{MODE, mode}` or `{LOST}`.
pub static CLAIM: Lua = Lua::critical(
    "CLAIM",
    &["JOB", "NONE", "MODE", "LOST"],
    r#"
local R, token, idle = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', K.region(R), 'instance') ~= token then return {'LOST'} end
local V = redis.call('HGET', K.region(R), 'store') or ''
if V == '' then return {'MODE', ''} end
local mode = store_mode(V) or ''
if mode ~= 'running' then return {'MODE', mode} end
local jobs = K.jobs()
if redis.call('EXISTS', jobs) == 0 then return {'NONE'} end
redis.pcall('XGROUP', 'CREATE', jobs, JOB_GROUP, '0', 'MKSTREAM')
local function job_of(e)
  local f = e[2]
  for i = 1, #f, 2 do if f[i] == 'job' then return f[i + 1] end end
  return ''
end
local c = redis.call('XAUTOCLAIM', jobs, JOB_GROUP, R, idle, '0-0', 'COUNT', 1)
if c[2] and c[2][1] and c[2][1] ~= false then
  return {'JOB', c[2][1][1], job_of(c[2][1]), 'reclaimed'}
end
local r = redis.call('XREADGROUP', 'GROUP', JOB_GROUP, R, 'COUNT', 1, 'STREAMS', jobs, '>')
if r and r[1] and r[1][2] and r[1][2][1] then
  local e = r[1][2][1]
  return {'JOB', e[1], job_of(e), 'new'}
end
return {'NONE'}
"#,
);

/// A region asking for one job.
#[derive(Debug, Clone)]
pub struct ClaimJob<'a> {
    /// The region.
    pub region: &'a str,
    /// The instance that owns it.
    pub token: &'a str,
    /// Jobs idle this long in another region's hands are taken over.
    pub reclaim_idle_ms: u64,
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A job to run.
    Job {
        /// Stream entry id (for the acknowledgement).
        entry: String,
        /// Job id (what results are keyed by).
        job: String,
        /// Taken over from a region that stopped answering.
        reclaimed: bool,
    },
    /// No job waiting.
    None,
    /// The region's store is not running (its mode, or "" when it has no store).
    NotRunning(String),
    /// The region is no longer owned by this instance.
    Lost,
}

impl Call for ClaimJob<'_> {
    type Reply = Claim;
    fn lua() -> &'static Lua {
        &CLAIM
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.region.into(),
            self.token.into(),
            self.reclaim_idle_ms.to_string(),
        ]
    }
    fn decode(r: Raw) -> Option<Claim> {
        Some(match r.code.as_str() {
            "JOB" => Claim::Job {
                entry: r.text(0),
                job: r.text(1),
                reclaimed: r.text(2) == "reclaimed",
            },
            "NONE" => Claim::None,
            "MODE" => Claim::NotRunning(r.text(0)),
            "LOST" => Claim::Lost,
            _ => return None,
        })
    }
}

/// ARGV: region, stream id, job id, store. Records the job's result once (a re-run counts
/// a duplicate instead), acknowledges and deletes the stream entry, and keeps the
/// completion-gap statistics. Returns `{FIRST}` for a first completion, `{DUPLICATE}` for
/// a duplicate run, `{REPEATED}` for the same completion delivered again (a retry after a
/// lost reply: not counted). While a rollout runs, a first completion also counts in its
/// `jobs` series (per second and store).
pub static COMPLETE: Lua = Lua::critical(
    "COMPLETE",
    &["FIRST", "DUPLICATE", "REPEATED"],
    r#"
local R, entry, job, store = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local jobs = K.jobs()
local st = K.work_stats()
local now = tonumber(now_ms())
local prev = redis.call('HGET', K.job_results(), job)
if prev then
  -- The same completion delivered again (a retry after a lost reply) is not a new run.
  local mine = string.sub(prev, 1, #R + 1) == R .. ' '
    and string.sub(prev, -(#entry + 1)) == ' ' .. entry
  if mine then return {'REPEATED'} end
  redis.call('HINCRBY', st, 'duplicates', 1)
  redis.call('XACK', jobs, JOB_GROUP, entry)
  redis.call('XDEL', jobs, entry)
  redis.call('HINCRBY', K.region(R), 'jobs_done', 1)
  return {'DUPLICATE'}
end
redis.call('HSET', K.job_results(), job,
  R .. ' ' .. store .. ' ' .. string.format('%.0f', now) .. ' ' .. entry)
local comp = redis.call('HINCRBY', st, 'completed', 1)
redis.call('HINCRBY', K.jobs_by_region(), R, 1)
series_add('jobs', string.format('%.0f', math.floor(now / 1000)) .. ':' .. store, 1)
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
redis.call('XACK', jobs, JOB_GROUP, entry)
redis.call('XDEL', jobs, entry)
redis.call('HINCRBY', K.region(R), 'jobs_done', 1)
return {'FIRST'}
"#,
);

/// A job's completion.
#[derive(Debug, Clone)]
pub struct CompleteJob<'a> {
    /// The region that ran it.
    pub region: &'a str,
    /// Its stream entry.
    pub entry: &'a str,
    /// Its id.
    pub job: &'a str,
    /// The region's store.
    pub store: &'a str,
}

/// What [`CompleteJob`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The job's first completion.
    First,
    /// The job had completed before: a duplicate run.
    Duplicate,
    /// This very completion was recorded before (a retry after a lost reply).
    Repeated,
}

impl Call for CompleteJob<'_> {
    type Reply = Completion;
    fn lua() -> &'static Lua {
        &COMPLETE
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.region.into(),
            self.entry.into(),
            self.job.into(),
            self.store.into(),
        ]
    }
    fn decode(r: Raw) -> Option<Completion> {
        Some(match r.code.as_str() {
            "FIRST" => Completion::First,
            "DUPLICATE" => Completion::Duplicate,
            "REPEATED" => Completion::Repeated,
            _ => return None,
        })
    }
}

/// ARGV: transaction id, region. Records a client transaction once. Returns `{FIRST}` or
/// `{REPEAT}`.
pub static RECORD_TX: Lua = Lua::critical(
    "RECORD_TX",
    &["FIRST", "REPEAT"],
    r#"
if redis.call('HSETNX', K.transactions(), ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', K.work_stats(), 'tx_ok', 1)
  return {'FIRST'}
end
redis.call('HINCRBY', K.work_stats(), 'tx_duplicates', 1)
return {'REPEAT'}
"#,
);

/// A client transaction served by a region.
#[derive(Debug, Clone)]
pub struct RecordTx<'a> {
    /// Transaction id.
    pub tx: &'a str,
    /// The region.
    pub region: &'a str,
}

impl Call for RecordTx<'_> {
    /// Whether it was the first record of this transaction.
    type Reply = bool;
    fn lua() -> &'static Lua {
        &RECORD_TX
    }
    fn args(&self) -> Vec<String> {
        vec![self.tx.into(), self.region.into()]
    }
    fn decode(r: Raw) -> Option<bool> {
        match r.code.as_str() {
            "FIRST" => Some(true),
            "REPEAT" => Some(false),
            _ => None,
        }
    }
}

/// ARGV: ok, failed. Adds client requests that ended (answered, resp. given up) to the
/// running rollout's `clients` series at the PSOR's current second; nothing when no
/// rollout runs. Returns `{RECORDED}` or `{NOROLLOUT}`.
pub static RECORD_CLIENTS: Lua = Lua::new(
    "RECORD_CLIENTS",
    &["RECORDED", "NOROLLOUT"],
    r#"
local sec = redis.call('TIME')[1]
local r = 0
if tonumber(ARGV[1]) > 0 then r = series_add('clients', sec .. ':ok', ARGV[1]) end
if tonumber(ARGV[2]) > 0 then r = series_add('clients', sec .. ':failed', ARGV[2]) end
if r == 1 then return {'RECORDED'} end
return {'NOROLLOUT'}
"#,
);

/// One second's client requests that ended.
#[derive(Debug, Clone, Copy)]
pub struct RecordClients {
    /// Answered.
    pub ok: u64,
    /// Given up.
    pub failed: u64,
}

impl Call for RecordClients {
    /// Whether a rollout was running to count them.
    type Reply = bool;
    fn lua() -> &'static Lua {
        &RECORD_CLIENTS
    }
    fn args(&self) -> Vec<String> {
        vec![self.ok.to_string(), self.failed.to_string()]
    }
    fn decode(r: Raw) -> Option<bool> {
        match r.code.as_str() {
            "RECORDED" => Some(true),
            "NOROLLOUT" => Some(false),
            _ => None,
        }
    }
}
